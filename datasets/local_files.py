"""tfds builders that read the standard downloads of small image data sets from one local directory (no network).

They produce the same features as tfds's own builders (`image` uint8 HxWxC, `label` ClassLabel with the same
names; CIFAR also `id` and, for CIFAR-100, `coarse_label`), so code written against `tfds.builder('cifar100')` works
unchanged on `tfds.builder('cifar100_local')`. notMNIST has no tfds builder at all; `not_mnist` is the only way to
read it.

Layout of the manual directory (`--tfds_manual_dir`, the same layout as `../shared/data`); for each data set the
first folder that exists is used:

    <manual_dir>/cifar-100-python/{train,test,meta}                      cifar100_local  (the "python version")
    <manual_dir>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}   cifar10_local
    <manual_dir>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]  mnist_local
    <manual_dir>/fashion-mnist/ (or fashion_mnist/, or /usr/share/datasets/fashion-mnist/ from
        `apt-get install dataset-fashion-mnist`) with the same IDX names   fashion_mnist_local
    <manual_dir>/notmnist/ (or not_mnist/, notMNIST/) with t10k-* and optionally train-* IDX files   not_mnist
    <manual_dir>/svhn/ (or svhn_cropped/) {train_32x32.mat,test_32x32.mat}  svhn_cropped_local

notMNIST: the public IDX conversion ships a 10,000-image test sample (`t10k-*`, 1,000 letters A-J each) and
sometimes a training set (`train-*`). The builder writes a `test` split from `t10k-*` and a `train` split from
`train-*` when those files exist; `l2p_tf.data.sources` splits `test` 80/20 when there is no `train` split (what
the official L2P code does with its single notMNIST split).
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from typing import Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

FASHION_MNIST_SYSTEM_DIR = '/usr/share/datasets/fashion-mnist'

# Sub-folders of the manual directory searched for each builder, in order. Absolute paths are searched as they are.
SUBDIRS = {
    'cifar100_local': ('cifar-100-python',),
    'cifar10_local': ('cifar-10-batches-py',),
    'mnist_local': ('mnist',),
    'fashion_mnist_local': ('fashion-mnist', 'fashion_mnist', FASHION_MNIST_SYSTEM_DIR),
    'not_mnist': ('notmnist', 'not_mnist', 'notMNIST'),
    'svhn_cropped_local': ('svhn', 'svhn_cropped'),
}
# Files each builder needs (relative to its folder); IDX files may also be gzip-compressed (`.gz`).
REQUIRED_FILES = {
    'cifar100_local': ('train', 'test', 'meta'),
    'cifar10_local': tuple(f'data_batch_{i}' for i in range(1, 6)) + ('test_batch', 'batches.meta'),
    'mnist_local': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 't10k-images-idx3-ubyte.gz',
                    't10k-labels-idx1-ubyte.gz'),
    'fashion_mnist_local': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 't10k-images-idx3-ubyte.gz',
                            't10k-labels-idx1-ubyte.gz'),
    'not_mnist': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
    'svhn_cropped_local': ('train_32x32.mat', 'test_32x32.mat'),
}

FASHION_MNIST_NAMES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
                       'Ankle boot')
NOT_MNIST_NAMES = tuple('ABCDEFGHIJ')


def _exists(path: str) -> bool:
  return tf.io.gfile.exists(path) or (path.endswith('.gz') and tf.io.gfile.exists(path[:-3]))


def find_dataset_dir(builder_name: str, manual_dir: Optional[str]) -> Optional[str]:
  """Returns the folder holding `builder_name`'s files under `manual_dir`, or None when none has them all.

  Args:
    builder_name: one of `SUBDIRS`.
    manual_dir: the manual directory (may be None: only absolute fallbacks such as the Debian Fashion-MNIST folder
      are searched then).

  Raises:
    ValueError: if `builder_name` is unknown.
  """
  if builder_name not in SUBDIRS:
    raise ValueError(f'unknown local builder {builder_name!r}; known: {sorted(SUBDIRS)}')
  for sub in SUBDIRS[builder_name]:
    if os.path.isabs(sub):
      folder = sub
    elif manual_dir:
      folder = os.path.join(os.fspath(manual_dir), sub)
    else:
      continue
    if all(_exists(os.path.join(folder, f)) for f in REQUIRED_FILES[builder_name]):
      return folder
  return None


def expected_files_message(builder_name: str, manual_dir: Optional[str]) -> str:
  """A sentence saying where `builder_name`'s files must be placed (used in errors)."""
  subs = [s for s in SUBDIRS[builder_name] if not os.path.isabs(s)]
  where = os.path.join(os.fspath(manual_dir) if manual_dir else '<manual_dir>', subs[0])
  return (f'place {", ".join(REQUIRED_FILES[builder_name])} in {where}/ and pass --tfds_manual_dir='
          f'{os.fspath(manual_dir) if manual_dir else "<manual_dir>"} (see docs/data.md)')


def _open_maybe_gz(path: str):
  if tf.io.gfile.exists(path):
    f = tf.io.gfile.GFile(path, 'rb')
    return gzip.GzipFile(fileobj=f) if path.endswith('.gz') else f
  if path.endswith('.gz') and tf.io.gfile.exists(path[:-3]):
    return tf.io.gfile.GFile(path[:-3], 'rb')
  raise FileNotFoundError(path)


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (optionally gzip-compressed), e.g. MNIST's `train-images-idx3-ubyte.gz`.

  Args:
    path: the file; when it ends in `.gz` and only the uncompressed file exists, that one is read.

  Returns:
    A uint8 array with the shape stored in the header.

  Raises:
    ValueError: if the header is not that of an unsigned-byte IDX file.
  """
  try:
    with _open_maybe_gz(path) as f:
      data = f.read()
  except (EOFError, OSError, zlib.error) as e:
    if isinstance(e, FileNotFoundError):
      raise
    raise ValueError(f'{path} is truncated or damaged ({type(e).__name__}: {e}); download it again.') from e
  zero, dtype, ndim = struct.unpack('>HBB', data[:4])
  if zero != 0 or dtype != 0x08:
    raise ValueError(f'{path!r} is not an unsigned-byte IDX file (magic {data[:4]!r})')
  shape = struct.unpack('>' + 'I' * ndim, data[4:4 + 4 * ndim])
  size = 4 + 4 * ndim + int(np.prod(shape))
  if len(data) != size:
    raise ValueError(f'{path} is truncated or damaged: its header announces {size} bytes ({shape}), it holds '
                     f'{len(data)}; download it again.')
  return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _load_pickle(path: str) -> dict:
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      return pickle.load(f, encoding='latin1')
  except (EOFError, pickle.UnpicklingError, ValueError, IndexError, KeyError, TypeError) as e:
    raise ValueError(f'{path} is truncated or damaged ({type(e).__name__}: {e}); download it again (docs/data.md '
                     'says which archive holds it).') from e


def _cifar_images(data: np.ndarray) -> np.ndarray:
  """(N, 3072) channel-major rows -> (N, 32, 32, 3)."""
  return np.asarray(data, np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared plumbing: locate the folder in the manual directory or raise an error that says what to put where."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def _folder(self, dl_manager: tfds.download.DownloadManager) -> str:
    try:
      manual_dir = dl_manager.manual_dir
    except (AssertionError, ValueError):  # tfds raises AssertionError when the manual dir is missing or empty.
      manual_dir = None
    folder = find_dataset_dir(self.name, manual_dir)
    if folder is None:
      raise FileNotFoundError(f'{self.name}: files not found; {expected_files_message(self.name, manual_dir)}')
    return folder


class Cifar100Local(_LocalBuilder):
  """CIFAR-100 from the official "python version" folder (`cifar-100-python/`), features as tfds's `cifar100`."""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description='CIFAR-100 read from a local cifar-100-python folder; same features as tfds cifar100.',
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(),
            'image': tfds.features.Image(shape=(32, 32, 3)),
            'label': tfds.features.ClassLabel(num_classes=100),
            'coarse_label': tfds.features.ClassLabel(num_classes=20),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://www.cs.toronto.edu/~kriz/cifar.html',
    )

  def _split_generators(self, dl_manager):
    folder = self._folder(dl_manager)
    meta = _load_pickle(os.path.join(folder, 'meta'))
    self.info.features['label'].names = list(meta['fine_label_names'])
    self.info.features['coarse_label'].names = list(meta['coarse_label_names'])
    return {'train': self._generate_examples(folder, 'train'), 'test': self._generate_examples(folder, 'test')}

  def _generate_examples(self, folder: str, split: str) -> Iterator:
    d = _load_pickle(os.path.join(folder, split))
    images = _cifar_images(d['data'])
    for i, (image, fine, coarse) in enumerate(zip(images, d['fine_labels'], d['coarse_labels'])):
      yield i, {'id': f'{split}_{i:05d}', 'image': image, 'label': int(fine), 'coarse_label': int(coarse)}


class Cifar10Local(_LocalBuilder):
  """CIFAR-10 from the official "python version" folder (`cifar-10-batches-py/`), features as tfds's `cifar10`."""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description='CIFAR-10 read from a local cifar-10-batches-py folder; same features as tfds cifar10.',
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(),
            'image': tfds.features.Image(shape=(32, 32, 3)),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://www.cs.toronto.edu/~kriz/cifar.html',
    )

  def _split_generators(self, dl_manager):
    folder = self._folder(dl_manager)
    meta = _load_pickle(os.path.join(folder, 'batches.meta'))
    self.info.features['label'].names = list(meta['label_names'])
    train = [os.path.join(folder, f'data_batch_{i}') for i in range(1, 6)]
    return {'train': self._generate_examples(train, 'train'),
            'test': self._generate_examples([os.path.join(folder, 'test_batch')], 'test')}

  def _generate_examples(self, paths: Sequence[str], split: str) -> Iterator:
    i = 0
    for path in paths:
      d = _load_pickle(path)
      for image, label in zip(_cifar_images(d['data']), d['labels']):
        yield i, {'id': f'{split}_{i:05d}', 'image': image, 'label': int(label)}
        i += 1


class _IdxBuilder(_LocalBuilder, skip_registration=True):
  """MNIST-style IDX files: `{train,t10k}-images-idx3-ubyte.gz` and `{train,t10k}-labels-idx1-ubyte.gz`."""

  CLASS_NAMES: Optional[Sequence[str]] = None
  DESCRIPTION = ''
  HOMEPAGE = ''
  OPTIONAL_TRAIN = False

  def _info(self) -> tfds.core.DatasetInfo:
    label = (tfds.features.ClassLabel(names=list(self.CLASS_NAMES)) if self.CLASS_NAMES
             else tfds.features.ClassLabel(num_classes=10))
    return self.dataset_info_from_configs(
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({'image': tfds.features.Image(shape=(28, 28, 1)), 'label': label}),
        supervised_keys=('image', 'label'),
        homepage=self.HOMEPAGE,
    )

  def _split_generators(self, dl_manager):
    folder = self._folder(dl_manager)
    splits = {}
    for split, prefix in (('train', 'train'), ('test', 't10k')):
      images = os.path.join(folder, f'{prefix}-images-idx3-ubyte.gz')
      labels = os.path.join(folder, f'{prefix}-labels-idx1-ubyte.gz')
      if split == 'train' and self.OPTIONAL_TRAIN and not (_exists(images) and _exists(labels)):
        continue
      splits[split] = self._generate_examples(images, labels)
    return splits

  def _generate_examples(self, images_path: str, labels_path: str) -> Iterator:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if len(images) != len(labels):
      raise ValueError(f'{images_path!r} has {len(images)} images but {labels_path!r} has {len(labels)} labels')
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {'image': image[..., None], 'label': int(label)}


class MnistLocal(_IdxBuilder):
  """MNIST from local IDX files, features as tfds's `mnist`."""
  DESCRIPTION = 'MNIST read from local IDX files; same features as tfds mnist.'
  HOMEPAGE = 'http://yann.lecun.com/exdb/mnist/'


class FashionMnistLocal(_IdxBuilder):
  """Fashion-MNIST from local IDX files (e.g. Debian's dataset-fashion-mnist), features as tfds's `fashion_mnist`."""
  CLASS_NAMES = FASHION_MNIST_NAMES
  DESCRIPTION = 'Fashion-MNIST read from local IDX files; same features as tfds fashion_mnist.'
  HOMEPAGE = 'https://github.com/zalandoresearch/fashion-mnist'


class NotMnist(_IdxBuilder):
  """notMNIST (letters A-J in many fonts) from IDX files; there is no tfds builder for it."""
  CLASS_NAMES = NOT_MNIST_NAMES
  OPTIONAL_TRAIN = True
  DESCRIPTION = ('notMNIST: 28x28 grayscale glyphs of the letters A-J (labels 0-9) in many fonts, from IDX files. '
                 'The `test` split comes from t10k-*, the `train` split from train-* when present.')
  HOMEPAGE = 'http://yaroslavvb.blogspot.com/2011/09/notmnist-dataset.html'


class SvhnCroppedLocal(_LocalBuilder):
  """SVHN cropped digits from the official `train_32x32.mat` / `test_32x32.mat`, features as tfds's `svhn_cropped`."""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description='SVHN cropped digits read from local .mat files; same features as tfds svhn_cropped.',
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(),
            'image': tfds.features.Image(shape=(32, 32, 3)),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
        homepage='http://ufldl.stanford.edu/housenumbers/',
    )

  def _split_generators(self, dl_manager):
    folder = self._folder(dl_manager)
    return {'train': self._generate_examples(os.path.join(folder, 'train_32x32.mat'), 'train_'),
            'test': self._generate_examples(os.path.join(folder, 'test_32x32.mat'), 'test_')}

  def _generate_examples(self, path: str, prefix: str) -> Iterator:
    import scipy.io  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = scipy.io.loadmat(f)
    images = np.transpose(data['X'], (3, 0, 1, 2))
    for i, (image, label) in enumerate(zip(images, data['y'].reshape(-1))):
      # The .mat files store digit 0 as 10; ids as tfds's svhn_cropped.
      yield i, {'id': f'{prefix}{i:06d}', 'image': image, 'label': int(label) % 10}


LOCAL_BUILDERS = {
    'cifar100': 'cifar100_local',
    'cifar10': 'cifar10_local',
    'mnist': 'mnist_local',
    'fashion_mnist': 'fashion_mnist_local',
    'not_mnist': 'not_mnist',
    'svhn_cropped': 'svhn_cropped_local',
}
