"""Run settings, grouped the t5x way: small classes bound in gin instead of dozens of flat keyword arguments.

`Cadence` holds what may change between a run and its resume without changing its results (how often to log,
checkpoint and check for a stop); the model_dir's config comparison ignores that group as a whole.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

from l2p_tf import gin_utils
from l2p_tf.engine import clipping
from l2p_tf.engine import evaluator as evaluator_lib


def check_types(settings) -> None:
  """Refuses a setting whose value is not of its annotated type (a gin binding written with or without quotes by
  mistake), naming the binding; see `gin_utils.check_argument_types`."""
  gin_utils.check_argument_types(type(settings), {f.name: getattr(settings, f.name)
                                                  for f in dataclasses.fields(settings)})


@dataclasses.dataclass(frozen=True)
class Training:
  """How steps are taken.

  Attributes:
    global_batch_size: examples per step over all replicas; must be divisible by the replica count.
    grad_clip_norm: global-norm gradient clipping; None or 0 disables it.
    grad_clip_scope: whose gradients the clipping norm covers: 'trainable' (prompts, keys, head) or 'all' (also the
      frozen backbone's, computed for the norm only: the official code); see `engine/clipping.py`.
    reset_optimizer_per_task: zero the optimizer's step and moments at the start of each task.
    precision: 'float32', 'mixed_bfloat16' or 'auto' (mixed_bfloat16 on TPU / GPU, float32 on CPU).
    jit_compile: XLA-compile the per-replica train step, and the evaluation steps with it: True, False or 'auto'
      (on GPU, and on CPU for float32; see `precision.resolve_jit_compile`).
    deterministic_ops: TensorFlow's op determinism (bit-exact reruns on GPU; CPU is deterministic anyway).
  """
  global_batch_size: int = 128
  grad_clip_norm: Optional[float] = 1.0
  grad_clip_scope: str = 'trainable'
  reset_optimizer_per_task: bool = True
  precision: str = 'auto'
  jit_compile: Union[bool, str] = 'auto'
  deterministic_ops: bool = False

  def __post_init__(self):
    check_types(self)
    clipping.GlobalNormClip(max_norm=self.grad_clip_norm, scope=self.grad_clip_scope)  # A bad value fails now.


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """How seen tasks are evaluated.

  Attributes:
    batch_size: examples per evaluation step over all replicas (None: the training batch).
    protocols: evaluation protocols run after every task (`engine.evaluator.PROTOCOLS`): 'official' (each task's
      test set on its own, batchwise prompt vote), 'per_sample' (the same sets, instancewise selection), 'mixed'
      (the seen tasks' test sets shuffled together with `mixed_seed`, batchwise vote). All are reported side by side.
    primary: the protocol that fills the accuracy matrix (results.json's 'accuracy_matrix', the CSV / PNG files, the
      checkpointed matrix and the console table, whose headers name it).
    mixed_seed: shuffle seed of the mixed stream (fixed: the same stream on every evaluation and every run).
    drop_remainder: evaluate only the first floor(n / global_batch_size) * global_batch_size examples of each test
      set, as the official evaluation (which drops each set's last partial batch); False evaluates every one.
    reuse_fixed_features: compute each evaluation set's features of never-trained weights (L2P: the frozen
      backbone's [CLS] query) once per run and reuse them at its later evaluations, where the method says they are
      fixed (`Method.frozen_features_are_fixed`), in every protocol: the mixed stream looks its examples up in
      their sets' kept features; the results are those of recomputing. Kept on the device: (examples, width)
      float32 per set (CIFAR-100's 10,000 test images x 768 for ViT-B: 31 MB), plus a host copy of each set for the
      mixed stream's lookup table.
  """
  batch_size: Optional[int] = None
  protocols: Sequence[str] = ('official', 'per_sample', 'mixed')
  primary: str = 'official'
  mixed_seed: int = 0
  drop_remainder: bool = False
  reuse_fixed_features: bool = True

  def __post_init__(self):
    check_types(self)
    evaluator_lib.check_protocols(tuple(self.protocols), self.primary)


@dataclasses.dataclass(frozen=True)
class Cadence:
  """How often things happen (never changes a result; ignored by the config comparison).

  Attributes:
    steps_per_loop: steps between train summaries and progress checks (checkpoint cadence is a multiple of it).
    steps_per_device_loop: train steps per compiled device loop (a `tf.while_loop` inside one `tf.function` call):
      a positive int or 'auto' (1 on CPU; `steps_per_loop` on GPU / TPU). A stop request and a NaN / Inf loss are
      checked once per device loop, so a stop comes within that many steps. Device loops are cut at the ends of
      `steps_per_loop` loops (hence at checkpoints and task ends); results are bit-identical whatever the value.
    log_every_steps: progress-line cadence in steps.
    log_every_seconds: progress-line cadence in seconds (whichever of the two comes first; checked once per loop of
      `steps_per_loop` steps).
    checkpoint_every_steps: checkpoint cadence within a task (one is also written at every task's end).
    max_checkpoints_to_keep: newest checkpoints kept.
  """
  steps_per_loop: int = 20
  steps_per_device_loop: Union[int, str] = 'auto'
  log_every_steps: int = 50
  log_every_seconds: float = 60.0
  checkpoint_every_steps: int = 500
  max_checkpoints_to_keep: int = 2

  def __post_init__(self):
    check_types(self)
    if self.steps_per_device_loop != 'auto' and (isinstance(self.steps_per_device_loop, bool) or
                                                 not isinstance(self.steps_per_device_loop, int) or
                                                 self.steps_per_device_loop < 1):
      raise ValueError("config.Cadence.steps_per_device_loop must be a positive int or 'auto', got "
                       f'{self.steps_per_device_loop!r}.')
