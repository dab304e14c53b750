"""Optimizer construction (with the L2P learning-rate scaling) and per-task reset."""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf
import tf_keras


def scaled_learning_rate(base_learning_rate: float, global_batch_size: int, scale_by_batch: bool = True) -> float:
  """lr * global_batch / 256 (the official code's linear scaling rule), or lr unchanged."""
  return base_learning_rate * global_batch_size / 256.0 if scale_by_batch else base_learning_rate


def build_optimizer(*, global_batch_size: int, name: str = 'adam', base_learning_rate: float = 0.03,
                    scale_by_batch: bool = True, schedule: str = 'constant', decay_steps: Optional[int] = None,
                    warmup_steps: int = 0, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8,
                    momentum: float = 0.9, weight_decay: float = 0.0,
                    task_steps: Sequence[int] = ()) -> tf_keras.optimizers.Optimizer:
  """Builds the optimizer. Default: Adam(0.9, 0.999, 1e-8), constant lr 0.03 * global_batch / 256, no decay.

  Args:
    global_batch_size: examples per step over all replicas (for the learning-rate scaling).
    name: 'adam', 'adamw' or 'sgd'.
    base_learning_rate: learning rate at a global batch of 256 (if `scale_by_batch`).
    scale_by_batch: apply the linear scaling rule.
    schedule: 'constant' or 'cosine' (cosine decay to 0 over `decay_steps`, after `warmup_steps` linear warm-up).
      The schedule runs on the optimizer's own step counter, which restarts when the optimizer is reset per task.
    decay_steps: length of the cosine decay (required for 'cosine').
    warmup_steps: linear warm-up steps.
    beta_1, beta_2, epsilon: Adam parameters.
    momentum: SGD momentum.
    weight_decay: decoupled weight decay (adamw only).
    task_steps: the run's step count per task (given by the engine; these schedules restart per task and do not use
      it).

  Raises:
    ValueError: unknown optimizer or schedule, or a cosine schedule without decay_steps.
  """
  del task_steps
  lr = scaled_learning_rate(base_learning_rate, global_batch_size, scale_by_batch)
  if schedule == 'constant':
    learning_rate = lr
  elif schedule == 'cosine':
    if not decay_steps:
      raise ValueError(f'schedule=cosine needs decay_steps > 0, got {decay_steps!r}.')
    learning_rate = tf_keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else lr, decay_steps=decay_steps,
        warmup_target=lr if warmup_steps else None, warmup_steps=warmup_steps)
  else:
    raise ValueError(f"Unknown learning-rate schedule {schedule!r}; use 'constant' or 'cosine'.")
  if name == 'adam':
    return tf_keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
  if name == 'adamw':
    return tf_keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay, beta_1=beta_1, beta_2=beta_2,
                                     epsilon=epsilon)
  if name == 'sgd':
    return tf_keras.optimizers.SGD(learning_rate, momentum=momentum)
  raise ValueError(f"Unknown optimizer {name!r}; use 'adam', 'adamw' or 'sgd'.")


def warmup_cosine_adamw(*, global_batch_size: int, task_steps: Sequence[int], learning_rate: float = 1e-3,
                        weight_decay: float = 0.05, warmup_tasks: float = 1.0,
                        no_decay: Sequence[str] = ('bias', 'gamma', 'beta', 'pos_embedding', 'cls')
                        ) -> tf_keras.optimizers.Optimizer:
  """AdamW over a whole run (pretraining): linear warm-up from 0, then cosine decay to 0 at the run's last step.

  The schedule runs on the optimizer's step counter over all tasks together (use it with
  `reset_optimizer_per_task = False`); in pretraining each task is one epoch, so `warmup_tasks` counts epochs.

  Args:
    global_batch_size: examples per step (the learning rate is not scaled by it).
    task_steps: the run's step count per task (the engine passes it).
    learning_rate: peak learning rate.
    weight_decay: decoupled weight decay.
    warmup_tasks: warm-up length in tasks (rounded to whole steps, at the first task's step count).
    no_decay: variable-name parts excluded from weight decay (biases, LayerNorm, position embedding, [CLS]).

  Raises:
    ValueError: no steps to schedule.
  """
  del global_batch_size
  total_steps = int(sum(task_steps))
  if total_steps <= 0:
    raise ValueError(f'warmup_cosine_adamw needs the run\'s step counts, got task_steps={tuple(task_steps)!r}.')
  warmup_steps = int(round(warmup_tasks * task_steps[0]))
  schedule = tf_keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=0.0 if warmup_steps else learning_rate, decay_steps=max(total_steps - warmup_steps, 1),
      warmup_target=learning_rate if warmup_steps else None, warmup_steps=warmup_steps)
  optimizer = tf_keras.optimizers.AdamW(schedule, weight_decay=weight_decay, beta_1=0.9, beta_2=0.999)
  optimizer.exclude_from_weight_decay(var_names=list(no_decay))
  return optimizer


def reset_optimizer(optimizer: tf_keras.optimizers.Optimizer) -> None:
  """Puts the optimizer back in its freshly built state: step counter and every slot (moments) to zero."""
  for v in optimizer.variables:
    v.assign(tf.zeros_like(v))
