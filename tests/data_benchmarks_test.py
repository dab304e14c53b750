"""Tests of l2p_tf.data's benchmarks: task splits, per-task streams, the Gaussian schedule, 5-datasets, DomainNet
protocol, and the scenario behaviour the trainer calls.

Data comes from `tfds.testing.mock_data` (random images and labels, nothing downloaded) or, for DomainNet, from the
builder's dummy data prepared into a temporary directory.
"""

import math
import os
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from l2p_tf import cl_metrics
from l2p_tf.data import benchmark
from l2p_tf.data import benchmarks
from l2p_tf.data import pipelines
from l2p_tf.data import segmented
from l2p_tf.data import sources
from tests import test_util

DOMAINNET_DUMMY = os.path.join(test_util.REPO_ROOT, 'datasets', 'domainnet', 'dummy_data')
IMAGENET_R_DUMMY = os.path.join(test_util.REPO_ROOT, 'datasets', 'imagenet_r', 'dummy_data')
CORE50_DUMMY = os.path.join(test_util.REPO_ROOT, 'datasets', 'core50', 'dummy_data')


def _collect(ds):
  labels, masks, images = [], [], []
  for x in ds:
    labels.append(x['label'].numpy())
    masks.append(x['label_mask'].numpy())
    images.append(x['image'].numpy())
  return labels, masks, images


class SplitTest(tf.test.TestCase):

  def test_label_order_splits(self):
    b = benchmarks.split_cifar100()
    self.assertLen(b.tasks, 10)
    self.assertEqual(b.tasks[0].classes, tuple(range(10)))
    self.assertEqual(b.tasks[9].classes, tuple(range(90, 100)))
    self.assertEqual(b.scenario, 'class_incremental')
    self.assertEqual(b.eval_names, [f'task_{i}' for i in range(10)])
    self.assertEqual(b.eval_ids_after(3), [0, 1, 2, 3])
    self.assertEqual(b.num_classes, 100)

  def test_random_order_disjoint_complete_deterministic(self):
    for num_tasks in (10, 5, 20):
      a = benchmarks.split_cifar100(num_tasks=num_tasks, class_order='random', order_seed=3)
      b = benchmarks.split_cifar100(num_tasks=num_tasks, class_order='random', order_seed=3)
      c = benchmarks.split_cifar100(num_tasks=num_tasks, class_order='random', order_seed=4)
      classes = [t.classes for t in a.tasks]
      self.assertEqual(classes, [t.classes for t in b.tasks])
      self.assertNotEqual(classes, [t.classes for t in c.tasks])
      flat = [k for cs in classes for k in cs]
      self.assertEqual(sorted(flat), list(range(100)))  # Complete and disjoint.
      self.assertTrue(all(len(cs) == 100 // num_tasks for cs in classes))
    # The permutation is numpy's default_rng(order_seed), as documented.
    expected = np.random.default_rng(3).permutation(100)[:10]
    self.assertEqual(a.tasks[0].classes if len(a.tasks) == 10 else
                     benchmarks.split_cifar100(class_order='random', order_seed=3).tasks[0].classes,
                     tuple(sorted(expected.tolist())))

  def test_errors_quote_the_value(self):
    with self.assertRaisesRegex(ValueError, 'num_tasks=7'):
      benchmarks.split_cifar100(num_tasks=7)
    with self.assertRaisesRegex(ValueError, r"'shuffled'.*'label', 'random'"):
      benchmarks.split_cifar100(class_order='shuffled')
    with self.assertRaisesRegex(ValueError, r"'foo'.*'cifar10'"):
      benchmarks.five_datasets(datasets=('cifar10', 'foo'))
    with self.assertRaisesRegex(ValueError, r"'tasks'.*domain_incremental"):
      benchmarks.domainnet(protocol='tasks')
    with self.assertRaisesRegex(ValueError, r"'maybe'"):
      benchmarks.split_cifar100(mask='maybe')

  def test_each_task_stream_contains_only_its_classes(self):
    with tfds.testing.mock_data(num_examples=600), tempfile.TemporaryDirectory() as d:
      b = benchmarks.split_cifar100(num_tasks=5, class_order='random', order_seed=1,
                                    preprocess=pipelines.PreprocessConfig(image_size=32), epochs=2,
                                    data_dir=d, limits=benchmarks.Limits(max_tasks=3))
      self.assertLen(b.tasks, 3)
      for t in range(3):
        allowed = set(b.tasks[t].classes)
        n = b.num_train_examples(t)
        self.assertGreater(n, 60)
        steps = b.steps_per_task(t, 16)
        self.assertEqual(steps, math.floor(n * 2 / 16))
        labels, masks, images = _collect(b.train_dataset(t, global_batch_size=16, seed=0))
        self.assertLen(labels, steps)  # Exactly steps_per_task batches.
        self.assertTrue(set(np.concatenate(labels).tolist()) <= allowed)
        expected_mask = np.isin(np.arange(100), list(allowed))
        for m in masks:
          self.assertAllEqual(m, np.broadcast_to(expected_mask, m.shape))
        self.assertEqual(images[0].shape, (16, 32, 32, 3))
        eval_labels = [x['label'].numpy()[x['valid'].numpy()] for x in b.eval_dataset(t, global_batch_size=16)]
        self.assertTrue(set(np.concatenate(eval_labels).tolist()) <= allowed)
        self.assertEqual(sum(len(x) for x in eval_labels), b.num_eval_examples(t))

  def test_official_eval_options_drop_remainder_and_small_input_geometry(self):
    with tfds.testing.mock_data(num_examples=600), tempfile.TemporaryDirectory() as d:
      self.assertEqual(benchmarks.split_cifar100().preprocess.crop, 'resized')  # Code default: runs made before.
      b = benchmarks.split_cifar100(num_tasks=5, preprocess=pipelines.PreprocessConfig(image_size=32, crop='auto'),
                                    data_dir=d, limits=benchmarks.Limits(max_tasks=1))  # As data/*.gin binds it.
      n = b.num_eval_examples(0)
      every = sum(int(x['valid'].numpy().sum()) for x in b.eval_dataset(0, global_batch_size=16))
      self.assertEqual(every, n)  # Default: every test example.
      m = next(k for k in (7, 8, 9, 11, 13) if n % k)
      kept = [x for x in b.eval_dataset(0, global_batch_size=16, drop_remainder_of=m)]
      self.assertEqual(sum(int(x['valid'].numpy().sum()) for x in kept), n // m * m)
      with self.assertRaisesRegex(ValueError, f'{n} examples.*drop_remainder_of={n + 1}'):
        b.eval_dataset(0, global_batch_size=16, drop_remainder_of=n + 1)
      # At 32 px the official geometry evaluates the stored image itself: no resize, no crop.
      part = b._eval_part(0)  # pylint: disable=protected-access
      first = kept[0]['image'].numpy()[0]
      self.assertAllEqual(first, part.images[part.indices[0]].astype(np.float32) / 255.0)
      resized = benchmarks.split_cifar100(num_tasks=5, preprocess=pipelines.PreprocessConfig(image_size=32,
                                                                                            crop='resized'),
                                          data_dir=d, limits=benchmarks.Limits(max_tasks=1))
      self.assertNotAllClose(next(iter(resized.eval_dataset(0, global_batch_size=16)))['image'].numpy()[0], first)

  def test_mask_none_and_epochs(self):
    with tfds.testing.mock_data(num_examples=300), tempfile.TemporaryDirectory() as d:
      b = benchmarks.split_cifar100(mask='none', preprocess=pipelines.PreprocessConfig(image_size=16), data_dir=d,
                                    epochs=1)
      x = next(iter(b.train_dataset(0, global_batch_size=4, seed=0)))
      self.assertTrue(np.all(x['label_mask'].numpy()))

  def test_resume_determinism_and_seed(self):
    with tfds.testing.mock_data(num_examples=400), tempfile.TemporaryDirectory() as d:
      b = benchmarks.split_cifar100(num_tasks=2, preprocess=pipelines.PreprocessConfig(image_size=16), data_dir=d,
                                    epochs=3)
      full = _collect(b.train_dataset(1, global_batch_size=8, seed=5))
      again = _collect(b.train_dataset(1, global_batch_size=8, seed=5))
      resumed = _collect(b.train_dataset(1, global_batch_size=8, seed=5, start_step=7))
      other = _collect(b.train_dataset(1, global_batch_size=8, seed=6))
      steps = b.steps_per_task(1, 8)
      self.assertLen(resumed[0], steps - 7)
      for k in range(steps):
        self.assertAllEqual(full[2][k], again[2][k])
      for k in range(steps - 7):
        self.assertAllEqual(full[0][k + 7], resumed[0][k])
        self.assertAllEqual(full[2][k + 7], resumed[2][k])
      self.assertNotAllClose(full[2][0], other[2][0])
      # Each epoch is a permutation of the task: over the first epoch no example repeats.
      n = b.num_train_examples(1)
      first_epoch = np.concatenate(full[2])[:n].reshape(n, -1)
      self.assertLen({row.tobytes() for row in first_epoch[: (n // 8) * 8]}, (n // 8) * 8)


class SubsetHoldoutJointTest(tf.test.TestCase):
  """Class subsets (the disjoint-classes protocol), the validation hold-out and the joint upper bound."""

  def test_parse_classes(self):
    np.testing.assert_array_equal(sources.parse_classes('0-3,7', 10), [0, 1, 2, 3, 7])
    np.testing.assert_array_equal(sources.parse_classes([5, 2], 10), [5, 2])
    self.assertIsNone(sources.parse_classes(None, 10))
    for bad, msg in (('5-2', 'not a class subset'), ('a-b', 'not a class subset'), ('0-10', r'\[10\] outside'),
                     ('1,1', 'repeats'), ([], 'selects no class')):
      with self.assertRaisesRegex(ValueError, msg):
        sources.parse_classes(bad, 10)

  def test_subset_relabels_and_names_follow(self):
    with tfds.testing.mock_data(num_examples=400), tempfile.TemporaryDirectory() as d:
      b = benchmarks.split_cifar100(classes='50-99', num_tasks=5,
                                    preprocess=pipelines.PreprocessConfig(image_size=16), data_dir=d, epochs=1)
      self.assertEqual(b.num_classes, 50)
      self.assertEqual(b.tasks[0].classes, tuple(range(10)))
      self.assertEqual(b.tasks[4].classes, tuple(range(40, 50)))
      full = benchmarks.split_cifar100(preprocess=pipelines.PreprocessConfig(image_size=16), data_dir=d)
      self.assertEqual(list(b.class_names), list(full.class_names)[50:])
      # Task 0's training labels are 0..9 and its images are those of original classes 50..59.
      part = b.train_part(0)
      orig = full.train_part(5)
      self.assertEqual(part.num_examples, orig.num_examples)
      np.testing.assert_array_equal(part.images[part.indices], orig.images[orig.indices])
      np.testing.assert_array_equal(part.labels[part.indices], orig.labels[orig.indices] - 50)

  def test_validation_holdout_is_carved_from_training_images(self):
    with tfds.testing.mock_data(num_examples=600), tempfile.TemporaryDirectory() as d:
      test_b = benchmarks.split_cifar100(classes='0-49', num_tasks=5,
                                         preprocess=pipelines.PreprocessConfig(image_size=16), data_dir=d)
      val_b = benchmarks.split_cifar100(classes='0-49', num_tasks=5,
                                        preprocess=pipelines.PreprocessConfig(image_size=16), data_dir=d,
                                        holdout='validation', validation_fraction=0.2)
      for t in range(5):
        train_rows = set(val_b.train_part(t).indices.tolist())
        held = val_b._eval_part(t)  # pylint: disable=protected-access
        held_rows = set(held.indices.tolist())
        self.assertFalse(train_rows & held_rows)
        # Together they are exactly the task's training rows; the hold-out is about 20% of them.
        self.assertEqual(train_rows | held_rows, set(test_b.train_part(t).indices.tolist()))
        self.assertAlmostEqual(len(held_rows) / (len(held_rows) + len(train_rows)), 0.2, delta=0.08)
        # Evaluation reads training images (same array), never the test split.
        self.assertIs(held.images, val_b.train_part(t).images)
        self.assertIsNot(held.images, test_b._eval_part(t).images)  # pylint: disable=protected-access
    with self.assertRaisesRegex(ValueError, "'val'"):
      benchmarks.split_cifar100(holdout='val')

  def test_joint_is_one_segment_of_every_task_evaluated_on_each(self):
    with tfds.testing.mock_data(num_examples=600), tempfile.TemporaryDirectory() as d:
      seq = benchmarks.split_cifar100(classes='0-49', num_tasks=5,
                                      preprocess=pipelines.PreprocessConfig(image_size=16), data_dir=d, epochs=2)
      joint = benchmarks.split_cifar100(classes='0-49', num_tasks=5,
                                        preprocess=pipelines.PreprocessConfig(image_size=16), data_dir=d, epochs=2,
                                        joint=True)
      self.assertEqual(joint.scenario, 'joint')
      self.assertLen(joint.tasks, 1)
      self.assertEqual(joint.tasks[0].classes, tuple(range(50)))
      self.assertEqual(joint.eval_names, seq.eval_names)
      self.assertEqual(joint.eval_ids_after(0), [0, 1, 2, 3, 4])
      self.assertEqual(joint.num_train_examples(0), sum(seq.num_train_examples(t) for t in range(5)))
      steps = joint.steps_per_task(0, 16)
      self.assertAlmostEqual(steps, sum(seq.steps_per_task(t, 16) for t in range(5)), delta=5)
      x = next(iter(joint.train_dataset(0, global_batch_size=16, seed=0)))
      self.assertTrue(np.all(x['label_mask'].numpy()[:, :50]))


class GaussianTest(tf.test.TestCase):
  """The schedule is recomputed here from its definition, not from the module's helpers."""

  def _independent(self, seed, e_count=200, c=100, sigma=10.0):
    rng = np.random.default_rng(seed)
    out = []
    for e in range(e_count):
      w = np.array([math.exp(-((e - (j + 0.5) * e_count / c) ** 2) / (2 * sigma * sigma)) for j in range(c)])
      while True:
        chosen = [j for j, u in enumerate(rng.random(c)) if u < w[j]]
        if chosen:
          break
      out.append(tuple(chosen))
    return out

  def test_default_schedule_matches_independent_computation(self):
    b = benchmarks.gaussian_cifar100()
    expected = self._independent(seed=0)
    self.assertEqual(b.episodes[0], expected[0])
    self.assertEqual(b.episodes[-1], expected[-1])
    self.assertEqual(b.episodes, expected)
    mean = np.mean([len(e) for e in b.episodes])
    self.assertAlmostEqual(mean, np.mean([len(e) for e in expected]))
    # Expected count per episode = sum_j w_j(e); averaged over episodes it is about 100 * sqrt(2 pi) 10 / 200 = 12.5
    # minus the tails cut at both ends of the schedule.
    analytic = np.mean([sum(math.exp(-((e - (j + 0.5) / 2) ** 2) / 200) for j in range(100)) for e in range(200)])
    self.assertAllClose(mean, analytic, atol=0.6)
    self.assertBetween(mean, 11.0, 13.0)
    # First episodes draw the first classes, the last ones the last classes.
    self.assertLess(max(b.episodes[0]), 25)
    self.assertGreater(min(b.episodes[-1]), 75)
    self.assertEqual(b.scenario, 'task_agnostic')
    self.assertEqual(b.eval_names, ['all'])
    self.assertLen(b.tasks, 10)
    self.assertEqual(b.eval_ids_after(4), [0])

  def test_determinism_per_seed(self):
    a = benchmarks.gaussian_cifar100(seed=1).episodes
    self.assertEqual(a, benchmarks.gaussian_cifar100(seed=1).episodes)
    self.assertNotEqual(a, benchmarks.gaussian_cifar100(seed=2).episodes)
    self.assertEqual(a, self._independent(seed=1))

  def test_stream_single_pass_masks_follow_episodes(self):
    with tfds.testing.mock_data(num_examples=2000), tempfile.TemporaryDirectory() as d:
      b = benchmarks.gaussian_cifar100(num_episodes=20, sigma=2.0, eval_every_episodes=5,
                                       preprocess=pipelines.PreprocessConfig(image_size=8), data_dir=d)
      gbs = 16
      steps = [b.steps_per_task(t, gbs) for t in range(len(b.tasks))]
      self.assertEqual(sum(steps), 2000 // gbs)  # One pass over the pool.
      plan, episode_of_step = b.plan(gbs, 0)
      stats = b.stream_stats[(gbs, 0)]
      if stats['refills'] == 0:
        self.assertEqual(stats['distinct_examples'], stats['examples'])
      self.assertGreater(stats['distinct_examples'], 0.9 * stats['examples'])
      first = 0
      for t in range(len(b.tasks)):
        labels, masks, _ = _collect(b.train_dataset(t, global_batch_size=gbs, seed=0))
        self.assertLen(labels, steps[t])
        for k, (lab, m) in enumerate(zip(labels, masks)):
          episode = b.episodes[episode_of_step[first + k]]
          expected = np.isin(np.arange(100), episode)
          self.assertAllEqual(m, np.broadcast_to(expected, m.shape))
          self.assertTrue(set(lab.tolist()) <= set(episode))
        first += steps[t]
      resumed = _collect(b.train_dataset(2, global_batch_size=gbs, seed=0, start_step=3))
      full = _collect(b.train_dataset(2, global_batch_size=gbs, seed=0))
      self.assertAllEqual(resumed[2][0], full[2][3])

  def test_repeat_episodes_reproduces_official_length(self):
    with tfds.testing.mock_data(num_examples=300), tempfile.TemporaryDirectory() as d:
      b = benchmarks.gaussian_cifar100(repeat_episodes=True, preprocess=pipelines.PreprocessConfig(image_size=8),
                                       data_dir=d)
      self.assertEqual(b.steps_per_episode, 5)
      self.assertEqual(sum(b.steps_per_task(t, 8) for t in range(10)), 200 * 5)
      plan, _ = b.plan(8, 0)
      self.assertEqual(plan.shape, (1000, 8))
      self.assertLess(len(np.unique(plan)), plan.size)  # Examples recur across episodes.


class FiveDatasetsTest(tf.test.TestCase):

  def test_offsets_rgb_and_order(self):
    with tfds.testing.mock_data(num_examples=64), tempfile.TemporaryDirectory() as d:
      b = benchmarks.five_datasets(preprocess=pipelines.PreprocessConfig(image_size=32), data_dir=d)
      self.assertEqual([t.name for t in b.tasks], ['cifar10', 'mnist', 'svhn_cropped', 'not_mnist', 'fashion_mnist'])
      self.assertEqual(b.num_classes, 50)
      self.assertLen(b.class_names, 50)
      for t in range(5):
        self.assertEqual(b.tasks[t].classes, tuple(range(10 * t, 10 * t + 10)))
        labels, masks, images = _collect(b.train_dataset(t, global_batch_size=8, seed=0))
        labels = np.concatenate(labels)
        self.assertTrue(np.all((labels >= 10 * t) & (labels < 10 * t + 10)))
        self.assertEqual(images[0].shape, (8, 32, 32, 3))  # Grayscale became RGB, 28x28 was resized.
        self.assertAllEqual(masks[0][0], np.isin(np.arange(50), range(10 * t, 10 * t + 10)))
        self.assertEqual(b.num_eval_examples(t), 64)  # mock_data ignores split slicing (notMNIST's 80/20 cut).
      self.assertEqual(b.class_names[10], 'mnist/0')


class DomainNetTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = tempfile.mkdtemp()

  def test_domain_incremental_protocol(self):
    b = benchmarks.domainnet(preprocess=pipelines.PreprocessConfig(image_size=16), data_dir=self.data_dir,
                             manual_dir=DOMAINNET_DUMMY, epochs=2)
    self.assertEqual([t.name for t in b.tasks], ['real', 'painting', 'clipart', 'quickdraw', 'infograph', 'sketch'])
    self.assertEqual(b.scenario, 'domain_incremental')
    self.assertEqual(b.num_classes, 345)
    self.assertEqual(b.tasks[0].classes, tuple(range(345)))
    self.assertEqual(b.num_train_examples(0), 2)
    self.assertEqual(b.steps_per_task(0, 2), 2)
    labels, masks, images = _collect(b.train_dataset(2, global_batch_size=2, seed=0))
    self.assertLen(labels, 2)
    self.assertEqual(sorted(np.concatenate(labels).tolist()), [1, 1, 308, 308])  # Two epochs of two examples.
    self.assertTrue(np.all(masks[0]))
    self.assertEqual(images[0].shape, (2, 16, 16, 3))
    resumed = _collect(b.train_dataset(2, global_batch_size=2, seed=0, start_step=1))
    self.assertAllEqual(resumed[2][0], images[1])
    batches = list(b.eval_dataset(5, global_batch_size=4))
    self.assertLen(batches, 1)
    self.assertAllEqual(batches[0]['valid'], [True, False, False, False])
    self.assertEqual(b.class_names[int(batches[0]['label'][0])], 'zebra')
    self.assertEqual(b.class_names[308], 'The_Eiffel_Tower')

  def test_class_incremental_protocol(self):
    b = benchmarks.domainnet(protocol='class_incremental', num_tasks=5,
                             preprocess=pipelines.PreprocessConfig(image_size=16), data_dir=self.data_dir,
                             manual_dir=DOMAINNET_DUMMY)
    self.assertEqual(b.scenario, 'class_incremental')
    self.assertEqual(sorted(c for t in b.tasks for c in t.classes), list(range(345)))
    self.assertEqual(b.num_train_examples(0), 6)  # airplane (1) in six domains.
    self.assertEqual(b.num_train_examples(4), 6)  # The_Eiffel_Tower (308).
    self.assertEqual(b.num_eval_examples(4), 6)   # zebra (343).
    labels, masks, _ = _collect(b.train_dataset(0, global_batch_size=2, seed=0))
    self.assertEqual(set(np.concatenate(labels).tolist()), {1})
    self.assertAllEqual(masks[0][0], np.isin(np.arange(345), b.tasks[0].classes))


class SplitImagenetRTest(tf.test.TestCase):

  def test_eighty_twenty_cut_of_the_one_split_and_twenty_classes_per_task(self):
    b = benchmarks.split_imagenet_r(preprocess=pipelines.PreprocessConfig(image_size=16), data_dir=tempfile.mkdtemp(),
                                    manual_dir=IMAGENET_R_DUMMY)
    self.assertEqual(b.scenario, 'class_incremental')
    self.assertEqual(b.num_classes, 200)
    self.assertLen(b.tasks, 10)
    self.assertEqual(b.tasks[1].classes, tuple(range(20, 40)))
    self.assertEqual(b.class_names[0], 'n01443537')
    # 120 dummy images (3 of each of classes 0-39): 96 train, 24 test, all in tasks 0 and 1.
    train = [b.num_train_examples(t) for t in range(10)]
    test = [b.num_eval_examples(t) for t in range(10)]
    self.assertEqual((sum(train), sum(test)), (96, 24))
    self.assertEqual(train[2:] + test[2:], [0] * 16)
    labels, masks, images = _collect(b.train_dataset(1, global_batch_size=4, seed=0))
    labels = np.concatenate(labels)
    self.assertTrue(np.all((labels >= 20) & (labels < 40)))
    self.assertAllEqual(masks[0][0], np.isin(np.arange(200), range(20, 40)))
    self.assertEqual(images[0].shape, (4, 16, 16, 3))
    with self.assertRaisesRegex(ValueError, 'train_fraction'):
      benchmarks.split_imagenet_r(train_fraction=100)


class Core50Test(tf.test.TestCase):

  def test_one_task_per_training_session_and_one_common_test_set(self):
    b = benchmarks.core50(preprocess=pipelines.PreprocessConfig(image_size=16), data_dir=tempfile.mkdtemp(),
                          manual_dir=CORE50_DUMMY, epochs=1)
    self.assertEqual([t.name for t in b.tasks], ['s1', 's2', 's4', 's5', 's6', 's8', 's9', 's11'])
    self.assertEqual(b.scenario, 'domain_incremental')
    self.assertEqual(b.eval_names, ['test'])
    self.assertEqual(b.tasks[3].classes, tuple(range(50)))
    self.assertEqual(b.num_train_examples(0), 4)
    self.assertEqual(b.num_eval_examples(0), 12)  # s3 + s7 + s10
    self.assertEqual(b.eval_ids_after(5), [0])
    labels, masks, images = _collect(b.train_dataset(1, global_batch_size=2, seed=0))
    self.assertEqual(sorted(np.concatenate(labels).tolist()), [0, 0, 1, 1])
    self.assertTrue(np.all(masks[0]))
    self.assertEqual(images[0].shape, (2, 16, 16, 3))
    acc = np.array([[50.0], [60.0]])
    self.assertEqual(b.metric_curves(acc)['avg_acc'], [50.0, 60.0])
    self.assertEqual(b.progress_lines(1, acc, {}), ['after task 2 (s2): accuracy on test 60.00%'])
    with self.assertRaisesRegex(ValueError, 'both trained and tested'):
      benchmarks.core50(train_sessions=('s1', 's3'))


class ScenarioBehaviourTest(tf.test.TestCase):
  """What the trainer asks each benchmark kind: checks before training, curves, matrix names, console lines."""

  def test_class_incremental_curves_names_and_lines(self):
    b = benchmarks.split_cifar100(num_tasks=2)
    acc = np.array([[80.0, np.nan], [60.0, 70.0]])
    self.assertEqual(b.matrix_names(), ['task_0', 'task_1'])
    self.assertEqual(b.metric_curves(acc), cl_metrics.metric_curves(acc))
    final = {k: v[-1] for k, v in b.metric_curves(acc).items()}
    lines = b.progress_lines(1, acc, final)
    self.assertEqual(lines, [cl_metrics.format_matrix(acc[:2], ['task_0', 'task_1']),
                             f'after task 2: avg_acc {final["avg_acc"]:.2f}  forgetting {final["forgetting"]:.2f}'])
    self.assertEqual(b.progress_lines(0, acc, {'avg_acc': 80.0, 'forgetting': None})[1],
                     'after task 1: avg_acc 80.00  forgetting -')
    self.assertEqual(b.eval_lines(1, acc), [cl_metrics.format_matrix(acc[:2], ['task_0', 'task_1'])])

  def test_joint_curves_names_and_lines(self):
    b = benchmarks.split_cifar100(num_tasks=2, joint=True)
    self.assertIsInstance(b, segmented.JointBenchmark)
    acc = np.array([[50.0, 70.0]])
    self.assertEqual(b.matrix_names(), ['task_0', 'task_1'])
    self.assertEqual(b.metric_curves(acc), cl_metrics.joint_curves(acc))
    self.assertEqual(b.progress_lines(0, acc, {'avg_acc': 60.0}),
                     ['joint training, accuracy per task: task_0 50.00, task_1 70.00; avg_acc 60.00'])
    self.assertEqual(b.eval_lines(0, acc), [cl_metrics.format_matrix(acc, ['task_0', 'task_1'])])

  def test_task_agnostic_curves_names_and_lines(self):
    b = benchmarks.gaussian_cifar100(num_episodes=4, eval_every_episodes=2)
    acc = np.array([[30.0], [40.0]])
    self.assertEqual(b.matrix_names(), ['episodes_0-1', 'episodes_2-3'])
    self.assertEqual(b.metric_curves(acc), {'avg_acc': [30.0, 40.0], 'forgetting': [None, None],
                                            'backward': [None, None], 'learning_acc': [None, None]})
    self.assertEqual(b.progress_lines(1, acc, {}), ['after segment 2: accuracy on all 40.00%'])
    self.assertEqual(b.eval_lines(1, acc), ['accuracy on all: 40.00%'])

  def test_scenario_belongs_to_its_class(self):
    with self.assertRaisesRegex(ValueError, "SegmentedBenchmark runs the scenarios .* not 'joint'"):
      segmented.SegmentedBenchmark(name='x', num_classes=1, class_names=['a'], tasks=[benchmark.Task(0, 't', (0,))],
                                   scenario='joint', eval_names=['t'], train_parts=[None], eval_parts=[None])

  def test_check_classes_and_check_data(self):
    b = benchmarks.split_cifar100(num_tasks=2)
    b.check_classes()
    b.tasks[1] = benchmark.Task(index=1, name='task_1', classes=(99, 100, 101))
    with self.assertRaisesRegex(ValueError, r"Task 1 \(task_1\) trains classes \[100, 101\] outside the head's range "
                                r"0..99 \(100 classes of split_cifar100\)"):
      b.check_classes()
    with tfds.testing.mock_data(num_examples=300), tempfile.TemporaryDirectory() as d:
      b = benchmarks.split_cifar100(num_tasks=5, data_dir=d, limits=benchmarks.Limits(max_tasks=2))
      self.assertEqual(b.check_data(8), [b.steps_per_task(0, 8), b.steps_per_task(1, 8)])
      with self.assertRaisesRegex(ValueError, 'fewer than one global batch of 100000: it would train for 0 steps'):
        b.check_data(100_000)


if __name__ == '__main__':
  tf.test.main()
