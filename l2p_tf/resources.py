"""Where the files that ship with l2p-tf live: the gin configs and the pretrained backbone.

In a source checkout (or an editable install) they are the repository's `gin_configs/` and `pretrained/`; in an
installed wheel they are package data, `l2p_tf/gin_configs/` and `l2p_tf/pretrained/` (pyproject.toml maps them
there). `ROOT` is the folder that holds both, so a repository-relative path such as
`gin_configs/experiments/quickstart.gin` or `pretrained/vit_mini_cifar100_50-99.npz` resolves under `ROOT` in either
layout, from any working directory.
"""

from __future__ import annotations

import os
from typing import Optional

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _root() -> str:
  installed = _PACKAGE_DIR  # A wheel: gin_configs/ and pretrained/ inside the package.
  if os.path.isdir(os.path.join(installed, 'gin_configs')):
    return installed
  return os.path.dirname(_PACKAGE_DIR)  # A source checkout: next to the package.


ROOT = _root()
GIN_CONFIGS_DIR = os.path.join(ROOT, 'gin_configs')
PRETRAINED_DIR = os.path.join(ROOT, 'pretrained')


def find(path: str) -> Optional[str]:
  """`path` if it exists as given; else, for a relative path, the shipped file at `ROOT/path`; else None.

  Remote paths (`gs://...`) and absolute paths are returned only as given (None when a local absolute path is
  missing; remote paths are not checked here).
  """
  if not path:
    return None
  if '://' in path:
    return path
  if os.path.exists(path):
    return path
  if not os.path.isabs(path):
    shipped = os.path.join(ROOT, path)
    if os.path.exists(shipped):
      return shipped
  return None
