"""RandAugment-style image augmentation with stateless randomness (for backbone pretraining).

`rand_augment(image, seed, num_ops=2, magnitude=5)` applies `num_ops` operations, each drawn uniformly from `OPS`,
at a fixed `magnitude` in [0, 10] (the scale of Cubuk et al. 2020, "RandAugment"); a geometric or colour operation
takes a random sign. Every random choice comes from the shape-[2] `seed`, so the same seed gives the same result on
every machine and every run (which is what lets a resumed pretraining run see exactly the batches it would have).

Images are float32 (H, W, 3) in [0, 1]. Geometric operations fill uncovered pixels with grey (0.5).

Operations and what magnitude m means (f = m / 10):

    identity
    brightness, color, contrast, sharpness   blend with black / grey-scale / mean grey / blurred by 1 +- 0.9 f
    solarize                                 invert pixels above 1 - f
    posterize                                keep 8 - round(4 f) bits
    autocontrast                             stretch each channel to [0, 1] (no magnitude)
    rotate                                   +- 30 f degrees
    shear_x, shear_y                         +- 0.3 f
    translate_x, translate_y                 +- 0.3 f of the side
"""

from __future__ import annotations

import math

import tensorflow as tf

OPS = ('identity', 'brightness', 'color', 'contrast', 'sharpness', 'solarize', 'posterize', 'autocontrast',
       'rotate', 'shear_x', 'shear_y', 'translate_x', 'translate_y')
MAX_MAGNITUDE = 10.0
FILL_VALUE = 0.5


def _blend(image: tf.Tensor, other: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """other + factor * (image - other), clipped: factor 1 is `image`, 0 is `other`, > 1 extrapolates."""
  return tf.clip_by_value(other + factor * (image - other), 0.0, 1.0)


def _grey(image: tf.Tensor) -> tf.Tensor:
  return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def _smooth(image: tf.Tensor) -> tf.Tensor:
  """PIL's SMOOTH filter (3x3, centre weight 5, total 13); the border keeps its original pixels."""
  kernel = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  blurred = tf.nn.depthwise_conv2d(image[None], kernel, strides=[1, 1, 1, 1], padding='VALID')[0]
  return tf.pad(blurred, [[1, 1], [1, 1], [0, 0]]) + tf.pad(
      tf.zeros_like(blurred), [[1, 1], [1, 1], [0, 0]], constant_values=1.0) * image


def _transform(image: tf.Tensor, matrix) -> tf.Tensor:
  """Projective transform; `matrix` = [a0, a1, a2, b0, b1, b2] maps output (x, y) to input coordinates."""
  shape = tf.shape(image)
  transform = tf.concat([tf.cast(tf.stack(matrix), tf.float32), tf.zeros([2])], axis=0)[None]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform, output_shape=shape[:2], fill_value=FILL_VALUE,
      interpolation='BILINEAR', fill_mode='CONSTANT')
  return out[0]


def _centre(image: tf.Tensor):
  shape = tf.cast(tf.shape(image), tf.float32)
  return (shape[1] - 1.0) / 2.0, (shape[0] - 1.0) / 2.0


def apply_op(image: tf.Tensor, op: str, magnitude: float, sign: tf.Tensor) -> tf.Tensor:
  """Applies one named operation at `magnitude` (0-10) with direction `sign` (+1. or -1.)."""
  f = tf.cast(magnitude / MAX_MAGNITUDE, tf.float32)
  s = tf.cast(sign, tf.float32)
  if op == 'identity':
    return image
  if op == 'brightness':
    return _blend(image, tf.zeros_like(image), 1.0 + s * 0.9 * f)
  if op == 'color':
    return _blend(image, _grey(image), 1.0 + s * 0.9 * f)
  if op == 'contrast':
    return _blend(image, tf.fill(tf.shape(image), tf.reduce_mean(tf.image.rgb_to_grayscale(image))), 1.0 + s * 0.9 * f)
  if op == 'sharpness':
    return _blend(image, _smooth(image), 1.0 + s * 0.9 * f)
  if op == 'solarize':
    return tf.where(image >= 1.0 - f, 1.0 - image, image)
  if op == 'posterize':
    shift = tf.round(4.0 * f)
    step = tf.pow(2.0, shift)
    return tf.floor(tf.round(image * 255.0) / step) * step / 255.0
  if op == 'autocontrast':
    lo = tf.reduce_min(image, axis=[0, 1], keepdims=True)
    hi = tf.reduce_max(image, axis=[0, 1], keepdims=True)
    return tf.where(hi > lo, (image - lo) / tf.maximum(hi - lo, 1e-6), image)
  cx, cy = _centre(image)
  if op == 'rotate':
    theta = s * f * 30.0 * math.pi / 180.0
    c, n = tf.cos(theta), tf.sin(theta)
    return _transform(image, [c, n, cx - c * cx - n * cy, -n, c, cy + n * cx - c * cy])
  if op == 'shear_x':
    k = s * 0.3 * f
    return _transform(image, [1.0, k, -k * cy, 0.0, 1.0, 0.0])
  if op == 'shear_y':
    k = s * 0.3 * f
    return _transform(image, [1.0, 0.0, 0.0, k, 1.0, -k * cx])
  side = tf.cast(tf.shape(image)[1 if op == 'translate_x' else 0], tf.float32)
  t = s * 0.3 * f * side
  if op == 'translate_x':
    return _transform(image, [1.0, 0.0, -t, 0.0, 1.0, 0.0])
  if op == 'translate_y':
    return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, -t])
  raise ValueError(f'Unknown augmentation op {op!r}; known: {OPS}.')


def rand_augment(image: tf.Tensor, seed: tf.Tensor, *, num_ops: int = 2, magnitude: float = 5.0,
                 ops=OPS) -> tf.Tensor:
  """Applies `num_ops` operations drawn uniformly (with replacement) from `ops`.

  Args:
    image: float32 (H, W, 3) in [0, 1].
    seed: shape-[2] int seed of this image.
    num_ops: operations per image (0 returns the image unchanged).
    magnitude: strength in [0, 10].
    ops: names from `OPS` to draw from.

  Returns:
    float32 (H, W, 3) in [0, 1], same shape.

  Raises:
    ValueError: a negative `num_ops`, a magnitude outside [0, 10] or an unknown op name.
  """
  if num_ops < 0:
    raise ValueError(f'num_ops must be >= 0, got {num_ops!r}')
  if not 0 <= magnitude <= MAX_MAGNITUDE:
    raise ValueError(f'magnitude must be in [0, {MAX_MAGNITUDE:g}], got {magnitude!r}')
  unknown = [o for o in ops if o not in OPS]
  if unknown:
    raise ValueError(f'Unknown augmentation op(s) {unknown}; known: {OPS}.')
  if num_ops == 0:
    return image
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=num_ops)
  shape = image.shape
  for i in range(num_ops):
    op_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(seeds[i], num=2))
    index = tf.random.stateless_uniform([], op_seed, minval=0, maxval=len(ops), dtype=tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
    branches = [lambda op=op: apply_op(image, op, magnitude, sign) for op in ops]
    image = tf.switch_case(index, branches)
    image = tf.ensure_shape(tf.clip_by_value(image, 0.0, 1.0), shape)
  return image
