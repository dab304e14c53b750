"""Evaluation protocols: official (per-task sets, batchwise vote), per-sample, and the mixed stream; task-incremental
and task-identification accuracy; the results' protocol curves. Hand-computed cases on a stub method whose prediction
is the prompt it selects."""

import numpy as np
import pytest
import tensorflow as tf

from l2p_tf.data import benchmark as benchmark_lib
from l2p_tf.data import pipelines
from l2p_tf.data import segmented
from l2p_tf.data import sources
from l2p_tf.engine import evaluator as evaluator_lib
from l2p_tf.engine import reporting
from l2p_tf.methods import base
from tests import test_util

POOL = 4
SIZE = 8
# Two tasks: classes {0, 1} and {2, 3}; 8 test images each. Image pixel (0, 0, 0) = 10 * q, where q is the prompt
# the image selects on its own (instancewise); the stub predicts class = selected prompt.
LABELS = [[0, 0, 0, 0, 1, 1, 1, 1], [2, 2, 2, 2, 3, 3, 3, 3]]
OWN = [[0, 0, 0, 1, 1, 1, 2, 3], [2, 2, 0, 0, 3, 1, 1, 1]]
USAGE = np.array([[5, 1, 0, 0], [0, 0, 5, 1]], np.float32)  # Task 0's prompt: 0; task 1's: 2.


class PromptIsClass(base.Method):
  """Selects prompt q (image's own) or the batch's majority q (ties: lowest id), and predicts class = prompt."""

  name = 'stub'
  selections = ('batchwise', 'instancewise')
  prompts_per_image = 1

  @property
  def pool_size(self):
    return POOL

  def prompt_usage(self):
    return USAGE

  def predict(self, images, *, valid=None, selection=None):
    q = tf.cast(tf.round(images[:, 0, 0, 0] * 255.0 / 10.0), tf.int32)
    if selection == 'batchwise':
      votes = tf.math.bincount(q, weights=tf.cast(valid, tf.float32), minlength=POOL, maxlength=POOL)
      q = tf.fill(tf.shape(q), tf.argmax(votes, output_type=tf.int32))
    return {'logits': tf.one_hot(q, POOL), 'prompt_ids': q[:, None]}


def _part(labels, own, ids=None):
  n = len(labels)
  images = np.zeros((n, SIZE, SIZE, 3), np.uint8)
  images[:, 0, 0, 0] = 10 * np.asarray(own)
  if ids is not None:
    images[:, 0, 0, 1] = np.asarray(ids)
  return sources.ArrayPart(images=images, labels=np.asarray(labels, np.int64), indices=np.arange(n))


def _benchmark(parts):
  tasks = [benchmark_lib.Task(t, f't{t}', (2 * t, 2 * t + 1)) for t in range(len(parts))]
  return segmented.SegmentedBenchmark(
      train_parts=[(lambda p=p: p) for p in parts], eval_parts=[(lambda p=p: p) for p in parts], name='toy',
      num_classes=2 * len(parts), class_names=[str(c) for c in range(2 * len(parts))], tasks=tasks,
      scenario='class_incremental', eval_names=[t.name for t in tasks],
      preprocess=pipelines.PreprocessConfig(image_size=SIZE, crop='pad'))


def _protocols(batch_size=8, strategy=None):
  bench = _benchmark([_part(LABELS[0], OWN[0]), _part(LABELS[1], OWN[1])])
  strategy = strategy or tf.distribute.OneDeviceStrategy('/cpu:0')
  return evaluator_lib.ProtocolEvaluator(strategy=strategy, method=PromptIsClass(), benchmark=bench,
                                         protocols=evaluator_lib.PROTOCOLS, batch_size=batch_size)


@pytest.mark.parametrize('replicas', [1, 2])
def test_single_task_batches_batchwise_and_per_sample_differ_by_hand(replicas):
  # Two replicas: global batch 16, each set's 8 examples on the first replica, 8 padding examples on the second (the
  # vote ignores them); the per-set counts are summed over replicas.
  strategy = test_util.mirrored_strategy() if replicas == 2 else None
  rows = _protocols(8 * replicas, strategy).evaluate_after(1, USAGE)
  # Each set is one batch of 8 (single-task). Task 0: own prompts 0,0,0,1,1,1,2,3 vs labels 0,0,0,0,1,1,1,1.
  #   per sample: 3 + 2 = 5/8 right; masked to {0, 1} (2 and 3 fall to class 0): 0,0,0,1,1,1,0,0 -> 5/8.
  #   batchwise: votes 0:3, 1:3 -> tie, prompt 0 for all -> 4/8; task-incremental the same 4/8.
  # Task 1: own 2,2,0,0,3,1,1,1 vs labels 2,2,2,2,3,3,3,3.
  #   per sample: 2 + 1 = 3/8; masked to {2, 3} (0 and 1 fall to class 2): 2,2,2,2,3,2,2,2 -> 5/8.
  #   batchwise: votes 2:2, 0:2, 3:1, 1:3 -> prompt 1 for all -> 0/8; masked: class 2 for all -> 4/8.
  np.testing.assert_allclose(rows['per_sample'].accuracy, [62.5, 37.5])
  np.testing.assert_allclose(rows['official'].accuracy, [50.0, 0.0])
  np.testing.assert_allclose(rows['per_sample'].til, [62.5, 62.5])
  np.testing.assert_allclose(rows['official'].til, [50.0, 50.0])
  # Task identification (task 0's prompt is 0, task 1's is 2): per sample 3/8 and 2/8; batchwise 8/8 and 0/8.
  np.testing.assert_allclose(rows['per_sample'].task_id, [37.5, 25.0])
  np.testing.assert_allclose(rows['official'].task_id, [100.0, 0.0])
  np.testing.assert_array_equal(rows['official'].count, [8, 8])
  assert rows['official'].histograms == {'t0': [8.0, 0.0, 0.0, 0.0], 't1': [0.0, 8.0, 0.0, 0.0]}


def test_mixed_stream_accuracy_is_recovered_per_task_from_mixed_batches():
  protocols = _protocols()
  rows = protocols.evaluate_after(1, USAGE)
  # The reference: the same batches, the vote computed in numpy, counted by each example's task.
  correct, count, til, task_id = np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2)
  mixed_batches = 0
  for batch in protocols.bench.mixed_eval_dataset([0, 1], global_batch_size=8, seed=0):
    own = np.round(batch['image'].numpy()[:, 0, 0, 0] * 255 / 10).astype(int)
    valid, task, label = batch['valid'].numpy(), batch['task'].numpy(), batch['label'].numpy()
    mixed_batches += len(set(task[valid])) > 1
    vote = np.argmax(np.bincount(own[valid], minlength=POOL))
    for k in np.flatnonzero(valid):
      correct[task[k]] += vote == label[k]
      til[task[k]] += (vote if vote in (2 * task[k], 2 * task[k] + 1) else 2 * task[k]) == label[k]
      task_id[task[k]] += vote == 2 * task[k]  # Task 0's prompt is 0, task 1's is 2.
      count[task[k]] += 1
  assert mixed_batches >= 1
  np.testing.assert_array_equal(count, [8, 8])
  np.testing.assert_allclose(rows['mixed'].accuracy, 100 * correct / count)
  np.testing.assert_allclose(rows['mixed'].til, 100 * til / count)
  np.testing.assert_allclose(rows['mixed'].task_id, 100 * task_id / count)
  # The mixed batches voted other prompts than the single-task ones (this stream happens to score the same).
  assert rows['mixed'].histograms != rows['official'].histograms


@pytest.mark.parametrize('batch, pipelines_', [(5, 1), (8, 2)])
def test_mixed_stream_holds_every_seen_example_exactly_once(batch, pipelines_):
  n = [7, 9, 4]
  parts = [_part([2 * t] * n[t], [0] * n[t], ids=np.arange(n[t])) for t in range(3)]
  bench = _benchmark(parts)
  seen = []
  for p in range(pipelines_):
    ctx = tf.distribute.InputContext(num_input_pipelines=pipelines_, input_pipeline_id=p,
                                     num_replicas_in_sync=pipelines_)
    for b in bench.mixed_eval_dataset([0, 2], ctx, global_batch_size=batch, seed=3):
      valid = b['valid'].numpy()
      ids = np.round(b['image'].numpy()[:, 0, 0, 1] * 255).astype(int)
      seen += list(zip(b['task'].numpy()[valid], ids[valid]))
  expected = [(t, i) for t in (0, 2) for i in range(n[t])]
  assert sorted(seen) == expected  # Set 1 (not seen) is absent; no example twice, none missing.
  # A fixed seed: the same stream on every call, another one with another seed.
  order = lambda s: [tuple(b['task'].numpy()) for b in bench.mixed_eval_dataset([0, 2], global_batch_size=batch,
                                                                                 seed=s)]
  assert order(3) == order(3) != order(4)


def test_mixed_stream_refuses_bad_set_lists():
  bench = _benchmark([_part([0], [0]), _part([2], [0])])
  with pytest.raises(ValueError, match=r'\[0, 0\]'):
    bench.mixed_eval_dataset([0, 0], global_batch_size=2)
  with pytest.raises(ValueError, match='5'):
    bench.mixed_eval_dataset([0, 5], global_batch_size=2)


def test_task_prompt_sets_take_each_task_most_used_prompts():
  usage = np.array([[3, 3, 1, 0], [0, 2, 5, 2], [0, 0, 0, 0]])
  sets = evaluator_lib.task_prompt_sets(usage, 2, 3)
  # Task 0: 0 and 1; task 1: 2, then the tie 1 / 3 goes to the lower id; task 2 never selected: no prompts.
  np.testing.assert_array_equal(sets, [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
  assert evaluator_lib.task_prompt_sets(None, 2, 3) is None


def test_protocol_settings_are_checked():
  with pytest.raises(ValueError, match="'vote'"):
    evaluator_lib.check_protocols(('official', 'vote'), 'official')
  with pytest.raises(ValueError, match="'mixed'"):
    evaluator_lib.check_protocols(('official',), 'mixed')
  with pytest.raises(ValueError, match='twice'):
    evaluator_lib.check_protocols(('official', 'official'), 'official')


def test_protocol_results_average_incremental_and_last_accuracy_by_hand():
  bench = _benchmark([_part([0], [0]), _part([2], [0])])
  nan = np.nan
  matrices = {'accuracy': np.array([[80.0, nan], [60.0, 90.0]]), 'til': np.array([[90.0, nan], [70.0, 95.0]]),
              'task_id': np.array([[100.0, nan], [50.0, 75.0]]), 'count': np.array([[10, nan], [10, 30.0]])}
  res = reporting.protocol_results(bench, matrices, 2, 'mixed')
  assert res['avg_acc'] == [80.0, 75.0]
  assert res['til_avg_acc'] == [90.0, 82.5]
  assert res['task_id_acc'] == [100.0, 62.5]
  f = res['final']
  assert f['avg_incremental_acc'] == pytest.approx((80 + 75) / 2)
  assert f['last_acc'] == pytest.approx((60 * 10 + 90 * 30) / 40)  # Over examples: the sets differ in size.
  assert (res['selection'], res['stream']) == ('batchwise', 'mixed')
