"""Evaluates an L2P model on the test sets of the tasks seen so far.

Every test example counts exactly once: the input pipeline pads the last batch and marks padding `valid=False`;
padded examples are excluded from the accuracy, from the prompt-selection histogram and from the batchwise prompt
vote (the model's `valid` argument).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf


class Evaluator:
  """Counts correct predictions and prompt selections over distributed evaluation datasets.

  Args:
    strategy: the model's strategy.
    model: an `L2PModel`: `model(images, training=False, valid=..., selection=...)` returns `logits` and
      `prompt_ids`.
    selections: prompt-selection modes to evaluate ('batchwise', 'instancewise'); the first is the primary one (the
      accuracy matrix); the others are reported beside it. Ignored for models without a prompt pool.
    pool_size: number of prompts (histogram length); 0 for a model without a prompt pool.
  """

  def __init__(self, *, strategy: tf.distribute.Strategy, model, selections: Sequence[str] = ('batchwise',),
               pool_size: int = 0):
    if not selections:
      raise ValueError('selections must name at least one prompt-selection mode, got an empty sequence.')
    for s in selections:
      if s not in ('batchwise', 'instancewise'):
        raise ValueError(f"Unknown prompt selection {s!r}; use 'batchwise' or 'instancewise'.")
    self.strategy = strategy
    self.model = model
    self.selections = tuple(selections) if pool_size else (selections[0],)
    self.pool_size = pool_size
    self._steps = {s: tf.function(self._make_step(s)) for s in self.selections}

  def _make_step(self, selection: str) -> Callable:
    def replica_fn(batch):
      kwargs = {'selection': selection} if self.pool_size else {}
      out = self.model(batch['image'], training=False, valid=batch['valid'], **kwargs)
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

    def step(batch):
      per_replica = self.strategy.run(replica_fn, args=(batch,))
      return tuple(self.strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None) for x in per_replica)

    return step

  def evaluate(self, dataset) -> dict[str, dict]:
    """Evaluates one distributed dataset in every selection mode.

    Returns:
      {selection: {'accuracy': percent, 'correct': int, 'count': int, 'prompt_histogram': np.ndarray (M,)}}.
    """
    results = {}
    for selection, step in self._steps.items():
      correct = count = 0.0
      hist = np.zeros([max(self.pool_size, 1)], np.float64)
      for batch in dataset:
        c, n, h = step(batch)
        correct += float(c)
        count += float(n)
        hist += h.numpy()
      if count == 0:
        raise ValueError('The evaluation dataset has no valid examples; check the task and its test split.')
      results[selection] = {'accuracy': 100.0 * correct / count, 'correct': int(correct), 'count': int(count),
                            'prompt_histogram': hist[:self.pool_size]}
    return results
