"""Per-device defaults: numeric precision (float32 or mixed bfloat16) and XLA compilation of the train step.

`mixed_bfloat16` (tf_keras's policy) keeps every variable in float32 and runs the layers' matrix multiplications in
bfloat16. What stays float32 in l2p-tf whatever the policy, and why:

* the prompt pool (prompts, keys, the cosine match and `reduce_sim`): its layer has dtype float32; the selected
  prompts are cast to the compute dtype only when they are inserted into the token sequence;
* the query ([CLS] feature) is cast to float32 before matching;
* the head (a float32 Dense), hence the logits, the softmax and the loss;
* the attention softmax (`vit.MultiHeadDotProductAttention` computes it in float32) and every LayerNorm (tf_keras
  normalises bfloat16 inputs in float32);
* the optimizer's slots and updates (the variables are float32).

bfloat16 has float32's exponent range, so no loss scaling is needed.

A layer reads the global policy when it is constructed, so `policy_scope` needs to cover only the construction of
the model; it restores the previous policy on exit (tests and other models in the same process are unaffected).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import tensorflow as tf
import tf_keras

PRECISIONS = ('float32', 'mixed_bfloat16', 'auto')


def strategy_device_type(strategy: Optional[tf.distribute.Strategy]) -> str:
  """'TPU', 'GPU' or 'CPU': the kind of device `strategy` computes on (the default device when None)."""
  if strategy is not None:
    if 'TPU' in type(strategy).__name__:
      return 'TPU'
    devices = getattr(strategy.extended, 'worker_devices', ()) or ()
    kinds = {tf.DeviceSpec.from_string(d).device_type for d in devices}
    for kind in ('TPU', 'GPU'):
      if kind in kinds:
        return kind
    if devices:
      return 'CPU'
  return 'GPU' if tf.config.list_logical_devices('GPU') else 'CPU'


def resolve(precision: str, strategy: Optional[tf.distribute.Strategy] = None) -> str:
  """The tf_keras policy name for `precision`: 'auto' is mixed_bfloat16 on TPU / GPU and float32 on CPU.

  On CPU, float32 is the default: CPU runs are tests, debugging and float32 references, and bfloat16 is fast only on
  CPUs with bfloat16 dot-product instructions (avx512_bf16 / AMX). On the 2-core benchmark machine (avx512_bf16)
  mixed_bfloat16 made the /16 models cheaper per CPU-second (ViT-B/16 1.6x) and only the tiny model no faster
  (docs/benchmarks.md); ask for 'mixed_bfloat16' explicitly to use it on such a CPU.

  Raises:
    ValueError: `precision` is not one of `PRECISIONS`.
  """
  if precision not in PRECISIONS:
    raise ValueError(f'Unknown precision {precision!r}; choose one of {PRECISIONS}.')
  if precision != 'auto':
    return precision
  return 'mixed_bfloat16' if strategy_device_type(strategy) in ('TPU', 'GPU') else 'float32'


def resolve_jit_compile(jit_compile, strategy: Optional[tf.distribute.Strategy] = None,
                        policy: Optional[str] = None) -> bool:
  """Whether to XLA-compile the train step: True / False as given; 'auto' is True on GPU, True on CPU for float32
  (`policy` 'float32' or None) and False on CPU for mixed_bfloat16.

  On CPU (docs/benchmarks.md, the 2-core benchmark machine): XLA made the float32 quickstart-size step (ViT-mini,
  32 px, batch 64) need 1.2x fewer CPU-seconds than the same step without it (after the attention moved from einsums
  to matmuls) and 1.46x fewer than the previous default (einsums, no XLA), and the ViT-B/16 step about 10% fewer;
  but it made the mixed_bfloat16 step 1.6x dearer (XLA's CPU backend does not use oneDNN's bfloat16 kernels).
  On a machine shared with other jobs XLA's wall-clock time suffers more than its CPU time (its thread pool waits
  for preempted workers): set False there. On TPU every step is XLA-compiled whatever this says.

  Raises:
    ValueError: anything other than a bool or 'auto'.
  """
  if isinstance(jit_compile, bool):
    return jit_compile
  if jit_compile != 'auto':
    raise ValueError(f"jit_compile must be True, False or 'auto', got {jit_compile!r}.")
  device = strategy_device_type(strategy)
  return device == 'GPU' or (device == 'CPU' and policy in (None, 'float32'))


def resolve_steps_per_loop(steps_per_loop, strategy: Optional[tf.distribute.Strategy] = None,
                           accelerator_steps: int = 20) -> int:
  """Train steps per device loop (engine/trainer.py): a positive int as given; 'auto' is 1 on CPU and
  `accelerator_steps` (the run's `Cadence.steps_per_loop`: one device call per orbit loop) on GPU / TPU.

  On CPU the host's dispatch is a small share of a step and one step per call keeps stops prompt; on an accelerator
  a loop of steps hides the host's per-step dispatch and result reads.

  Raises:
    ValueError: anything other than a positive int or 'auto'.
  """
  if steps_per_loop == 'auto':
    return 1 if strategy_device_type(strategy) == 'CPU' else int(accelerator_steps)
  if isinstance(steps_per_loop, bool) or not isinstance(steps_per_loop, int) or steps_per_loop < 1:
    raise ValueError(f"steps_per_loop must be a positive int or 'auto', got {steps_per_loop!r}.")
  return steps_per_loop


@contextlib.contextmanager
def policy_scope(precision: str, strategy: Optional[tf.distribute.Strategy] = None) -> Iterator[str]:
  """Sets the global tf_keras dtype policy for the layers built inside; yields the resolved policy name.

  Raises:
    ValueError: unknown `precision`.
  """
  name = resolve(precision, strategy)
  previous = tf_keras.mixed_precision.global_policy()
  tf_keras.mixed_precision.set_global_policy(name)
  try:
    yield name
  finally:
    tf_keras.mixed_precision.set_global_policy(previous)
