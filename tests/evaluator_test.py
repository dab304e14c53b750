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
