"""Continual-learning metrics from an accuracy matrix (numpy).

Convention: `acc[t, i]` is the top-1 accuracy (percent) on task i's test set after training through task t, for
i <= t; entries with i > t are NaN (not evaluated). Rows are "after task t", columns are "task i":

  avg_acc(t)      = mean over i <= t of acc[t, i]                       (unweighted over tasks)
  forgetting(t)   = mean over i < t of (max over j in [i, t] of acc[j, i] - acc[t, i])
  backward(t)     = mean over i < t of (acc[t, i] - acc[i, i])           (backward transfer; negative = forgetting)
  learning_acc(t) = mean over i <= t of acc[i, i]                       (accuracy just after learning each task)

Forgetting takes the maximum over every evaluation j <= t of task i (as the L2P code does, so it is never negative):
a task that improved after it was learned and then dropped counts its drop from the best value.
With a single task, forgetting and backward transfer are undefined and reported as None.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np


def _check(acc: np.ndarray, t: int) -> np.ndarray:
  acc = np.asarray(acc, dtype=np.float64)
  if acc.ndim != 2 or acc.shape[0] > acc.shape[1]:
    raise ValueError(f'accuracy matrix must be (tasks_trained, num_tasks) with rows <= columns; got {acc.shape}.')
  if not 0 <= t < acc.shape[0]:
    raise ValueError(f'task index t={t} is outside the {acc.shape[0]} trained rows of the accuracy matrix.')
  if np.isnan(acc[t, :t + 1]).any():
    raise ValueError(f'accuracy matrix row {t} has missing entries among tasks 0..{t}: {acc[t, :t + 1]}.')
  return acc


def avg_acc(acc, t: int) -> float:
  acc = _check(acc, t)
  return float(np.mean(acc[t, :t + 1]))


def forgetting(acc, t: int) -> Optional[float]:
  acc = _check(acc, t)
  if t == 0:
    return None
  drops = [np.max(acc[i:t + 1, i]) - acc[t, i] for i in range(t)]
  return float(np.mean(drops))


def backward(acc, t: int) -> Optional[float]:
  acc = _check(acc, t)
  if t == 0:
    return None
  return float(np.mean([acc[t, i] - acc[i, i] for i in range(t)]))


def learning_acc(acc, t: int) -> float:
  acc = _check(acc, t)
  return float(np.mean([acc[i, i] for i in range(t + 1)]))


def all_metrics(acc, t: int) -> dict[str, Optional[float]]:
  """The four metrics after task t."""
  return {'avg_acc': avg_acc(acc, t), 'forgetting': forgetting(acc, t), 'backward': backward(acc, t),
          'learning_acc': learning_acc(acc, t)}


def metric_curves(acc) -> dict[str, list[Optional[float]]]:
  """Each metric after every trained task (rows of `acc` that are complete)."""
  acc = np.asarray(acc, dtype=np.float64)
  curves = {k: [] for k in ('avg_acc', 'forgetting', 'backward', 'learning_acc')}
  for t in range(acc.shape[0]):
    if np.isnan(acc[t, :t + 1]).any():
      break
    for k, v in all_metrics(acc, t).items():
      curves[k].append(v)
  return curves


def joint_curves(acc) -> dict[str, list[Optional[float]]]:
  """Metrics of a joint-training run: one row, every task evaluated after training on all of them at once.

  avg_acc and learning_acc are the mean over the tasks of that row (each task's accuracy right after it was learned
  is that row too); forgetting and backward transfer are 0 (nothing is learned after anything else).
  """
  acc = np.asarray(acc, dtype=np.float64)
  if not len(acc) or np.isnan(acc[0]).any():
    return {k: [] for k in ('avg_acc', 'forgetting', 'backward', 'learning_acc')}
  mean = float(np.mean(acc[0]))
  return {'avg_acc': [mean], 'forgetting': [0.0], 'backward': [0.0], 'learning_acc': [mean]}


def format_matrix(acc, names: Sequence[str]) -> str:
  """A fixed-width table of the accuracy matrix: one row per trained task, one column per task."""
  acc = np.asarray(acc, dtype=np.float64)
  width = max(7, max(len(n) for n in names) + 1)
  head = 'after \\ on'.ljust(12) + ''.join(n.rjust(width) for n in names) + '  avg_acc'.rjust(10)
  lines = [head]
  for t in range(acc.shape[0]):
    row = acc[t]
    if np.isnan(row[:t + 1]).any():
      break
    cells = ''.join(('-' if math.isnan(v) else f'{v:.2f}').rjust(width) for v in row)
    lines.append(names[t][:11].ljust(12) + cells + f'{np.nanmean(row[:t + 1]):10.2f}')
  return '\n'.join(lines)
