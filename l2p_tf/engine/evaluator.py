"""Evaluates any method on distributed evaluation datasets.

Every test example counts exactly once: the input pipeline pads the last batch and marks padding `valid=False`;
padded examples are excluded from the accuracy, from the prompt-selection histogram and (through `Method.predict`'s
`valid`) from anything that pools over the batch, such as L2P's batchwise prompt vote.

Frozen work reused: when the method says its fixed features (L2P: the [CLS] query of the frozen backbone) never change
(`Method.frozen_features_are_fixed`) and `reuse_fixed_features` is on, an evaluation given a `key` (the run passes
the evaluation set's index) computes them once per batch, keeps them on the device (per set: (N, D) float32 for L2P)
and hands them to `predict` in every selection mode of this and each later evaluation of that set, so a set's query
pass runs once per run instead of once per selection per evaluation. The predictions are those of recomputing.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from l2p_tf.methods import base as method_base

SELECTIONS = ('batchwise', 'instancewise')


class Evaluator:
  """Counts correct predictions and prompt selections.

  Args:
    strategy: the method's strategy.
    method: a built `Method`.
    selections: prompt-selection modes to evaluate ('batchwise', 'instancewise'); the first is the primary one (the
      accuracy matrix); the others are reported beside it. A method without a prompt pool is evaluated once, under
      the first name.
    reuse_fixed_features: keep each keyed evaluation set's fixed features for later evaluations (module docstring);
      used only when the method's `frozen_features_are_fixed`.
  """

  def __init__(self, *, strategy: tf.distribute.Strategy, method: method_base.Method,
               selections: Sequence[str] = ('batchwise',), reuse_fixed_features: bool = False):
    if not selections:
      raise ValueError('selections must name at least one prompt-selection mode, got an empty sequence.')
    for s in selections:
      if s not in SELECTIONS:
        raise ValueError(f'Unknown prompt selection {s!r}; use one of {SELECTIONS}.')
    self.strategy = strategy
    self.method = method
    self.pool_size = method.pool_size
    self.selections = tuple(selections) if self.pool_size else (selections[0],)
    self._steps = {s: tf.function(self._make_step(s if self.pool_size else None)) for s in self.selections}
    self.reuse = bool(reuse_fixed_features) and method.frozen_features_are_fixed
    self._fixed = {}  # key -> [per-batch fixed features (per-replica values)], in the dataset's batch order.
    self._fixed_step = tf.function(lambda batch: strategy.run(method.fixed_features, args=(batch['image'],)))

  def _make_step(self, selection) -> Callable:
    def replica_fn(batch, fixed):
      kwargs = {} if fixed is None else {'fixed': fixed}
      out = self.method.predict(batch['image'], valid=batch['valid'], selection=selection, **kwargs)
      valid = tf.cast(batch['valid'], tf.float32)
      pred = tf.argmax(out['logits'], axis=-1, output_type=tf.int32)
      correct = tf.reduce_sum(tf.cast(tf.equal(pred, tf.cast(batch['label'], tf.int32)), tf.float32) * valid)
      count = tf.reduce_sum(valid)
      if self.pool_size:
        ids = out['prompt_ids']
        weights = tf.broadcast_to(valid[:, None], tf.shape(ids))
        hist = tf.math.bincount(ids, weights=weights, minlength=self.pool_size, maxlength=self.pool_size,
                                dtype=tf.float32)
      else:
        hist = tf.zeros([1], tf.float32)
      return correct, count, hist

    def step(batch, fixed=None):
      per_replica = self.strategy.run(replica_fn, args=(batch, fixed))
      return tuple(self.strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None) for x in per_replica)

    return step

  def evaluate(self, dataset, key=None) -> dict[str, dict]:
    """Evaluates one distributed dataset in every selection mode.

    Args:
      dataset: a distributed evaluation dataset (the same batches in the same order every time it is iterated).
      key: names the evaluation set for the reuse of its fixed features (module docstring); None reuses nothing.

    Returns:
      {selection: {'accuracy': percent, 'correct': int, 'count': int, 'prompt_histogram': np.ndarray (M,)}}.
    """
    fixed = self.fixed_features(dataset, key)
    results = {}
    for selection, step in self._steps.items():
      correct = count = 0.0
      hist = np.zeros([max(self.pool_size, 1)], np.float64)
      batches = 0
      for batch in dataset:
        c, n, h = step(batch) if fixed is None else step(batch, fixed[batches])
        batches += 1
        correct += float(c)
        count += float(n)
        hist += h.numpy()
      if fixed is not None and batches != len(fixed):
        raise ValueError(f'Evaluation set {key!r} gave {batches} batches, its kept features {len(fixed)}: the '
                         'dataset must give the same batches every time.')
      if count == 0:
        raise ValueError('The evaluation dataset has no valid examples; check the task and its test split.')
      results[selection] = {'accuracy': 100.0 * correct / count, 'correct': int(correct), 'count': int(count),
                            'prompt_histogram': hist[:self.pool_size]}
    return results

  def fixed_features(self, dataset, key) -> Optional[list]:
    """The kept per-batch fixed features of evaluation set `key`, computed on its first evaluation (None: no reuse)."""
    if not self.reuse or key is None:
      return None
    if key not in self._fixed:
      self._fixed[key] = [self._fixed_step(batch) for batch in dataset]
    return self._fixed[key]
