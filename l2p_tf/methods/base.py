"""The method contract: what the engine (trainer, evaluator, checkpointing, export) knows about a method.

A continual-learning method is one module. It builds its model on the backbone, names the variables that train,
computes one batch's training loss and metrics, and predicts at evaluation (with the prompt ids it selected, where it
has a pool). The engine never looks inside the model: a method that changes the attention inside the backbone
(prefix tuning) does so in its own `build` / `loss` / `predict`, through the backbone's extension points.

Life cycle, driven by the engine:

    method = Method(**gin_bound_options)                     # no variables yet
    method.build(backbone=vit_factory, num_classes=C, num_tasks=T)   # under strategy.scope() and the dtype policy
    method.begin_task(t)                                     # once, before task t's first step (its effects are
                                                             # in the checkpoint, so a resume does not repeat it)
    frozen = method.frozen_features(batch['image'])           # per step, outside the gradient tape (may be None)
    out = method.loss(batch, frozen=frozen, task_index=..., global_batch_size=B, num_replicas=R)   # inside the tape
    pred = method.predict(images, valid=..., selection=...)  # evaluation and serving; with `fixed=` the features
                                                             # `fixed_features(images)` gave (kept by the evaluator
                                                             # when `frozen_features_are_fixed`)
    method.end_task(t)                                       # after task t's last step, before its evaluation
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras


@dataclasses.dataclass
class LossOutput:
  """One replica batch's training result.

  Attributes:
    loss: scalar float32, this replica's share of the global loss (sum over its examples / global batch, plus any
      regulariser divided by the replica count), so that summing over replicas gives the global loss.
    logits: (b, C) float32 with the training label mask applied (what the training accuracy is measured on).
    scalars: per-step float32 scalars logged as train metrics (e.g. 'cross_entropy', 'reduce_sim'), already in
      per-example units (independent of the replica count).
  """
  loss: tf.Tensor
  logits: tf.Tensor
  scalars: dict


class Method:
  """Base class of a continual-learning method. Subclasses implement `build`, `loss` and `predict`.

  Attributes (after `build`):
    model: the tf_keras model whose variables the checkpoint holds (key 'model').
    backbone: the ViT inside `model` that an original `.npz` initialises on a fresh start (None: no backbone).
  """

  name = 'method'
  # Prompt-selection modes `predict` understands ('batchwise', 'instancewise'); (None,) when it has no pool.
  selections: Sequence[Optional[str]] = (None,)
  # Train metrics `loss` reports in `LossOutput.scalars`.
  scalar_names: Sequence[str] = ()

  def __init__(self):
    self.model: Optional[tf_keras.Model] = None
    self.backbone = None

  def build(self, *, backbone: Callable, num_classes: int, num_tasks: int) -> tf_keras.Model:
    """Creates the model's variables; called once, under the strategy's scope. Returns `self.model`."""
    raise NotImplementedError

  @property
  def trainable_variables(self) -> list[tf.Variable]:
    """The variables the optimizer updates (the gradient tape watches these and nothing else)."""
    return list(self.model.trainable_variables)

  def frozen_features(self, images, *, backbone_gradients: bool = False) -> Optional[dict]:
    """Work on frozen weights that `loss` needs, computed outside the gradient tape (None: nothing).

    Args:
      images: the batch's images.
      backbone_gradients: the trainer also differentiates the frozen parameters (gradient clipping over all
        parameters): return only what `loss` may use without a gradient path to them.
    """
    del images, backbone_gradients
    return None

  def loss(self, batch: dict, *, frozen: Optional[dict], task_index, global_batch_size: int,
           num_replicas: int) -> LossOutput:
    """One replica batch's training loss ({'image', 'label', 'label_mask'} batch); runs inside the tape."""
    raise NotImplementedError

  def predict(self, images, *, valid=None, selection: Optional[str] = None, fixed: Optional[dict] = None) -> dict:
    """Evaluation / serving: {'logits': (B, C) float32} and, for methods with a pool, 'prompt_ids': (B, N) int32.

    Args:
      images: (B, S, S, 3) float32 in [0, 1].
      valid: optional (B,) bool, False for padding examples (they must not influence other examples).
      selection: one of `self.selections`.
      fixed: `self.fixed_features(images)`, computed earlier (and kept) by the evaluator; None computes them here.
        The prediction must be the same either way.
    """
    raise NotImplementedError

  @property
  def frozen_features_are_fixed(self) -> bool:
    """Whether `fixed_features(images)` depends on the images only, for the whole run (the weights it reads never
    train). When True the evaluator computes them once per evaluation set and hands them to every later `predict`
    on that set (`config.Evaluation.reuse_fixed_features`)."""
    return False

  def fixed_features(self, images) -> Optional[dict]:
    """Per-example features (first dimension the batch, small: they are kept for whole evaluation sets) of weights
    that never train, which `predict(..., fixed=...)` takes instead of computing them (None: nothing)."""
    del images
    return None

  def begin_task(self, t: int) -> None:
    """Called once before task t's first step (not again when a run resumes inside task t: what it changes is
    in the checkpoint)."""

  def end_task(self, t: int) -> None:
    """Called after task t's last step, before it is evaluated (again if a run is interrupted in between: it must
    give the same result when repeated from the task-end checkpoint)."""

  @property
  def pool_size(self) -> int:
    """Prompts to count in the selection histograms (0: the method selects no prompts)."""
    return 0

  def prompt_usage(self) -> Optional[np.ndarray]:
    """(num_tasks, pool_size) training selection counts, summed over replicas; None without a pool.

    Reading it may be a collective (MultiWorkerMirrored): every worker calls it at the same points.
    """
    return None

  def check_batch_size(self, per_replica: int, what: str) -> None:
    """Raises ValueError naming `what` when a replica batch of `per_replica` examples does not suit the method."""
    del per_replica, what

  def describe(self) -> str:
    """One line for the log: the method and its trainable parameter counts."""
    return f'{self.name}: trainable {sum(int(np.prod(v.shape)) for v in self.trainable_variables):,}'
