"""Benchmarks cut into segments: `SegmentedBenchmark` (class- or domain-incremental: task t trains on one part,
evaluation set i is another) and `JointBenchmark` (the joint-training upper bound: one segment holding every task).
"""

from __future__ import annotations

from typing import Callable, Sequence

from absl import logging
import numpy as np

from l2p_tf import cl_metrics
from l2p_tf.data import benchmark
from l2p_tf.data import pipelines
from l2p_tf.data import sources


class SegmentedBenchmark(benchmark.ContinualBenchmark):
  """Class- or domain-incremental benchmark: task t trains on one part, evaluation set i is another part.

  Parts are built lazily (the first time a task's data is needed), so constructing a benchmark reads no data.
  """

  def __init__(self, *, train_parts: Sequence[Callable[[], sources.Part]], eval_parts: Sequence[Callable[[],
                                                                                                         sources.Part]],
               mask: str = 'class', shuffle_buffer: int = 10_000, **kwargs):
    """Initialises the benchmark.

    Args:
      train_parts: one zero-argument function per task returning its training part.
      eval_parts: one zero-argument function per evaluation set.
      mask: 'class' (logits restricted to the task's classes in training) or 'none' (all logits).
      shuffle_buffer: shuffle buffer of streamed (large-image) parts.
      **kwargs: `ContinualBenchmark` arguments (scenario 'class_incremental' or 'domain_incremental').

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

  def _part(self, key, fn) -> sources.Part:
    if key not in self._parts:
      self._parts[key] = fn()
    return self._parts[key]

  def train_part(self, t: int) -> sources.Part:
    """The training examples of task `t`."""
    self._check_task(t)
    return self._part(('train', t), self._train_part_fns[t])

  def _training_parts(self) -> list[tuple[str, sources.Part]]:
    return [(f'task {t} ({task.name}) training data', self.train_part(t)) for t, task in enumerate(self.tasks)]

  def _eval_part(self, i: int) -> sources.Part:
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
    if isinstance(part, sources.ArrayPart):
      plan = pipelines.epoch_plan(part.num_examples, steps=steps, global_batch_size=global_batch_size,
                                  seed=seed, task=t)
      return pipelines.array_train_dataset(
          part, plan, masks=mask[None], mask_ids=None, seed=pipelines.seed_base(seed, t),
          input_context=input_context, global_batch_size=global_batch_size, start_step=start_step,
          preprocess=self.preprocess)
    return pipelines.stream_train_dataset(
        part, steps=steps, mask=mask, seed=seed, task=t, input_context=input_context,
        global_batch_size=global_batch_size, start_step=start_step, shuffle_buffer=self.shuffle_buffer,
        preprocess=self.preprocess)


class JointBenchmark(SegmentedBenchmark):
  """The joint-training upper bound: one training segment holding every task, evaluated on every task's set.

  Scenario 'joint': after the segment every evaluation set is evaluated, the accuracy matrix is named by the
  evaluation sets, and the curves are `cl_metrics.joint_curves` (forgetting is 0 by construction).
  """

  scenarios = ('joint',)

  def __init__(self, **kwargs):
    """Initialises the benchmark.

    Args:
      **kwargs: `SegmentedBenchmark` arguments other than scenario.
    """
    super().__init__(scenario='joint', **kwargs)

  def eval_ids_after(self, t: int) -> list[int]:
    """Every evaluation set (the one training segment holds all tasks)."""
    self._check_task(t)
    return list(range(len(self.eval_names)))

  def metric_curves(self, acc: np.ndarray) -> dict:
    return cl_metrics.joint_curves(acc)

  def matrix_names(self) -> list[str]:
    return list(self.eval_names)

  def progress_lines(self, t: int, acc: np.ndarray, final: dict) -> list[str]:
    return ['joint training, accuracy per task: ' + ', '.join(
        f'{n} {a:.2f}' for n, a in zip(self.eval_names, acc[t])) + f'; avg_acc {final["avg_acc"]:.2f}']


class CommonTestBenchmark(benchmark.OneEvaluationSet, SegmentedBenchmark):
  """Domain-incremental training segments evaluated on one common test set (CORe50's protocol).

  After every segment the one evaluation set is evaluated; the curve is its accuracy (forgetting and transfer need
  one evaluation set per task and are not defined).
  """

  scenarios = ('domain_incremental',)

  def __init__(self, **kwargs):
    """Initialises the benchmark.

    Args:
      **kwargs: `SegmentedBenchmark` arguments other than scenario, with one evaluation set.

    Raises:
      ValueError: more or fewer than one evaluation set.
    """
    if len(kwargs.get('eval_names', ())) != 1:
      raise ValueError(f'{type(self).__name__} evaluates one common test set, got {kwargs.get("eval_names")!r}')
    super().__init__(scenario='domain_incremental', **kwargs)

  def progress_lines(self, t: int, acc: np.ndarray, final: dict) -> list[str]:
    return [f'after task {t + 1} ({self.tasks[t].name}): accuracy on {self.eval_names[0]} {acc[t, 0]:.2f}%']

  def eval_lines(self, t: int, acc: np.ndarray) -> list[str]:
    return [f'accuracy on {self.eval_names[0]}: {acc[t, 0]:.2f}%']
