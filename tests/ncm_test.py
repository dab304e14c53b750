"""Nearest class mean (SimpleCIL): prototypes and predictions equal a numpy computation, on one replica and two."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from l2p_tf.methods import ncm
from l2p_tf.models import vit as vit_lib
from tests import test_util
from tests.runs import run_experiment

C = 5


def _data(n=24, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.uniform(size=(n, 32, 32, 3)).astype(np.float32)
  labels = rng.integers(0, 3, size=n).astype(np.int32)  # Classes 0..2 trained; 3 and 4 never.
  return images, labels


def _numpy_ncm(features, labels, test_features):
  protos = np.stack([features[labels == c].mean(0) for c in range(3)])
  n = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  return protos, n(test_features) @ n(protos).T


@pytest.mark.parametrize('replicas', [1, 2])
def test_prototypes_and_logits_equal_numpy(replicas):
  strategy = test_util.mirrored_strategy() if replicas == 2 else tf.distribute.OneDeviceStrategy('/cpu:0')
  with strategy.scope():
    method = ncm.NCM()
    method.build(backbone=lambda: vit_lib.VisionTransformer(variant='tiny', image_size=32), num_classes=C,
                 num_tasks=1)
  images, labels = _data()
  ds = tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels,
                                           'label_mask': np.ones((len(labels), C), bool)}).batch(8)

  @tf.function
  def step(batch):
    def fn(b):
      frozen = method.frozen_features(b['image'])
      return method.loss(b, frozen=frozen, task_index=0, global_batch_size=8, num_replicas=replicas).loss
    return strategy.run(fn, args=(batch,))

  for batch in strategy.experimental_distribute_dataset(ds):
    step(batch)
  method.end_task(0)
  features = method.model.feature(images).numpy()
  np.testing.assert_array_equal(method.class_counts(), np.bincount(labels, minlength=C))
  test_images, _ = _data(10, seed=1)
  protos, cos = _numpy_ncm(features, labels, method.model.feature(test_images).numpy())
  np.testing.assert_allclose(method.model.prototypes.numpy()[:3], protos, rtol=1e-5, atol=1e-6)
  logits = method.predict(test_images)['logits'].numpy()
  np.testing.assert_allclose(logits[:, :3], cos, rtol=1e-5, atol=1e-6)
  assert (logits[:, 3:] < -1e8).all()  # Untrained classes are never predicted.
  np.testing.assert_array_equal(logits.argmax(-1), cos.argmax(-1))
  assert method.trainable_variables == [] and method.pool_size == 0
  method.end_task(0)  # Repeatable (a resume between the task's end and its evaluation calls it again).
  np.testing.assert_allclose(method.model.prototypes.numpy()[:3], protos, rtol=1e-5, atol=1e-6)


def test_simplecil_overlay_runs_end_to_end(tmp_path):
  with tfds.testing.mock_data(num_examples=1000):
    res = run_experiment(tmp_path / 'run', 'cifar100_l2p', data_dir=str(tmp_path / 'tfds'),
                         files_after=['methods/simplecil.gin'])
  assert res['complete'] and 'prompt_usage_train' not in res
  # No pool: the three protocols give the same accuracies (predictions do not depend on the batch).
  p = res['protocols']
  assert p['official']['accuracy_matrix'] == p['per_sample']['accuracy_matrix'] == p['mixed']['accuracy_matrix']
  assert p['official']['final']['task_id_acc'] is None
  config = (tmp_path / 'run' / 'config.gin').read_text()
  assert 'augment = False' in config and '@ncm.NCM' in config
  on_disk = json.loads((tmp_path / 'run' / 'results.json').read_text())
  assert on_disk['final']['avg_acc'] == res['final']['avg_acc'] > 0
