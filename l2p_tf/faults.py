"""Deterministic fault injection: a test hook that kills (or signals) the process at a named point of a run.

Set `L2P_FAULT_INJECTION=POINT:N[:ACTION]` in the environment of a run; at the N-th time (1-based, counted in this
process) the code passes `point(POINT)`, ACTION happens:

  kill        (default) SIGKILL right now, at the point itself: what follows the point never happens.
  kill_async  SIGKILL from a helper thread 10 ms later, so it lands while the main thread is inside what follows
              (a train step); where exactly it lands is up to the scheduler, and a test must not depend on it.
  term        SIGTERM from a helper thread 10 ms later: a preemption notice arriving during what follows.

Points (where the code calls `point`):

  train_step        before each train step is dispatched (so `kill` lands mid-step).
  checkpoint_shards inside a checkpoint write: the data and index of the shards are written to `ckpt-N_temp/`, the
                    final `ckpt-N.index` / `ckpt-N.data-*` are not (only armed when named in the variable).
  checkpoint_write  after a checkpoint's files are complete, before the `checkpoint` state file names it.
  evaluation        before each evaluation set is evaluated.
  task_end          after a task's checkpoint and results files are written, before the next task starts.
  results_write     in every atomic file write: the temporary file is complete, not yet renamed over the target.

Nothing happens (and nothing is parsed twice) when the variable is unset. Used by tests/reliability_test.py; never
set it in a real run.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from typing import Optional

ENV = 'L2P_FAULT_INJECTION'
POINTS = ('train_step', 'checkpoint_shards', 'checkpoint_write', 'evaluation', 'task_end', 'results_write')
ACTIONS = ('kill', 'kill_async', 'term')

_counts = collections.Counter()
_spec: Optional[tuple[str, int, str]] = None
_parsed = False


def _parse() -> Optional[tuple[str, int, str]]:
  global _spec, _parsed
  if not _parsed:
    _parsed = True
    value = os.environ.get(ENV, '').strip()
    if value:
      parts = value.split(':')
      if len(parts) not in (2, 3) or parts[0] not in POINTS or not parts[1].isdigit() or int(parts[1]) < 1 or (
          len(parts) == 3 and parts[2] not in ACTIONS):
        raise ValueError(f'{ENV}={value!r} is not POINT:N[:ACTION] with POINT in {POINTS}, N >= 1 and ACTION in '
                         f'{ACTIONS}.')
      _spec = (parts[0], int(parts[1]), parts[2] if len(parts) == 3 else 'kill')
      if _spec[0] == 'checkpoint_shards':
        _arm_checkpoint_shards()
  return _spec


def armed(name: str) -> bool:
  spec = _parse()
  return spec is not None and spec[0] == name


def point(name: str) -> None:
  """Counts one pass through point `name` and fires the configured action on the configured pass."""
  spec = _parse()
  if spec is None or spec[0] != name:
    return
  _counts[name] += 1
  if _counts[name] != spec[1]:
    return
  action = spec[2]
  print(f'[fault injection] {action} at {name} #{spec[1]}', flush=True)
  if action == 'kill':
    os.kill(os.getpid(), signal.SIGKILL)
  sig = signal.SIGKILL if action == 'kill_async' else signal.SIGTERM

  def send():
    time.sleep(0.01)
    os.kill(os.getpid(), sig)

  threading.Thread(target=send, daemon=True).start()


def _arm_checkpoint_shards() -> None:
  """Puts the `checkpoint_shards` point between writing a checkpoint's shards and merging them into place."""
  from tensorflow.python.ops import gen_io_ops  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  merge = gen_io_ops.merge_v2_checkpoints

  def merge_with_point(*args, **kwargs):
    point('checkpoint_shards')
    return merge(*args, **kwargs)

  gen_io_ops.merge_v2_checkpoints = merge_with_point
