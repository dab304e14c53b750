"""tfds -> per-task examples -> deterministic, resumable, per-replica batches.

Two kinds of sources:

* `ArrayPart` (CIFAR, MNIST, SVHN, notMNIST, Fashion-MNIST): the decoded split is held in memory once as a uint8
  array (50,000 CIFAR images are 150 MB; the 224x224 crops are never cached). A training run is a *plan*: an int
  array `(steps, global_batch)` of row ids, computed in numpy from seeded permutations. Batch k of the plan is the
  same whatever step the run starts from, so resuming at `start_step` just slices the plan (skipping costs nothing),
  and each element's augmentation is a stateless function of (seed, task, element index).
* `StreamPart` (DomainNet): images too large for memory stay in tfds's files and are streamed with undecoded JPEG
  bytes (`tfds.decode.SkipDecoding`), shuffled per epoch with a seeded buffer. Resuming skips encoded records before
  decoding or augmenting anything.

Sharding: with `num_input_pipelines` P > 1 (multi-worker), pipeline p takes, from every global batch, the slice of
`R * b` elements that belongs to its R local replicas (b = per-replica batch). The pipeline yields per-replica batches
in replica order, which is how `strategy.distribute_datasets_from_function` hands them out. So the global batch of a
step is the same set of examples for any number of workers.

Evaluation pads each set up to a multiple of the global batch with `valid=False` examples, so every replica and every
pipeline runs the same number of batches and every test example is counted exactly once.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from l2p_tf import preprocessing

# tfds builders each benchmark may read, by their tfds name (the names the benchmarks use).
TFDS_NAMES = ('cifar100', 'cifar10', 'mnist', 'fashion_mnist', 'svhn_cropped', 'not_mnist', 'domainnet_continual')
DOMAINNET = 'domainnet_continual'


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
  builder = tfds.builder(builder_name, data_dir=data_dir)
  if prepare:
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    if builder_name == name and name in local.LOCAL_BUILDERS:
      logging.info('Preparing %s with tfds (downloads unless already prepared in %s); offline, %s', name,
                   data_dir, local.expected_files_message(local.LOCAL_BUILDERS[name], manual_dir))
    if name in local.LOCAL_BUILDERS:
      hint = local.expected_files_message(local.LOCAL_BUILDERS[name], manual_dir)
    else:
      hint = ('place real.zip ... sketch.zip and real_train.txt ... sketch_test.txt (datasets/domainnet/README.md) '
              f'in {manual_dir or "<manual_dir>"} and pass --tfds_manual_dir')
    url = _download_url(builder)
    if url and not _reachable(url):
      # tfds would retry the download for minutes before failing; say now what to do instead.
      raise RuntimeError(f'dataset {name!r} is not prepared in {builder.data_dir} and its download ({url}) cannot be '
                         f'reached (no network?). To run offline, {hint}; or prepare it on a machine with network '
                         '(tfds build, or one run there) and pass that folder as --tfds_data_dir.')
    try:
      builder.download_and_prepare(download_config=config)
    except Exception as e:  # pylint: disable=broad-except  # Re-raised with what to do about it.
      raise RuntimeError(f'could not prepare dataset {name!r} (builder {builder_name!r}, data_dir {data_dir!r}): '
                         f'{type(e).__name__}: {e}. To run offline, {hint}.') from e
  return builder


def _download_url(builder: tfds.core.DatasetBuilder) -> Optional[str]:
  """The first URL a real (not mocked) tfds download of an unprepared `builder` would fetch; None otherwise."""
  if getattr(type(builder).download_and_prepare, '__module__', '').startswith('tensorflow_datasets.testing'):
    return None  # tfds.testing.mock_data: nothing is downloaded.
  try:
    if builder.is_prepared():
      return None
    urls = list(getattr(builder, 'url_infos', None) or ())
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


def count_stream_labels(builder: tfds.core.DatasetBuilder, split: str, num_classes: int) -> np.ndarray:
  """Per-class example counts of a split, reading labels only (images are not decoded)."""
  ds = builder.as_dataset(split=split, shuffle_files=False, decoders={'image': tfds.decode.SkipDecoding()})
  counts = np.zeros(num_classes, np.int64)
  for labels in tfds.as_numpy(ds.map(lambda x: x['label']).batch(65536)):
    counts += np.bincount(labels, minlength=num_classes)[:num_classes]
  return counts


# ---------------------------------------------------------------------------------------------------------------------
# Seeds and plans.


def seed_base(*keys: int) -> int:
  """A 62-bit integer derived from `keys` (run seed, task, ...): the first half of every stateless seed."""
  return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(1, np.uint64)[0] >> 2)


def epoch_plan(num_examples: int, *, steps: int, global_batch_size: int, seed: int, task: int) -> np.ndarray:
  """Positions (into a part's rows) of a multi-epoch run: one seeded permutation per epoch, concatenated.

  Args:
    num_examples: rows in the part.
    steps: optimizer steps.
    global_batch_size: examples per step.
    seed: run seed.
    task: task index (so tasks are shuffled independently).

  Returns:
    int64 (steps, global_batch_size); row k is the global batch of step k.
  """
  total = steps * global_batch_size
  if total == 0:
    return np.zeros((0, global_batch_size), np.int64)
  epochs = math.ceil(total / num_examples)
  order = np.concatenate([np.random.default_rng([seed, task, e]).permutation(num_examples) for e in range(epochs)])
  return order[:total].reshape(steps, global_batch_size)


def _pipeline_geometry(input_context: Optional[tf.distribute.InputContext], global_batch_size: int):
  """(per-replica batch b, replicas per pipeline R, pipeline id p)."""
  ctx = input_context or tf.distribute.InputContext()
  b = ctx.get_per_replica_batch_size(global_batch_size)
  if ctx.num_replicas_in_sync % ctx.num_input_pipelines:
    raise ValueError(f'{ctx.num_replicas_in_sync} replicas do not split evenly over {ctx.num_input_pipelines} '
                     'input pipelines')
  return b, ctx.num_replicas_in_sync // ctx.num_input_pipelines, ctx.input_pipeline_id


def _pipeline_columns(global_batch_size: int, input_context) -> slice:
  b, r, p = _pipeline_geometry(input_context, global_batch_size)
  return slice(p * r * b, (p + 1) * r * b)


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """Preprocessing options shared by every benchmark.

  Attributes:
    image_size: network input side.
    jpeg_round_trip: JPEG-encode the resized training image before cropping (official code).
  """
  image_size: int = 224
  jpeg_round_trip: bool = False


def _finish(ds: tf.data.Dataset, per_replica_batch: int) -> tf.data.Dataset:
  ds = ds.batch(per_replica_batch, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------------------------------
# Datasets from in-memory arrays.


def array_train_dataset(part: ArrayPart, plan: np.ndarray, *, masks: np.ndarray, mask_ids: Optional[np.ndarray],
                        seed: int, input_context: Optional[tf.distribute.InputContext], global_batch_size: int,
                        start_step: int = 0, preprocess: PreprocessConfig = PreprocessConfig(),
                        element_offset: int = 0) -> tf.data.Dataset:
  """Per-replica training batches following `plan`.

  Args:
    part: the examples.
    plan: int (steps, global_batch_size) positions into `part.indices`; row k is step k's global batch.
    masks: bool (M, num_classes), the label masks an element may use.
    mask_ids: int (steps, global_batch_size) row of `masks` for each element, or None (always row 0).
    seed: stateless seed base (see `seed_base`).
    input_context: from `distribute_datasets_from_function` (None: one pipeline, one replica).
    global_batch_size: examples per step over all replicas.
    start_step: first step to produce (resume); earlier rows are sliced off, nothing is computed for them.
    preprocess: image options.
    element_offset: added to each element's index before it seeds augmentation (keeps seeds unique when several
      plans share one seed base).

  Returns:
    A dataset of {'image': float32 (b, S, S, 3), 'label': int32 (b,), 'label_mask': bool (b, C)}, with
    `(steps - start_step) * R` batches (R = replicas fed by this pipeline).
  """
  steps = plan.shape[0]
  if not 0 <= start_step <= steps:
    raise ValueError(f'start_step {start_step} is outside [0, {steps}]')
  b, _, _ = _pipeline_geometry(input_context, global_batch_size)
  cols = _pipeline_columns(global_batch_size, input_context)
  element = np.arange(steps * global_batch_size, dtype=np.int64).reshape(steps, global_batch_size) + element_offset
  if mask_ids is None:
    mask_ids = np.zeros_like(plan)
  rows = np.asarray(part.indices, np.int64)[plan[start_step:, cols].reshape(-1)]
  ds = tf.data.Dataset.from_tensor_slices((rows, mask_ids[start_step:, cols].reshape(-1).astype(np.int64),
                                           element[start_step:, cols].reshape(-1)))
  images = tf.constant(part.images)
  labels = tf.constant(np.asarray(part.labels, np.int32))
  mask_table = tf.constant(np.asarray(masks, bool))

  def fn(row, mask_id, index):
    image = preprocessing.train_preprocess(
        tf.gather(images, row), tf.stack([tf.constant(seed, tf.int64), index]), image_size=preprocess.image_size,
        jpeg_round_trip=preprocess.jpeg_round_trip)
    return {'image': image, 'label': tf.gather(labels, row), 'label_mask': tf.gather(mask_table, mask_id)}

  return _finish(ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), b)


def eval_rows(num_examples: int, global_batch_size: int, input_context) -> tuple[np.ndarray, np.ndarray]:
  """Positions and validity of this pipeline's evaluation elements, padded to a multiple of the global batch.

  Returns:
    (positions int64, valid bool), both flat, in the order this pipeline must emit them.
  """
  padded = max(1, math.ceil(num_examples / global_batch_size)) * global_batch_size
  pos = np.arange(padded, dtype=np.int64)
  valid = pos < num_examples
  pos = np.where(valid, pos, 0)
  cols = _pipeline_columns(global_batch_size, input_context)
  return (pos.reshape(-1, global_batch_size)[:, cols].reshape(-1),
          valid.reshape(-1, global_batch_size)[:, cols].reshape(-1))


def array_eval_dataset(part: ArrayPart, *, input_context: Optional[tf.distribute.InputContext],
                       global_batch_size: int, preprocess: PreprocessConfig = PreprocessConfig()) -> tf.data.Dataset:
  """Finite evaluation batches {'image', 'label', 'valid'}; see the module docstring for the padding."""
  if part.num_examples == 0:
    raise ValueError('evaluation set is empty')
  b, _, _ = _pipeline_geometry(input_context, global_batch_size)
  pos, valid = eval_rows(part.num_examples, global_batch_size, input_context)
  rows = np.asarray(part.indices, np.int64)[pos]
  images = tf.constant(part.images)
  labels = tf.constant(np.asarray(part.labels, np.int32))

  def fn(row, ok):
    image = preprocessing.eval_preprocess(tf.gather(images, row), image_size=preprocess.image_size)
    return {'image': image, 'label': tf.gather(labels, row), 'valid': ok}

  ds = tf.data.Dataset.from_tensor_slices((rows, valid))
  return _finish(ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), b)


# ---------------------------------------------------------------------------------------------------------------------
# Datasets streamed from tfds files (large images).


def _decode(encoded: tf.Tensor) -> tf.Tensor:
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def stream_train_dataset(part: StreamPart, *, steps: int, mask: np.ndarray, seed: int, task: int,
                         input_context: Optional[tf.distribute.InputContext], global_batch_size: int,
                         start_step: int = 0, shuffle_buffer: int = 10_000,
                         preprocess: PreprocessConfig = PreprocessConfig()) -> tf.data.Dataset:
  """Per-replica training batches streamed from tfds: epochs of seeded shuffles, `steps` global batches.

  Args:
    part: the examples.
    steps: optimizer steps of the task.
    mask: bool (num_classes,), every element's label mask.
    seed: run seed (shuffle and augmentation seeds derive from it and `task`).
    task: task index.
    input_context: from `distribute_datasets_from_function`.
    global_batch_size: examples per step.
    start_step: resume point; skipped records are read but never decoded.
    shuffle_buffer: records in the shuffle buffer (encoded bytes, not pixels).
    preprocess: image options.

  Returns:
    Batches as `array_train_dataset`.
  """
  if not 0 <= start_step <= steps:
    raise ValueError(f'start_step {start_step} is outside [0, {steps}]')
  b, r, p = _pipeline_geometry(input_context, global_batch_size)
  total = steps * global_batch_size
  epochs = max(1, math.ceil(total / max(1, part.num_examples)))
  records = part.records()
  shuffle_seeds = tf.constant([seed_base(seed, task, e) for e in range(epochs)], tf.int64)
  augment_seed = seed_base(seed, task)
  ds = tf.data.Dataset.from_tensor_slices(shuffle_seeds).flat_map(
      lambda s: records.shuffle(shuffle_buffer, seed=s, reshuffle_each_iteration=False))
  ds = ds.take(total).enumerate().skip(start_step * global_batch_size)
  if r * b != global_batch_size:
    ds = ds.filter(lambda g, x: (g % global_batch_size) // (r * b) == p)
  mask_t = tf.constant(np.asarray(mask, bool))

  def fn(g, x):
    image = preprocessing.train_preprocess(_decode(x['image']), tf.stack([tf.constant(augment_seed, tf.int64), g]),
                                           image_size=preprocess.image_size,
                                           jpeg_round_trip=preprocess.jpeg_round_trip)
    return {'image': image, 'label': tf.cast(x['label'], tf.int32), 'label_mask': mask_t}

  return _finish(ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), b)


def stream_eval_dataset(part: StreamPart, *, input_context: Optional[tf.distribute.InputContext],
                        global_batch_size: int, preprocess: PreprocessConfig = PreprocessConfig()) -> tf.data.Dataset:
  """Finite, padded evaluation batches streamed from tfds (as `array_eval_dataset`)."""
  if part.num_examples == 0:
    raise ValueError('evaluation set is empty')
  b, r, p = _pipeline_geometry(input_context, global_batch_size)
  n = part.num_examples
  padded = math.ceil(n / global_batch_size) * global_batch_size
  real = part.records().take(n).map(lambda x: (x['image'], x['label'], tf.constant(True)))
  blank = tf.io.encode_png(tf.zeros((1, 1, 3), tf.uint8))
  pad = tf.data.Dataset.from_tensors((blank, tf.constant(0, tf.int64), tf.constant(False))).repeat(padded - n)
  ds = real.concatenate(pad).enumerate()
  if r * b != global_batch_size:
    ds = ds.filter(lambda g, x: (g % global_batch_size) // (r * b) == p)

  def fn(g, x):
    del g
    image = preprocessing.eval_preprocess(_decode(x[0]), image_size=preprocess.image_size)
    return {'image': image, 'label': tf.cast(x[1], tf.int32), 'valid': x[2]}

  return _finish(ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), b)


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
