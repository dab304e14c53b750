"""Pretraining data as a benchmark the engine runs: one training segment per epoch over a tfds dataset (or a class
subset of one), evaluated on the held-out test images of the same classes after every epoch.

The batches follow one seeded multi-epoch plan over the whole run (`pipelines.epoch_plan`), so segment t, started at
any step, produces exactly the batches an uninterrupted run produces there. Training images get a random-resized
crop, a flip and RandAugment-style operations (`augment.py`), each seeded by (seed, element index) only.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import numpy as np
import tensorflow as tf

from l2p_tf.data import augment
from l2p_tf.data import benchmark
from l2p_tf.data import pipelines
from l2p_tf.data import preprocessing
from l2p_tf.data import sources


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Training augmentation: random-resized crop (area range, 3/4-4/3 aspect), flip, then RandAugment."""
  crop_area_range: tuple[float, float] = (0.35, 1.0)
  flip: bool = True
  randaugment_ops: int = 2
  randaugment_magnitude: float = 5.0


def load_split(dataset: str, split: str, classes, *, data_dir: Optional[str], manual_dir: Optional[str]
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """(images, labels, class names) of a split, restricted to `classes` and relabelled to positions in it."""
  builder = sources.get_builder(dataset, data_dir=data_dir, manual_dir=manual_dir)
  num_classes = builder.info.features['label'].num_classes
  ids = sources.parse_classes(classes, num_classes)
  images, labels = sources.load_arrays(builder, split)
  names = builder.info.features['label'].names
  if ids is None:
    return images, labels.astype(np.int64), list(names)
  lut = np.full(num_classes, -1, np.int64)
  lut[ids] = np.arange(len(ids))
  new = lut[labels]
  keep = np.flatnonzero(new >= 0)
  return images[keep], new[keep], [names[i] for i in ids]


class PretrainingBenchmark(benchmark.TaskAgnosticBenchmark):
  """Supervised training over all classes at once, one segment per epoch (scenario 'task_agnostic': one evaluation
  set, evaluated after every segment)."""

  def __init__(self, *, dataset: str, classes, train_split: str, test_split: str, epochs: int, image_size: int,
               augmentation: Augmentation, data_dir: Optional[str], manual_dir: Optional[str],
               num_classes: int, class_names):
    if not isinstance(epochs, int) or epochs < 1:
      raise ValueError(f'epochs must be a positive whole number, got {epochs!r}.')
    every = tuple(range(num_classes))
    super().__init__(
        name=dataset if classes is None else f'{dataset}[{classes}]', num_classes=num_classes,
        class_names=class_names, tasks=[benchmark.Task(index=e, name=f'epoch_{e + 1}', classes=every)
                                        for e in range(epochs)],
        scenario='task_agnostic', eval_names=[test_split], epochs=1, mask='none',
        preprocess=pipelines.PreprocessConfig(image_size=image_size))
    self.dataset, self.classes_spec = dataset, classes
    self.augmentation = augmentation
    self.image_size = image_size
    self._load = functools.partial(load_split, dataset, classes=classes, data_dir=data_dir, manual_dir=manual_dir)
    self._splits = {'train': train_split, 'test': test_split}
    self._arrays = {}

  def _split(self, which: str) -> tuple[np.ndarray, np.ndarray]:
    if which not in self._arrays:
      images, labels, _ = self._load(self._splits[which])
      self._arrays[which] = (images, labels)
    return self._arrays[which]

  def progress_lines(self, t: int, acc: np.ndarray, final: dict) -> list[str]:
    return [f'[pretrain] epoch {t + 1}/{len(self.tasks)}: test accuracy {acc[t, 0]:.2f}% '
            f'({self.num_eval_examples(0)} images)']

  def eval_lines(self, t: int, acc: np.ndarray) -> list[str]:
    return [f'after epoch {t + 1}: test accuracy {acc[t, 0]:.2f}%']

  def _training_parts(self):
    images, labels = self._split('train')
    return [('the training data', sources.ArrayPart(images=images, labels=labels,
                                                    indices=np.arange(len(labels), dtype=np.int64)))]

  def _num_train_examples(self, t: int) -> int:
    return len(self._split('train')[1])

  def _eval_part(self, i: int) -> sources.ArrayPart:
    images, labels = self._split('test')
    return sources.ArrayPart(images=images, labels=labels, indices=np.arange(len(labels), dtype=np.int64))

  def _train_dataset(self, t, input_context, *, global_batch_size, seed, start_step):
    steps_per_epoch = self.steps_per_task(t, global_batch_size)
    first = t * steps_per_epoch + start_step
    return self._plan_dataset(input_context, global_batch_size=global_batch_size, seed=seed, first=first,
                              stop=(t + 1) * steps_per_epoch, total=steps_per_epoch * len(self.tasks))

  def _plan_dataset(self, input_context, *, global_batch_size: int, seed: int, first: int, stop: int, total: int):
    """Per-replica batches {'image', 'label'} of steps [first, stop) of the run's seeded plan of `total` steps."""
    images, labels = self._split('train')
    plan = pipelines.epoch_plan(len(labels), steps=total, global_batch_size=global_batch_size, seed=seed, task=0)
    ctx = input_context or tf.distribute.InputContext()
    b = ctx.get_per_replica_batch_size(global_batch_size)
    per_pipeline = global_batch_size // ctx.num_input_pipelines
    cols = slice(ctx.input_pipeline_id * per_pipeline, (ctx.input_pipeline_id + 1) * per_pipeline)
    element = np.arange(total * global_batch_size, dtype=np.int64).reshape(total, global_batch_size)
    rows, index = plan[first:stop, cols].reshape(-1), element[first:stop, cols].reshape(-1)
    base = pipelines.seed_base(seed, 1_000_003)
    images_t, labels_t = tf.constant(images), tf.constant(labels.astype(np.int32))
    aug, size = self.augmentation, self.image_size

    def fn(row, i):
      crop_seed, aug_seed = tf.unstack(tf.random.experimental.stateless_split(
          tf.stack([tf.constant(base, tf.int64), i]), num=2))
      image = preprocessing.train_preprocess(tf.gather(images_t, row), crop_seed, image_size=size,
                                             area_range=aug.crop_area_range, flip=aug.flip)
      image = augment.rand_augment(image, aug_seed, num_ops=aug.randaugment_ops, magnitude=aug.randaugment_magnitude)
      return {'image': image, 'label': tf.gather(labels_t, row)}

    ds = tf.data.Dataset.from_tensor_slices((rows, index))
    ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(b, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def pretraining(*, dataset: str = 'cifar100', classes=None, train_split: str = 'train', test_split: str = 'test',
                epochs: int = 30, image_size: int = 32, augmentation: Augmentation = Augmentation(),
                data_dir: Optional[str] = None, manual_dir: Optional[str] = None) -> PretrainingBenchmark:
  """The pretraining benchmark (gin: `pretraining.pretraining`); reads the label names only.

  Args:
    dataset: tfds name (with `manual_dir`, the local-file builders of datasets/local_files.py).
    classes: class subset ('50-99', '1,4,9' or a list; None: every class); labels become positions in it.
    train_split, test_split: tfds splits to train on and to measure the accuracy on.
    epochs: passes over the training images (one segment each).
    image_size: network input side.
    augmentation: `Augmentation` options.
    data_dir, manual_dir: tfds data and manual-download directories (the command-line flags).

  Raises:
    ValueError: an unknown dataset or class subset, or a non-positive epoch count.
  """
  builder = sources.get_builder(dataset, data_dir=data_dir, manual_dir=manual_dir)
  names = list(builder.info.features['label'].names)
  ids = sources.parse_classes(classes, len(names))
  class_names = names if ids is None else [names[i] for i in ids]
  return PretrainingBenchmark(dataset=dataset, classes=classes, train_split=train_split, test_split=test_split,
                              epochs=epochs, image_size=image_size, augmentation=augmentation, data_dir=data_dir,
                              manual_dir=manual_dir, num_classes=len(class_names), class_names=class_names)
