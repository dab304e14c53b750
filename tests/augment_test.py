"""Tests of l2p_tf.data.augment: each operation's effect, ranges, shapes and seeded determinism."""

import numpy as np
import pytest
import tensorflow as tf

from l2p_tf.data import augment


def _image(seed=0, size=16):
  return tf.constant(np.random.default_rng(seed).random((size, size, 3)), tf.float32)


@pytest.mark.parametrize('op', augment.OPS)
def test_every_op_keeps_shape_and_range(op):
  x = _image()
  for sign in (-1.0, 1.0):
    y = augment.apply_op(x, op, 10.0, tf.constant(sign)).numpy()
    assert y.shape == (16, 16, 3)
    assert y.min() >= 0.0 and y.max() <= 1.0


@pytest.mark.parametrize('op', ['brightness', 'color', 'contrast', 'sharpness', 'rotate', 'shear_x', 'shear_y',
                                'translate_x', 'translate_y'])
def test_magnitude_zero_is_identity(op):
  x = _image(1)
  np.testing.assert_allclose(augment.apply_op(x, op, 0.0, tf.constant(1.0)).numpy(), x.numpy(), atol=1e-5)


def test_translate_moves_content_by_the_expected_pixels():
  x = np.zeros((20, 20, 3), np.float32)
  x[:, 5] = 1.0  # A vertical white line at column 5.
  # Magnitude 10 -> 0.3 of the side = 6 pixels; a positive sign moves the content right.
  y = augment.apply_op(tf.constant(x), 'translate_x', 10.0, tf.constant(1.0)).numpy()
  assert np.allclose(y[:, 11], 1.0) and np.allclose(y[:, 6:11], 0.0) and np.allclose(y[:, 12:], 0.0)
  assert np.allclose(y[:, :6], augment.FILL_VALUE)  # Uncovered pixels are grey.


def test_rotate_keeps_a_centred_disc_and_moves_an_off_centre_dot():
  # Rotation is about the image centre: a centred disc stays where it is.
  yy, xx = np.mgrid[0:21, 0:21]
  disc = ((yy - 10) ** 2 + (xx - 10) ** 2 <= 36).astype(np.float32)
  x = np.repeat(disc[..., None], 3, axis=-1)
  y = augment.apply_op(tf.constant(x), 'rotate', 10.0, tf.constant(1.0)).numpy()
  np.testing.assert_allclose(y[7:14, 7:14], x[7:14, 7:14], atol=0.05)
  # A dot 8 pixels right of the centre goes to (10 + 8 cos 30, 10 +- 8 sin 30) = (16.9, 6 or 14).
  dot = np.zeros((21, 21, 3), np.float32)
  dot[10, 18] = 1.0
  moved = augment.apply_op(tf.constant(dot), 'rotate', 10.0, tf.constant(1.0)).numpy()[..., 0]
  row, col = np.unravel_index(np.argmax(moved), moved.shape)
  assert abs(col - 16.9) <= 1 and min(abs(row - 6), abs(row - 14)) <= 1


def test_solarize_posterize_autocontrast():
  x = tf.constant([[[0.1, 0.5, 0.95]]], tf.float32)
  np.testing.assert_allclose(augment.apply_op(x, 'solarize', 5.0, tf.constant(1.0)).numpy(),
                             [[[0.1, 0.5, 0.05]]], atol=1e-6)  # Threshold 0.5: 0.5 and 0.95 are inverted.
  y = augment.apply_op(x, 'posterize', 10.0, tf.constant(1.0)).numpy()  # 4 bits kept: multiples of 16/255.
  np.testing.assert_allclose(y * 255.0 / 16.0, np.floor(np.round(x.numpy() * 255.0) / 16.0), atol=1e-4)
  z = tf.constant(np.linspace(0.2, 0.6, 48, dtype=np.float32).reshape(4, 4, 3))
  w = augment.apply_op(z, 'autocontrast', 0.0, tf.constant(1.0)).numpy()
  np.testing.assert_allclose(w.min(axis=(0, 1)), 0.0, atol=1e-6)
  np.testing.assert_allclose(w.max(axis=(0, 1)), 1.0, atol=1e-6)


def test_rand_augment_is_seeded():
  x = _image(2)
  a = augment.rand_augment(x, tf.constant([1, 2]), num_ops=3, magnitude=9).numpy()
  b = augment.rand_augment(x, tf.constant([1, 2]), num_ops=3, magnitude=9).numpy()
  np.testing.assert_array_equal(a, b)
  others = [augment.rand_augment(x, tf.constant([1, s]), num_ops=3, magnitude=9).numpy() for s in range(3, 9)]
  assert any(not np.allclose(a, o) for o in others)
  np.testing.assert_array_equal(augment.rand_augment(x, tf.constant([1, 2]), num_ops=0).numpy(), x.numpy())


def test_rand_augment_in_a_dataset_map():
  ds = tf.data.Dataset.range(4).map(
      lambda i: augment.rand_augment(tf.fill([8, 8, 3], 0.3), tf.stack([tf.constant(0, tf.int64), i]), num_ops=2,
                                     magnitude=5))
  for y in ds:
    assert y.shape == (8, 8, 3)


def test_bad_arguments():
  with pytest.raises(ValueError, match='magnitude'):
    augment.rand_augment(_image(), tf.constant([0, 0]), magnitude=11)
  with pytest.raises(ValueError, match="'blur'"):
    augment.rand_augment(_image(), tf.constant([0, 0]), ops=('blur',))
  with pytest.raises(ValueError, match='num_ops'):
    augment.rand_augment(_image(), tf.constant([0, 0]), num_ops=-1)
