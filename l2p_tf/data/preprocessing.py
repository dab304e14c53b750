"""Image preprocessing for training and evaluation (as the official L2P code), stateless and deterministic.

Train: resize to `resize_size(image_size)` (256 for 224; `round(image_size * 256 / 224)` otherwise), optionally a
JPEG encode/decode round trip (what the official L2P code does to small images before cropping), an Inception-style
random-resized crop covering 5%-100% of the area with aspect ratio in [3/4, 4/3], resized to `image_size`, a random
horizontal flip, and scaling to [0, 1].

Eval: resize so the shorter side is `resize_size(image_size)`, centre-crop `image_size`, scale to [0, 1].

Every random choice is a stateless op driven by an explicit `seed` (a shape-[2] int tensor), so the same seed gives
the same crop on every machine and on every run: the input pipeline derives the seed from (run seed, task, element
index), which is what makes a resumed run see exactly the batches the preempted one would have seen.

Grayscale inputs (MNIST, notMNIST, Fashion-MNIST) are turned into RGB by repeating the channel.
"""

from __future__ import annotations

import tensorflow as tf

# Defaults of the official code (and of torchvision's RandomResizedCrop) except the area, which L2P lowers to 5%.
CROP_AREA_RANGE = (0.05, 1.0)
CROP_ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
DEFAULT_JPEG_QUALITY = 95


def resize_size(image_size: int) -> int:
  """The size images are resized to before cropping: 256 for 224, scaled proportionally for other sizes.

  Args:
    image_size: side of the square network input.

  Returns:
    `round(image_size * 256 / 224)`.

  Raises:
    ValueError: if `image_size` is not a positive integer.
  """
  if not isinstance(image_size, int) or image_size <= 0:
    raise ValueError(f'image_size must be a positive int, got {image_size!r}')
  return int(round(image_size * 256 / 224))


def to_rgb(image: tf.Tensor) -> tf.Tensor:
  """Repeats a single channel three times; RGB images pass through unchanged."""
  if image.shape[-1] == 1:
    return tf.image.grayscale_to_rgb(image)
  if image.shape[-1] is None:
    return tf.cond(tf.shape(image)[-1] == 1, lambda: tf.image.grayscale_to_rgb(image), lambda: image)
  return image


def _resize_shorter_side(image: tf.Tensor, size: int) -> tf.Tensor:
  """Bilinear resize so that the shorter side is `size` (square inputs become size x size). Returns float32."""
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  scale = tf.cast(size, tf.float32) / tf.minimum(h, w)
  new_h = tf.cast(tf.round(h * scale), tf.int32)
  new_w = tf.cast(tf.round(w * scale), tf.int32)
  return tf.image.resize(image, tf.stack([new_h, new_w]), method='bilinear')


def train_preprocess(image: tf.Tensor, seed: tf.Tensor, *, image_size: int = 224, jpeg_round_trip: bool = False,
                     jpeg_quality: int = DEFAULT_JPEG_QUALITY, area_range=CROP_AREA_RANGE,
                     aspect_ratio_range=CROP_ASPECT_RATIO_RANGE, flip: bool = True) -> tf.Tensor:
  """Training augmentation of one image.

  Args:
    image: uint8 (H, W, C) with C in {1, 3}.
    seed: int32/int64 tensor of shape [2], the stateless seed of this example.
    image_size: output side.
    jpeg_round_trip: encode the resized image as JPEG and decode it again before cropping (official L2P code).
    jpeg_quality: JPEG quality of the round trip.
    area_range: range of the crop's fraction of the resized image's area.
    aspect_ratio_range: range of the crop's width / height.
    flip: random horizontal flip with probability 1/2.

  Returns:
    float32 (image_size, image_size, 3) in [0, 1].
  """
  image = to_rgb(image)
  image = _resize_shorter_side(image, resize_size(image_size))
  if jpeg_round_trip:
    encoded = tf.io.encode_jpeg(tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), quality=jpeg_quality)
    image = tf.cast(tf.io.decode_jpeg(encoded, channels=3), tf.float32)
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2))
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=crop_seed,
      min_object_covered=0.0, aspect_ratio_range=aspect_ratio_range, area_range=area_range, max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  image = tf.slice(image, begin, size)
  image = tf.image.resize(image, (image_size, image_size), method='bilinear')
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  image = tf.clip_by_value(image / 255.0, 0.0, 1.0)
  image.set_shape((image_size, image_size, 3))
  return image


def eval_preprocess(image: tf.Tensor, *, image_size: int = 224) -> tf.Tensor:
  """Evaluation preprocessing of one image: resize the shorter side, centre crop, scale to [0, 1].

  Args:
    image: uint8 (H, W, C) with C in {1, 3}.
    image_size: output side.

  Returns:
    float32 (image_size, image_size, 3) in [0, 1].
  """
  image = to_rgb(image)
  image = _resize_shorter_side(image, resize_size(image_size))
  shape = tf.shape(image)
  top = (shape[0] - image_size) // 2
  left = (shape[1] - image_size) // 2
  image = tf.slice(image, tf.stack([top, left, 0]), tf.stack([image_size, image_size, -1]))
  image = tf.clip_by_value(image / 255.0, 0.0, 1.0)
  image.set_shape((image_size, image_size, 3))
  return image
