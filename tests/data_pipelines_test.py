"""Tests of l2p_tf.data.pipelines: evaluation padding over 2 replicas, per-replica batching and sharding, plans (and
the builder errors of l2p_tf.data.sources)."""

import os
import tempfile

import numpy as np
import tensorflow as tf

from l2p_tf.data import pipelines
from l2p_tf.data import preprocessing
from l2p_tf.data import sources
from tests import test_util


def _constant_images(n):
  """Image i is constant with value i (so any preprocessing keeps i recoverable from the pixels)."""
  return np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None], 8 * 8 * 3, axis=1).reshape(n, 8, 8, 3)


class EvalPaddingTest(tf.test.TestCase):

  def test_accuracy_counts_every_example_once_on_two_replicas(self):
    strategy = test_util.mirrored_strategy()
    self.assertEqual(strategy.num_replicas_in_sync, 2)
    n, global_batch = 37, 8  # 37 is not a multiple of 8 (nor of the per-replica batch 4).
    labels = np.arange(n) % 5
    part = sources.ArrayPart(images=_constant_images(n), labels=labels, indices=np.arange(n))
    pre = pipelines.PreprocessConfig(image_size=8)
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: pipelines.array_eval_dataset(part, input_context=ctx, global_batch_size=global_batch,
                                                      preprocess=pre))

    @tf.function
    def step(batch):
      def replica_fn(x):
        example_id = tf.cast(tf.round(x['image'][:, 0, 0, 0] * 255.0), tf.int32)
        prediction = tf.where(example_id % 3 == 0, x['label'], x['label'] + 1)  # A "model" right on ids 0, 3, 6...
        valid = tf.cast(x['valid'], tf.int32)
        correct = tf.reduce_sum(tf.cast(prediction == x['label'], tf.int32) * valid)
        seen = tf.math.bincount(example_id, weights=valid, minlength=64, maxlength=64)
        return correct, tf.reduce_sum(valid), seen, tf.shape(x['label'])[0]
      correct, count, seen, size = strategy.run(replica_fn, args=(batch,))
      return (strategy.reduce('SUM', correct, None), strategy.reduce('SUM', count, None),
              strategy.reduce('SUM', seen, None), strategy.experimental_local_results(size))

    correct = count = 0
    seen = np.zeros(64, np.int64)
    steps = 0
    for batch in dist:
      c, k, s, sizes = step(batch)
      correct, count, seen, steps = correct + int(c), count + int(k), seen + s.numpy(), steps + 1
      self.assertEqual([int(z) for z in sizes], [4, 4])  # Both replicas run full, equal batches.
    self.assertEqual(steps, 5)  # ceil(37 / 8)
    self.assertEqual(count, n)
    self.assertAllEqual(seen[:n], np.ones(n))
    self.assertAllEqual(seen[n:], np.zeros(64 - n))
    self.assertEqual(correct, len(range(0, n, 3)))
    self.assertAlmostEqual(correct / count, 13 / 37)

  def test_multi_pipeline_eval_is_equal_length_and_complete(self):
    n, global_batch = 21, 8
    part = sources.ArrayPart(images=_constant_images(n), labels=np.zeros(n, np.int64), indices=np.arange(n))
    pre = pipelines.PreprocessConfig(image_size=8)
    ids, lengths = [], []
    for p in range(2):
      ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=p, num_replicas_in_sync=4)
      batches = list(pipelines.array_eval_dataset(part, input_context=ctx, global_batch_size=global_batch,
                                                       preprocess=pre))
      lengths.append(len(batches))
      for x in batches:
        self.assertEqual(x['image'].shape[0], 2)
        ids += np.round(x['image'].numpy()[:, 0, 0, 0] * 255).astype(int)[x['valid'].numpy()].tolist()
    self.assertEqual(lengths, [6, 6])  # 3 global batches x 2 local replicas, on both pipelines.
    self.assertEqual(sorted(ids), list(range(n)))


class TrainShardingTest(tf.test.TestCase):

  def _part(self, n=40):
    return sources.ArrayPart(images=_constant_images(n), labels=np.arange(n) % 10, indices=np.arange(n))

  def test_pipelines_partition_each_global_batch(self):
    part, global_batch, steps = self._part(), 8, 6
    plan = pipelines.epoch_plan(part.num_examples, steps=steps, global_batch_size=global_batch, seed=1, task=0)
    masks = np.ones((1, 10), bool)
    pre = pipelines.PreprocessConfig(image_size=8)

    def labels_of(ctx):
      ds = pipelines.array_train_dataset(part, plan, masks=masks, mask_ids=None, seed=9, input_context=ctx,
                                              global_batch_size=global_batch, preprocess=pre)
      return [x['label'].numpy() for x in ds]

    single = labels_of(None)  # One pipeline, one replica: one batch of 8 per step.
    self.assertLen(single, steps)
    per_pipeline = [labels_of(tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=p,
                                                         num_replicas_in_sync=2)) for p in range(2)]
    for k in range(steps):
      self.assertLen(per_pipeline[0][k], 4)
      self.assertAllEqual(np.concatenate([per_pipeline[0][k], per_pipeline[1][k]]), single[k])
    # Rows of the plan are the global batches; the labels match them.
    self.assertAllEqual(np.stack(single), part.labels[plan])

  def test_mirrored_replicas_each_get_steps_batches(self):
    strategy = test_util.mirrored_strategy()
    part, global_batch, steps = self._part(), 8, 5
    plan = pipelines.epoch_plan(part.num_examples, steps=steps, global_batch_size=global_batch, seed=0, task=0)
    pre = pipelines.PreprocessConfig(image_size=8)
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: pipelines.array_train_dataset(part, plan, masks=np.ones((1, 10), bool), mask_ids=None, seed=0,
                                                       input_context=ctx, global_batch_size=global_batch,
                                                       preprocess=pre))
    got = []
    for batch in dist:
      local = strategy.experimental_local_results(batch['label'])
      self.assertLen(local, 2)
      got.append(np.concatenate([t.numpy() for t in local]))
    self.assertLen(got, steps)
    self.assertAllEqual(np.stack(got), part.labels[plan])

  def test_epoch_plan_is_a_permutation_per_epoch(self):
    plan = pipelines.epoch_plan(10, steps=7, global_batch_size=4, seed=3, task=2).reshape(-1)
    self.assertEqual(sorted(plan[:10]), list(range(10)))
    self.assertEqual(sorted(plan[10:20]), list(range(10)))
    self.assertAllEqual(plan, pipelines.epoch_plan(10, steps=7, global_batch_size=4, seed=3, task=2).reshape(-1))
    self.assertNotAllEqual(plan, pipelines.epoch_plan(10, steps=7, global_batch_size=4, seed=3, task=1).reshape(-1))

  def test_bad_arguments(self):
    part = self._part()
    plan = pipelines.epoch_plan(part.num_examples, steps=2, global_batch_size=4, seed=0, task=0)
    with self.assertRaisesRegex(ValueError, 'start_step 3'):
      pipelines.array_train_dataset(part, plan, masks=np.ones((1, 10), bool), mask_ids=None, seed=0,
                                         input_context=None, global_batch_size=4, start_step=3)
    with self.assertRaisesRegex(ValueError, r"'foo'.*'cifar100'"):
      sources.get_builder('foo')
    with self.assertRaisesRegex(ValueError, '0'):
      sources.subsample(np.arange(5), 0, seed=0)


class ErrorMessageTest(tf.test.TestCase):

  def test_missing_local_files_say_what_to_place_where(self):
    with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory() as data_dir:
      with open(os.path.join(empty, 'unrelated.txt'), 'w') as f:  # tfds refuses an empty manual dir earlier.
        f.write('x')
      with self.assertRaisesRegex(RuntimeError,
                                  r"not_mnist.*t10k-images-idx3-ubyte.gz.*notmnist.*--tfds_manual_dir"):
        sources.get_builder('not_mnist', data_dir=data_dir, manual_dir=empty)


class ConcatArrayPartsTest(tf.test.TestCase):
  """The joint part of a multi-domain benchmark: its images become, through the input pipeline's preprocessing,
  exactly the inputs each source part makes alone."""

  def test_padded_rgb_rows_preprocess_like_the_original_rows(self):
    rng = np.random.default_rng(0)
    glyphs = sources.ArrayPart(images=rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8),
                               labels=np.arange(6, dtype=np.int64) + 10, indices=np.array([4, 1, 2]))
    photos = sources.ArrayPart(images=rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8),
                               labels=np.arange(5, dtype=np.int64), indices=np.array([3, 0]))
    joint = sources.concat_array_parts([glyphs, photos])
    self.assertEqual(joint.images.shape, (5, 32, 32, 3))
    self.assertAllEqual(joint.indices, np.arange(5))
    self.assertAllEqual(joint.labels[joint.indices], [14, 11, 12, 3, 0])
    self.assertAllEqual(joint.images[3], photos.images[3])  # Already at the common geometry: unchanged.
    self.assertAllEqual(joint.images[0, 2:30, 2:30, 1], glyphs.images[4, ..., 0])
    self.assertEqual(int(joint.images[0, :2].max()), 0)  # Zero padding, centred.
    for row, (part, original) in enumerate([(glyphs, 4), (glyphs, 1), (glyphs, 2), (photos, 3), (photos, 0)]):
      source = tf.constant(part.images[original])
      source = tf.image.grayscale_to_rgb(source) if part is glyphs else source
      seed = tf.constant([7, row])
      self.assertAllEqual(preprocessing.pad_crop_eval_preprocess(tf.constant(joint.images[row])),
                          preprocessing.pad_crop_eval_preprocess(tf.constant(source)))
      self.assertAllEqual(preprocessing.pad_crop_train_preprocess(tf.constant(joint.images[row]), seed),
                          preprocessing.pad_crop_train_preprocess(tf.constant(source), seed))


if __name__ == '__main__':
  tf.test.main()
