"""DualPrompt: per-sample prefixes (batch-composition invariance, also under MirroredStrategy, and a transposed
layout that the test must catch), the task mask and shared-pool copy, the trainable set of ViT-B/16."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from l2p_tf.methods import dualprompt
from l2p_tf.models import dualprompt_model
from l2p_tf.models import prompt_pool
from l2p_tf.models import vit as vit_lib
from tests import test_util

B = 4
CORRECT_SPLIT = dualprompt_model.split_e_prompts


def make_method(g_layers=(0, 1), e_layers=(1,), prefix_tune=True, num_classes=6, num_tasks=3):
  """Tiny ViT; layer 1 has both a G- and an E-prompt ([G ; E])."""
  tf.keras.utils.set_random_seed(0)
  method = dualprompt.DualPrompt(
      prompt_pool=functools.partial(prompt_pool.PromptPool, pool_size=6, top_k=2, selection='instancewise',
                                    diversity='task_mask', shared_prompt_pool=True),
      model=functools.partial(dualprompt_model.DualPromptModel, g_layers=g_layers, e_layers=e_layers, g_length=3,
                              e_length=2, prefix_tune=prefix_tune))
  method.build(backbone=lambda: vit_lib.VisionTransformer(variant='tiny', image_size=32), num_classes=num_classes,
               num_tasks=num_tasks)
  rng = np.random.default_rng(0)
  for v in method.model.trainable_variables:  # Prompts and head far from their near-zero initial values.
    v.assign(rng.normal(0, 1, v.shape).astype(np.float32))
  return method


def images(n=B, seed=1):
  return np.random.default_rng(seed).uniform(0, 1, (n, 32, 32, 3)).astype(np.float32)


def spread_keys(method, x):
  """Sets key i to image i's query, so the samples select different E-prompts."""
  query = method.model.query_pass(x)['query'].numpy()
  keys = method.model.prompt_pool.keys
  keys.assign(np.concatenate([query, keys.numpy()[len(query):]]))


def transposed_split(prompts, *, top_k, num_layers, halves, length):
  """The PyTorch port's layout: (layers, halves, B, ...) reshaped to (layers, B, halves, ...) without a permute."""
  x = CORRECT_SPLIT(prompts, top_k=top_k, num_layers=num_layers, halves=halves, length=length)
  b, d = tf.shape(prompts)[0], prompts.shape[-1]
  x = tf.reshape(x, [num_layers, b, halves, top_k * length, d])  # the defective reshape
  return tf.transpose(x, [0, 2, 1, 3, 4])  # read back as (layers, halves, B, ...): sample b gets others' slots


def composition_gap(method, x):
  """Max |logit difference| of each sample alone, in the batch, and in the reversed batch."""
  batch = method.predict(x, selection='instancewise')
  assert len({tuple(r) for r in batch['prompt_ids'].numpy()}) > 1, 'samples must select different prompts'
  reverse = method.predict(x[::-1], selection='instancewise')['logits'].numpy()[::-1]
  alone = np.concatenate([method.predict(x[i:i + 1], selection='instancewise')['logits'].numpy()
                          for i in range(len(x))])
  got = batch['logits'].numpy()
  assert np.abs(got).max() > 1e-2
  return max(np.abs(got - alone).max(), np.abs(got - reverse).max())


@pytest.mark.parametrize('prefix_tune', [True, False])
def test_logits_do_not_depend_on_the_rest_of_the_batch(prefix_tune):
  method = make_method(prefix_tune=prefix_tune)
  x = images()
  spread_keys(method, x)
  assert composition_gap(method, x) < 1e-5


def test_a_transposed_prefix_layout_breaks_batch_invariance(monkeypatch):
  method = make_method()
  x = images()
  spread_keys(method, x)
  assert composition_gap(method, x) < 1e-5
  monkeypatch.setattr(dualprompt_model, 'split_e_prompts', transposed_split)
  # The port's layout: samples see other samples' prompts, and key halves as values. The invariance check catches it.
  assert composition_gap(method, x) > 1e-3


def test_mirrored_replicas_give_the_single_device_logits():
  strategy = test_util.mirrored_strategy()
  with strategy.scope():
    method = make_method()
  x = images()
  spread_keys(method, x)
  want = np.concatenate([method.predict(x[i:i + 1], selection='instancewise')['logits'].numpy() for i in range(B)])
  half = B // 2
  per_replica = strategy.experimental_distribute_values_from_function(
      lambda ctx: tf.constant(x[half * ctx.replica_id_in_sync_group:half * (ctx.replica_id_in_sync_group + 1)]))

  @tf.function
  def step(batch):
    return strategy.run(lambda im: method.predict(im, selection='instancewise')['logits'], args=(batch,))

  got = np.concatenate([t.numpy() for t in strategy.experimental_local_results(step(per_replica))])
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_training_uses_the_task_prompts_and_the_next_task_starts_from_a_copy():
  method = make_method()
  pool = method.model.prompt_pool
  x = images()
  labels = np.array([2, 3, 2, 3])
  mask = np.tile(np.arange(6)[np.newaxis] // 2 == 1, (B, 1))  # task 1 = classes 2, 3
  out = method.loss({'image': x, 'label': labels, 'label_mask': mask}, frozen=method.frozen_features(x),
                    task_index=tf.constant(1), global_batch_size=B, num_replicas=1)
  np.testing.assert_array_equal(pool.usage.numpy()[1], [0, 0, B, B, 0, 0])  # task 1 -> E-prompts 2, 3
  assert np.isinf(out.logits.numpy()[:, [0, 1, 4, 5]]).all()
  ce = out.scalars['cross_entropy'].numpy()
  np.testing.assert_allclose(out.loss.numpy(), ce - out.scalars['reduce_sim'].numpy(), rtol=1e-5)
  before = pool.prompts.numpy()
  method.begin_task(2)
  np.testing.assert_array_equal(pool.prompts.numpy()[4:6], before[2:4])  # shared pool: task 2 starts from task 1
  np.testing.assert_array_equal(pool.prompts.numpy()[:4], before[:4])


def test_b16_official_trainable_set():
  method = dualprompt.DualPrompt(
      prompt_pool=functools.partial(prompt_pool.PromptPool, pool_size=10, top_k=1, diversity='task_mask'),
      model=dualprompt_model.DualPromptModel)
  method.build(backbone=lambda: vit_lib.VisionTransformer(variant='B/16', image_size=224), num_classes=100,
               num_tasks=10)
  counts = method.model.param_counts()
  assert counts['g_prompt'] == 2 * 2 * 5 * 768 == 15_360
  assert counts['e_prompts'] == 10 * 3 * 2 * 5 * 768 == 230_400
  assert counts['keys'] == 10 * 768
  assert counts['head'] == 768 * 100 + 100
  assert counts['trainable'] == 15_360 + 230_400 + 7_680 + 76_900 == 330_340
  assert counts['backbone'] == 85_798_656
  assert sorted(v.name.split('/')[-1] for v in method.trainable_variables) == [
      'bias:0', 'g_prompt:0', 'kernel:0', 'keys:0', 'prompts:0']
  assert 'trainable 330,340' in method.describe()
  with pytest.raises(ValueError, match='outside ViT-tiny'):
    make_method(e_layers=(2,))
