"""Continual-learning benchmarks: class order, tasks, label masks, the Gaussian schedule, and their datasets.

A benchmark is a list of training segments (`tasks`) and a list of evaluation sets (`eval_names`). The trainer runs,
for each segment t: `steps_per_task(t, B)` optimizer steps on `train_dataset(t, ...)`, then evaluates the sets
`eval_ids_after(t)`. Every training element carries the label mask its logits are restricted to.

Benchmarks (factories at the bottom; keyword-only; gin binds them with dynamic registration):

* `split_cifar100`: class-incremental, T tasks of 100/T classes (label order or a seeded permutation).
* `gaussian_cifar100`: task-agnostic; the class mix drifts smoothly (math in `gaussian_class_weights`).
* `five_datasets`: class-incremental over CIFAR-10, MNIST, SVHN, notMNIST, Fashion-MNIST (labels offset by 10 each).
* `domainnet`: domain-incremental over six domains (default) or class-incremental over the pooled domains.

Every factory also takes `max_tasks`, `max_train_examples_per_task`, `max_eval_examples_per_task` to cut a run down to
seconds (`gin_configs/local_tiny.gin`), `data_dir` / `manual_dir` (the trainer's `--tfds_data_dir` /
`--tfds_manual_dir`), `image_size`, `jpeg_round_trip`, `crop` (the image geometry, `preprocessing.resolve_crop`),
`epochs` and `seed` (the benchmark's own random choices:
class order, schedule, example caps; the shuffling and augmentation seed is the one passed to `train_dataset`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Optional, Sequence, Union

from absl import logging
import numpy as np
import tensorflow as tf

from l2p_tf import input_pipeline

SCENARIOS = ('class_incremental', 'domain_incremental', 'task_agnostic', 'joint')
HOLDOUTS = ('test', 'validation')
MASKS = ('class', 'none')
CLASS_ORDERS = ('label', 'random')
FIVE_DATASETS = ('cifar10', 'mnist', 'svhn_cropped', 'not_mnist', 'fashion_mnist')
DOMAINNET_DOMAINS = ('real', 'painting', 'clipart', 'quickdraw', 'infograph', 'sketch')
DOMAINNET_PROTOCOLS = ('domain_incremental', 'class_incremental')

Part = Union[input_pipeline.ArrayPart, input_pipeline.StreamPart]


@dataclasses.dataclass(frozen=True)
class Task:
  """One training segment.

  Attributes:
    index: position in the benchmark's task list.
    name: human-readable name ('task_0', 'mnist', 'real', 'episodes_0-19').
    classes: global label ids trained in this segment (its class-incremental logit mask).
  """
  index: int
  name: str
  classes: tuple[int, ...]


def _check_choice(what: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f'unknown {what} {value!r}; known: {list(choices)}')


def _check_positive(what: str, value, *, allow_none: bool = True) -> None:
  if value is None and allow_none:
    return
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
    raise ValueError(f'{what} must be a positive int{" or None" if allow_none else ""}, got {value!r}')


def make_class_order(num_classes: int, order: str = 'label', *, seed: int = 0) -> np.ndarray:
  """The order in which classes are assigned to tasks.

  Args:
    num_classes: classes in the benchmark.
    order: 'label' (0, 1, 2, ...) or 'random' (a permutation drawn with `np.random.default_rng(seed)`).
    seed: seed of the permutation.

  Returns:
    int64 (num_classes,).

  Raises:
    ValueError: if `order` is unknown.
  """
  _check_choice('class_order', order, CLASS_ORDERS)
  if order == 'label':
    return np.arange(num_classes, dtype=np.int64)
  return np.random.default_rng(seed).permutation(num_classes).astype(np.int64)


def split_classes(order: np.ndarray, num_tasks: int) -> list[tuple[int, ...]]:
  """Cuts a class order into `num_tasks` consecutive, equally sized, disjoint groups (each sorted).

  Raises:
    ValueError: if the classes do not divide evenly into `num_tasks`.
  """
  _check_positive('num_tasks', num_tasks, allow_none=False)
  if len(order) % num_tasks:
    raise ValueError(f'{len(order)} classes do not split into num_tasks={num_tasks} equal tasks')
  k = len(order) // num_tasks
  return [tuple(sorted(int(c) for c in order[t * k:(t + 1) * k])) for t in range(num_tasks)]


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


class ContinualBenchmark:
  """Base class: the interface the trainer uses. Subclasses implement the `_`-prefixed hooks.

  Attributes:
    name: benchmark name.
    num_classes: head size (all classes of the benchmark).
    class_names: one name per global label id.
    tasks: training segments, in order.
    scenario: 'class_incremental' | 'domain_incremental' | 'task_agnostic'.
    eval_names: names of the evaluation sets.
    epochs: passes over each task's examples.
    mask: 'class' (training logits restricted to the segment's classes) or 'none' (all logits).
  """

  def __init__(self, *, name: str, num_classes: int, class_names: Sequence[str], tasks: Sequence[Task],
               scenario: str, eval_names: Sequence[str], epochs: Union[int, float] = 5, image_size: int = 224,
               jpeg_round_trip: bool = False, crop: str = 'resized', mask: str = 'class'):
    _check_choice('scenario', scenario, SCENARIOS)
    _check_choice('mask', mask, MASKS)
    self.mask = mask
    if len(class_names) != num_classes:
      raise ValueError(f'{len(class_names)} class names for num_classes={num_classes}')
    if not tasks:
      raise ValueError(f'benchmark {name!r} has no tasks')
    if not (isinstance(epochs, (int, float)) and epochs > 0):
      raise ValueError(f'epochs must be positive, got {epochs!r}')
    self.name = name
    self.num_classes = num_classes
    # Factories pass a lazy list (names are read from the data on first use); anything else is copied.
    self.class_names = class_names if isinstance(class_names, _LazyNames) else list(class_names)
    self.tasks = list(tasks)
    self.scenario = scenario
    self.eval_names = list(eval_names)
    self.epochs = epochs
    self.preprocess = input_pipeline.PreprocessConfig(image_size=image_size, jpeg_round_trip=jpeg_round_trip,
                                                      crop=crop)

  @property
  def num_tasks(self) -> int:
    return len(self.tasks)

  def _check_task(self, t: int) -> None:
    if not 0 <= t < len(self.tasks):
      raise ValueError(f'task index {t!r} is outside [0, {len(self.tasks)})')

  def _check_eval(self, i: int) -> None:
    if not 0 <= i < len(self.eval_names):
      raise ValueError(f'evaluation set index {i!r} is outside [0, {len(self.eval_names)}) ({self.eval_names})')

  def eval_ids_after(self, t: int) -> list[int]:
    """Evaluation sets to evaluate after training segment `t`: every task seen so far, [0] (task-agnostic), or every
    set (joint: one training segment holding all tasks)."""
    self._check_task(t)
    if self.scenario == 'task_agnostic':
      return [0]
    if self.scenario == 'joint':
      return list(range(len(self.eval_names)))
    return list(range(t + 1))

  def num_train_examples(self, t: int) -> int:
    """Training examples of segment `t` (one pass)."""
    self._check_task(t)
    return self._num_train_examples(t)

  def steps_per_task(self, t: int, global_batch_size: int) -> int:
    """Optimizer steps of segment `t`: floor(examples * epochs / global_batch_size)."""
    self._check_task(t)
    _check_positive('global_batch_size', global_batch_size, allow_none=False)
    return int(math.floor(self._num_train_examples(t) * self.epochs / global_batch_size))

  def num_eval_examples(self, i: int) -> int:
    """Examples of evaluation set `i` (each is evaluated exactly once)."""
    self._check_eval(i)
    return self._eval_part(i).num_examples

  def label_mask(self, t: int) -> np.ndarray:
    """bool (num_classes,): the classes trained in segment `t` (all of them when the mask is 'none')."""
    self._check_task(t)
    if self.mask == 'none':
      return np.ones(self.num_classes, bool)
    mask = np.zeros(self.num_classes, bool)
    mask[list(self.tasks[t].classes)] = True
    return mask

  def train_dataset(self, t: int, input_context: Optional[tf.distribute.InputContext] = None, *,
                    global_batch_size: int, seed: int, start_step: int = 0) -> tf.data.Dataset:
    """Per-replica training batches of segment `t`.

    Args:
      t: segment index.
      input_context: from `strategy.distribute_datasets_from_function` (None: one pipeline, one replica).
      global_batch_size: examples per optimizer step over all replicas.
      seed: run seed; shuffling and augmentation are functions of (seed, t, element index) only.
      start_step: first step to produce; batch k equals batch start_step + k of a run from 0.

    Returns:
      {'image': float32 (b, S, S, 3) in [0, 1], 'label': int32 (b,), 'label_mask': bool (b, num_classes)}; each
      replica receives exactly `steps_per_task(t, global_batch_size) - start_step` batches.
    """
    self._check_task(t)
    _check_positive('global_batch_size', global_batch_size, allow_none=False)
    return self._train_dataset(t, input_context, global_batch_size=global_batch_size, seed=seed,
                               start_step=start_step)

  def eval_dataset(self, i: int, input_context: Optional[tf.distribute.InputContext] = None, *,
                   global_batch_size: int, drop_remainder_of: Optional[int] = None) -> tf.data.Dataset:
    """Finite evaluation batches {'image', 'label', 'valid'}: every example once, padded to whole global batches.

    `drop_remainder_of=n` keeps only the first floor(count / n) * n examples of the set: the official evaluation,
    which drops each test set's last partial global batch of n examples (None: every example).

    Raises:
      ValueError: a set with fewer than `drop_remainder_of` examples (nothing would be left).
    """
    self._check_eval(i)
    _check_positive('global_batch_size', global_batch_size, allow_none=False)
    _check_positive('drop_remainder_of', drop_remainder_of)
    part = self._eval_part(i)
    if drop_remainder_of:
      keep = part.num_examples // drop_remainder_of * drop_remainder_of
      if keep == 0:
        raise ValueError(f'Evaluation set {i} ({self.eval_names[i]}) has {part.num_examples} examples, fewer than '
                         f'one batch of drop_remainder_of={drop_remainder_of}: dropping the last partial batch '
                         'leaves none.')
      if isinstance(part, input_pipeline.ArrayPart):
        part = dataclasses.replace(part, indices=part.indices[:keep])
      else:
        part = dataclasses.replace(part, num_examples=keep)
    if isinstance(part, input_pipeline.ArrayPart):
      return input_pipeline.array_eval_dataset(part, input_context=input_context, global_batch_size=global_batch_size,
                                               preprocess=self.preprocess)
    return input_pipeline.stream_eval_dataset(part, input_context=input_context, global_batch_size=global_batch_size,
                                              preprocess=self.preprocess)

  # Hooks.
  def _num_train_examples(self, t: int) -> int:
    raise NotImplementedError

  def _eval_part(self, i: int) -> Part:
    raise NotImplementedError

  def _train_dataset(self, t, input_context, *, global_batch_size, seed, start_step) -> tf.data.Dataset:
    raise NotImplementedError

  def __repr__(self) -> str:
    return (f'{type(self).__name__}(name={self.name!r}, scenario={self.scenario!r}, tasks={len(self.tasks)}, '
            f'num_classes={self.num_classes})')


class SegmentedBenchmark(ContinualBenchmark):
  """Class- or domain-incremental benchmark: task t trains on one part, evaluation set i is another part.

  Parts are built lazily (the first time a task's data is needed), so constructing a benchmark reads no data.
  """

  def __init__(self, *, train_parts: Sequence[Callable[[], Part]], eval_parts: Sequence[Callable[[], Part]],
               mask: str = 'class', shuffle_buffer: int = 10_000, **kwargs):
    """Initialises the benchmark.

    Args:
      train_parts: one zero-argument function per task returning its training part.
      eval_parts: one zero-argument function per evaluation set.
      mask: 'class' (logits restricted to the task's classes in training) or 'none' (all logits).
      shuffle_buffer: shuffle buffer of streamed (large-image) parts.
      **kwargs: `ContinualBenchmark` arguments.

    Raises:
      ValueError: on an unknown mask or mismatched lengths.
    """
    super().__init__(mask=mask, **kwargs)
    if len(train_parts) != len(self.tasks) or len(eval_parts) != len(self.eval_names):
      raise ValueError(f'{len(train_parts)} train parts / {len(eval_parts)} eval parts for {len(self.tasks)} tasks '
                       f'/ {len(self.eval_names)} evaluation sets')
    self.shuffle_buffer = shuffle_buffer
    self._train_part_fns = list(train_parts)
    self._eval_part_fns = list(eval_parts)
    self._parts = {}

  def _part(self, key, fn) -> Part:
    if key not in self._parts:
      self._parts[key] = fn()
    return self._parts[key]

  def train_part(self, t: int) -> Part:
    """The training examples of task `t`."""
    self._check_task(t)
    return self._part(('train', t), self._train_part_fns[t])

  def _eval_part(self, i: int) -> Part:
    return self._part(('eval', i), self._eval_part_fns[i])

  def _num_train_examples(self, t: int) -> int:
    return self.train_part(t).num_examples

  def _train_dataset(self, t, input_context, *, global_batch_size, seed, start_step):
    part = self.train_part(t)
    steps = self.steps_per_task(t, global_batch_size)
    if steps == 0:
      logging.warning('%s task %d: %d examples x %s epochs < one global batch of %d: zero steps', self.name, t,
                      part.num_examples, self.epochs, global_batch_size)
    mask = self.label_mask(t)
    if isinstance(part, input_pipeline.ArrayPart):
      plan = input_pipeline.epoch_plan(part.num_examples, steps=steps, global_batch_size=global_batch_size,
                                       seed=seed, task=t)
      return input_pipeline.array_train_dataset(
          part, plan, masks=mask[None], mask_ids=None, seed=input_pipeline.seed_base(seed, t),
          input_context=input_context, global_batch_size=global_batch_size, start_step=start_step,
          preprocess=self.preprocess)
    return input_pipeline.stream_train_dataset(
        part, steps=steps, mask=mask, seed=seed, task=t, input_context=input_context,
        global_batch_size=global_batch_size, start_step=start_step, shuffle_buffer=self.shuffle_buffer,
        preprocess=self.preprocess)


# ---------------------------------------------------------------------------------------------------------------------
# Gaussian schedule.
#
# Math (after Shanahan et al. 2021, "Encoders and ensembles for task-free continual learning", as in the official
# L2P code's `gaussian_schedule`). The stream has E episodes e = 0 .. E-1 and C classes. Class j (the j-th class of
# the class order) has its peak at
#     p_j = (j + 1/2) * E / C                                   (evenly spread, centred in its share of the schedule)
# and its weight in episode e is
#     w_j(e) = exp(-(e - p_j)^2 / (2 sigma^2)).
# Episode e's class set is drawn as independent Bernoulli(w_j(e)) trials, one per class, redrawn as a whole while it
# is empty. The draws use `np.random.default_rng(seed)`: for e = 0, 1, ...: u = rng.random(C); classes = {j : u_j <
# w_j(e)}; repeat if empty. Expected classes per episode ~ sum_j w_j(e) ~ C sqrt(2 pi) sigma / E away from the ends.
#
# Defaults: E = 200 and sigma = 10 episodes. The official code measures positions in batches with 5 batches per
# episode (x = 5e), peaks every 5E/C = 10 batches starting at 5, and a width of 50 batches; divided by 5 these are
# exactly p_j = (j + 1/2) E / C and sigma = 10, so the class sets follow the official distribution (about 12.5 classes
# per episode, each class active in about 25 episodes).
#
# Data. Default (`repeat_episodes=False`, the paper's intent): a single pass. The stream has floor(N * epochs / B)
# global batches (N training examples, epochs = 1 by default, B the global batch), spread over the episodes as evenly
# as possible (episode e gets floor((e+1)T/E) - floor(eT/E) steps, T the total). Each episode draws its examples
# uniformly without replacement from the not-yet-used examples of its classes, so every example is seen at most once;
# only when all of an episode's classes are used up are those classes' examples made available again (counted in
# `stream_stats['refills']`, zero or close to it with the defaults). Option `repeat_episodes=True` reproduces the
# official code: every episode draws `steps_per_episode` (default 5) batches from *all* examples of its classes, so
# examples recur across episodes and the stream is E * S batches long whatever N is.
# The label mask of every example is its episode's class set. There are no task boundaries for the optimizer
# (`scenario == 'task_agnostic'`: the trainer must not reset the optimizer between segments); `tasks` are evaluation
# segments of `eval_every_episodes` (K) episodes, and after each one the model is evaluated on the full test set.


def gaussian_class_weights(*, num_classes: int = 100, num_episodes: int = 200, sigma: float = 10.0) -> np.ndarray:
  """w[e, j] = exp(-(e - p_j)^2 / (2 sigma^2)), p_j = (j + 1/2) E / C (see the comment above).

  Returns:
    float64 (num_episodes, num_classes).

  Raises:
    ValueError: if sigma is not positive.
  """
  if not sigma > 0:
    raise ValueError(f'sigma must be positive, got {sigma!r}')
  peaks = (np.arange(num_classes) + 0.5) * num_episodes / num_classes
  x = np.arange(num_episodes)[:, None]
  return np.exp(-((x - peaks[None, :]) ** 2) / (2.0 * sigma ** 2))


def gaussian_schedule(*, num_classes: int = 100, num_episodes: int = 200, sigma: float = 10.0, seed: int = 0,
                      order: Optional[np.ndarray] = None) -> list[tuple[int, ...]]:
  """Draws each episode's class set (sorted global ids).

  Args:
    num_classes: C.
    num_episodes: E.
    sigma: Gaussian width in episodes.
    seed: seed of `np.random.default_rng`.
    order: class order (peak j belongs to class order[j]); identity when None.

  Returns:
    E tuples of class ids, none empty.
  """
  _check_positive('num_episodes', num_episodes, allow_none=False)
  weights = gaussian_class_weights(num_classes=num_classes, num_episodes=num_episodes, sigma=sigma)
  order = np.arange(num_classes) if order is None else np.asarray(order)
  rng = np.random.default_rng(seed)
  episodes = []
  for e in range(num_episodes):
    while True:
      chosen = np.flatnonzero(rng.random(num_classes) < weights[e])
      if chosen.size:
        break
    episodes.append(tuple(sorted(int(c) for c in order[chosen])))
  return episodes


class GaussianBenchmark(ContinualBenchmark):
  """Task-agnostic benchmark whose class mix drifts along a Gaussian schedule (see the comment above)."""

  def __init__(self, *, train_part: Callable[[], input_pipeline.ArrayPart],
               eval_part: Callable[[], input_pipeline.ArrayPart], episodes: Sequence[tuple[int, ...]],
               eval_every_episodes: int = 20, steps_per_episode: Optional[int] = None, repeat_episodes: bool = False,
               mask: str = 'class', max_tasks: Optional[int] = None, **kwargs):
    """Initialises the benchmark.

    Args:
      train_part: returns the training pool.
      eval_part: returns the test set.
      episodes: the class set of every episode (`gaussian_schedule`).
      eval_every_episodes: K, episodes per evaluation segment.
      steps_per_episode: S; None: derived from the pool (single pass) or 5 with `repeat_episodes`.
      repeat_episodes: draw every episode from all examples of its classes (official code) instead of a single pass.
      mask: 'class' (logits restricted to the episode's classes) or 'none'.
      max_tasks: keep only the first this many segments.
      **kwargs: `ContinualBenchmark` arguments other than tasks, scenario and eval_names.
    """
    _check_positive('eval_every_episodes', eval_every_episodes, allow_none=False)
    _check_positive('steps_per_episode', steps_per_episode)
    _check_positive('max_tasks', max_tasks)
    self.episodes = [tuple(e) for e in episodes]
    self.eval_every_episodes = eval_every_episodes
    self.repeat_episodes = repeat_episodes
    self.steps_per_episode = steps_per_episode if steps_per_episode or not repeat_episodes else 5
    bounds = list(range(0, len(self.episodes), eval_every_episodes)) + [len(self.episodes)]
    self.segments = [(a, b) for a, b in zip(bounds[:-1], bounds[1:])][:max_tasks]
    tasks = [Task(index=s, name=f'episodes_{a}-{b - 1}',
                  classes=tuple(sorted(set().union(*self.episodes[a:b])))) for s, (a, b) in enumerate(self.segments)]
    super().__init__(tasks=tasks, scenario='task_agnostic', eval_names=['all'], mask=mask, **kwargs)
    self._train_part_fn = train_part
    self._eval_part_fn = eval_part
    self._cache = {}
    self.stream_stats = {}

  def train_part(self) -> input_pipeline.ArrayPart:
    if 'train' not in self._cache:
      self._cache['train'] = self._train_part_fn()
    return self._cache['train']

  def _eval_part(self, i: int) -> input_pipeline.ArrayPart:
    if 'eval' not in self._cache:
      self._cache['eval'] = self._eval_part_fn()
    return self._cache['eval']

  def episode_steps(self, global_batch_size: int) -> np.ndarray:
    """int (E,): optimizer steps of every episode."""
    e = len(self.episodes)
    if self.steps_per_episode:
      return np.full(e, self.steps_per_episode, np.int64)
    total = int(math.floor(self.train_part().num_examples * self.epochs / global_batch_size))
    edges = (np.arange(e + 1) * total) // e
    return np.diff(edges).astype(np.int64)

  def _num_train_examples(self, t: int) -> int:
    """Nominal examples of segment `t` (logging only; `steps_per_task` is what counts).

    Single pass: the segment's share of floor(N * epochs), N the pool size. With `repeat_episodes`: the examples of
    its episodes at the reference global batch 128.
    """
    a, b = self.segments[t]
    e = len(self.episodes)
    if self.repeat_episodes:
      return (b - a) * self.steps_per_episode * 128
    total = int(math.floor(self.train_part().num_examples * self.epochs))
    return (b * total) // e - (a * total) // e

  def steps_per_task(self, t: int, global_batch_size: int) -> int:
    """Steps of segment `t`: the sum of its episodes' steps (`episode_steps`)."""
    self._check_task(t)
    _check_positive('global_batch_size', global_batch_size, allow_none=False)
    a, b = self.segments[t]
    return int(self.episode_steps(global_batch_size)[a:b].sum())

  def plan(self, global_batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole stream: (positions int (T, B) into the training pool, episode id int (T,)), cached per (B, seed)."""
    key = (global_batch_size, seed)
    if key in self._cache:
      return self._cache[key]
    part = self.train_part()
    labels = np.asarray(part.labels)[part.indices]
    steps = self.episode_steps(global_batch_size)
    rng = np.random.default_rng([seed, 0x6A05])
    by_class = {c: np.flatnonzero(labels == c) for c in range(self.num_classes)}
    used = np.zeros(len(labels), bool)
    refills = np.zeros(self.num_classes, np.int64)
    rows, episode_of_step = [], []
    for e, classes in enumerate(self.episodes):
      need = int(steps[e]) * global_batch_size
      if need == 0:
        continue
      pool = np.concatenate([by_class[c] for c in classes])
      if pool.size == 0:
        raise ValueError(f'episode {e} draws classes {classes} but the training pool has no example of them')
      taken = []
      while need > 0:
        if self.repeat_episodes:
          avail = pool
        else:
          avail = pool[~used[pool]]
          if avail.size == 0:  # Every class of this episode is used up: make them available again.
            used[pool] = False
            refills[list(classes)] += 1
            continue
        chosen = rng.permutation(avail)[:need]
        used[chosen] = True
        taken.append(chosen)
        need -= chosen.size
      rows.append(np.concatenate(taken).reshape(int(steps[e]), global_batch_size))
      episode_of_step.append(np.full(int(steps[e]), e, np.int64))
    result = (np.concatenate(rows) if rows else np.zeros((0, global_batch_size), np.int64),
              np.concatenate(episode_of_step) if episode_of_step else np.zeros((0,), np.int64))
    self.stream_stats[key] = {'steps': int(steps.sum()), 'examples': int(steps.sum()) * global_batch_size,
                              'distinct_examples': int(len(np.unique(result[0]))), 'refills': int(refills.sum())}
    self._cache[key] = result
    return result

  def episode_masks(self) -> np.ndarray:
    """bool (E, num_classes): each episode's label mask (all True when mask='none')."""
    masks = np.zeros((len(self.episodes), self.num_classes), bool)
    for e, classes in enumerate(self.episodes):
      masks[e, list(classes)] = True
    if self.mask == 'none':
      masks[:] = True
    return masks

  def _train_dataset(self, t, input_context, *, global_batch_size, seed, start_step):
    plan, episode_of_step = self.plan(global_batch_size, seed)
    steps = self.episode_steps(global_batch_size)
    a, b = self.segments[t]
    first, last = int(steps[:a].sum()), int(steps[:b].sum())
    mask_ids = np.repeat(episode_of_step[first:last, None], global_batch_size, axis=1)
    return input_pipeline.array_train_dataset(
        self.train_part(), plan[first:last], masks=self.episode_masks(), mask_ids=mask_ids,
        seed=input_pipeline.seed_base(seed, 0x6A05), input_context=input_context, global_batch_size=global_batch_size,
        start_step=start_step, preprocess=self.preprocess, element_offset=first * global_batch_size)


# ---------------------------------------------------------------------------------------------------------------------
# Data access shared by the factories.


class _Data:
  """Prepared builders and decoded splits, loaded once per benchmark."""

  def __init__(self, data_dir: Optional[str], manual_dir: Optional[str]):
    self.data_dir = data_dir or input_pipeline.default_data_dir()
    self.manual_dir = manual_dir
    self._builders = {}
    self._arrays = {}

  def builder(self, name: str):
    if name not in self._builders:
      self._builders[name] = input_pipeline.get_builder(name, data_dir=self.data_dir, manual_dir=self.manual_dir)
    return self._builders[name]

  def arrays(self, name: str, split: str, subset: Optional[tuple[int, ...]] = None) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of a split; with `subset`, labels become positions in it (-1 for every other class)."""
    key = (name, split, subset)
    if key not in self._arrays:
      if subset is None:
        self._arrays[key] = input_pipeline.load_arrays(self.builder(name), split)
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
    if name == 'not_mnist' and not input_pipeline.has_split(self.builder(name), 'train'):
      return 'test[:80%]', 'test[80%:]'
    return 'train', 'test'


def _array_part(data: _Data, name: str, split_index: int, *, classes=None, offset: int = 0,
                limit: Optional[int] = None, seed: int = 0, subset: Optional[tuple[int, ...]] = None,
                validation: Optional[tuple[float, int]] = None) -> input_pipeline.ArrayPart:
  """Rows of one split of data set `name` (split_index 0 = train, 1 = test).

  `subset` relabels to positions in it (see `_Data.arrays`). `validation=(fraction, seed)` takes both parts from
  the training split: split_index 1 is then the held-out validation rows and split_index 0 the rest.
  """
  split = data.split_names(name)[0 if validation else split_index]
  images, labels = data.arrays(name, split, subset)
  if offset:
    labels = labels + offset  # A new array, shared by the parts of this data set through the cache below.
  rows = (np.flatnonzero(labels >= 0).astype(np.int64) if classes is None
          else input_pipeline.class_rows(labels, classes))
  if validation:
    held = data.holdout(name, *validation)[rows]
    rows = rows[held if split_index == 1 else ~held]
  rows = input_pipeline.subsample(rows, limit, seed=seed)
  return input_pipeline.ArrayPart(images=images, labels=labels, indices=rows)


def _limit_tasks(n: int, max_tasks: Optional[int]) -> int:
  _check_positive('max_tasks', max_tasks)
  return n if max_tasks is None else min(n, max_tasks)


def split_cifar100(*, num_tasks: int = 10, class_order: str = 'label', order_seed: Optional[int] = None,
                   mask: str = 'class', epochs: Union[int, float] = 5, image_size: int = 224,
                   jpeg_round_trip: bool = False, crop: str = 'resized', seed: int = 0, data_dir: Optional[str] = None,
                   manual_dir: Optional[str] = None, max_tasks: Optional[int] = None,
                   max_train_examples_per_task: Optional[int] = None,
                   max_eval_examples_per_task: Optional[int] = None, classes=None, holdout: str = 'test',
                   validation_fraction: float = 0.1, joint: bool = False) -> SegmentedBenchmark:
  """Split CIFAR-100: class-incremental, `num_tasks` tasks of (number of classes) / num_tasks classes.

  Args:
    num_tasks: T (must divide the number of classes).
    class_order: 'label' or 'random' (a permutation seeded by `order_seed`).
    order_seed: seed of the random class order (defaults to `seed`).
    mask: 'class' (train each task's logits only; the paper) or 'none'.
    epochs: passes over each task's training images (5,000 per 10 classes).
    image_size: network input side.
    jpeg_round_trip: JPEG round trip before the random crop (official code; the 'resized' geometry only).
    crop: image geometry: 'auto' (official: pad-and-crop at 32 px, random-resized crop otherwise; what the data gin
      files bind), 'pad' or 'resized' (the default: the geometry of runs configured before this option).
    seed: the benchmark's own seed (class order default, example caps, validation hold-out).
    data_dir: tfds data directory (`--tfds_data_dir`).
    manual_dir: local downloads (`--tfds_manual_dir`); CIFAR-100 then comes from `cifar-100-python/` there.
    max_tasks: keep only the first this many tasks.
    max_train_examples_per_task: seeded random cap per task (tiny runs).
    max_eval_examples_per_task: seeded random cap per evaluation set.
    classes: a subset of CIFAR-100's classes ('0-49', '0,3,9' or a list; None: all 100). The benchmark then has
      len(classes) classes, relabelled 0..len-1 in the given order (the head is that wide); class names follow.
    holdout: 'test' (evaluate on the test images; for reported results) or 'validation' (train on the training
      images minus a seeded `validation_fraction` of every class and evaluate on that fraction: for choosing
      hyperparameters without touching the test set).
    validation_fraction: share of each class's training images held out with holdout='validation'.
    joint: the joint-training upper bound: one training segment holding every task's classes and images
      (`epochs` passes over all of them, so as many steps as the sequential run), evaluated on each task's set.

  Returns:
    The benchmark; evaluation set i is task i's classes of the test (or validation) set.
  """
  _check_choice('holdout', holdout, HOLDOUTS)
  subset = parse_classes(classes, 100)
  num_classes = 100 if subset is None else len(subset)
  order = make_class_order(num_classes, class_order, seed=seed if order_seed is None else order_seed)
  groups = split_classes(order, num_tasks)[:_limit_tasks(num_tasks, max_tasks)]
  data = _Data(data_dir, manual_dir)
  part = functools.partial(_array_part, data, 'cifar100', subset=None if subset is None else tuple(subset.tolist()),
                           validation=(validation_fraction, seed) if holdout == 'validation' else None)
  names = [f'task_{t}' for t in range(len(groups))]
  evals = [functools.partial(part, 1, classes=g, limit=max_eval_examples_per_task, seed=seed + t)
           for t, g in enumerate(groups)]
  if joint:
    every = tuple(sorted(c for g in groups for c in g))
    limit = None if max_train_examples_per_task is None else max_train_examples_per_task * len(groups)
    tasks = [Task(index=0, name='joint', classes=every)]
    train = [functools.partial(part, 0, classes=every, limit=limit, seed=seed)]
  else:
    tasks = [Task(index=t, name=names[t], classes=g) for t, g in enumerate(groups)]
    train = [functools.partial(part, 0, classes=g, limit=max_train_examples_per_task, seed=seed + t)
             for t, g in enumerate(groups)]
  return SegmentedBenchmark(
      name='split_cifar100' if subset is None else f'split_cifar100[{classes}]', num_classes=num_classes,
      class_names=_LazyNames(data, 'cifar100', num_classes, subset=None if subset is None else subset.tolist()),
      tasks=tasks, scenario='joint' if joint else 'class_incremental', eval_names=names, train_parts=train,
      eval_parts=evals, mask=mask, epochs=epochs, image_size=image_size, jpeg_round_trip=jpeg_round_trip,
      crop=crop)


def gaussian_cifar100(*, num_episodes: int = 200, sigma: float = 10.0, eval_every_episodes: int = 20,
                      steps_per_episode: Optional[int] = None, repeat_episodes: bool = False,
                      class_order: str = 'label', order_seed: Optional[int] = None, mask: str = 'class',
                      epochs: Union[int, float] = 1, image_size: int = 224, jpeg_round_trip: bool = False,
                      crop: str = 'resized', seed: int = 0, data_dir: Optional[str] = None,
                      manual_dir: Optional[str] = None,
                      max_tasks: Optional[int] = None, max_train_examples_per_task: Optional[int] = None,
                      max_eval_examples_per_task: Optional[int] = None) -> GaussianBenchmark:
  """Gaussian-scheduled CIFAR-100 (task-agnostic); the math is in the comment above `gaussian_class_weights`.

  Args:
    num_episodes: E (default 200, official).
    sigma: Gaussian width in episodes (default 10 = the official 50 batches at 5 batches per episode).
    eval_every_episodes: K; one evaluation segment ("task") per K episodes (default 20: ten evaluations).
    steps_per_episode: S; None derives it from the data (single pass; 5 with repeat_episodes).
    repeat_episodes: official code's behaviour (episodes draw from all examples of their classes, with reuse).
    class_order: which class peaks first: 'label' or 'random' (seeded by `order_seed`).
    order_seed: seed of the random class order (defaults to `seed`).
    mask: 'class' (logits restricted to the episode's classes) or 'none'.
    epochs: passes over the training set in single-pass mode (default 1: every example seen once).
    image_size: network input side.
    jpeg_round_trip: JPEG round trip before the random crop (the 'resized' geometry only).
    crop: image geometry: 'auto' (official: pad-and-crop at 32 px, random-resized crop otherwise; what the data gin
      files bind), 'pad' or 'resized' (the default: the geometry of runs configured before this option).
    seed: seed of the schedule's Bernoulli draws (and the class order default, example caps).
    data_dir: tfds data directory.
    manual_dir: local downloads.
    max_tasks: keep only the first this many evaluation segments.
    max_train_examples_per_task: cap the training pool at this many examples per segment (tiny runs).
    max_eval_examples_per_task: cap the test set.

  Returns:
    The benchmark.
  """
  order = make_class_order(100, class_order, seed=seed if order_seed is None else order_seed)
  episodes = gaussian_schedule(num_classes=100, num_episodes=num_episodes, sigma=sigma, seed=seed, order=order)
  data = _Data(data_dir, manual_dir)
  num_segments = math.ceil(num_episodes / eval_every_episodes)
  pool_limit = None if max_train_examples_per_task is None else max_train_examples_per_task * num_segments
  return GaussianBenchmark(
      name='gaussian_cifar100', num_classes=100, class_names=_LazyNames(data, 'cifar100', 100),
      train_part=functools.partial(_array_part, data, 'cifar100', 0, limit=pool_limit, seed=seed),
      eval_part=functools.partial(_array_part, data, 'cifar100', 1, limit=max_eval_examples_per_task, seed=seed),
      episodes=episodes, eval_every_episodes=eval_every_episodes, steps_per_episode=steps_per_episode,
      repeat_episodes=repeat_episodes, mask=mask, max_tasks=max_tasks, epochs=epochs, image_size=image_size,
      jpeg_round_trip=jpeg_round_trip, crop=crop)


def five_datasets(*, datasets: Sequence[str] = FIVE_DATASETS, mask: str = 'class', epochs: Union[int, float] = 5,
                  image_size: int = 224, jpeg_round_trip: bool = False, crop: str = 'resized', seed: int = 0,
                  data_dir: Optional[str] = None, manual_dir: Optional[str] = None, max_tasks: Optional[int] = None,
                  max_train_examples_per_task: Optional[int] = None,
                  max_eval_examples_per_task: Optional[int] = None) -> SegmentedBenchmark:
  """5-datasets: one class-incremental task per data set, 10 classes each, labels offset by 10 per task.

  Grayscale data sets (MNIST, notMNIST, Fashion-MNIST) are turned into RGB and, like the 32x32 ones, brought to the
  network input by the shared preprocessing (resized; or zero-padded, with `crop='pad'`).

  Args:
    datasets: the data sets in task order (default CIFAR-10, MNIST, SVHN, notMNIST, Fashion-MNIST, the official order).
    mask: 'class' or 'none'.
    epochs: passes over each task.
    image_size: network input side.
    jpeg_round_trip: JPEG round trip before the random crop (the 'resized' geometry only).
    crop: image geometry: 'auto' (official: pad-and-crop at 32 px, random-resized crop otherwise; what the data gin
      files bind), 'pad' or 'resized' (the default: the geometry of runs configured before this option).
    seed: seed of the example caps.
    data_dir: tfds data directory.
    manual_dir: local downloads (see docs/data.md for the folder of each data set).
    max_tasks: keep only the first this many tasks.
    max_train_examples_per_task: seeded random cap per task.
    max_eval_examples_per_task: seeded random cap per evaluation set.

  Returns:
    The benchmark.

  Raises:
    ValueError: on an unknown data set name.
  """
  datasets = tuple(datasets)
  for name in datasets:
    _check_choice('dataset', name, FIVE_DATASETS)
  datasets = datasets[:_limit_tasks(len(datasets), max_tasks)]
  data = _Data(data_dir, manual_dir)
  tasks = [Task(index=t, name=n, classes=tuple(range(10 * t, 10 * t + 10))) for t, n in enumerate(datasets)]
  train = [functools.partial(_array_part, data, n, 0, offset=10 * t, limit=max_train_examples_per_task, seed=seed + t)
           for t, n in enumerate(datasets)]
  evals = [functools.partial(_array_part, data, n, 1, offset=10 * t, limit=max_eval_examples_per_task, seed=seed + t)
           for t, n in enumerate(datasets)]
  return SegmentedBenchmark(
      name='five_datasets', num_classes=10 * len(datasets), class_names=_LazyNames(data, list(datasets), 10 * len(datasets)),
      tasks=tasks, scenario='class_incremental', eval_names=list(datasets), train_parts=train, eval_parts=evals,
      mask=mask, epochs=epochs, image_size=image_size, jpeg_round_trip=jpeg_round_trip,
      crop=crop)


def domainnet(*, protocol: str = 'domain_incremental', domains: Sequence[str] = DOMAINNET_DOMAINS,
              num_tasks: int = 5, class_order: str = 'label', order_seed: Optional[int] = None,
              mask: Optional[str] = None, epochs: Union[int, float] = 5, image_size: int = 224,
              jpeg_round_trip: bool = False, crop: str = 'resized', seed: int = 0, shuffle_buffer: int = 10_000,
              data_dir: Optional[str] = None, manual_dir: Optional[str] = None, max_tasks: Optional[int] = None,
              max_train_examples_per_task: Optional[int] = None,
              max_eval_examples_per_task: Optional[int] = None) -> SegmentedBenchmark:
  """DomainNet (builder `domainnet_continual`, protocol in datasets/domainnet/README.md).

  Args:
    protocol: 'domain_incremental' (one task per domain, all 345 classes, no mask) or 'class_incremental'
      (domains pooled, 345 classes split into `num_tasks` tasks, class mask).
    domains: domains in task order (domain-incremental) or pooled (class-incremental).
    num_tasks: tasks of the class-incremental protocol (must divide 345: 3, 5, 15, 23, ...).
    class_order: 'label' or 'random' (class-incremental).
    order_seed: seed of the random class order (defaults to `seed`).
    mask: 'class' or 'none'; default 'none' for domain-incremental, 'class' for class-incremental.
    epochs: passes over each task.
    image_size: network input side.
    jpeg_round_trip: JPEG round trip before the random crop (the 'resized' geometry only).
    crop: image geometry: 'auto' (official: pad-and-crop at 32 px, random-resized crop otherwise; what the data gin
      files bind), 'pad' or 'resized' (the default: the geometry of runs configured before this option).
    seed: the benchmark's own seed.
    shuffle_buffer: shuffle buffer (encoded images) of the streamed training data.
    data_dir: tfds data directory.
    manual_dir: folder with the official archives and split lists.
    max_tasks: keep only the first this many tasks.
    max_train_examples_per_task: cap per task (the first examples in tfds's shuffled file order).
    max_eval_examples_per_task: cap per evaluation set.

  Returns:
    The benchmark.

  Raises:
    ValueError: on an unknown protocol or domain.
  """
  _check_choice('protocol', protocol, DOMAINNET_PROTOCOLS)
  for d in domains:
    _check_choice('domain', d, DOMAINNET_DOMAINS)
  data = _Data(data_dir, manual_dir)
  name = input_pipeline.DOMAINNET
  num_classes = 345

  def stream_part(split: str, limit: Optional[int], classes=None) -> input_pipeline.StreamPart:
    builder = data.builder(name)
    if classes is None:
      n = sum(builder.info.splits[s].num_examples for s in split.split('+'))
    else:
      key = ('counts', split)
      if key not in data._arrays:  # pylint: disable=protected-access
        data._arrays[key] = input_pipeline.count_stream_labels(builder, split, num_classes)  # pylint: disable=protected-access
      n = int(data._arrays[key][list(classes)].sum())  # pylint: disable=protected-access
    n = n if limit is None else min(n, limit)
    return input_pipeline.StreamPart(builder=builder, split=split, num_examples=n,
                                     classes=None if classes is None else np.asarray(classes), max_examples=limit)

  if protocol == 'domain_incremental':
    domains = tuple(domains)[:_limit_tasks(len(domains), max_tasks)]
    tasks = [Task(index=t, name=d, classes=tuple(range(num_classes))) for t, d in enumerate(domains)]
    train = [functools.partial(stream_part, f'{d}_train', max_train_examples_per_task) for d in domains]
    evals = [functools.partial(stream_part, f'{d}_test', max_eval_examples_per_task) for d in domains]
    scenario, mask = 'domain_incremental', mask or 'none'
  else:
    order = make_class_order(num_classes, class_order, seed=seed if order_seed is None else order_seed)
    groups = split_classes(order, num_tasks)[:_limit_tasks(num_tasks, max_tasks)]
    tasks = [Task(index=t, name=f'task_{t}', classes=g) for t, g in enumerate(groups)]
    train_split = '+'.join(f'{d}_train' for d in domains)
    test_split = '+'.join(f'{d}_test' for d in domains)
    train = [functools.partial(stream_part, train_split, max_train_examples_per_task, g) for g in groups]
    evals = [functools.partial(stream_part, test_split, max_eval_examples_per_task, g) for g in groups]
    scenario, mask = 'class_incremental', mask or 'class'
  return SegmentedBenchmark(
      name=f'domainnet_{protocol}', num_classes=num_classes, class_names=_LazyNames(data, name, num_classes),
      tasks=tasks, scenario=scenario, eval_names=[t.name for t in tasks], train_parts=train, eval_parts=evals,
      mask=mask, shuffle_buffer=shuffle_buffer, epochs=epochs, image_size=image_size,
      jpeg_round_trip=jpeg_round_trip, crop=crop)


class _LazyNames(list):
  """Class names read from the builders on first use (constructing a benchmark reads no data)."""

  def __init__(self, data: _Data, names: Union[str, Sequence[str]], num_classes: int,
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
