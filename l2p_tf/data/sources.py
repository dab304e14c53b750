"""Where a benchmark's examples come from: tfds builders, the decoded splits held once per benchmark, and parts.

* Builders: `get_builder` prepares a tfds builder (local files from `manual_dir` when they are there, a fast failure
  naming the files to place when the download cannot be reached); `load_arrays` decodes a whole split into memory;
  `op_error_text` is a TensorFlow error's message without its decorations.
* Parts, the examples of one task (training) or one evaluation set: `ArrayPart` (rows of in-memory uint8 arrays:
  CIFAR, MNIST, SVHN, notMNIST, Fashion-MNIST) and `StreamPart` (a tfds split streamed with undecoded JPEG bytes:
  DomainNet, too large for memory).
* `Data`: the builders and decoded splits of one benchmark, each loaded once, and `array_part`, which cuts a part out
  of them (class rows, label offset, seeded example cap, validation hold-out); `LazyNames`, class names read on first
  use, so constructing a benchmark reads no data.
* Class subsets and hold-outs: `parse_classes`, `holdout_mask`, `class_rows`, `subsample`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional, Sequence, Union

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

# tfds builders each benchmark may read, by their tfds name (the names the benchmarks use).
TFDS_NAMES = ('cifar100', 'cifar10', 'mnist', 'fashion_mnist', 'svhn_cropped', 'not_mnist', 'domainnet_continual',
              'imagenet_r_local', 'core50_local')
DOMAINNET = 'domainnet_continual'
IMAGENET_R = 'imagenet_r_local'
CORE50 = 'core50_local'


def _local_builders():
  import datasets  # pylint: disable=g-import-not-at-top  # Registers the local builders with tfds.
  return datasets.local_files


# ---------------------------------------------------------------------------------------------------------------------
# Builders.


def get_builder(name: str, *, data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
                prepare: bool = True) -> tfds.core.DatasetBuilder:
  """Returns a prepared tfds builder for `name`, reading local files when `manual_dir` holds them.

  With `manual_dir`, CIFAR-100/10, MNIST, Fashion-MNIST, SVHN and notMNIST come from the local-file builders of
  `datasets/local_files.py` when their files are there (layout in docs/data.md); otherwise tfds's own builder
  downloads them. notMNIST and (with files present) DomainNet always read `manual_dir`.

  Args:
    name: one of `TFDS_NAMES`.
    data_dir: where tfds writes and reads prepared data (`--tfds_data_dir`); None means tfds's default.
    manual_dir: directory with the standard downloads (`--tfds_manual_dir`).
    prepare: run `download_and_prepare` (a no-op when already prepared).

  Returns:
    The builder.

  Raises:
    ValueError: if `name` is unknown.
    RuntimeError: if preparing fails (typically no network); the message says which files to place where.
  """
  if name not in TFDS_NAMES:
    raise ValueError(f'unknown dataset {name!r}; known: {list(TFDS_NAMES)}')
  local = _local_builders()
  builder_name = name
  if name == 'not_mnist' or (manual_dir and name in local.LOCAL_BUILDERS
                             and local.find_dataset_dir(local.LOCAL_BUILDERS[name], manual_dir)):
    builder_name = local.LOCAL_BUILDERS[name]
  elif (name in local.LOCAL_BUILDERS and not _mocked() and _is_prepared(local.LOCAL_BUILDERS[name], data_dir)
        and not _is_prepared(name, data_dir)):
    builder_name = local.LOCAL_BUILDERS[name]  # Prepared from local files earlier (l2p_tf.prepare_data): no download.
  builder = tfds.builder(builder_name, data_dir=data_dir)
  if prepare:
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    if builder_name == name and name in local.LOCAL_BUILDERS:
      logging.info('Preparing %s with tfds (downloads unless already prepared in %s); offline, %s', name,
                   data_dir, local.expected_files_message(local.LOCAL_BUILDERS[name], manual_dir))
    if name in local.LOCAL_BUILDERS:
      hint = local.expected_files_message(local.LOCAL_BUILDERS[name], manual_dir)
    elif name in (IMAGENET_R, CORE50):
      archive = 'imagenet-r.tar' if name == IMAGENET_R else 'core50_128x128.zip'
      hint = (f'place {archive} (or its extracted folder) in {manual_dir or "<manual_dir>"} and pass '
              '--tfds_manual_dir')
    else:
      hint = ('place real.zip ... sketch.zip and real_train.txt ... sketch_test.txt (datasets/domainnet/README.md) '
              f'in {manual_dir or "<manual_dir>"} and pass --tfds_manual_dir')
    url = _download_url(builder, manual_dir)
    if url and not _reachable(url):
      # tfds would retry the download for minutes before failing; say now what to do instead.
      raise RuntimeError(f'dataset {name!r} is not prepared in {builder.data_dir} and its download ({url}) cannot be '
                         f'reached (no network?). To run offline, {hint}; or prepare it on a machine with network '
                         '(python -m l2p_tf.prepare_data, or one run there) and pass that folder as --tfds_data_dir.')
    try:
      builder.download_and_prepare(download_config=config)
    except Exception as e:  # pylint: disable=broad-except  # Re-raised with what to do about it.
      raise RuntimeError(f'could not prepare dataset {name!r} (builder {builder_name!r}, data_dir {data_dir!r}): '
                         f'{type(e).__name__}: {e}. To run offline, {hint}.') from e
  return builder


def _mocked() -> bool:
  """Whether tfds.testing.mock_data is active (nothing is read from or written to a data directory then)."""
  return getattr(tfds.core.DatasetBuilder.download_and_prepare, '__module__', '').startswith(
      'tensorflow_datasets.testing')


def _is_prepared(name: str, data_dir: Optional[str]) -> bool:
  try:
    return tfds.builder(name, data_dir=data_dir).is_prepared()
  except Exception:  # pylint: disable=broad-except  (unknown or unreadable: not prepared)
    return False


def _download_url(builder: tfds.core.DatasetBuilder, manual_dir: Optional[str] = None) -> Optional[str]:
  """The first URL a real (not mocked) tfds download of an unprepared `builder` would fetch; None otherwise.

  Builders without recorded checksums (DomainNet) name their URLs with `download_urls(manual_dir)`: none when the
  manual directory holds the files.
  """
  if getattr(type(builder).download_and_prepare, '__module__', '').startswith('tensorflow_datasets.testing'):
    return None  # tfds.testing.mock_data: nothing is downloaded.
  try:
    if builder.is_prepared():
      return None
    urls = list(getattr(builder, 'url_infos', None) or ())
    if not urls and hasattr(builder, 'download_urls'):
      urls = list(builder.download_urls(manual_dir))
  except Exception:  # pylint: disable=broad-except  (no checksums file: let tfds itself try)
    return None
  return urls[0] if urls else None


def _reachable(url: str, timeout: float = 10.0) -> bool:
  """Whether an HTTP(S) connection to `url` can be made (proxies from the environment honoured, as tfds does)."""
  import requests  # pylint: disable=g-import-not-at-top
  try:
    requests.head(url, timeout=timeout, allow_redirects=True)
  except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
    return False
  except requests.exceptions.RequestException:
    pass  # Reached something; whether the file is there is tfds's business.
  return True


def op_error_text(e: Exception) -> str:
  """A TensorFlow error's first line without its function-node and op decorations."""
  text = str(e).splitlines()[0] if str(e) else type(e).__name__
  text = re.sub(r'\{\{[^}]*\}\}\s*', '', text)
  return re.sub(r'\s*\[Op:[^\]]*\].*$', '', text).strip()[:300]


def load_arrays(builder: tfds.core.DatasetBuilder, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Decodes a whole split into memory.

  Args:
    builder: a prepared builder with `image` and `label` features.
    split: tfds split (slicing allowed, e.g. 'test[:80%]').

  Returns:
    (images uint8 (N, H, W, C), labels int64 (N,)), in tfds's deterministic file order.

  Raises:
    RuntimeError: a prepared file is corrupt (the message says what to delete).
    ValueError: the split is empty.
  """
  images, labels = [], []
  ds = builder.as_dataset(split=split, shuffle_files=False)
  ds = ds.map(lambda x: (x['image'], x['label'])).batch(4096)
  try:
    for image, label in tfds.as_numpy(ds):
      images.append(image)
      labels.append(label)
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    bad = find_corrupt_record_file(builder.data_dir, builder.name, split)
    raise RuntimeError(f'dataset {builder.name!r} in {builder.data_dir} is corrupt: reading split {split!r} failed '
                       f'({type(e).__name__}: {op_error_text(e)}{f" in {bad}" if bad else ""}). Delete '
                       f'{builder.data_dir} and rerun to prepare it again.') from None
  if not images:
    raise ValueError(f'split {split!r} of {builder.name!r} is empty')
  return np.concatenate(images).astype(np.uint8), np.concatenate(labels).astype(np.int64)


def find_corrupt_record_file(data_dir: str, name: str, split: str) -> Optional[str]:
  """The first tfrecord file of `split` in a prepared tfds `data_dir` that cannot be read to its end, or None."""
  base = re.split(r'[\[+]', split)[0]
  try:
    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, f'{name}-{base}.tfrecord*')))
  except tf.errors.OpError:
    return None
  for path in files:
    try:
      for _ in tf.data.TFRecordDataset(path):
        pass
    except tf.errors.OpError:
      return path
  return None


def has_split(builder: tfds.core.DatasetBuilder, split: str) -> bool:
  """Whether a prepared builder has `split` (a mocked builder claims every split)."""
  try:
    return split in builder.info.splits
  except Exception:  # pylint: disable=broad-except
    return True


# ---------------------------------------------------------------------------------------------------------------------
# Parts: the examples of one task (training) or one evaluation set.


@dataclasses.dataclass(eq=False)
class ArrayPart:
  """Rows `indices` of in-memory arrays (shared between parts; never copied).

  Attributes:
    images: uint8 (N, H, W, C).
    labels: int (N,), global label ids (offsets already added).
    indices: int (n,), the rows of this part.
  """
  images: np.ndarray
  labels: np.ndarray
  indices: np.ndarray

  @property
  def num_examples(self) -> int:
    return int(len(self.indices))


def concat_array_parts(parts: Sequence[ArrayPart]) -> ArrayPart:
  """The rows of several array parts as one part, for data sets of different image geometry (the joint run of a
  multi-domain benchmark). Smaller images are zero-padded, centred, to the largest height and width, and grayscale
  becomes RGB by repeating the channel: the same image the input pipeline makes of each part alone, since its pad /
  centre-crop (`tf.image.resize_with_crop_or_pad`, offsets (target - size) // 2) composes with this padding, and it
  repeats a single channel the same way. Copies only the selected rows."""
  height = max(p.images.shape[1] for p in parts)
  width = max(p.images.shape[2] for p in parts)
  channels = max(p.images.shape[3] if p.images.ndim == 4 else 1 for p in parts)
  images, labels = [], []
  for p in parts:
    rows = p.images[p.indices]
    if rows.ndim == 3:
      rows = rows[..., None]
    h, w = rows.shape[1:3]
    top, left = (height - h) // 2, (width - w) // 2
    rows = np.pad(rows, ((0, 0), (top, height - h - top), (left, width - w - left), (0, 0)))
    if rows.shape[3] != channels:
      rows = np.repeat(rows, channels, axis=3)
    images.append(rows.astype(np.uint8, copy=False))
    labels.append(np.asarray(p.labels)[p.indices].astype(np.int64))
  total = sum(len(x) for x in labels)
  return ArrayPart(images=np.concatenate(images), labels=np.concatenate(labels),
                   indices=np.arange(total, dtype=np.int64))


@dataclasses.dataclass(eq=False)
class StreamPart:
  """Examples streamed from a tfds split, optionally restricted to some classes.

  Attributes:
    builder: prepared builder.
    split: tfds split expression.
    num_examples: examples after the class filter and the cap.
    classes: keep only these global labels (None: all).
    label_offset: added to tfds's label.
    max_examples: keep only the first this many (after filtering; None: all).
  """
  builder: tfds.core.DatasetBuilder
  split: str
  num_examples: int
  classes: Optional[np.ndarray] = None
  label_offset: int = 0
  max_examples: Optional[int] = None

  def records(self) -> tf.data.Dataset:
    """{'image': encoded bytes, 'label': int64 global} in tfds's deterministic order."""
    ds = self.builder.as_dataset(split=self.split, shuffle_files=False, decoders={'image': tfds.decode.SkipDecoding()})
    offset = self.label_offset
    ds = ds.map(lambda x: {'image': x['image'], 'label': tf.cast(x['label'], tf.int64) + offset})
    if self.classes is not None:
      allowed = tf.constant(np.asarray(self.classes, np.int64))
      ds = ds.filter(lambda x: tf.reduce_any(tf.equal(allowed, x['label'])))
    if self.max_examples is not None:
      ds = ds.take(self.max_examples)
    return ds


Part = Union[ArrayPart, StreamPart]


def count_stream_labels(builder: tfds.core.DatasetBuilder, split: str, num_classes: int) -> np.ndarray:
  """Per-class example counts of a split, reading labels only (images are not decoded)."""
  ds = builder.as_dataset(split=split, shuffle_files=False, decoders={'image': tfds.decode.SkipDecoding()})
  counts = np.zeros(num_classes, np.int64)
  for labels in tfds.as_numpy(ds.map(lambda x: x['label']).batch(65536)):
    counts += np.bincount(labels, minlength=num_classes)[:num_classes]
  return counts


# ---------------------------------------------------------------------------------------------------------------------
# Class subsets, hold-outs and example caps.


def subsample(indices: np.ndarray, limit: Optional[int], *, seed: int) -> np.ndarray:
  """A seeded random subset of `limit` rows (kept in their original order), or all rows when limit is None.

  Raises:
    ValueError: if `limit` is not positive.
  """
  if limit is None or limit >= len(indices):
    return indices
  if limit <= 0:
    raise ValueError(f'example limit must be positive, got {limit!r}')
  keep = np.sort(np.random.default_rng(seed).permutation(len(indices))[:limit])
  return indices[keep]


def class_rows(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
  """Rows whose label is in `classes`, in file order."""
  return np.flatnonzero(np.isin(labels, np.asarray(classes))).astype(np.int64)


def default_data_dir() -> Optional[str]:
  """`$TFDS_DATA_DIR` when set (tfds's own default otherwise)."""
  return os.environ.get('TFDS_DATA_DIR')


def parse_classes(spec, num_classes: int) -> Optional[np.ndarray]:
  """Reads a class subset: None (every class), 'a-b' (inclusive range), 'a,b,c', or a sequence of ints.

  Returns:
    int64 array of distinct label ids in the given order, or None for every class.

  Raises:
    ValueError: a malformed spec, a repeated id, or an id outside [0, num_classes).
  """
  if spec is None:
    return None
  try:
    if isinstance(spec, str):
      ids = []
      for piece in spec.replace(' ', '').split(','):
        if '-' in piece:
          lo, hi = (int(x) for x in piece.split('-'))
          if hi < lo:
            raise ValueError
          ids.extend(range(lo, hi + 1))
        else:
          ids.append(int(piece))
    else:
      ids = [int(c) for c in spec]
  except (TypeError, ValueError):
    raise ValueError(f"classes={spec!r} is not a class subset; write e.g. '0-49', '0,5,7' or a list of ints.") from None
  arr = np.asarray(ids, np.int64)
  if not len(arr):
    raise ValueError(f'classes={spec!r} selects no class.')
  bad = arr[(arr < 0) | (arr >= num_classes)]
  if len(bad):
    raise ValueError(f'classes={spec!r} has ids {sorted(set(bad.tolist()))} outside [0, {num_classes}).')
  if len(np.unique(arr)) != len(arr):
    raise ValueError(f'classes={spec!r} repeats a class id.')
  return arr


def holdout_mask(labels: np.ndarray, fraction: float, *, seed: int) -> np.ndarray:
  """bool (N,): a seeded `fraction` of every class's rows (at least one per class), the validation hold-out.

  Raises:
    ValueError: if `fraction` is not in (0, 1).
  """
  if not 0.0 < fraction < 1.0:
    raise ValueError(f'validation_fraction must be in (0, 1), got {fraction!r}')
  labels = np.asarray(labels)
  mask = np.zeros(len(labels), bool)
  rng = np.random.default_rng(seed)
  for c in np.unique(labels):
    rows = np.flatnonzero(labels == c)
    k = max(1, int(round(fraction * len(rows))))
    mask[rng.permutation(rows)[:k]] = True
  return mask


# ---------------------------------------------------------------------------------------------------------------------
# Data access shared by the benchmark factories.


class Data:
  """Prepared builders and decoded splits, loaded once per benchmark."""

  def __init__(self, data_dir: Optional[str], manual_dir: Optional[str]):
    self.data_dir = data_dir or default_data_dir()
    self.manual_dir = manual_dir
    self._builders = {}
    self._arrays = {}

  def builder(self, name: str):
    if name not in self._builders:
      self._builders[name] = get_builder(name, data_dir=self.data_dir, manual_dir=self.manual_dir)
    return self._builders[name]

  def arrays(self, name: str, split: str, subset: Optional[tuple[int, ...]] = None) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of a split; with `subset`, labels become positions in it (-1 for every other class)."""
    key = (name, split, subset)
    if key not in self._arrays:
      if subset is None:
        self._arrays[key] = load_arrays(self.builder(name), split)
      else:
        images, labels = self.arrays(name, split)
        lut = np.full(int(labels.max()) + 1, -1, np.int64)
        lut[list(subset)] = np.arange(len(subset))
        self._arrays[key] = images, lut[labels]
    return self._arrays[key]

  def holdout(self, name: str, fraction: float, seed: int) -> np.ndarray:
    """The validation rows (bool over the training split) of data set `name`."""
    key = ('holdout', name, fraction, seed)
    if key not in self._arrays:
      self._arrays[key] = holdout_mask(self.arrays(name, self.split_names(name)[0])[1], fraction, seed=seed)
    return self._arrays[key]

  def label_names(self, name: str) -> list[str]:
    return list(self.builder(name).info.features['label'].names)

  def split_names(self, name: str) -> tuple[str, str]:
    """(train split, test split); notMNIST without a train split is cut 80/20 from its test sample."""
    if name == 'not_mnist' and not has_split(self.builder(name), 'train'):
      return 'test[:80%]', 'test[80%:]'
    return 'train', 'test'

  def label_counts(self, name: str, split: str, num_classes: int) -> np.ndarray:
    """Per-class example counts of a streamed split of data set `name` (labels only), counted once."""
    key = ('counts', split)
    if key not in self._arrays:
      self._arrays[key] = count_stream_labels(self.builder(name), split, num_classes)
    return self._arrays[key]


def array_part(data: Data, name: str, split_index: int, *, classes=None, offset: int = 0,
                limit: Optional[int] = None, seed: int = 0, subset: Optional[tuple[int, ...]] = None,
                validation: Optional[tuple[float, int]] = None) -> ArrayPart:
  """Rows of one split of data set `name` (split_index 0 = train, 1 = test).

  `subset` relabels to positions in it (see `Data.arrays`). `validation=(fraction, seed)` takes both parts from
  the training split: split_index 1 is then the held-out validation rows and split_index 0 the rest.
  """
  split = data.split_names(name)[0 if validation else split_index]
  images, labels = data.arrays(name, split, subset)
  if offset:
    labels = labels + offset  # A new array, shared by the parts of this data set through the cache below.
  rows = (np.flatnonzero(labels >= 0).astype(np.int64) if classes is None
          else class_rows(labels, classes))
  if validation:
    held = data.holdout(name, *validation)[rows]
    rows = rows[held if split_index == 1 else ~held]
  rows = subsample(rows, limit, seed=seed)
  return ArrayPart(images=images, labels=labels, indices=rows)


class LazyNames(list):
  """Class names read from the builders on first use (constructing a benchmark reads no data)."""

  def __init__(self, data: Data, names: Union[str, Sequence[str]], num_classes: int,
               subset: Optional[Sequence[int]] = None):
    super().__init__()
    self._data, self._names, self._n = data, names, num_classes
    self._subset = subset
    self._loaded = False

  def _load(self):
    if not self._loaded:
      self._loaded = True
      if isinstance(self._names, str):
        names = self._data.label_names(self._names)
        super().extend(names if self._subset is None else [names[i] for i in self._subset])
      else:
        for n in self._names:
          super().extend(f'{n}/{c}' for c in self._data.label_names(n))

  def __len__(self):
    return self._n if not self._loaded else super().__len__()

  def __getitem__(self, i):
    self._load()
    return super().__getitem__(i)

  def __iter__(self):
    self._load()
    return super().__iter__()

  def __repr__(self):
    return f'<{self._n} class names, loaded on first use>' if not self._loaded else super().__repr__()
