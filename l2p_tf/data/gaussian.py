"""The Gaussian schedule (a task-agnostic stream whose class mix drifts smoothly) and `GaussianBenchmark`.

The math and the data rules are in the comment below; `gaussian_class_weights` and `gaussian_schedule` compute them.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np

from l2p_tf.data import benchmark
from l2p_tf.data import pipelines
from l2p_tf.data import sources

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
  benchmark.check_positive('num_episodes', num_episodes, allow_none=False)
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


class GaussianBenchmark(benchmark.TaskAgnosticBenchmark):
  """Task-agnostic benchmark whose class mix drifts along a Gaussian schedule (see the comment above).

  Scenario 'task_agnostic': one evaluation set (the whole test set) evaluated after every segment; the curves are its
  accuracy after each segment (no forgetting, backward transfer or learning accuracy).
  """

  def __init__(self, *, train_part: Callable[[], sources.ArrayPart],
               eval_part: Callable[[], sources.ArrayPart], episodes: Sequence[tuple[int, ...]],
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
    benchmark.check_positive('eval_every_episodes', eval_every_episodes, allow_none=False)
    benchmark.check_positive('steps_per_episode', steps_per_episode)
    benchmark.check_positive('max_tasks', max_tasks)
    self.episodes = [tuple(e) for e in episodes]
    self.eval_every_episodes = eval_every_episodes
    self.repeat_episodes = repeat_episodes
    self.steps_per_episode = steps_per_episode if steps_per_episode or not repeat_episodes else 5
    bounds = list(range(0, len(self.episodes), eval_every_episodes)) + [len(self.episodes)]
    self.segments = [(a, b) for a, b in zip(bounds[:-1], bounds[1:])][:max_tasks]
    tasks = [benchmark.Task(index=s, name=f'episodes_{a}-{b - 1}',
                  classes=tuple(sorted(set().union(*self.episodes[a:b])))) for s, (a, b) in enumerate(self.segments)]
    super().__init__(tasks=tasks, scenario='task_agnostic', eval_names=['all'], mask=mask, **kwargs)
    self._train_part_fn = train_part
    self._eval_part_fn = eval_part
    self._cache = {}
    self.stream_stats = {}

  def train_part(self) -> sources.ArrayPart:
    if 'train' not in self._cache:
      self._cache['train'] = self._train_part_fn()
    return self._cache['train']

  def progress_lines(self, t: int, acc: np.ndarray, final: dict) -> list[str]:
    return [f'after segment {t + 1}: accuracy on {self.eval_names[0]} {acc[t, 0]:.2f}%']

  def eval_lines(self, t: int, acc: np.ndarray) -> list[str]:
    return [f'accuracy on {self.eval_names[0]}: {acc[t, 0]:.2f}%']

  def _training_parts(self) -> list[tuple[str, sources.Part]]:
    return [('the training pool', self.train_part())]

  def _eval_part(self, i: int) -> sources.ArrayPart:
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
    benchmark.check_positive('global_batch_size', global_batch_size, allow_none=False)
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
    return pipelines.array_train_dataset(
        self.train_part(), plan[first:last], masks=self.episode_masks(), mask_ids=mask_ids,
        seed=pipelines.seed_base(seed, 0x6A05), input_context=input_context, global_batch_size=global_batch_size,
        start_step=start_step, preprocess=self.preprocess, element_offset=first * global_batch_size)
