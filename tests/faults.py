"""Deterministic fault injection for tests: kills (or signals) a run's process at a named point.

Installed by the test entry point (`python -m tests.mock_main`, which calls `install()`), never by l2p_tf itself:
`install` wraps the production functions at each point's seam. Set `L2P_FAULT_INJECTION=POINT:N[:ACTION]` in the
environment of such a run; at the N-th time (1-based, counted in this process) the run passes POINT, ACTION happens:

  kill        (default) SIGKILL right now, at the point itself: what follows the point never happens.
  kill_async  SIGKILL from a helper thread 10 ms later, so it lands while the main thread is inside what follows
              (a train step); where exactly it lands is up to the scheduler, and a test must not depend on it.
  term        SIGTERM from a helper thread 10 ms later: a preemption notice arriving during what follows.

Points (and the seams they wrap):

  train_step        before each train step is dispatched (`engine.trainer.Trainer.run_step`), so `kill` lands mid-step.
  checkpoint_shards inside a checkpoint write: the data and index of the shards are written to `ckpt-N_temp/`, the
                    final `ckpt-N.index` / `ckpt-N.data-*` are not (TensorFlow's shard merge op).
  checkpoint_write  after a checkpoint's files are complete, before the `checkpoint` state file names it (a write
                    callback added to every `engine.checkpointing.CheckpointManager.save`).
  evaluation        before each evaluation set is evaluated (`engine.evaluator.Evaluator.evaluate`).
  task_end          after a task's checkpoint and results files are written, before the next task starts
                    (`engine.loop.ContinualRun.finish_task`).
  results_write     in every atomic file write: the temporary file is complete, not yet renamed over the target
                    (`results.commit`).
"""

from __future__ import annotations

import collections
import copy
import functools
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


def parse(value: str) -> Optional[tuple[str, int, str]]:
  """`POINT:N[:ACTION]` -> (point, n, action); '' -> None.

  Raises:
    ValueError: a malformed value, naming it.
  """
  value = value.strip()
  if not value:
    return None
  parts = value.split(':')
  if len(parts) not in (2, 3) or parts[0] not in POINTS or not parts[1].isdigit() or int(parts[1]) < 1 or (
      len(parts) == 3 and parts[2] not in ACTIONS):
    raise ValueError(f'{ENV}={value!r} is not POINT:N[:ACTION] with POINT in {POINTS}, N >= 1 and ACTION in '
                     f'{ACTIONS}.')
  return parts[0], int(parts[1]), parts[2] if len(parts) == 3 else 'kill'


def point(name: str) -> None:
  """Counts one pass through point `name` and fires the configured action on the configured pass."""
  if _spec is None or _spec[0] != name:
    return
  _counts[name] += 1
  if _counts[name] != _spec[1]:
    return
  action = _spec[2]
  print(f'[fault injection] {action} at {name} #{_spec[1]}', flush=True)
  if action == 'kill':
    os.kill(os.getpid(), signal.SIGKILL)
  sig = signal.SIGKILL if action == 'kill_async' else signal.SIGTERM

  def send():
    time.sleep(0.01)
    os.kill(os.getpid(), sig)

  threading.Thread(target=send, daemon=True).start()


def _before(cls, attr: str, name: str, after: bool = False) -> None:
  original = getattr(cls, attr)

  @functools.wraps(original)
  def wrapped(*args, **kwargs):
    if not after:
      point(name)
    out = original(*args, **kwargs)
    if after:
      point(name)
    return out

  setattr(cls, attr, wrapped)


def _arm_checkpoint_write() -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import checkpointing  # pylint: disable=g-import-not-at-top
  original = checkpointing.CheckpointManager.save

  def save(self, checkpoint_number=None, check_interval=True, options=None, force=False):
    options = copy.copy(options) if options is not None else tf.train.CheckpointOptions()
    options.experimental_write_callbacks = [lambda *_: point('checkpoint_write')] + list(
        options.experimental_write_callbacks or [])
    return original(self, checkpoint_number, check_interval, options, force)

  checkpointing.CheckpointManager.save = save


def _arm_checkpoint_shards() -> None:
  from tensorflow.python.ops import gen_io_ops  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  merge = gen_io_ops.merge_v2_checkpoints

  def merge_with_point(*args, **kwargs):
    point('checkpoint_shards')
    return merge(*args, **kwargs)

  gen_io_ops.merge_v2_checkpoints = merge_with_point


def install(value: Optional[str] = None) -> Optional[tuple[str, int, str]]:
  """Arms the point named by `value` (default: the environment variable); nothing happens when it is unset."""
  global _spec
  _spec = parse(os.environ.get(ENV, '') if value is None else value)
  if _spec is None:
    return None
  from l2p_tf import results  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import evaluator, loop, trainer  # pylint: disable=g-import-not-at-top
  arm = {
      'train_step': lambda: _before(trainer.Trainer, 'run_step', 'train_step'),
      'checkpoint_shards': _arm_checkpoint_shards,
      'checkpoint_write': _arm_checkpoint_write,
      'evaluation': lambda: _before(evaluator.Evaluator, 'evaluate', 'evaluation'),
      'task_end': lambda: _before(loop.ContinualRun, 'finish_task', 'task_end', after=True),
      'results_write': lambda: _before(results, 'commit', 'results_write'),
  }
  arm[_spec[0]]()
  return _spec
