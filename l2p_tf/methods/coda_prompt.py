"""CODA-Prompt (Smith et al., CVPR 2023) on the method contract.

The model is `models.coda_model.CodaPromptModel`. Training loss: cross-entropy with each example's label mask (the
original masks past-task logits among the seen classes: effectively the current task's classes) plus
`ortho_coefficient` times the orthogonality penalty (0 in the released runs, where the per-task Gram-Schmidt
re-initialisation replaces it). `begin_task(t)` commits task t-1's components (frozen from then on) and
re-initialises task t's. The query pass runs on frozen weights outside the gradient tape. Only the current task's
components, keys and attention vectors (rows of the trained variables) and the head receive gradients.
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

from l2p_tf import losses
from l2p_tf.methods import base
from l2p_tf.models import coda_model


class CodaPrompt(base.Method):
  """CODA-Prompt.

  Args:
    model: `model(vit=..., num_classes=..., num_tasks=...)` -> a `CodaPromptModel` (gin: components, length,
      layers bound there).
    ortho_coefficient: mu, weight of the orthogonality penalty (official 0.0).
    use_label_mask: class-incremental logit mask in training.
  """

  name = 'CODA-Prompt'
  scalar_names = ('cross_entropy', 'ortho_penalty')

  def __init__(self, *, model: Callable = coda_model.CodaPromptModel, ortho_coefficient: float = 0.0,
               use_label_mask: bool = True):
    super().__init__()
    self._model_factory = model
    self.ortho_coefficient = float(ortho_coefficient)
    self.use_label_mask = use_label_mask

  def build(self, *, backbone: Callable, num_classes: int, num_tasks: int) -> coda_model.CodaPromptModel:
    vit = backbone()
    self.model = self._model_factory(vit=vit, num_classes=num_classes, num_tasks=num_tasks)
    self.backbone = vit
    return self.model

  def frozen_features(self, images, *, backbone_gradients: bool = False) -> Optional[dict]:
    query_pass = self.model.query_pass(images)
    return {'query': query_pass['query']} if backbone_gradients else query_pass

  def loss(self, batch, *, frozen, task_index, global_batch_size, num_replicas) -> base.LossOutput:
    del task_index  # The model's own task (set by begin_task) selects the rows.
    out = self.model(batch['image'], training=True, **({'query_pass': frozen} if frozen is not None else {}))
    logits = out['logits']
    mask = batch['label_mask'] if self.use_label_mask else None
    ce_loss = tf.reduce_sum(losses.cross_entropy(logits, batch['label'], mask)) / global_batch_size
    if self.ortho_coefficient > 0:
      ortho = self.model.ortho_loss()
    else:
      ortho = tf.constant(0.0, tf.float32)
    loss = ce_loss + self.ortho_coefficient * ortho / num_replicas
    masked_logits = losses.mask_logits(logits, mask) if mask is not None else logits
    return base.LossOutput(loss=loss, logits=masked_logits,
                           scalars={'cross_entropy': ce_loss * num_replicas, 'ortho_penalty': ortho})

  def predict(self, images, *, valid=None, selection=None) -> dict:
    del valid, selection  # No selection: every sample weights the components by its own query.
    return {'logits': self.model(images, training=False)['logits']}

  def begin_task(self, t: int) -> None:
    self.model.start_task(t)

  def describe(self) -> str:
    return self.model.summary_line()
