"""Image preprocessing for training and evaluation, stateless and deterministic.

Two geometries, as the official L2P input pipeline (`crop`, resolved by `resolve_crop`):

* 'pad' (the official path for `input_size == 32`, CIFAR's native size). Train: zero-pad (or centre-crop) the image
  to `image_size + 2 * PAD_CROP_MARGIN` square (`tf.image.resize_with_crop_or_pad`, 36 for 32), take a random
  `image_size` crop, a random horizontal flip, scale to [0, 1]. Eval: no resize and no crop; the image is only padded
  or centre-cropped to `image_size` when its size differs (a no-op for 32x32 CIFAR), then scaled to [0, 1].
* 'resized' (every other input size, e.g. 224). Train: resize to `resize_size(image_size)` (256 for 224;
  `round(image_size * 256 / 224)` otherwise), optionally a JPEG encode/decode round trip of the resized image (what
  the official L2P code does before cropping), an Inception-style random-resized crop covering 5%-100% of the area
  with aspect ratio in [3/4, 4/3], resized to `image_size`, a random horizontal flip, and scaling to [0, 1]. Eval:
  resize so the shorter side is `resize_size(image_size)`, centre-crop `image_size`, scale to [0, 1]. The JPEG round
  trip belongs to this path only (the official 32 px path has none).

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
# The official small-input path pads 32 -> 36: 2 pixels on each side.
PAD_CROP_MARGIN = 2
CROPS = ('auto', 'pad', 'resized')


def resolve_crop(crop: str, image_size: int) -> str:
  """The geometry a `crop` setting gives at `image_size`.

  Args:
    crop: 'auto' (the official rule: 'pad' when `image_size == 32`, 'resized' otherwise), 'pad' or 'resized'.
    image_size: side of the square network input.

  Returns:
    'pad' or 'resized'.

  Raises:
    ValueError: unknown `crop`.
  """
  if crop not in CROPS:
    raise ValueError(f'Unknown crop {crop!r}; choose one of {CROPS}.')
  if crop == 'auto':
    return 'pad' if image_size == 32 else 'resized'
  return crop


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


def pad_crop_train_preprocess(image: tf.Tensor, seed: tf.Tensor, *, image_size: int = 32,
                              margin: int = PAD_CROP_MARGIN, flip: bool = True) -> tf.Tensor:
  """Training augmentation of the official small-input path: pad, random crop, random flip, [0, 1].

  Args:
    image: uint8 (H, W, C) with C in {1, 3}.
    seed: int32/int64 tensor of shape [2], the stateless seed of this example.
    image_size: output side (32 in the official configs).
    margin: zero padding on each side before the crop (2: 32 -> 36).
    flip: random horizontal flip with probability 1/2.

  Returns:
    float32 (image_size, image_size, 3) in [0, 1].
  """
  image = to_rgb(image)
  padded = image_size + 2 * margin
  image = tf.image.resize_with_crop_or_pad(image, padded, padded)
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2))
  image = tf.image.stateless_random_crop(image, (image_size, image_size, 3), seed=crop_seed)
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  image = tf.cast(image, tf.float32) / 255.0
  image.set_shape((image_size, image_size, 3))
  return image


def pad_crop_eval_preprocess(image: tf.Tensor, *, image_size: int = 32) -> tf.Tensor:
  """Evaluation of the official small-input path: no resize; pad / centre-crop only if the size differs; [0, 1]."""
  image = to_rgb(image)
  image = tf.image.resize_with_crop_or_pad(image, image_size, image_size)
  image = tf.cast(image, tf.float32) / 255.0
  image.set_shape((image_size, image_size, 3))
  return image


def preprocess_train(image: tf.Tensor, seed: tf.Tensor, *, image_size: int, crop: str = 'auto',
                     jpeg_round_trip: bool = False) -> tf.Tensor:
  """Training preprocessing of one image by `crop` (see `resolve_crop`); `jpeg_round_trip` acts on 'resized' only."""
  if resolve_crop(crop, image_size) == 'pad':
    return pad_crop_train_preprocess(image, seed, image_size=image_size)
  return train_preprocess(image, seed, image_size=image_size, jpeg_round_trip=jpeg_round_trip)


def preprocess_eval(image: tf.Tensor, *, image_size: int, crop: str = 'auto') -> tf.Tensor:
  """Evaluation preprocessing of one image by `crop` (see `resolve_crop`)."""
  if resolve_crop(crop, image_size) == 'pad':
    return pad_crop_eval_preprocess(image, image_size=image_size)
  return eval_preprocess(image, image_size=image_size)


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
