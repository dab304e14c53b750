"""L2P++ (L2P with prefix tuning at layer 0, [CLS] head, per-sample selection): prefixes per sample, the pull term per
sample, batch-composition invariance."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from l2p_tf.methods import l2p
from l2p_tf.models import l2p_model
from l2p_tf.models import prompt_pool
from l2p_tf.models import vit as vit_lib

N, LP, M = 2, 4, 6


def make_method(pull=3.0):
  tf.keras.utils.set_random_seed(0)
  method = l2p.L2P(
      prompt_pool=functools.partial(prompt_pool.PromptPool, pool_size=M, prompt_length=LP, top_k=N,
                                    selection='instancewise', diversity='none', prompt_init='uniform_01',
                                    key_init='uniform_01'),
      model=functools.partial(l2p_model.L2PModel, tuning='prefix', head_type='token'), pull_coefficient=pull)
  method.build(backbone=lambda: vit_lib.VisionTransformer(variant='tiny', image_size=32), num_classes=4, num_tasks=2)
  rng = np.random.default_rng(0)
  method.model.head.kernel.assign(rng.normal(0, 1, (64, 4)))
  x = images()
  pool = method.model.prompt_pool
  query = method.model.query_pass(x)['query'].numpy()
  pool.keys.assign(np.concatenate([query, pool.keys.numpy()[len(x):]]) + rng.normal(0, 0.1, (M, 64)))
  return method


def images(n=4):
  return np.random.default_rng(1).uniform(0, 1, (n, 32, 32, 3)).astype(np.float32)


def test_prefixes_are_each_samples_own_prompts_at_layer_0():
  method = make_method()
  model = method.model
  x = images()
  out = method.predict(x, selection='instancewise')
  ids = out['prompt_ids'].numpy()
  assert len({tuple(r) for r in ids}) > 1
  prompts = model.prompt_pool.prompts.numpy()[ids]  # (B, N, LP, D)
  keys = prompts[:, :, :LP // 2].reshape(len(x), -1, 64)
  values = prompts[:, :, LP // 2:].reshape(len(x), -1, 64)
  tokens = model.vit.embed(x)
  encoded = model.vit.encode(tokens, prefixes={0: (keys, values)})
  want = model.head(encoded[:, 0]).numpy()
  np.testing.assert_allclose(out['logits'].numpy(), want, atol=1e-5)
  assert model.num_prompt_tokens == 0
  # Alone, in the batch and reversed: the same logits.
  alone = np.concatenate([method.predict(x[i:i + 1], selection='instancewise')['logits'].numpy() for i in range(4)])
  reverse = method.predict(x[::-1], selection='instancewise')['logits'].numpy()[::-1]
  np.testing.assert_allclose(out['logits'].numpy(), alone, atol=1e-5)
  np.testing.assert_allclose(out['logits'].numpy(), reverse, atol=1e-5)


def test_pull_term_is_per_sample():
  method = make_method(pull=3.0)
  x = images()
  labels = np.array([0, 1, 0, 1])
  out = method.loss({'image': x, 'label': labels, 'label_mask': np.ones((4, 4), bool)},
                    frozen=method.frozen_features(x), task_index=tf.constant(0), global_batch_size=4, num_replicas=1)
  ids = method.predict(x, selection='instancewise')['prompt_ids'].numpy()
  q = method.model.query_pass(x)['query'].numpy().astype(np.float64)
  k = method.model.prompt_pool.keys.numpy().astype(np.float64)
  cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (k / np.linalg.norm(k, axis=1, keepdims=True)).T
  per_sample = sum((1 - cos[b, ids[b]]).sum() for b in range(4))  # each sample to its own keys only
  np.testing.assert_allclose(out.scalars['reduce_sim'].numpy(), N - per_sample / 4, rtol=1e-5)
  np.testing.assert_allclose(out.loss.numpy() - out.scalars['cross_entropy'].numpy(),
                             3.0 * (per_sample / 4 - N), rtol=1e-4, atol=1e-5)


def test_prefix_tuning_needs_even_length_and_a_token_head():
  vit = vit_lib.VisionTransformer(variant='tiny', image_size=32)
  pool = prompt_pool.PromptPool(embed_dim=64, pool_size=4, prompt_length=3, top_k=1)
  with pytest.raises(ValueError, match='even prompt_length'):
    l2p_model.L2PModel(vit=vit, num_classes=2, prompt_pool=pool, tuning='prefix', head_type='token')
