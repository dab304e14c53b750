"""Gin parsing for the command-line tools: files, bindings, search paths, and the operative config."""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import hashlib
import inspect
import importlib.util  # pylint: disable=unused-import  (gin's resource reader uses it without importing it)
import logging
import os
import typing
from typing import Optional, Sequence

import gin
import numpy as np

from l2p_tf import resources

# The folder holding gin_configs/ (the repository root, or the installed package) and the gin configs themselves.
REPO_ROOT = resources.ROOT
GIN_CONFIGS_DIR = resources.GIN_CONFIGS_DIR


class GinConfigError(ValueError):
  """A gin file or binding cannot be parsed or names something unknown."""


def parse(gin_files: Sequence[str], gin_bindings: Sequence[str] = (), search_paths: Sequence[str] = ()) -> None:
  """Parses gin files then bindings (later ones override earlier ones); does not finalize.

  Files are looked up as given, then in `gin_configs/` and the folder that holds it (the repository root, or the
  installed package: `l2p_tf.resources`), then in each search path, so `--gin_file=experiments/cifar100_l2p.gin`,
  `--gin_file=gin_configs/experiments/cifar100_l2p.gin` and `include 'base.gin'` all work from any directory.

  Raises:
    GinConfigError: a file is missing, or gin rejects a file or binding; the message names the file (and, where
      gin says it, the line) and what gin objected to.
  """
  gin.clear_config()
  paths = [GIN_CONFIGS_DIR, REPO_ROOT] + list(search_paths)
  for p in paths:
    if p not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access  (gin appends duplicates)
      gin.add_config_file_search_path(p)
  resolved = [_resolve(f, paths) for f in gin_files]
  with _quiet_search_misses():
    for path in resolved:
      try:
        gin.parse_config_file(path)
      except Exception as e:  # gin raises ValueError, SyntaxError, ImportError, AttributeError, ...
        raise GinConfigError(f'Gin file {path}: {type(e).__name__}: {e}') from e
  for binding in gin_bindings:
    try:
      gin.parse_config(binding)
    except Exception as e:
      raise GinConfigError(f'Gin binding {binding!r}: {type(e).__name__}: {e}') from e


class _SearchMissFilter(logging.Filter):
  """Drops gin's 'Path not found' ERROR records: each search-path miss while resolving an include logs one."""

  def filter(self, record):
    return not (record.pathname.endswith('resource_reader.py') and record.getMessage().startswith('Path not found'))


@contextlib.contextmanager
def _quiet_search_misses():
  root = logging.getLogger()
  f = _SearchMissFilter()
  root.addFilter(f)
  try:
    yield
  finally:
    root.removeFilter(f)


def _resolve(path: str, search_paths: Sequence[str]) -> str:
  if os.path.exists(path):
    return path
  for base in search_paths:
    candidate = os.path.join(base, path)
    if os.path.exists(candidate):
      return candidate
  raise GinConfigError(f'Gin file {path!r} not found (looked in the current directory and {list(search_paths)}).')


def _macro_name(value) -> Optional[str]:
  """The macro a parsed gin value refers to (`%NAME`), or None."""
  selector = getattr(value, 'scoped_selector', None)
  if isinstance(selector, str) and selector.endswith('/gin.macro'):
    return selector[:-len('/gin.macro')]
  return None


def _referenced_macros(value, out: set) -> None:
  name = _macro_name(value)
  if name is not None:
    out.add(name)
  elif isinstance(value, (list, tuple, set)):
    for v in value:
      _referenced_macros(v, out)
  elif isinstance(value, dict):
    for k, v in value.items():
      _referenced_macros(k, out)
      _referenced_macros(v, out)


def check_macros() -> None:
  """Refuses macros that are defined but used nowhere, and macros used but defined nowhere.

  gin accepts `POOL_SIZ = 3` (a misspelt `POOL_SIZE`) silently: it only defines a new macro that nothing reads, and
  the run goes on with the old value. Every macro must be read by some binding (of any configurable, called or not)
  or by another macro.

  Raises:
    GinConfigError: naming the unused or undefined macros.
  """
  config = gin.config._CONFIG  # pylint: disable=protected-access  (gin has no public view of the bindings)
  defined = {scope for (scope, selector) in config if selector == 'gin.macro'}
  referenced = set()
  for params in config.values():
    for value in params.values():
      _referenced_macros(value, referenced)
  unused = sorted(defined - referenced)
  undefined = sorted(referenced - defined)
  problems = []
  if unused:
    problems.append(f'macro{"s" if len(unused) > 1 else ""} {", ".join(unused)} '
                    f'{"are" if len(unused) > 1 else "is"} set but used nowhere (misspelt?); known macros: '
                    f'{", ".join(sorted(defined & referenced))}')
  if undefined:
    problems.append(f'macro{"s" if len(undefined) > 1 else ""} {", ".join(undefined)} '
                    f'{"are" if len(undefined) > 1 else "is"} used but never set')
  if problems:
    raise GinConfigError('; '.join(problems) + '.')


def config_hash() -> str:
  """A short hash of the full parsed configuration (to tell runs of different configs apart)."""
  return hashlib.sha256(gin.config_str().encode()).hexdigest()[:16]


class GinTypeError(ValueError):
  """A configurable received a value of the wrong type (e.g. a number written in quotes in a gin binding)."""


def _type_ok(value, hint) -> Optional[bool]:
  """True / False when `hint` is a simple type this check understands (int, float, bool, str, Optional /
  Union of them, Sequence[str]); None otherwise (not checked)."""
  origin = typing.get_origin(hint)
  if hint is type(None):
    return value is None
  if hint is bool:
    return isinstance(value, (bool, np.bool_))
  if hint is int:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
  if hint is float:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
  if hint is str:
    return isinstance(value, str)
  if origin is typing.Union:
    results = [_type_ok(value, a) for a in typing.get_args(hint)]
    return None if None in results else any(results)
  if origin in (collections.abc.Sequence, list, tuple) and typing.get_args(hint)[:1] == (str,):
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
  return None


def _describe(hint) -> str:
  if typing.get_origin(hint) is typing.Union:
    return ' or '.join(_describe(a) for a in typing.get_args(hint))
  if hint is type(None):
    return 'None'
  return getattr(hint, '__name__', None) or str(hint).replace('typing.', '')


def check_argument_types(fn, values: dict) -> None:
  """Checks the arguments of `fn` in `values` (e.g. `locals()` at its top) against its simple type annotations.

  Gin passes a binding's value as written: `global_batch_size = '16'` arrives as a string and fails deep inside with
  a TypeError that names neither the binding nor the fix. Checked here, it is one line naming both.

  Raises:
    GinTypeError: the first argument whose value is not of its annotated type.
  """
  # A plain class: its constructor's annotations (a dataclass has them on the class).
  hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) and not dataclasses.is_dataclass(fn) else fn)
  name = f'{fn.__module__.rsplit(".", 1)[-1]}.{fn.__qualname__}'
  for param in inspect.signature(fn).parameters:
    if param not in hints or param not in values:
      continue
    value = values[param]
    ok = _type_ok(value, hints[param])
    if ok is False:
      hint = ('write it without quotes' if isinstance(value, str) else
              'write it in quotes' if hints[param] is str else 'check its value')
      raise GinTypeError(f'{name}.{param} = {value!r} is a {type(value).__name__}, but it must be '
                         f'{_describe(hints[param])}: fix that gin binding ({hint}).')
