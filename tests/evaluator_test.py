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
