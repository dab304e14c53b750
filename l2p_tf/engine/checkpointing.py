"""Checkpoints of a run: the manager (never rewrites in place, falls back past damaged files) and the run state.

One checkpoint holds the method's model, the optimizer, the global step, the number of finished tasks, the accuracy
matrix so far and the accumulated wall time. The position in the data stream is derived from the global step (task
t starts at the sum of the earlier tasks' step counts, and its input pipeline can start at any step), so a resumed
run ends with the results of an uninterrupted one. The pretrained `.npz` is read only on a fresh start.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

import numpy as np
import orbit
import tensorflow as tf

from l2p_tf.checkpoints import npz_loader
from l2p_tf.engine import checkpoint_recovery
from l2p_tf.engine import run_dir


@dataclasses.dataclass
class RunState:
  """Variables that go into the checkpoint besides model and optimizer."""
  global_step: tf.Variable
  task_index: tf.Variable
  tasks_done: tf.Variable
  accuracy_matrix: tf.Variable
  wall_time: tf.Variable
  # Every protocol's recorded matrices (protocols, kinds, tasks, eval sets); added by the loop, which knows them.
  protocol_matrices: Optional[tf.Variable] = None

  @classmethod
  def create(cls, num_tasks: int, num_eval: int) -> 'RunState':
    """New state (call under the strategy's scope)."""
    first = tf.VariableAggregation.ONLY_FIRST_REPLICA
    return cls(
        global_step=orbit.utils.create_global_step(),
        task_index=tf.Variable(0, dtype=tf.int32, trainable=False, name='task_index', aggregation=first),
        tasks_done=tf.Variable(0, dtype=tf.int64, trainable=False, name='tasks_done', aggregation=first),
        accuracy_matrix=tf.Variable(np.full((num_tasks, num_eval), np.nan, np.float32), trainable=False,
                                    name='accuracy_matrix', aggregation=first),
        wall_time=tf.Variable(0.0, dtype=tf.float64, trainable=False, name='wall_time', aggregation=first))

  def variables(self) -> dict[str, tf.Variable]:
    # Not dataclasses.asdict: it deep-copies, and the checkpoint would hold copies of the variables.
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

  def add_protocol_matrices(self, shape: tuple[int, ...]) -> tf.Variable:
    """The variable that keeps every protocol's recorded rows in the checkpoint (NaN: not evaluated)."""
    self.protocol_matrices = tf.Variable(np.full(shape, np.nan, np.float32), trainable=False,
                                         name='protocol_matrices',
                                         aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    return self.protocol_matrices

  @property
  def step(self) -> int:
    return int(self.global_step.numpy())

  def add_wall_time(self, seconds: float) -> None:
    self.wall_time.assign(float(self.wall_time.numpy()) + seconds)


class CheckpointManager(tf.train.CheckpointManager):
  """`tf.train.CheckpointManager` that never rewrites a checkpoint in place, and falls back on a damaged newest one.

  * Checkpoints are numbered by the save counter (`ckpt-1`, `ckpt-2`, ...; the global step is inside), whatever
    number the caller passes. A run saves twice at the same step (a task's last step, then again after its
    evaluation with the new accuracy row), and rewriting `ckpt-<step>` in place would leave, for a moment, the
    newest registered checkpoint with a new data file and the old index: a SIGKILL then would leave no loadable
    checkpoint. A new name is written completely before the `checkpoint` state file points to it.
  * `save(force=True)` saves even when a checkpoint of this step exists, and the new one supersedes a checkpoint this
    process saved at the same step (the task-end one, once the post-evaluation one is complete): it stops counting
    towards `max_to_keep` at once, and its files are deleted after the new checkpoint is named in the state file.
  * `restore_or_initialize` restores the newest checkpoint that loads, newest first, saying which it skipped, and
    tells a checkpoint of another config (its advice: use the run's config) from a damaged one (`--overwrite`).
  """

  def __init__(self, *args, say: Callable[[str], None] = print, **kwargs):
    super().__init__(*args, **kwargs)
    self._say = say
    self.restored_path: Optional[str] = None

  def save(self, checkpoint_number=None, check_interval=True, options=None,  # pylint: disable=unused-argument
           force=False):
    superseded = None
    if force:
      if self._last_checkpoint_step is not None and self._last_checkpoint_step == int(self._step_counter.numpy()):
        superseded = self.latest_checkpoint
        self._maybe_delete.pop(superseded, None)  # Still named in the state file until the new one is written.
      self._last_checkpoint_step = None
    path = super().save(checkpoint_number=None, check_interval=check_interval, options=options)
    if superseded and path and path != superseded:
      for f in tf.io.gfile.glob(f'{superseded}.*'):
        tf.io.gfile.remove(f)
    return path

  def restore_or_initialize(self):
    """Restores the newest checkpoint that can be read (see `checkpoint_recovery`); returns its path or None."""
    self.restored_path, _ = checkpoint_recovery.restore_newest_readable(self._checkpoint.restore, self.checkpoints,
                                                                       self.directory, say=self._say)
    return self.restored_path


def checkpoint_dir(model_dir: str, scratch_dir: Optional[str] = None) -> str:
  """The run's checkpoint directory (non-chief workers write theirs under their scratch directory)."""
  return os.path.join(scratch_dir or model_dir, run_dir.CHECKPOINTS_NAME)


def has_checkpoint(model_dir: str) -> bool:
  """Whether `model_dir` holds a checkpoint a run would resume from (read-only look; a complete `ckpt-N` counts even
  when the state file that names it is lost, as the run recovers it)."""
  return bool(run_dir.complete_checkpoints(checkpoint_dir(model_dir)))


def make_manager(*, directory: str, model, optimizer, state: RunState, max_to_keep: int, every_steps: int,
                 say: Callable[[str], None] = print) -> CheckpointManager:
  """The manager over one `tf.train.Checkpoint(model, optimizer, *state)` (restored by orbit's Controller)."""
  ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, **state.variables())
  return CheckpointManager(ckpt, directory, max_to_keep=max_to_keep, step_counter=state.global_step,
                           checkpoint_interval=every_steps, say=say)


def initialize_backbone(backbone, init_checkpoint: str, say: Callable[[str], None] = print) -> None:
  """Fresh start: reads an original ViT `.npz` into `backbone`, or says that the backbone is random."""
  if init_checkpoint:
    report = npz_loader.load_vit_npz(backbone, init_checkpoint)
    say(f'Backbone: loaded {len(report.loaded)} arrays from {init_checkpoint} ({report.seconds:.1f}s).')
  else:
    say('Backbone: RANDOM weights (INIT_CHECKPOINT is empty). Accuracy will be far below the paper\'s, which '
        'needs a pretrained ViT; set INIT_CHECKPOINT to an original .npz.')
