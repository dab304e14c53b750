"""L2P losses: class-incremental logit mask, softmax cross-entropy, pull constraint.

The training objective of the official code (train_continual.py) is

    loss = mean_b CE(mask(logits_b), y_b) - pull_coefficient * reduce_sim

where in class-incremental training the logits of classes outside the current task are set to -inf (a domain-
incremental run passes no mask). Everything here computes in float32 whatever the dtype of its inputs.
"""

from __future__ import annotations

import tensorflow as tf


def mask_logits(logits, label_mask):
  """Sets the logits of classes outside `label_mask` to -inf.

  Args:
    logits: (B, C) logits.
    label_mask: bool (or 0/1) tensor of shape (B, C) or (C,); True keeps the logit.

  Returns:
    (B, C) float32 logits with -inf where the mask is False.
  """
  logits = tf.cast(logits, tf.float32)
  keep = tf.cast(label_mask, tf.bool)
  return tf.where(keep, logits, tf.constant(float('-inf'), tf.float32))


def cross_entropy(logits, labels, label_mask=None):
  """Per-example softmax cross-entropy in float32.

  Args:
    logits: (B, C) logits.
    labels: (B,) integer class ids, or (B, C) one-hot / soft targets.
    label_mask: optional bool (B, C) or (C,); classes outside it get -inf logits first (see `mask_logits`). A label
      outside the mask gives an infinite loss.

  Returns:
    (B,) float32 losses (sum them and divide by the global batch size for the distributed mean).

  Raises:
    ValueError: labels whose rank is neither that of `logits` nor one less.
  """
  logits = tf.cast(logits, tf.float32)
  if label_mask is not None:
    logits = mask_logits(logits, label_mask)
  labels = tf.convert_to_tensor(labels)
  if labels.shape.rank == logits.shape.rank:
    targets = tf.cast(labels, tf.float32)
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    # 0 * -inf would be NaN: masked classes carry no target mass, so they contribute exactly 0.
    log_probs = tf.where(targets > 0, log_probs, tf.zeros_like(log_probs))
    return -tf.reduce_sum(targets * log_probs, axis=-1)
  if labels.shape.rank != logits.shape.rank - 1:
    raise ValueError(f'labels of shape {labels.shape} do not match logits of shape {logits.shape}; pass class ids '
                     '(B,) or targets (B, C).')
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=logits)


def pull_loss(reduce_sim, pull_coefficient):
  """The pull constraint term `-pull_coefficient * reduce_sim` (float32 scalar) that draws selected keys to queries."""
  return -tf.cast(pull_coefficient, tf.float32) * tf.cast(reduce_sim, tf.float32)
