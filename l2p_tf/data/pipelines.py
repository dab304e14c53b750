"""Parts -> deterministic, resumable, per-replica tf.data batches (training and evaluation).

Two kinds of parts (`l2p_tf.data.sources`):

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
pipeline runs the same number of batches and every test example is counted exactly once. Every evaluation element,
in a set's own batches or in the mixed stream, carries 'index': its position in its set's order (0 for padding), so
per-example results kept from one evaluation of a set can be found again in any other stream of its examples.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from l2p_tf.data import preprocessing
from l2p_tf.data import sources


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
    jpeg_round_trip: JPEG-encode the resized training image before cropping (official code); the 'resized'
      geometry only.
    crop: geometry (`preprocessing.resolve_crop`): 'auto' (official: 'pad' at 32 px, 'resized' otherwise), 'pad'
      (pad to image_size + 4, random crop, flip; no resize at test) or 'resized' (random-resized crop; resize and
      centre crop at test; the default, the geometry of runs configured before this option existed).
    augment: training images are augmented (True); False gives them the evaluation preprocessing (methods that
      only read features, such as nearest class mean, see the images as at test time).
  """
  image_size: int = 224
  jpeg_round_trip: bool = False
  crop: str = 'resized'
  augment: bool = True

  def __post_init__(self):
    preprocessing.resolve_crop(self.crop, self.image_size)  # Raises on an unknown value.

  def train(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Training preprocessing of one uint8 image with its stateless seed (the evaluation one without `augment`)."""
    if not self.augment:
      return self.eval(image)
    return preprocessing.preprocess_train(image, seed, image_size=self.image_size, crop=self.crop,
                                          jpeg_round_trip=self.jpeg_round_trip)

  def eval(self, image: tf.Tensor) -> tf.Tensor:
    """Evaluation preprocessing of one uint8 image."""
    return preprocessing.preprocess_eval(image, image_size=self.image_size, crop=self.crop)


def _finish(ds: tf.data.Dataset, per_replica_batch: int) -> tf.data.Dataset:
  ds = ds.batch(per_replica_batch, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------------------------------
# Datasets from in-memory arrays.


def array_train_dataset(part: sources.ArrayPart, plan: np.ndarray, *, masks: np.ndarray, mask_ids: Optional[np.ndarray],
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
    image = preprocess.train(tf.gather(images, row), tf.stack([tf.constant(seed, tf.int64), index]))
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


def array_eval_dataset(part: sources.ArrayPart, *, input_context: Optional[tf.distribute.InputContext],
                       global_batch_size: int, preprocess: PreprocessConfig = PreprocessConfig(),
                       task: int = 0) -> tf.data.Dataset:
  """Finite evaluation batches {'image', 'label', 'valid', 'task', 'index'}; see the module docstring for the
  padding and 'index'. `task` is the evaluation set's index, carried by every element (the evaluator counts per
  set)."""
  if part.num_examples == 0:
    raise ValueError('evaluation set is empty')
  b, _, _ = _pipeline_geometry(input_context, global_batch_size)
  pos, valid = eval_rows(part.num_examples, global_batch_size, input_context)
  rows = np.asarray(part.indices, np.int64)[pos]
  images = tf.constant(part.images)
  labels = tf.constant(np.asarray(part.labels, np.int32))

  def fn(row, ok, index):
    image = preprocess.eval(tf.gather(images, row))
    return {'image': image, 'label': tf.gather(labels, row), 'valid': ok, 'task': tf.constant(task, tf.int32),
            'index': index}

  ds = tf.data.Dataset.from_tensor_slices((rows, valid, pos.astype(np.int32)))
  return _finish(ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), b)


# ---------------------------------------------------------------------------------------------------------------------
# Datasets streamed from tfds files (large images).


def _decode(encoded: tf.Tensor) -> tf.Tensor:
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def stream_train_dataset(part: sources.StreamPart, *, steps: int, mask: np.ndarray, seed: int, task: int,
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
    image = preprocess.train(_decode(x['image']), tf.stack([tf.constant(augment_seed, tf.int64), g]))
    return {'image': image, 'label': tf.cast(x['label'], tf.int32), 'label_mask': mask_t}

  return _finish(ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), b)


def stream_eval_dataset(part: sources.StreamPart, *, input_context: Optional[tf.distribute.InputContext],
                        global_batch_size: int, preprocess: PreprocessConfig = PreprocessConfig(),
                        task: int = 0) -> tf.data.Dataset:
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
    image = preprocess.eval(_decode(x[0]))
    index = tf.cast(tf.where(x[2], g, tf.zeros_like(g)), tf.int32)  # Real examples come first, in file order.
    return {'image': image, 'label': tf.cast(x[1], tf.int32), 'valid': x[2], 'task': tf.constant(task, tf.int32),
            'index': index}

  return _finish(ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), b)


# ---------------------------------------------------------------------------------------------------------------------
# The mixed evaluation stream.


def mixed_order(sizes: Sequence[int], seed: int) -> np.ndarray:
  """Which set each element of the mixed stream comes from: every set k appears sizes[k] times, in an order drawn
  with `np.random.default_rng(seed)` (a set's own elements keep their order within it)."""
  choice = np.concatenate([np.full(n, k, np.int64) for k, n in enumerate(sizes)])
  return np.random.default_rng(seed).permutation(choice)


def _set_elements(task: int, part: sources.Part, preprocess: PreprocessConfig, seed: int) -> tf.data.Dataset:
  """One evaluation set's examples, unbatched and unpadded: {'image', 'label', 'valid', 'task', 'index'}; an
  in-memory set in an order drawn from (seed, task), a streamed one in its file order; 'index' is the example's
  position in the set's own evaluation order (`array_eval_dataset`, `stream_eval_dataset`)."""
  task_t = tf.constant(task, tf.int32)
  if isinstance(part, sources.ArrayPart):
    # The permutation of the positions orders the rows as permuting the rows themselves would (same draws).
    order = np.random.default_rng([seed, task]).permutation(part.num_examples)
    rows = np.asarray(part.indices, np.int64)[order]
    images, labels = tf.constant(part.images), tf.constant(np.asarray(part.labels, np.int32))
    return tf.data.Dataset.from_tensor_slices((rows, order.astype(np.int32))).map(
        lambda r, i: {'image': preprocess.eval(tf.gather(images, r)), 'label': tf.gather(labels, r),
                      'valid': tf.constant(True), 'task': task_t, 'index': i},
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return part.records().take(part.num_examples).enumerate().map(
      lambda g, x: {'image': preprocess.eval(_decode(x['image'])), 'label': tf.cast(x['label'], tf.int32),
                    'valid': tf.constant(True), 'task': task_t, 'index': tf.cast(g, tf.int32)},
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def mixed_eval_dataset(parts: Sequence[tuple[int, sources.Part]], *, seed: int,
                       input_context: Optional[tf.distribute.InputContext], global_batch_size: int,
                       preprocess: PreprocessConfig = PreprocessConfig()) -> tf.data.Dataset:
  """The union of several evaluation sets as one stream, shuffled with `seed`, so that no batch belongs to one set.

  Args:
    parts: (evaluation set index, part) pairs; each element carries its set's index as 'task'.
    seed: the fixed shuffle seed (the same stream on every call and every run).
    input_context, global_batch_size, preprocess: as `array_eval_dataset`.

  Returns:
    Finite batches {'image', 'label', 'valid', 'task', 'index'}: every example of every part exactly once, padded with
    `valid=False` examples to a multiple of the global batch.
  """
  if not parts:
    raise ValueError(f'the mixed evaluation stream needs at least one evaluation set, got {list(parts)!r}')
  sizes = [part.num_examples for _, part in parts]
  if 0 in sizes:
    raise ValueError(f'evaluation set {parts[sizes.index(0)][0]} is empty (set sizes {sizes})')
  b, r, p = _pipeline_geometry(input_context, global_batch_size)
  order = mixed_order(sizes, seed)
  n = int(sum(sizes))
  padded = math.ceil(n / global_batch_size) * global_batch_size
  size, pad_task = preprocess.image_size, parts[0][0]
  # Padding is one more source, chosen after every real example (a concatenated padding dataset of the same
  # structure is refused by tf.data at iterator creation, on TF 2.x's dict flattening of the chosen stream).
  pad = tf.data.Dataset.range(padded - n).map(
      lambda _: {'image': tf.zeros((size, size, 3), tf.float32), 'label': tf.constant(0, tf.int32),
                 'valid': tf.constant(False), 'task': tf.constant(pad_task, tf.int32), 'index': tf.constant(0, tf.int32)})
  sets = [_set_elements(k, part, preprocess, seed) for k, part in parts] + [pad]
  choice = np.concatenate([order, np.full(padded - n, len(parts), np.int64)])
  ds = tf.data.Dataset.choose_from_datasets(sets, tf.data.Dataset.from_tensor_slices(choice),
                                            stop_on_empty_dataset=False)
  if r * b != global_batch_size:
    ds = ds.enumerate().filter(lambda g, x: (g % global_batch_size) // (r * b) == p).map(lambda g, x: x)
  return _finish(ds, b)
