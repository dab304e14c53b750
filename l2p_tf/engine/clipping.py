"""Global-norm gradient clipping over a chosen scope of parameters.

The official L2P code differentiates the loss with respect to every parameter, the frozen backbone's included (a
multi-optimizer then applies the frozen parts with learning rate 0), averages the gradients over devices and clips
them all by one factor

    factor = min(1, max_norm / (norm + 1e-6)),   norm = sqrt(sum over ALL parameters of |g|^2)

so the frozen backbone's gradients, although never applied, shrink the update of the prompts, keys and head. The
scope says which gradients enter `norm`:

* 'all' (official): the trainable variables' and the frozen parameters' (every floating-point, `tf.Variable`-
  trainable variable of the model that is not in its trainable list: the ViT when frozen). Their weight gradients
  are computed only for the norm; that costs time (docs/benchmarks.md) and is never applied.
* 'trainable': the trainable variables' only (prompts, keys, head): cheaper, and what a plain optimizer would clip.

Either way only the trainable variables' gradients are returned, scaled by the same factor. Used by the trainer as

    clip = GlobalNormClip(max_norm=1.0, scope='all', frozen_variables=frozen_parameters(model))
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(clip.sources(trainable))
      loss = ...
    grads, norm = clip(tape, loss, trainable, replica_context=tf.distribute.get_replica_context())
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

SCOPES = ('trainable', 'all')
EPSILON = 1e-6  # Added to the norm, as the official `grad_clip_max_norm / (l2_g + 1e-6)`.


def clip_factor(norm, max_norm: float):
  """min(1, max_norm / (norm + 1e-6)) as a float32 scalar (NaN when `norm` is NaN, 0 when it is Inf)."""
  norm = tf.cast(norm, tf.float32)
  return tf.minimum(tf.constant(1.0, tf.float32), tf.cast(max_norm, tf.float32) / (norm + EPSILON))


def frozen_parameters(model) -> list[tf.Variable]:
  """The model's parameters outside `model.trainable_variables`: what scope 'all' adds to the norm.

  A parameter is a floating-point variable created trainable (`tf.Variable.trainable`; Keras's layer-level
  `trainable = False` freezes a layer without changing it). State such as the prompt pool's usage record is created
  non-trainable and stays out.

  Args:
    model: a tf_keras model.

  Returns:
    The variables, in `model.variables` order, without duplicates.
  """
  trainable = {v.ref() for v in model.trainable_variables}
  out, seen = [], set()
  for v in model.variables:
    if v.ref() in trainable or v.ref() in seen or not v.trainable or not v.dtype.is_floating:
      continue
    seen.add(v.ref())
    out.append(v)
  return out


class GlobalNormClip:
  """Gradients of the trainable variables, clipped by the global norm over `scope`.

  Args:
    max_norm: clip threshold; None or 0 disables the scaling (the norm is still returned, over `scope`).
    scope: 'trainable' or 'all' (see the module docstring).
    frozen_variables: the parameters scope 'all' adds (`frozen_parameters(model)`); ignored for 'trainable'.

  Raises:
    ValueError: unknown `scope` or a negative `max_norm`.
  """

  def __init__(self, *, max_norm: Optional[float] = 1.0, scope: str = 'trainable',
               frozen_variables: Sequence[tf.Variable] = ()):
    if scope not in SCOPES:
      raise ValueError(f'Unknown gradient clip scope {scope!r}; choose one of {SCOPES}.')
    if max_norm is not None and max_norm < 0:
      raise ValueError(f'grad_clip_norm must be positive (or None / 0 to disable clipping), got {max_norm!r}.')
    self.max_norm = max_norm
    self.scope = scope
    self.frozen_variables = list(frozen_variables) if scope == 'all' else []

  @property
  def needs_frozen_gradients(self) -> bool:
    """Whether the frozen parameters' gradients are computed (they must then be read inside the tape)."""
    return bool(self.frozen_variables)

  def sources(self, trainable: Sequence[tf.Variable]) -> list[tf.Variable]:
    """The variables the tape must watch: the trainable ones, then (scope 'all') the frozen parameters."""
    return list(trainable) + self.frozen_variables

  def __call__(self, tape: tf.GradientTape, loss, trainable: Sequence[tf.Variable],
               replica_context: Optional[tf.distribute.ReplicaContext] = None):
    """Differentiates `loss`, sums over replicas, measures the norm over the scope and clips.

    Args:
      tape: the tape that recorded `loss` while watching `self.sources(trainable)`.
      loss: scalar loss of this replica (the replicas' losses add up to the global mean loss).
      trainable: the variables to return gradients for.
      replica_context: sums the gradients over replicas before the norm (the official averages over devices
        first); None for no distribution.

    Returns:
      (gradients of `trainable` (zeros where a variable had none), each multiplied by `clip_factor(norm)`; the
       global norm before clipping, float32 scalar).
    """
    trainable = list(trainable)
    sources = self.sources(trainable)
    grads = tape.gradient(loss, sources)
    grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, sources)]
    if not grads:  # A method with nothing to train (nearest class mean): no gradient, norm 0.
      return [], tf.zeros([], tf.float32)
    if replica_context is not None:
      grads = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    norm = tf.cast(tf.linalg.global_norm(grads), tf.float32)
    grads = grads[:len(trainable)]
    if self.max_norm:
      factor = clip_factor(norm, self.max_norm)
      grads = [g * tf.cast(factor, g.dtype) for g in grads]
    return grads, norm
