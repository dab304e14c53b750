"""Restoring the newest checkpoint that can be read, and telling a damaged checkpoint from one of another config.

Shared by the training loop (its `CheckpointManager`) and `l2p_tf.export`. A checkpoint fails to restore for two
different reasons that need opposite advice:

* damaged files (a truncated data file, a bit flip, a lost shard): fall back to the one before it; when none can be
  read, the run is lost and `--overwrite` (which moves it aside) is the way out;
* a model that does not fit (a changed config: pool size, model variant, number of classes): every checkpoint fails
  the same way, and the run itself is fine -- the advice is to use the run's own config, never to overwrite it.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

from l2p_tf.engine import run_dir as model_dir_lib


class CheckpointMismatch(RuntimeError):
  """The checkpoints are readable but do not fit the model built from this command's config."""


def is_mismatch(e: BaseException) -> bool:
  """Whether a restore error says the checkpoint does not fit the model (rather than that its files are damaged)."""
  text = str(e)
  return isinstance(e, (ValueError, AssertionError)) and any(
      needle in text for needle in ('shape', 'Shape', 'incompatible', 'Unresolved object', 'not found in checkpoint',
                                    'does not fit'))


def _first_line(e: BaseException, n: int = 200) -> str:
  text = str(e).strip()
  return (text.splitlines()[0] if text else type(e).__name__)[:n]


def restore_newest_readable(restore: Callable[[str], object], paths: Sequence[str], directory: str, *,
                            say: Callable[[str], None] = print, config_hint: Optional[str] = None):
  """Restores the newest of `paths` (oldest first) that `restore(path)` accepts; returns (path or None, failures).

  Every checkpoint skipped is reported through `say` with its error; a fallback says which checkpoint was used.

  Args:
    restore: restores one checkpoint path (raises when it cannot).
    paths: candidate checkpoint prefixes, oldest first.
    directory: the checkpoint directory (for messages).
    say: prints a line for the user.
    config_hint: the run's config file, named in the mismatch message (default `<directory>/../config.gin`).

  Returns:
    (the restored path, or None when `paths` is empty; [(path, exception)] of the skipped ones).

  Raises:
    CheckpointMismatch: no checkpoint restores and at least one failed because it does not fit the model.
    RuntimeError: no checkpoint restores because every one is damaged.
  """
  failures = []
  for path in reversed(list(dict.fromkeys(paths))):
    try:
      restore(path)
    except Exception as e:  # pylint: disable=broad-except  (damaged files raise OpError, ValueError, IndexError...)
      failures.append((path, e))
      if is_mismatch(e):
        continue  # Said once below: every checkpoint of the run fails the same way.
      say(f'warning: checkpoint {path} cannot be read ({type(e).__name__}: {_first_line(e)}); trying the one '
          'before it.')
      continue
    if failures:
      say(f'Restored {path}: the newer checkpoints could not be read.')
    return path, failures
  if not failures:
    return None, failures
  mismatched = [(p, e) for p, e in failures if is_mismatch(e)]
  if mismatched:
    path, e = mismatched[0]
    config = config_hint or os.path.join(os.path.dirname(os.path.normpath(directory)), model_dir_lib.CONFIG_NAME)
    raise CheckpointMismatch(
        f'The checkpoints in {directory} do not fit the model this command builds ({os.path.basename(path)}: '
        f'{_first_line(e)}): the run was made with another config, and its checkpoints are fine. Use the run\'s own '
        f'config ({config}: the same --gin_file / --gin_bindings), or another --model_dir for the new config.')
  raise RuntimeError(f'No checkpoint in {directory} can be read ({", ".join(p for p in paths)}). Move the directory '
                     'aside and start afresh (--overwrite does that).')
