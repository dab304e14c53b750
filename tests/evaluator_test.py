"""Evaluator: the batchwise prompt vote happens per vote group of the configured size inside each replica batch."""

import numpy as np
import pytest
import tensorflow as tf

from l2p_tf.engine import evaluator as evaluator_lib
from l2p_tf.methods import l2p as l2p_method
from l2p_tf.models import l2p_model
from l2p_tf.models import prompt_pool as prompt_pool_lib
from l2p_tf.models import vit as vit_lib
from tests import test_util

POOL = 4
A, B = 16, 32  # 16 images of kind a, then 32 of kind b: one evaluation batch of 48.


def _images():
  rng = np.random.default_rng(0)
  a = np.full((1, 32, 32, 3), 0.2, np.float32)
  b = rng.uniform(size=(1, 32, 32, 3)).astype(np.float32)
  return a, b


def _model(vote_size):
  """Tiny L2P (method) whose key 0 is image a's query and key 1 image b's (top-1): a picks 0, b picks 1."""
  vit = vit_lib.VisionTransformer(variant='tiny', image_size=32)
  pool = prompt_pool_lib.PromptPool(embed_dim=vit.hidden_size, pool_size=POOL, prompt_length=2, top_k=1,
                                    diversity='none', vote_size=vote_size)
  model = l2p_model.L2PModel(vit=vit, num_classes=2, prompt_pool=pool)
  a, b = _images()
  qa, qb = (model.query_pass(tf.constant(x))['query'].numpy()[0] for x in (a, b))
  pool.keys.assign(np.stack([qa, qb, -qa - qb, -qa - qb]))
  method = l2p_method.L2P(prompt_pool=None, model=lambda **_: model)
  method.build(backbone=lambda: None, num_classes=2, num_tasks=1)
  return method


def _dataset(global_batch):
  a, b = _images()
  images = np.concatenate([np.repeat(a, A, 0), np.repeat(b, B, 0)])
  n = len(images)
  data = {'image': images, 'label': np.zeros(n, np.int32), 'valid': np.ones(n, bool)}
  return tf.data.Dataset.from_tensor_slices(data).batch(global_batch)


@pytest.mark.parametrize('vote_size, expected', [
    (None, [0, A + B, 0, 0]),  # One vote over the 48 (as over an evaluation batch of 500): b's prompt for all.
    (16, [A, B, 0, 0]),        # The official per-device vote: the first 16 (all a) vote for prompt 0.
])
def test_vote_group_size_changes_the_evaluation_vote(vote_size, expected):
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  with strategy.scope():
    method = _model(vote_size)
  ev = evaluator_lib.Evaluator(strategy=strategy, method=method, selections=('batchwise', 'instancewise'))
  res = ev.evaluate(strategy.experimental_distribute_dataset(_dataset(A + B)))
  np.testing.assert_array_equal(res['instancewise']['prompt_histogram'], [A, B, 0, 0])  # Keys work as built.
  np.testing.assert_array_equal(res['batchwise']['prompt_histogram'], expected)


def test_vote_groups_are_per_replica_under_mirrored_strategy():
  # Global batch 96 = two copies of the 48 over 2 replicas: each replica gets one 48 and votes in groups of 16.
  strategy = test_util.mirrored_strategy()
  with strategy.scope():
    method = _model(16)
  ev = evaluator_lib.Evaluator(strategy=strategy, method=method)
  ds = _dataset(A + B).unbatch().repeat(2).batch(2 * (A + B))
  res = ev.evaluate(strategy.experimental_distribute_dataset(ds))
  np.testing.assert_array_equal(res['batchwise']['prompt_histogram'], [2 * A, 2 * B, 0, 0])


@pytest.mark.parametrize('mirrored', [False, True])
def test_reused_fixed_features_give_the_results_of_recomputing(mirrored):
  strategy = test_util.mirrored_strategy() if mirrored else tf.distribute.OneDeviceStrategy('/cpu:0')
  with strategy.scope():
    method = _model(16)
  assert method.frozen_features_are_fixed
  per_replica = A + B
  ds = strategy.experimental_distribute_dataset(
      _dataset(A + B).unbatch().repeat(2).batch(per_replica * strategy.num_replicas_in_sync // 3))
  selections = ('batchwise', 'instancewise')
  reusing = evaluator_lib.Evaluator(strategy=strategy, method=method, selections=selections,
                                    reuse_fixed_features=True)
  plain = evaluator_lib.Evaluator(strategy=strategy, method=method, selections=selections)
  calls = []
  compute = reusing._fixed_step  # pylint: disable=protected-access
  reusing._fixed_step = lambda batch: calls.append(1) or compute(batch)  # pylint: disable=protected-access
  rng = np.random.default_rng(1)
  for _ in range(3):  # Evaluations after "training": the trainable prompts, keys and head change in between.
    for v in method.trainable_variables:
      v.assign(rng.normal(size=v.shape).astype(np.float32))
    got, want = reusing.evaluate(ds, key=0), plain.evaluate(ds)
    for s in selections:
      assert got[s]['correct'] == want[s]['correct'] and got[s]['count'] == want[s]['count']
      np.testing.assert_array_equal(got[s]['prompt_histogram'], want[s]['prompt_histogram'])
  assert len(calls) == sum(1 for _ in ds) > 1  # One query pass per batch for the whole run, not per evaluation.
  images = tf.constant(np.concatenate(_images() * 8))
  for s in selections:
    np.testing.assert_array_equal(
        method.predict(images, selection=s, fixed=method.fixed_features(images))['logits'].numpy(),
        method.predict(images, selection=s)['logits'].numpy())


def test_no_reuse_without_a_key_or_for_a_method_whose_features_train():
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  with strategy.scope():
    method = _model(16)
  ev = evaluator_lib.Evaluator(strategy=strategy, method=method, reuse_fixed_features=True)
  ev.evaluate(strategy.experimental_distribute_dataset(_dataset(A + B)))
  assert not ev._fixed  # pylint: disable=protected-access
  method.model.train_backbone = True  # A trained backbone moves the query: nothing may be kept.
  assert not method.frozen_features_are_fixed
  assert not evaluator_lib.Evaluator(strategy=strategy, method=method, reuse_fixed_features=True).reuse


def test_a_run_reusing_the_query_features_gives_the_results_of_recomputing(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tests.runs import run_experiment  # pylint: disable=g-import-not-at-top
  results = {}
  with tfds.testing.mock_data(num_examples=1000):
    for reuse in (True, False):
      results[reuse] = run_experiment(
          tmp_path / str(reuse), 'cifar100_l2p',
          [f'config.Evaluation.reuse_fixed_features = {reuse}'], data_dir=str(tmp_path / 'tfds'))
  for key in ('accuracy_matrix', 'protocols', 'final', 'prompt_histogram_eval'):
    assert key in results[True] and results[True][key] == results[False][key], key


class _Streamed:
  """A streamed part (as `sources.StreamPart`): PNG-encoded records read in order, never held as an array."""

  def __init__(self, part):
    self.num_examples = part.num_examples
    rows = np.asarray(part.indices)
    self._encoded = [tf.io.encode_png(part.images[r]).numpy() for r in rows]
    self._labels = np.asarray(part.labels)[rows].astype(np.int64)

  def records(self):
    return tf.data.Dataset.from_tensor_slices({'image': self._encoded, 'label': self._labels})


def _toy_benchmark(sizes=(13, 9), streamed=False):
  """Two tasks of random 32 px test images (classes {0, 1} and {2, 3}), set sizes that leave padded batches; with
  `streamed`, the second set is read as encoded records (the large-image path) instead of an array."""
  from l2p_tf.data import benchmark as benchmark_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.data import pipelines  # pylint: disable=g-import-not-at-top
  from l2p_tf.data import segmented  # pylint: disable=g-import-not-at-top
  from l2p_tf.data import sources  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  parts = []
  for t, n in enumerate(sizes):
    images = rng.integers(0, 256, size=(n + 2, 32, 32, 3), dtype=np.uint8)
    labels = 2 * t + rng.integers(0, 2, size=n + 2)
    parts.append(sources.ArrayPart(images=images, labels=labels, indices=np.arange(n + 2)[::-1][:n]))
  if streamed:
    parts[1] = _Streamed(parts[1])
  tasks = [benchmark_lib.Task(t, f't{t}', (2 * t, 2 * t + 1)) for t in range(len(parts))]
  return segmented.SegmentedBenchmark(
      train_parts=[(lambda p=p: p) for p in parts], eval_parts=[(lambda p=p: p) for p in parts], name='toy',
      num_classes=4, class_names=['0', '1', '2', '3'], tasks=tasks, scenario='class_incremental',
      eval_names=[t.name for t in tasks], preprocess=pipelines.PreprocessConfig(image_size=32, crop='pad'))


@pytest.mark.parametrize('mirrored, jit', [(False, False), (True, False), (False, True)])
def test_every_protocol_reusing_kept_features_gives_the_results_of_recomputing(mirrored, jit):
  # The official and per-sample sets reuse their own kept batches; the mixed stream, shuffled anew after every task,
  # looks each example up in its set's table by ('task', 'index'). Nothing may change but the work, with XLA too
  # (the query pass compiled on its own, then inside the whole prediction).
  strategy = test_util.mirrored_strategy() if mirrored else tf.distribute.OneDeviceStrategy('/cpu:0')
  with strategy.scope():
    vit = vit_lib.VisionTransformer(variant='tiny', image_size=32)
    pool = prompt_pool_lib.PromptPool(embed_dim=vit.hidden_size, pool_size=POOL, prompt_length=2, top_k=2,
                                      diversity='none', vote_size=None)
    model = l2p_model.L2PModel(vit=vit, num_classes=4, prompt_pool=pool)
    method = l2p_method.L2P(prompt_pool=None, model=lambda **_: model)
    method.build(backbone=lambda: None, num_classes=4, num_tasks=2)
  bench = _toy_benchmark()
  make = lambda reuse: evaluator_lib.ProtocolEvaluator(
      strategy=strategy, method=method, benchmark=bench, protocols=evaluator_lib.PROTOCOLS,
      batch_size=4 * strategy.num_replicas_in_sync, reuse_fixed_features=reuse, jit_compile=jit)
  reusing, plain = make(True), make(False)
  calls = []
  compute = reusing.evaluator._fixed_step  # pylint: disable=protected-access
  reusing.evaluator._fixed_step = lambda batch: calls.append(1) or compute(batch)  # pylint: disable=protected-access
  rng = np.random.default_rng(1)
  usage = np.array([[3, 1, 0, 0], [0, 0, 2, 5]], np.float32)
  for t in (0, 1, 1):
    for v in method.trainable_variables:
      v.assign(rng.normal(size=v.shape).astype(np.float32))
    got, want = reusing.evaluate_after(t, usage), plain.evaluate_after(t, usage)
    for p in evaluator_lib.PROTOCOLS:
      for field in ('accuracy', 'til', 'task_id', 'count'):
        np.testing.assert_array_equal(getattr(got[p], field), getattr(want[p], field), err_msg=f'{p} {field}')
      assert got[p].histograms == want[p].histograms, p
  # The query pass ran once per batch of each set over the run (13 and 9 images in global batches of 4 per
  # replica), in none of the mixed streams.
  batch = 4 * strategy.num_replicas_in_sync
  assert len(calls) == -(-13 // batch) + -(-9 // batch)
  # The mixed stream really reads the tables: a wrong table changes its votes, not the per-set protocols.
  table = reusing.evaluator._tables[('set', 0)]  # pylint: disable=protected-access
  table['query'] = -table['query']  # Every example of set 0 now ranks the prompts backwards.
  broken = reusing.evaluate_after(1, usage)
  assert broken['mixed'].histograms != want['mixed'].histograms
  assert broken['official'].histograms == want['official'].histograms


@pytest.mark.parametrize('streamed', [False, True])
def test_mixed_stream_finds_each_example_in_its_set_by_index(streamed):
  bench = _toy_benchmark(streamed=streamed)
  for pipes in (1, 2):
    contexts = [tf.distribute.InputContext(num_input_pipelines=pipes, input_pipeline_id=p, num_replicas_in_sync=pipes)
                for p in range(pipes)]
    images = {}  # (set, index) -> image, from the sets' own batches
    for t in (0, 1):
      for ctx in contexts:
        for b in bench.eval_dataset(t, ctx, global_batch_size=4):
          for img, i, ok in zip(b['image'].numpy(), b['index'].numpy(), b['valid'].numpy()):
            if ok:
              assert (t, i) not in images
              images[(t, i)] = img
    assert sorted(images) == [(t, i) for t, n in enumerate((13, 9)) for i in range(n)]
    found = 0
    for ctx in contexts:
      for b in bench.mixed_eval_dataset([0, 1], ctx, global_batch_size=4, seed=5):
        for img, t, i, ok in zip(b['image'].numpy(), b['task'].numpy(), b['index'].numpy(), b['valid'].numpy()):
          if ok:
            np.testing.assert_array_equal(img, images[(t, i)])
            found += 1
    assert found == 22
