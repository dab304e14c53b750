"""Losses: class-incremental mask, cross-entropy against hand-computed values, pull constraint."""

import math

import numpy as np
import pytest
import tensorflow as tf

from l2p_tf import losses

LOGITS = np.array([[1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]], np.float32)


def test_mask_logits_class_vector_and_per_example():
  out = losses.mask_logits(LOGITS, np.array([False, True, True, False])).numpy()
  np.testing.assert_array_equal(out, [[-np.inf, 2, 3, -np.inf], [-np.inf, 0, 0, -np.inf]])
  per_example = np.array([[True, False, False, False], [False, False, True, True]])
  out = losses.mask_logits(tf.constant(LOGITS, tf.bfloat16), per_example)
  assert out.dtype == tf.float32
  np.testing.assert_array_equal(out.numpy(), [[1, -np.inf, -np.inf, -np.inf], [-np.inf, -np.inf, 0, 0]])


def test_cross_entropy_by_hand():
  ce = losses.cross_entropy(LOGITS, np.array([2, 1])).numpy()
  # Example 0: -log(e^3 / (e + e^2 + e^3 + 1)); example 1: uniform over 4 classes, log 4.
  expected0 = -(3 - math.log(math.e + math.e ** 2 + math.e ** 3 + 1))
  np.testing.assert_allclose(ce, [expected0, math.log(4)], rtol=1e-6)
  assert ce.shape == (2,) and ce.dtype == np.float32


def test_masked_cross_entropy_is_cross_entropy_over_the_task_classes():
  mask = np.array([False, True, True, False])
  ce = losses.cross_entropy(LOGITS, np.array([2, 1]), label_mask=mask).numpy()
  # Only classes 1 and 2 remain: example 0 -log(e^3 / (e^2 + e^3)), example 1 log 2.
  np.testing.assert_allclose(ce, [-(3 - math.log(math.e ** 2 + math.e ** 3)), math.log(2)], rtol=1e-6)


def test_masked_gradient_is_finite_and_zero_outside_the_task():
  logits = tf.Variable(LOGITS)
  mask = np.array([False, True, True, False])
  for labels in (np.array([2, 1]), np.eye(4, dtype=np.float32)[[2, 1]]):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(losses.cross_entropy(logits, labels, label_mask=mask))
    grad = tape.gradient(loss, logits).numpy()
    assert np.all(np.isfinite(grad)), grad
    np.testing.assert_array_equal(grad[:, [0, 3]], 0)
    # Softmax minus one-hot over the two task classes: example 1 is uniform (0.5, 0.5) with label 1.
    np.testing.assert_allclose(grad[1, 1:3], [-0.5, 0.5], rtol=1e-6)


def test_one_hot_labels_match_class_ids():
  mask = np.array([True, True, True, False])
  sparse = losses.cross_entropy(LOGITS, np.array([0, 2]), label_mask=mask).numpy()
  dense = losses.cross_entropy(LOGITS, np.eye(4, dtype=np.float32)[[0, 2]], label_mask=mask).numpy()
  assert np.all(np.isfinite(dense))
  np.testing.assert_allclose(dense, sparse, rtol=1e-6)


def test_label_outside_the_mask_is_infinite():
  ce = losses.cross_entropy(LOGITS, np.array([0, 1]), label_mask=np.array([False, True, True, True])).numpy()
  assert np.isinf(ce[0]) and np.isfinite(ce[1])


def test_bad_label_rank():
  with pytest.raises(ValueError, match=r'\(2, 4, 1\)'):
    losses.cross_entropy(LOGITS, np.zeros((2, 4, 1), np.int32))


def test_pull_loss():
  np.testing.assert_allclose(losses.pull_loss(tf.constant(1.5), 0.5).numpy(), -0.75)
  assert losses.pull_loss(tf.constant(1.5, tf.float16), 1.0).dtype == tf.float32
