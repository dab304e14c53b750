"""Tests of l2p_tf.data.preprocessing: sizes, ranges, determinism, grayscale handling, centre crop geometry."""

import numpy as np
import tensorflow as tf

from l2p_tf.data import preprocessing


def _image(h=32, w=32, c=3, seed=0):
  return tf.constant(np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8))


class PreprocessingTest(tf.test.TestCase):

  def test_resize_size_scales_256_over_224(self):
    self.assertEqual(preprocessing.resize_size(224), 256)
    self.assertEqual(preprocessing.resize_size(384), 439)  # round(384 * 256 / 224) = round(438.86)
    self.assertEqual(preprocessing.resize_size(32), 37)
    with self.assertRaisesRegex(ValueError, '-3'):
      preprocessing.resize_size(-3)

  def test_train_shape_range_and_determinism(self):
    image = _image()
    seed = tf.constant([3, 7], tf.int64)
    a = preprocessing.train_preprocess(image, seed, image_size=48)
    b = preprocessing.train_preprocess(image, seed, image_size=48)
    c = preprocessing.train_preprocess(image, tf.constant([3, 8], tf.int64), image_size=48)
    self.assertEqual(a.shape, (48, 48, 3))
    self.assertEqual(a.dtype, tf.float32)
    self.assertAllEqual(a, b)
    self.assertNotAllClose(a, c)
    self.assertGreaterEqual(float(tf.reduce_min(a)), 0.0)
    self.assertLessEqual(float(tf.reduce_max(a)), 1.0)

  def test_random_crops_cover_the_documented_area_range(self):
    # A horizontal ramp: the crop's width fraction shows in the output's range of values.
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.float32)[None, :, None], (64, 1, 3)).round().astype(np.uint8)
    spans = []
    for s in range(40):
      out = preprocessing.train_preprocess(tf.constant(ramp), tf.constant([s, 0], tf.int64), image_size=32,
                                           flip=False).numpy()
      spans.append(out[0, -1, 0] - out[0, 0, 0])
    spans = np.array(spans)
    self.assertGreater(spans.max(), 0.6)   # Some crops are wide ...
    self.assertLess(spans.min(), 0.45)     # ... some narrow (area down to 5%).
    self.assertTrue(np.all(spans > 0))     # Never flipped when flip=False.

  def test_flip_happens_for_some_seeds(self):
    ramp = np.tile(np.linspace(0, 255, 32, dtype=np.float32)[None, :, None], (32, 1, 3)).round().astype(np.uint8)
    signs = set()
    for s in range(20):
      out = preprocessing.train_preprocess(tf.constant(ramp), tf.constant([s, 1], tf.int64), image_size=16).numpy()
      signs.add(bool(out[0, -1, 0] > out[0, 0, 0]))
    self.assertEqual(signs, {True, False})

  def test_grayscale_becomes_rgb(self):
    gray = _image(28, 28, 1)
    out = preprocessing.train_preprocess(gray, tf.constant([1, 2], tf.int64), image_size=32)
    self.assertEqual(out.shape, (32, 32, 3))
    self.assertAllEqual(out[..., 0], out[..., 1])
    self.assertAllEqual(out[..., 0], out[..., 2])
    self.assertEqual(preprocessing.eval_preprocess(gray, image_size=32).shape, (32, 32, 3))

  def test_jpeg_round_trip_is_close_and_deterministic(self):
    image = _image(32, 32, 3, seed=1)
    seed = tf.constant([5, 5], tf.int64)
    plain = preprocessing.train_preprocess(image, seed, image_size=64)
    jpeg1 = preprocessing.train_preprocess(image, seed, image_size=64, jpeg_round_trip=True)
    jpeg2 = preprocessing.train_preprocess(image, seed, image_size=64, jpeg_round_trip=True)
    self.assertAllEqual(jpeg1, jpeg2)
    self.assertNotAllClose(plain, jpeg1)
    self.assertLess(float(tf.reduce_mean(tf.abs(plain - jpeg1))), 0.1)

  def test_eval_is_resize_then_centre_crop(self):
    image = _image(300, 400, 3, seed=2)
    out = preprocessing.eval_preprocess(image, image_size=224)
    # Independently: shorter side 300 -> 256, so 400 -> round(400 * 256 / 300) = 341; crop the centre 224 x 224.
    resized = tf.image.resize(tf.cast(image, tf.float32), (256, 341))
    top, left = (256 - 224) // 2, (341 - 224) // 2
    expected = resized[top:top + 224, left:left + 224] / 255.0
    self.assertAllClose(out, expected, atol=1e-5)

  def test_eval_square_small_image(self):
    image = _image(32, 32, 3, seed=3)
    out = preprocessing.eval_preprocess(image, image_size=224)
    expected = tf.image.resize(tf.cast(image, tf.float32), (256, 256))[16:240, 16:240] / 255.0
    self.assertAllClose(out, expected, atol=1e-5)

  # -- The official small-input path ('pad': the official input_size == 32 branch). ----------------------------------

  def test_auto_crop_follows_the_official_size_rule(self):
    self.assertEqual(preprocessing.resolve_crop('auto', 32), 'pad')
    self.assertEqual(preprocessing.resolve_crop('auto', 224), 'resized')
    self.assertEqual(preprocessing.resolve_crop('auto', 48), 'resized')
    self.assertEqual(preprocessing.resolve_crop('resized', 32), 'resized')
    self.assertEqual(preprocessing.resolve_crop('pad', 224), 'pad')
    with self.assertRaisesRegex(ValueError, "'centre'"):
      preprocessing.resolve_crop('centre', 32)

  def test_pad_crop_train_is_a_window_of_the_zero_padded_image_by_hand(self):
    # By hand: pad 2 zero pixels on each side (32 -> 36), a 32x32 window at offset (dy, dx) in [0, 4]^2, maybe
    # mirrored left-right, divided by 255. No resize anywhere, so the match is exact.
    image = np.random.default_rng(4).integers(1, 256, (32, 32, 3), dtype=np.uint8)  # No zeros: padding shows.
    padded = np.zeros((36, 36, 3), np.float32)
    padded[2:34, 2:34] = image
    offsets, flips = set(), set()
    for s in range(40):
      out = preprocessing.preprocess_train(tf.constant(image), tf.constant([s, 9], tf.int64), image_size=32).numpy()
      self.assertEqual(out.shape, (32, 32, 3))
      matches = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                 if np.array_equal(out, (padded[dy:dy + 32, dx:dx + 32, :][:, ::-1] if f else
                                         padded[dy:dy + 32, dx:dx + 32, :]) / 255.0)]
      self.assertLen(matches, 1, msg=f'seed {s}: output is not exactly one padded window: {matches}')
      offsets.add(matches[0][:2])
      flips.add(matches[0][2])
    self.assertGreater(len(offsets), 8)  # The crop moves over the 5 x 5 offsets ...
    self.assertEqual(flips, {False, True})  # ... and half of the images are mirrored.
    self.assertTrue(any(o != (2, 2) for o in offsets))  # Off-centre windows carry zero padding.

  def test_pad_crop_train_is_deterministic_per_seed(self):
    image = _image(seed=5)
    a = preprocessing.preprocess_train(image, tf.constant([1, 2], tf.int64), image_size=32)
    b = preprocessing.preprocess_train(image, tf.constant([1, 2], tf.int64), image_size=32)
    self.assertAllEqual(a, b)

  def test_pad_crop_eval_does_not_resize(self):
    image = _image(seed=6)
    out = preprocessing.preprocess_eval(image, image_size=32)
    self.assertAllEqual(out, image.numpy().astype(np.float32) / 255.0)  # Exactly the image, scaled.
    # The previous geometry (resize to 37, centre crop 32) differs: the official one keeps every pixel.
    self.assertNotAllClose(out, preprocessing.preprocess_eval(image, image_size=32, crop='resized'))

  def test_pad_crop_brings_other_sizes_to_the_input_by_padding(self):
    gray = _image(28, 28, 1, seed=7)
    out = preprocessing.preprocess_eval(gray, image_size=32, crop='pad').numpy()
    self.assertAllEqual(out[2:30, 2:30, 0], gray.numpy()[..., 0].astype(np.float32) / 255.0)
    self.assertAllEqual(out[:2], np.zeros((2, 32, 3)))
    self.assertEqual(preprocessing.preprocess_train(gray, tf.constant([0, 0], tf.int64), image_size=32,
                                                    crop='pad').shape, (32, 32, 3))

  def test_jpeg_round_trip_acts_on_the_resized_path_only(self):
    image = _image(seed=8)
    seed = tf.constant([2, 3], tf.int64)
    self.assertAllEqual(preprocessing.preprocess_train(image, seed, image_size=32, jpeg_round_trip=True),
                        preprocessing.preprocess_train(image, seed, image_size=32))  # 'pad': none, as official.
    self.assertNotAllClose(preprocessing.preprocess_train(image, seed, image_size=48, jpeg_round_trip=True),
                           preprocessing.preprocess_train(image, seed, image_size=48))


if __name__ == '__main__':
  tf.test.main()
