"""A method defined only in the tests, to show the engine runs any method of the contract with no change to l2p_tf:
a cosine classifier over the frozen backbone's [CLS] feature (a stand-in for nearest class mean with learnt means).

Its per-task hooks count into a variable that lives in the checkpoint, so a resumed run can be checked too.
"""

import numpy as np
import tensorflow as tf
import tf_keras

from l2p_tf.methods import base

GIN_FILE = __file__.replace('.py', '.gin')


class _Model(tf_keras.Model):

  def __init__(self, vit, num_classes):
    super().__init__(name='cosine_classifier')
    self.vit = vit
    self.vit.trainable = False
    self.means = self.add_weight(name='means', shape=(num_classes, vit.hidden_size), trainable=True,
                                 initializer=tf_keras.initializers.RandomNormal(stddev=0.02, seed=0))
    self.hooks = self.add_weight(name='hooks', shape=(2,), trainable=False, initializer='zeros', dtype=tf.float32)

  def feature(self, images):
    return tf.stop_gradient(tf.cast(self.vit.encode(self.vit.embed(images), training=False)[:, 0], tf.float32))

  def logits(self, feature, scale):
    cos = tf.matmul(tf.math.l2_normalize(feature, -1), tf.math.l2_normalize(self.means, -1), transpose_b=True)
    return scale * cos

  def call(self, images):
    return self.logits(self.feature(images), 10.0)


class CosineClassifier(base.Method):
  """Cosine similarity to one learnt vector per class, scaled; the backbone frozen."""

  name = 'CosineClassifier'
  scalar_names = ('cross_entropy',)

  def __init__(self, *, scale: float = 10.0):
    super().__init__()
    self.scale = scale

  def build(self, *, backbone, num_classes, num_tasks):
    del num_tasks
    self.backbone = backbone()
    self.model = _Model(self.backbone, num_classes)
    return self.model

  def frozen_features(self, images, *, backbone_gradients=False):
    return None if backbone_gradients else {'feature': self.model.feature(images)}

  def loss(self, batch, *, frozen, task_index, global_batch_size, num_replicas):
    feature = frozen['feature'] if frozen else self.model.feature(batch['image'])
    logits = self.model.logits(feature, self.scale)
    logits = tf.where(batch['label_mask'], logits, -1e9)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(batch['label'], tf.int32), logits=logits)
    loss = tf.reduce_sum(ce) / global_batch_size
    return base.LossOutput(loss=loss, logits=logits, scalars={'cross_entropy': loss * num_replicas})

  def predict(self, images, *, valid=None, selection=None):
    return {'logits': self.model.logits(self.model.feature(images), self.scale)}

  def begin_task(self, t):
    self.model.hooks.assign_add([1.0, 0.0])

  def end_task(self, t):
    self.model.hooks.assign_add([0.0, 1.0])

  def hook_counts(self) -> np.ndarray:
    return self.model.hooks.numpy()
