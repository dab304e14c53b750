"""SimpleCIL (Zhou et al., 2023): nearest class mean on the frozen backbone's feature. Nothing trains.

Each class's prototype is the mean of the raw (un-normalised) [CLS] feature of the frozen ViT (its final-LayerNorm
output, the query L2P matches keys with) over the class's training images; prediction is the cosine similarity to
every prototype of a class seen so far (a `CosineLinear` with sigma = 1 whose rows are the prototypes), argmax = the
nearest prototype by cosine. Classes without a prototype yet are never predicted.

The engine runs the task's training steps as for any method; `loss` returns a zero loss and adds the batch's
features to per-class sums and counts. Those are ON_READ variables with SUM aggregation: each replica adds its own
examples and reading them outside a replica context (as `end_task` does) sums over replicas, so the prototypes are
the same under any `tf.distribute` strategy. `end_task` turns the sums into prototypes (sum / count, every class
trained so far); the sums stay in the checkpoint, so a resumed run, mid-task included, ends with the same prototypes.

Matching the original's "test transform, one pass" needs the data pipeline's help: gin_configs/methods/simplecil.gin
trains one epoch (`EPOCHS = 1`) without augmentation (`pipelines.PreprocessConfig.augment = False`). A pass covers
floor(n / global_batch) * global_batch of a task's n images (the last partial batch is dropped, as for training).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras

from l2p_tf.methods import base


class NCMModel(tf_keras.Model):
  """A frozen ViT, per-class feature sums and counts (ON_READ, SUM) and the prototypes they give."""

  def __init__(self, vit, num_classes: int):
    super().__init__(name='ncm')
    self.vit = vit
    self.vit.trainable = False
    dim = vit.hidden_size
    on_read = dict(trainable=False, initializer='zeros', dtype=tf.float32,
                   synchronization=tf.VariableSynchronization.ON_READ, aggregation=tf.VariableAggregation.SUM)
    self.feature_sum = self.add_weight(name='feature_sum', shape=(num_classes, dim), **on_read)
    self.feature_count = self.add_weight(name='feature_count', shape=(num_classes,), **on_read)
    self.prototypes = self.add_weight(name='prototypes', shape=(num_classes, dim), trainable=False,
                                      initializer='zeros', dtype=tf.float32)
    self.has_prototype = self.add_weight(name='has_prototype', shape=(num_classes,), trainable=False,
                                         initializer='zeros', dtype=tf.float32)
    self.num_classes = num_classes

  def feature(self, images) -> tf.Tensor:
    """(B, D) float32: the frozen [CLS] feature (final LayerNorm), no gradient."""
    x = self.vit.embed(tf.cast(images, self.vit.compute_dtype))
    return tf.stop_gradient(tf.cast(self.vit.encode(x, training=False)[:, 0], tf.float32))

  def logits(self, feature) -> tf.Tensor:
    """(B, C): cosine similarity to each prototype; a very negative value for classes without one."""
    cos = tf.matmul(tf.math.l2_normalize(feature, -1), tf.math.l2_normalize(self.prototypes, -1), transpose_b=True)
    return tf.where(self.has_prototype[None, :] > 0, cos, -1e9)

  def accumulate(self, feature, labels) -> None:
    labels = tf.cast(labels, tf.int32)
    self.feature_sum.assign_add(tf.math.unsorted_segment_sum(feature, labels, self.num_classes))
    self.feature_count.assign_add(tf.math.unsorted_segment_sum(tf.ones_like(labels, tf.float32), labels,
                                                               self.num_classes))

  def call(self, images):
    return self.logits(self.feature(images))


class NCM(base.Method):
  """Nearest class mean (SimpleCIL): cosine similarity to per-class mean features; no training."""

  name = 'NCM'
  scalar_names = ()

  def build(self, *, backbone, num_classes, num_tasks) -> NCMModel:
    del num_tasks
    self.backbone = backbone()
    self.model = NCMModel(self.backbone, num_classes)
    return self.model

  @property
  def trainable_variables(self) -> list[tf.Variable]:
    return []

  def frozen_features(self, images, *, backbone_gradients: bool = False) -> Optional[dict]:
    del backbone_gradients  # The feature carries no gradient path either way.
    return {'feature': self.model.feature(images)}

  def loss(self, batch, *, frozen, task_index, global_batch_size, num_replicas) -> base.LossOutput:
    del task_index, global_batch_size, num_replicas
    feature = frozen['feature'] if frozen else self.model.feature(batch['image'])
    self.model.accumulate(feature, batch['label'])
    logits = self.model.logits(feature)  # The prototypes of the tasks before (the train accuracy).
    return base.LossOutput(loss=tf.zeros([], tf.float32), logits=logits, scalars={})

  def predict(self, images, *, valid=None, selection=None) -> dict:
    del valid, selection
    return {'logits': self.model.logits(self.model.feature(images))}

  def end_task(self, t: int) -> None:
    """Prototypes of every class trained so far (repeatable: the sums are cumulative)."""
    del t
    total = self.model.feature_sum.numpy()  # Outside a replica context: summed over replicas.
    count = self.model.feature_count.numpy()
    self.model.prototypes.assign(total / np.maximum(count, 1.0)[:, None])
    self.model.has_prototype.assign((count > 0).astype(np.float32))

  def class_counts(self) -> np.ndarray:
    """Training images each class's prototype averages (summed over replicas)."""
    return self.model.feature_count.numpy()

  def describe(self) -> str:
    return (f'NCM (SimpleCIL): no trainable parameters; cosine to {self.model.num_classes} class means of the '
            f'frozen {self.backbone.hidden_size}-d [CLS] feature')
