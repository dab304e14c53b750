"""The benchmark contract the trainer uses: `Task`, `ContinualBenchmark` and the checks shared by the benchmarks.

A benchmark is a list of training segments (`tasks`) and a list of evaluation sets (`eval_names`). The trainer runs,
for each segment t: `steps_per_task(t, B)` optimizer steps on `train_dataset(t, ...)`, then evaluates the sets
`eval_ids_after(t)`. Every training element carries the label mask its logits are restricted to. What differs by
scenario (which sets to evaluate, the metric curves, the console lines) is a method the scenario's class overrides:
`SegmentedBenchmark` and `JointBenchmark` (l2p_tf/data/segmented.py), `GaussianBenchmark` (l2p_tf/data/gaussian.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from l2p_tf import cl_metrics
from l2p_tf.data import pipelines
from l2p_tf.data import sources

SCENARIOS = ('class_incremental', 'domain_incremental', 'task_agnostic', 'joint')
MASKS = ('class', 'none')
CLASS_ORDERS = ('label', 'random')


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


def check_choice(what: str, value, choices) -> None:
  """Raises ValueError naming the known choices when `value` is not one of them."""
  if value not in choices:
    raise ValueError(f'unknown {what} {value!r}; known: {list(choices)}')


def check_positive(what: str, value, *, allow_none: bool = True) -> None:
  """Raises ValueError when `value` is not a positive int (None passes when `allow_none`)."""
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
  check_choice('class_order', order, CLASS_ORDERS)
  if order == 'label':
    return np.arange(num_classes, dtype=np.int64)
  return np.random.default_rng(seed).permutation(num_classes).astype(np.int64)


def split_classes(order: np.ndarray, num_tasks: int) -> list[tuple[int, ...]]:
  """Cuts a class order into `num_tasks` consecutive, equally sized, disjoint groups (each sorted).

  Raises:
    ValueError: if the classes do not divide evenly into `num_tasks`.
  """
  check_positive('num_tasks', num_tasks, allow_none=False)
  if len(order) % num_tasks:
    raise ValueError(f'{len(order)} classes do not split into num_tasks={num_tasks} equal tasks')
  k = len(order) // num_tasks
  return [tuple(sorted(int(c) for c in order[t * k:(t + 1) * k])) for t in range(num_tasks)]


class ContinualBenchmark:
  """Base class: the interface the trainer uses. Subclasses implement the `_`-prefixed hooks.

  Attributes:
    name: benchmark name.
    num_classes: head size (all classes of the benchmark).
    class_names: one name per global label id.
    tasks: training segments, in order.
    scenario: 'class_incremental' | 'domain_incremental' (this class and `SegmentedBenchmark`), 'task_agnostic'
      (`GaussianBenchmark`) or 'joint' (`JointBenchmark`); each class runs the scenarios in its `scenarios`.
    eval_names: names of the evaluation sets.
    epochs: passes over each task's examples.
    mask: 'class' (training logits restricted to the segment's classes) or 'none' (all logits).
    preprocess: image options of the training and evaluation pipelines.

  Scenario behaviour the trainer calls (subclasses override what their scenario does differently): `check_classes`,
  `check_data`, `eval_ids_after`, `metric_curves`, `matrix_names`, `progress_lines`, `eval_lines`.
  """

  scenarios = ('class_incremental', 'domain_incremental')

  def __init__(self, *, name: str, num_classes: int, class_names: Sequence[str], tasks: Sequence[Task],
               scenario: str, eval_names: Sequence[str], epochs: Union[int, float] = 5,
               preprocess: pipelines.PreprocessConfig = pipelines.PreprocessConfig(), mask: str = 'class'):
    check_choice('scenario', scenario, SCENARIOS)
    if scenario not in self.scenarios:
      raise ValueError(f'{type(self).__name__} runs the scenarios {list(self.scenarios)}, not {scenario!r}')
    check_choice('mask', mask, MASKS)
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
    self.class_names = class_names if isinstance(class_names, sources.LazyNames) else list(class_names)
    self.tasks = list(tasks)
    self.scenario = scenario
    self.eval_names = list(eval_names)
    self.epochs = epochs
    self.preprocess = preprocess

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
    """Evaluation sets to evaluate after training segment `t`: every task seen so far (subclasses: [0] for
    task-agnostic, every set for joint training)."""
    self._check_task(t)
    return list(range(t + 1))

  def num_train_examples(self, t: int) -> int:
    """Training examples of segment `t` (one pass)."""
    self._check_task(t)
    return self._num_train_examples(t)

  def steps_per_task(self, t: int, global_batch_size: int) -> int:
    """Optimizer steps of segment `t`: floor(examples * epochs / global_batch_size)."""
    self._check_task(t)
    check_positive('global_batch_size', global_batch_size, allow_none=False)
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
    check_positive('global_batch_size', global_batch_size, allow_none=False)
    return self._train_dataset(t, input_context, global_batch_size=global_batch_size, seed=seed,
                               start_step=start_step)

  def eval_dataset(self, i: int, input_context: Optional[tf.distribute.InputContext] = None, *,
                   global_batch_size: int, drop_remainder_of: Optional[int] = None) -> tf.data.Dataset:
    """Finite evaluation batches {'image', 'label', 'valid', 'task'}: every example once, padded to whole global
    batches; 'task' is `i` for every element (the set the example belongs to).

    `drop_remainder_of=n` keeps only the first floor(count / n) * n examples of the set: the official evaluation,
    which drops each test set's last partial global batch of n examples (None: every example).

    Raises:
      ValueError: a set with fewer than `drop_remainder_of` examples (nothing would be left).
    """
    check_positive('global_batch_size', global_batch_size, allow_none=False)
    part = self._kept_eval_part(i, drop_remainder_of)
    if isinstance(part, sources.ArrayPart):
      return pipelines.array_eval_dataset(part, input_context=input_context, global_batch_size=global_batch_size,
                                          preprocess=self.preprocess, task=i)
    return pipelines.stream_eval_dataset(part, input_context=input_context, global_batch_size=global_batch_size,
                                         preprocess=self.preprocess, task=i)

  def mixed_eval_dataset(self, seen: Sequence[int], input_context: Optional[tf.distribute.InputContext] = None, *,
                         global_batch_size: int, seed: int = 0,
                         drop_remainder_of: Optional[int] = None) -> tf.data.Dataset:
    """The mixed evaluation stream: the union of the evaluation sets `seen` (the examples `eval_dataset` would
    evaluate), shuffled with the fixed `seed`, so a batch does not know its task. Every element carries its set's
    index as 'task', from which the evaluator recovers each set's accuracy (`pipelines.mixed_eval_dataset`).

    Raises:
      ValueError: no set, a set index out of range or repeated, a set emptied by `drop_remainder_of`.
    """
    seen = list(seen)
    if not seen or len(set(seen)) != len(seen):
      raise ValueError(f'the mixed evaluation stream needs distinct evaluation set indices, got {seen!r}')
    check_positive('global_batch_size', global_batch_size, allow_none=False)
    parts = [(i, self._kept_eval_part(i, drop_remainder_of)) for i in seen]
    return pipelines.mixed_eval_dataset(parts, seed=seed, input_context=input_context,
                                        global_batch_size=global_batch_size, preprocess=self.preprocess)

  def eval_task_classes(self, i: int) -> Optional[tuple[int, ...]]:
    """The classes of the task whose test set evaluation set `i` is (its task-incremental logit mask), or None when
    the evaluation sets are not the tasks' test sets (joint training, task-agnostic streams)."""
    self._check_eval(i)
    if self.scenario in ('class_incremental', 'domain_incremental') and len(self.eval_names) == len(self.tasks):
      return tuple(self.tasks[i].classes)
    return None

  def _kept_eval_part(self, i: int, drop_remainder_of: Optional[int]) -> sources.Part:
    """Evaluation set `i`'s part, cut to whole batches of `drop_remainder_of` examples when it is given."""
    self._check_eval(i)
    check_positive('drop_remainder_of', drop_remainder_of)
    part = self._eval_part(i)
    if not drop_remainder_of:
      return part
    keep = part.num_examples // drop_remainder_of * drop_remainder_of
    if keep == 0:
      raise ValueError(f'Evaluation set {i} ({self.eval_names[i]}) has {part.num_examples} examples, fewer than '
                       f'one batch of drop_remainder_of={drop_remainder_of}: dropping the last partial batch '
                       'leaves none.')
    if isinstance(part, sources.ArrayPart):
      return dataclasses.replace(part, indices=part.indices[:keep])
    return dataclasses.replace(part, num_examples=keep)

  # Checks the trainer runs before training.
  def check_classes(self) -> None:
    """Every task's classes fit the head (ids 0..num_classes-1); reads no data, so it runs before the model is built.

    Raises:
      ValueError: naming the first task with a class outside the head.
    """
    for task in self.tasks:
      out_of_range = [c for c in task.classes if not 0 <= c < self.num_classes]
      if out_of_range:
        raise ValueError(f'Task {task.index} ({task.name}) trains classes {out_of_range[:5]} outside the head\'s range '
                         f'0..{self.num_classes - 1} ({self.num_classes} classes of {self.name}); fix the '
                         'benchmark\'s num_classes or its class ids.')

  def check_data(self, global_batch_size: int) -> list[int]:
    """Checks the prepared data: every task and evaluation set has examples, every task at least one step, and the
    labels of in-memory parts fit the head. Counting the examples prepares the data (a download, or reading the
    manual directory).

    Args:
      global_batch_size: examples per optimizer step over all replicas.

    Returns:
      The optimizer steps of every task (`steps_per_task`), in task order.

    Raises:
      ValueError: naming the task or evaluation set and what to change.
    """
    task_steps = [self.steps_per_task(t, global_batch_size) for t in range(len(self.tasks))]
    self._check_examples(task_steps, global_batch_size)
    parts = self._training_parts()
    for i, name in enumerate(self.eval_names):
      parts.append((f'evaluation set {i} ({name})', self._eval_part(i)))
    for what, part in parts:
      self._check_labels(what, part)
    return task_steps

  def _check_examples(self, task_steps: Sequence[int], global_batch_size: int) -> None:
    for t, n in enumerate(task_steps):
      examples = self.num_train_examples(t)
      if examples == 0:
        raise ValueError(f'Task {t} ({self.tasks[t].name}) has no training examples: none of its classes '
                         f'{_short(self.tasks[t].classes)} is in the training data. Check the benchmark\'s classes '
                         '(class_order, num_tasks, datasets) and that the data set is complete.')
      if n <= 0:
        raise ValueError(f'Task {t} ({self.tasks[t].name}) has {examples} training examples, fewer than one global '
                         f'batch of {global_batch_size}: it would train for 0 steps. Lower global_batch_size or check '
                         'the task definition.')
    for i, name in enumerate(self.eval_names):
      if self.num_eval_examples(i) == 0:
        raise ValueError(f'Evaluation set {i} ({name}) has no examples: none of its classes is in the test data. '
                         'Check the benchmark\'s classes and that the data set is complete.')

  def _check_labels(self, what: str, part: sources.Part) -> None:
    """The labels a part actually holds fit the head (in-memory parts; streamed ones are checked by the loss on CPU
    and the non-finite check)."""
    if isinstance(part, sources.ArrayPart) and len(part.indices):
      labels = np.asarray(part.labels)[part.indices]
      low, high = int(labels.min()), int(labels.max())
      if low < 0 or high >= self.num_classes:
        raise ValueError(f'The labels of {what} range over {low}..{high}, outside the head\'s {self.num_classes} '
                         f'classes (0..{self.num_classes - 1}) of {self.name}: fix the benchmark\'s num_classes or '
                         'its label offsets.')

  def _training_parts(self) -> list[tuple[str, sources.Part]]:
    """(description, part) of the training data whose labels `check_data` checks; none unless a subclass says."""
    return []

  # Results and console lines.
  def metric_curves(self, acc: np.ndarray) -> dict:
    """The metric curves of the accuracy rows so far (`cl_metrics.metric_curves`: avg_acc, forgetting, ...).

    Args:
      acc: float (tasks done, len(eval_names)) accuracy matrix rows, NaN where not evaluated.

    Returns:
      {'avg_acc', 'forgetting', 'backward', 'learning_acc'}: one value per row.
    """
    return cl_metrics.metric_curves(acc)

  def matrix_names(self) -> list[str]:
    """Names of the accuracy matrix's rows and columns (the tasks)."""
    return [t.name for t in self.tasks]

  def progress_lines(self, t: int, acc: np.ndarray, final: dict) -> list[str]:
    """Console lines after training segment `t` and its evaluation.

    Args:
      t: the segment just finished.
      acc: the accuracy matrix (rows up to `t` filled).
      final: the last value of each `metric_curves` curve.

    Returns:
      The lines: the matrix so far, then the average accuracy and forgetting.
    """
    return [cl_metrics.format_matrix(acc[:t + 1], self.matrix_names()),
            f'after task {t + 1}: avg_acc {final["avg_acc"]:.2f}  forgetting '
            f'{"-" if final["forgetting"] is None else format(final["forgetting"], ".2f")}']

  def eval_lines(self, t: int, acc: np.ndarray) -> list[str]:
    """Console lines of a re-evaluation (--mode=eval) after segment `t`: the accuracy matrix up to row `t`."""
    return [cl_metrics.format_matrix(acc[:t + 1], self.matrix_names())]

  # Hooks.
  def _num_train_examples(self, t: int) -> int:
    raise NotImplementedError

  def _eval_part(self, i: int) -> sources.Part:
    raise NotImplementedError

  def _train_dataset(self, t, input_context, *, global_batch_size, seed, start_step) -> tf.data.Dataset:
    raise NotImplementedError

  def __repr__(self) -> str:
    return (f'{type(self).__name__}(name={self.name!r}, scenario={self.scenario!r}, tasks={len(self.tasks)}, '
            f'num_classes={self.num_classes})')


def _short(classes: Sequence[int], n: int = 8) -> str:
  classes = list(classes)
  return str(classes) if len(classes) <= n else f'[{", ".join(map(str, classes[:n]))}, ... ({len(classes)} classes)]'


class OneEvaluationSet:
  """Mixin of benchmarks with one evaluation set, evaluated after every training segment: the curve is its accuracy
  after each segment (forgetting and transfer are not defined)."""

  def eval_ids_after(self, t: int) -> list[int]:
    """[0]: the one evaluation set, after every segment."""
    self._check_task(t)
    return [0]

  def metric_curves(self, acc: np.ndarray) -> dict:
    done = [float(r[0]) for r in acc if not np.isnan(r[0])]
    return {'avg_acc': done, 'forgetting': [None] * len(done), 'backward': [None] * len(done),
            'learning_acc': [None] * len(done)}


class TaskAgnosticBenchmark(OneEvaluationSet, ContinualBenchmark):
  """Base of benchmarks without task boundaries at test time (one evaluation set; see `OneEvaluationSet`)."""

  scenarios = ('task_agnostic',)
