"""Tests of the tfds builders in datasets/: DomainNet on its dummy data, local-file builders on generated files, and
Split CIFAR-100 from the real files in ../shared/data (skipped when absent).
"""

import gzip
import os
import pickle
import struct
import tempfile
import unittest

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import datasets  # pylint: disable=unused-import  # Registers the builders.
from datasets.domainnet.domainnet_dataset_builder_test import DomainnetContinualTest  # pylint: disable=unused-import
from l2p_tf.data import benchmarks
from l2p_tf.data import pipelines
from l2p_tf.data import sources
from tests import test_util


def _write_idx(path, array):
  header = struct.pack('>HBB', 0, 0x08, array.ndim) + struct.pack('>' + 'I' * array.ndim, *array.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def _prepared(name, manual_dir, data_dir):
  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def _by_image(builder, split):
  images, labels = sources.load_arrays(builder, split)
  return {img.tobytes(): int(lab) for img, lab in zip(images, labels)}


class LocalBuildersTest(tf.test.TestCase):
  """Each builder on a few generated examples in the standard layout; features equal tfds's own builders'."""

  def setUp(self):
    super().setUp()
    self.manual = tempfile.mkdtemp()
    self.data_dir = tempfile.mkdtemp()
    self.rng = np.random.default_rng(0)

  def _assert_same_features(self, local, reference_name):
    ref = tfds.builder(reference_name, data_dir=self.data_dir).info.features  # No download: info only.
    self.assertEqual(sorted(local.info.features.keys()), sorted(ref.keys()))
    for key in ref.keys():
      self.assertEqual(type(local.info.features[key]), type(ref[key]), key)
      if isinstance(ref[key], tfds.features.Image):
        self.assertEqual(local.info.features[key].shape, ref[key].shape)
        self.assertEqual(local.info.features[key].dtype, ref[key].dtype)
      if isinstance(ref[key], tfds.features.ClassLabel):
        self.assertEqual(local.info.features[key].num_classes, ref[key].num_classes)

  def test_cifar100_local(self):
    folder = os.path.join(self.manual, 'cifar-100-python')
    os.makedirs(folder)
    data = {}
    for split, n in (('train', 6), ('test', 4)):
      images = self.rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
      fine = self.rng.integers(0, 100, n).tolist()
      rows = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # Channel-major, as the official files.
      with open(os.path.join(folder, split), 'wb') as f:
        pickle.dump({'data': rows, 'fine_labels': fine, 'coarse_labels': [l // 5 for l in fine]}, f)
      data[split] = {img.tobytes(): l for img, l in zip(images, fine)}
    with open(os.path.join(folder, 'meta'), 'wb') as f:
      pickle.dump({'fine_label_names': [f'fine{i}' for i in range(100)],
                   'coarse_label_names': [f'coarse{i}' for i in range(20)]}, f)
    builder = _prepared('cifar100_local', self.manual, self.data_dir)
    self._assert_same_features(builder, 'cifar100')
    self.assertEqual(builder.info.features['label'].names[3], 'fine3')
    for split in ('train', 'test'):
      self.assertEqual(_by_image(builder, split), data[split])

  def test_cifar10_local(self):
    folder = os.path.join(self.manual, 'cifar-10-batches-py')
    os.makedirs(folder)
    expected = {}
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
      images = self.rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
      labels = self.rng.integers(0, 10, 2).tolist()
      with open(os.path.join(folder, name), 'wb') as f:
        pickle.dump({'data': images.transpose(0, 3, 1, 2).reshape(2, 3072), 'labels': labels}, f)
      split = 'test' if name == 'test_batch' else 'train'
      expected.setdefault(split, {}).update({img.tobytes(): l for img, l in zip(images, labels)})
    with open(os.path.join(folder, 'batches.meta'), 'wb') as f:
      pickle.dump({'label_names': ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                                   'truck']}, f)
    builder = _prepared('cifar10_local', self.manual, self.data_dir)
    self._assert_same_features(builder, 'cifar10')
    self.assertEqual(builder.info.splits['train'].num_examples, 10)
    for split in ('train', 'test'):
      self.assertEqual(_by_image(builder, split), expected[split])

  def _idx_files(self, folder, prefixes=('train', 't10k')):
    os.makedirs(folder)
    expected = {}
    for prefix in prefixes:
      images = self.rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
      labels = self.rng.integers(0, 10, 5).astype(np.uint8)
      _write_idx(os.path.join(folder, f'{prefix}-images-idx3-ubyte.gz'), images)
      _write_idx(os.path.join(folder, f'{prefix}-labels-idx1-ubyte.gz'), labels)
      expected['train' if prefix == 'train' else 'test'] = {
          img[..., None].tobytes(): int(l) for img, l in zip(images, labels)}
    return expected

  def test_mnist_and_fashion_mnist_local(self):
    for name, sub, ref in (('mnist_local', 'mnist', 'mnist'), ('fashion_mnist_local', 'fashion-mnist',
                                                               'fashion_mnist')):
      expected = self._idx_files(os.path.join(self.manual, sub))
      builder = _prepared(name, self.manual, self.data_dir)
      self._assert_same_features(builder, ref)
      for split in ('train', 'test'):
        self.assertEqual(_by_image(builder, split), expected[split])
    self.assertEqual(tfds.builder('fashion_mnist_local', data_dir=self.data_dir).info.features['label'].names,
                     tfds.builder('fashion_mnist', data_dir=self.data_dir).info.features['label'].names)

  def test_not_mnist_test_only_and_80_20_cut(self):
    expected = self._idx_files(os.path.join(self.manual, 'notmnist'), prefixes=('t10k',))
    builder = _prepared('not_mnist', self.manual, self.data_dir)
    self.assertEqual(list(builder.info.splits.keys()), ['test'])
    self.assertEqual(builder.info.features['label'].names, list('ABCDEFGHIJ'))
    self.assertEqual(_by_image(builder, 'test'), expected['test'])
    b = benchmarks.five_datasets(datasets=('not_mnist',), data_dir=self.data_dir, manual_dir=self.manual,
                                 preprocess=pipelines.PreprocessConfig(image_size=8))
    self.assertEqual(b.num_train_examples(0) + b.num_eval_examples(0), 5)
    self.assertEqual(b.num_train_examples(0), 4)  # test[:80%] of 5 examples.

  def test_svhn_cropped_local(self):
    import scipy.io  # pylint: disable=g-import-not-at-top
    folder = os.path.join(self.manual, 'svhn')
    os.makedirs(folder)
    expected = {}
    for split in ('train', 'test'):
      images = self.rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
      labels = np.array([[10], [1], [9]], np.uint8)  # 10 stands for digit 0 in the .mat files.
      scipy.io.savemat(os.path.join(folder, f'{split}_32x32.mat'), {'X': images.transpose(1, 2, 3, 0), 'y': labels})
      expected[split] = {img.tobytes(): int(l) % 10 for img, l in zip(images, labels[:, 0])}
    builder = _prepared('svhn_cropped_local', self.manual, self.data_dir)
    self._assert_same_features(builder, 'svhn_cropped')
    for split in ('train', 'test'):
      self.assertEqual(_by_image(builder, split), expected[split])

  def test_fashion_mnist_debian_layout_is_found(self):
    from datasets import local_files  # pylint: disable=g-import-not-at-top
    folder = local_files.find_dataset_dir('fashion_mnist_local', self.manual)
    if os.path.isdir(local_files.FASHION_MNIST_SYSTEM_DIR):
      self.assertEqual(folder, local_files.FASHION_MNIST_SYSTEM_DIR)
    else:
      self.assertIsNone(folder)
    with self.assertRaisesRegex(ValueError, r"'foo'.*cifar100_local"):
      local_files.find_dataset_dir('foo', self.manual)


CIFAR100_DIR = os.path.join(test_util.SHARED_DATA, 'cifar-100-python')


@unittest.skipUnless(os.path.isdir(CIFAR100_DIR), f'real CIFAR-100 not found at {CIFAR100_DIR} (../shared/data)')
class RealCifar100Test(tf.test.TestCase):
  """Split CIFAR-100 from the real files through the local builder (prepared once, into a temporary data_dir)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = tempfile.mkdtemp()
    cls.benchmark = benchmarks.split_cifar100(data_dir=cls.data_dir, manual_dir=test_util.SHARED_DATA,
                                              preprocess=pipelines.PreprocessConfig(image_size=32))
    with open(os.path.join(CIFAR100_DIR, 'train'), 'rb') as f:
      cls.train = pickle.load(f, encoding='latin1')

  def test_tasks_have_5000_train_and_1000_test_images(self):
    for t in range(10):
      self.assertEqual(self.benchmark.num_train_examples(t), 5000)
      self.assertEqual(self.benchmark.num_eval_examples(t), 1000)
    self.assertEqual(self.benchmark.steps_per_task(0, 128), 5000 * 5 // 128)

  def test_labels_match_the_files_and_pixel_means(self):
    part = self.benchmark.train_part(3)
    images = part.images[part.indices]
    labels = part.labels[part.indices]
    self.assertEqual(set(labels.tolist()), set(range(30, 40)))
    by_image = {}
    rows = np.asarray(self.train['data'], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    for img, lab in zip(rows, self.train['fine_labels']):
      by_image.setdefault(img.tobytes(), set()).add(lab)
    for img, lab in zip(images, labels):
      self.assertIn(int(lab), by_image[img.tobytes()])
    # Published CIFAR-100 training-set channel means.
    means = (part.images / 255.0).reshape(-1, 3).mean(0)
    self.assertAllClose(means, [0.5071, 0.4865, 0.4409], atol=1e-3)
    self.assertEqual(self.benchmark.class_names[0], 'apple')

  def test_stream_of_real_task_has_only_its_classes(self):
    ds = self.benchmark.train_dataset(9, global_batch_size=64, seed=0, start_step=70)
    labels = np.concatenate([x['label'].numpy() for x in ds])
    self.assertLen(labels, (5000 * 5 // 64 - 70) * 64)
    self.assertTrue(set(labels.tolist()) <= set(range(90, 100)))


if __name__ == '__main__':
  tf.test.main()
