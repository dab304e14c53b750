"""Supervised classification with the ViT's own head: how a backbone is pretrained (`l2p_tf.pretrain`).

Every ViT variable trains; the loss is label-smoothed cross-entropy over all classes (no task mask).
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf
import tf_keras

from l2p_tf.methods import base


class Supervised(base.Method):
  """A `VisionTransformer(num_classes=C)` trained end to end.

  Args:
    label_smoothing: cross-entropy label smoothing.
  """

  name = 'Supervised'
  scalar_names = ('cross_entropy',)

  def __init__(self, *, label_smoothing: float = 0.1):
    super().__init__()
    if not 0.0 <= label_smoothing < 1.0:
      raise ValueError(f'label_smoothing must be in [0, 1), got {label_smoothing!r}.')
    self.label_smoothing = label_smoothing
    self.num_classes = 0

  def build(self, *, backbone: Callable, num_classes: int, num_tasks: int) -> tf_keras.Model:
    del num_tasks
    self.num_classes = num_classes
    self.model = backbone(num_classes=num_classes)
    self.backbone = self.model
    return self.model

  def loss(self, batch, *, frozen, task_index, global_batch_size, num_replicas) -> base.LossOutput:
    del frozen, task_index
    logits = self.model(batch['image'], training=True)
    onehot = tf.one_hot(batch['label'], self.num_classes)
    per_example = tf_keras.losses.categorical_crossentropy(onehot, logits, from_logits=True,
                                                           label_smoothing=self.label_smoothing)
    loss = tf.reduce_sum(per_example) / global_batch_size
    return base.LossOutput(loss=loss, logits=logits, scalars={'cross_entropy': loss * num_replicas})

  def predict(self, images, *, valid=None, selection=None) -> dict:
    del valid, selection
    return {'logits': self.model(images, training=False)}

  def describe(self) -> str:
    params = sum(int(tf.size(v)) for v in self.trainable_variables)
    return f'Supervised ViT-{self.model.variant}: trainable {params:,}'
