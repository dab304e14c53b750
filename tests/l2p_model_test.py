"""L2PModel: token layout, head inputs, frozen backbone, gradients, parameter counts, multi-replica training."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from l2p_tf import losses
from l2p_tf.models import l2p_model
from l2p_tf.models import prompt_pool as prompt_pool_lib
from l2p_tf.models import vit as vit_lib
from tests import test_util

M, LP, N, NUM_CLASSES = 6, 3, 2, 10
NUM_TOKENS = 1 + (32 // 4) ** 2  # tiny ViT on 32x32: [CLS] + 64 patches


def tiny_model(*, with_pool=True, head_type='prompt', token_order='prompts_first', train_backbone=False,
               **pool_kwargs):
  vit = vit_lib.VisionTransformer(variant='tiny', image_size=32)
  pool = (prompt_pool_lib.PromptPool(embed_dim=vit.hidden_size, pool_size=M, prompt_length=LP, top_k=N,
                                     num_tasks=3, prompt_init='uniform_pm1', **pool_kwargs)
          if with_pool else None)
  return l2p_model.L2PModel(vit=vit, num_classes=NUM_CLASSES, prompt_pool=pool, head_type=head_type,
                            token_order=token_order, train_backbone=train_backbone)


def images(batch=4, seed=0):
  return tf.constant(np.random.default_rng(seed).uniform(size=(batch, 32, 32, 3)).astype(np.float32))


def randomise_head(model, seed=1):
  rng = np.random.default_rng(seed)
  model.head.kernel.assign(rng.standard_normal(model.head.kernel.shape).astype(np.float32))
  model.head.bias.assign(rng.standard_normal(model.head.bias.shape).astype(np.float32))


def test_zero_head_gives_zero_logits_and_the_train_mask_gives_minus_inf():
  model = tiny_model()
  out = model(images(), task_index=tf.Variable(0), training=True)
  logits = out['logits'].numpy()
  assert logits.shape == (4, NUM_CLASSES) and logits.dtype == np.float32
  np.testing.assert_array_equal(logits, 0)
  task_classes = np.zeros(NUM_CLASSES, bool)
  task_classes[[3, 4, 5]] = True
  masked = losses.mask_logits(out['logits'], task_classes).numpy()
  assert np.all(np.isneginf(masked[:, ~task_classes])) and np.all(masked[:, task_classes] == 0)
  # Zero logits over three task classes: every example's loss is log 3.
  ce = losses.cross_entropy(out['logits'], np.array([3, 4, 5, 3]), label_mask=task_classes).numpy()
  np.testing.assert_allclose(ce, math.log(3), rtol=1e-6)


@pytest.mark.parametrize('token_order', ['prompts_first', 'cls_first'])
def test_token_sequence_layout(token_order):
  model = tiny_model(token_order=token_order)
  embedded = model.vit.embed(images(2))
  prompts = tf.random.normal([2, N * LP, model.vit.hidden_size])
  tokens = model.prompted_tokens(embedded, prompts).numpy()
  assert tokens.shape == (2, N * LP + NUM_TOKENS, 64)
  e, p = embedded.numpy(), prompts.numpy()
  if token_order == 'prompts_first':
    np.testing.assert_array_equal(tokens[:, :N * LP], p)  # no position embedding on prompts
    np.testing.assert_array_equal(tokens[:, N * LP:], e)
  else:
    cls_pos = model.vit.pos_embedding.numpy()[:, :1]
    np.testing.assert_array_equal(tokens[:, :1], e[:, :1])
    np.testing.assert_allclose(tokens[:, 1:1 + N * LP], p + cls_pos, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(tokens[:, 1 + N * LP:], e[:, 1:])


@pytest.mark.parametrize('token_order, head_type, positions', [
    ('prompts_first', 'prompt', slice(0, N * LP)),
    ('cls_first', 'prompt', slice(1, 1 + N * LP)),
    ('prompts_first', 'token', slice(N * LP, N * LP + 1)),
    ('cls_first', 'token', slice(0, 1)),
    ('prompts_first', 'gap', slice(None)),
])
def test_forward_pass_by_hand(token_order, head_type, positions):
  model = tiny_model(token_order=token_order, head_type=head_type, selection='instancewise')
  randomise_head(model)
  x = images()
  out = model(x)
  vit = model.vit
  # The query is the plain ViT's final-LayerNorm [CLS] output with the same weights.
  np.testing.assert_allclose(out['query'].numpy(), vit.represent(x).numpy(), rtol=1e-5, atol=1e-5)
  ids = out['prompt_ids'].numpy()
  assert ids.shape == (4, N) and ids.dtype == np.int32
  prompts = model.prompt_pool.prompts.numpy()[ids].reshape(4, N * LP, -1)
  e = vit.embed(x).numpy()
  if token_order == 'prompts_first':
    tokens = np.concatenate([prompts, e], axis=1)
  else:
    tokens = np.concatenate([e[:, :1], prompts + vit.pos_embedding.numpy()[:, :1], e[:, 1:]], axis=1)
  encoded = vit.encode(tf.constant(tokens)).numpy()
  feature = encoded[:, positions].mean(axis=1)
  expected = feature @ model.head.kernel.numpy() + model.head.bias.numpy()
  np.testing.assert_allclose(out['logits'].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_only_selected_prompts_keys_and_head_change_after_one_step():
  model = tiny_model()  # batchwise, task mask: task 1 uses prompts 2 and 3
  randomise_head(model)  # a zero head would give the prompts no gradient at the first step
  task = tf.Variable(1)
  mask = np.zeros(NUM_CLASSES, bool)
  mask[5:] = True
  before = {v.ref(): v.numpy().copy() for v in model.variables}
  optimizer = tf_keras.optimizers.Adam(1e-2)
  with tf.GradientTape() as tape:
    out = model(images(8), task_index=task, training=True)
    loss = (tf.reduce_mean(losses.cross_entropy(out['logits'], np.arange(8) % 5 + 5, label_mask=mask))
            + losses.pull_loss(out['reduce_sim'], 1.0))
  grads = tape.gradient(loss, model.trainable_variables)
  optimizer.apply_gradients(zip(grads, model.trainable_variables))
  np.testing.assert_array_equal(out['prompt_ids'].numpy(), [[2, 3]] * 8)

  for v in model.vit.variables:
    np.testing.assert_array_equal(v.numpy(), before[v.ref()], err_msg=v.name)  # bit-identical
  pool = model.prompt_pool
  for var in (pool.prompts, pool.keys):
    diff = (var.numpy() != before[var.ref()]).reshape(M, -1).any(axis=1)
    np.testing.assert_array_equal(diff, [False, False, True, True, False, False], err_msg=var.name)
  assert np.any(model.head.kernel.numpy() != before[model.head.kernel.ref()])
  assert np.any(model.head.bias.numpy() != before[model.head.bias.ref()])


def test_query_pass_contributes_no_gradient():
  model = tiny_model(train_backbone=True, diversity='none')
  randomise_head(model)
  backbone = model.vit.trainable_variables
  assert backbone, 'train_backbone=True must make the ViT trainable'
  with tf.GradientTape(persistent=True) as tape:
    out = model(images(), training=True)
    logits_sum = tf.reduce_sum(tf.square(out['logits']))
  assert all(g is None for g in tape.gradient(out['query'], model.trainable_variables))
  # reduce_sim depends on the query and the keys only: no gradient may reach the backbone through the query.
  sim_grads = tape.gradient(out['reduce_sim'], backbone + [model.prompt_pool.keys])
  assert all(g is None for g in sim_grads[:-1])
  assert sim_grads[-1] is not None
  # The prompted pass does train the backbone when asked to.
  assert any(g is not None for g in tape.gradient(logits_sum, backbone))


def test_frozen_backbone_and_counts():
  model = tiny_model()
  assert model.vit.trainable_variables == []
  pool = model.prompt_pool
  trainable = {v.ref() for v in model.trainable_variables}
  assert trainable == {v.ref() for v in [pool.prompts, pool.keys, model.head.kernel, model.head.bias]}
  assert pool.usage.ref() not in trainable
  counts = model.param_counts()
  assert counts['prompts'] == M * LP * 64 and counts['keys'] == M * 64 and counts['head'] == 64 * 10 + 10
  assert counts['trainable'] == M * LP * 64 + M * 64 + 650


@pytest.mark.parametrize('train_backbone', [False, True])
def test_plain_fine_tuning_mode(train_backbone):
  model = tiny_model(with_pool=False, head_type='token', train_backbone=train_backbone)
  randomise_head(model)
  x = images()
  out = model(x, training=True)
  assert out['prompt_ids'].shape == (4, 0) and out['prompt_ids'].dtype == tf.int32
  assert float(out['reduce_sim']) == 0.0
  expected = model.vit.represent(x).numpy() @ model.head.kernel.numpy() + model.head.bias.numpy()
  np.testing.assert_allclose(out['logits'].numpy(), expected, rtol=1e-4, atol=1e-4)
  head = {model.head.kernel.ref(), model.head.bias.ref()}
  vit_vars = {v.ref() for v in model.vit.variables}
  assert {v.ref() for v in model.trainable_variables} == (head | vit_vars if train_backbone else head)
  gap = tiny_model(with_pool=False, head_type='gap')
  assert gap(x)['logits'].shape == (4, NUM_CLASSES)


@pytest.mark.parametrize('kwargs, needle', [
    (dict(head_type='foo'), "'foo'"),
    (dict(token_order='bar'), "'bar'"),
    (dict(prompt_pool=None), "'prompt'"),
    (dict(num_classes=0), '0'),
    (dict(prompt_pool=prompt_pool_lib.PromptPool(embed_dim=32)), '32'),
])
def test_errors_quote_the_value(kwargs, needle):
  vit = vit_lib.VisionTransformer(variant='tiny', image_size=32)
  args = dict(vit=vit, num_classes=10, prompt_pool=prompt_pool_lib.PromptPool(embed_dim=64))
  args.update(kwargs)
  with pytest.raises(ValueError, match=needle):
    l2p_model.L2PModel(**args)


def test_vit_b16_parameter_counts():
  vit = vit_lib.VisionTransformer(variant='B/16', image_size=224)
  pool = prompt_pool_lib.PromptPool(embed_dim=768, pool_size=10, prompt_length=10, top_k=4, num_tasks=10,
                                    task_mask_overflow='free')
  model = l2p_model.L2PModel(vit=vit, num_classes=100, prompt_pool=pool)
  backbone = 85_798_656
  assert vit_lib.count_params(vit.backbone_variables()) == backbone
  assert vit_lib.count_params(model.trainable_variables) == 76_800 + 7_680 + 76_900 == 161_380
  counts = model.param_counts()
  assert (counts['prompts'], counts['keys'], counts['head'], counts['trainable']) == (76_800, 7_680, 76_900, 161_380)
  # One copy of the backbone: every variable of the model together is within 0.5% of the backbone alone.
  total = vit_lib.count_params(model.variables)
  assert backbone < total < 1.005 * backbone
  line = model.summary_line()
  assert 'trainable 161,380 (prompts 76,800, keys 7,680, head 76,900)' in line
  assert f'{backbone + 161_380:,} total' in line


def test_trainer_step_under_mirrored_strategy_traced_once_across_tasks():
  strategy = test_util.mirrored_strategy()
  with strategy.scope():
    model = tiny_model()
    optimizer = tf_keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)  # slots created up front, as a trainer restoring a checkpoint does
    task = tf.Variable(0, trainable=False)
    class_mask = tf.Variable(np.arange(NUM_CLASSES) < 5, trainable=False)
  vit_before = [v.numpy().copy() for v in model.vit.variables]
  global_batch = 8

  @tf.function
  def train_step(x, y):
    def replica_step(x, y):
      y = y + 5 * task  # this task's classes
      with tf.GradientTape() as tape:
        out = model(x, task_index=task, training=True)
        loss = (tf.reduce_sum(losses.cross_entropy(out['logits'], y, label_mask=class_mask)) / global_batch
                + losses.pull_loss(out['reduce_sim'], 1.0) / strategy.num_replicas_in_sync)
      grads = tape.gradient(loss, model.trainable_variables)
      grads, _ = tf.clip_by_global_norm(grads, 1.0)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))
      return out['prompt_ids']
    return strategy.run(replica_step, args=(x, y))

  dataset = tf.data.Dataset.from_tensors((images(global_batch)[0], tf.constant(0))).repeat(global_batch)
  dist = iter(strategy.experimental_distribute_dataset(dataset.batch(global_batch).repeat()))
  for t in range(2):
    task.assign(t)
    class_mask.assign((np.arange(NUM_CLASSES) // 5) == t)
    x, y = next(dist)
    ids = strategy.experimental_local_results(train_step(x, y))
    for replica_ids in ids:
      np.testing.assert_array_equal(replica_ids.numpy(), [[2 * t, 2 * t + 1]] * 4)
  assert train_step.experimental_get_tracing_count() == 1
  np.testing.assert_array_equal(model.prompt_pool.usage.numpy(),
                                [[8, 8, 0, 0, 0, 0], [0, 0, 8, 8, 0, 0], [0] * 6])
  for v, b in zip(model.vit.variables, vit_before):
    np.testing.assert_array_equal(v.numpy(), b)


def test_valid_mask_reaches_the_pool():
  model = tiny_model(diversity='none')
  x = tf.gather(images(2), [0, 1, 1, 1])
  q = model(x)['query'].numpy()
  # Keys 0, 1 = example 0's query, keys 2, 3 = the query of examples 1-3, keys 4, 5 point away from both.
  model.prompt_pool.keys.assign(np.stack([q[0], q[0], q[1], q[1], -q[0], -q[1]]))
  np.testing.assert_array_equal(model(x)['prompt_ids'].numpy(), [[2, 3]] * 4)  # three votes against one
  # With only the first example real, the batchwise vote is that example's own choice.
  out = model(x, valid=tf.constant([True, False, False, False]))
  np.testing.assert_array_equal(out['prompt_ids'].numpy(), [[0, 1]] * 4)
