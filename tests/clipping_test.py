"""Gradient clipping over a scope: the official all-parameter norm against a reference computed by hand."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from l2p_tf.engine import clipping
from l2p_tf import losses
from l2p_tf.engine import trainer as trainer_lib
from l2p_tf.methods import l2p as l2p_method
from l2p_tf.models import l2p_model
from l2p_tf.models import prompt_pool as prompt_pool_lib
from l2p_tf.models import vit as vit_lib

BATCH, PULL = 8, 1.0
LR = 1000.0  # Updates of ~1e-3 (the clip is 1e-3): well above the float32 spacing of the weights.
STRATEGY = tf.distribute.OneDeviceStrategy('/cpu:0')


def images(batch, seed=0):
  return tf.constant(np.random.default_rng(seed).uniform(size=(batch, 32, 32, 3)).astype(np.float32))


def _model():
  """Tiny ViT (2 layers, 64 wide) + pool + a random head (a zero head would pass no gradient to the backbone)."""
  with STRATEGY.scope():
    vit = vit_lib.VisionTransformer(variant='tiny', image_size=32)
    pool = prompt_pool_lib.PromptPool(embed_dim=vit.hidden_size, pool_size=6, prompt_length=3, top_k=2, num_tasks=3,
                                      prompt_init='uniform_pm1', diversity='none')
    model = l2p_model.L2PModel(vit=vit, num_classes=10, prompt_pool=pool)
  rng = np.random.default_rng(1)
  model.head.kernel.assign(rng.standard_normal(model.head.kernel.shape).astype(np.float32))
  model.head.bias.assign(rng.standard_normal(model.head.bias.shape).astype(np.float32))
  return model


def _batch():
  mask = np.zeros((BATCH, 10), bool)
  mask[:, :5] = True
  return {'image': images(BATCH, seed=3), 'label': tf.constant(np.arange(BATCH) % 5, tf.int32),
          'label_mask': tf.constant(mask)}


def _reference(model, batch, max_norm):
  """Gradients of every parameter by a plain tape over the model's own call (query pass inside, stop-gradient)."""
  params = [v for v in model.variables if v.trainable and v.dtype.is_floating]
  with tf.GradientTape(persistent=True) as tape:
    out = model(batch['image'], task_index=tf.constant(0), training=True)
    ce = losses.cross_entropy(out['logits'], batch['label'], batch['label_mask'])
    loss = tf.reduce_sum(ce) / BATCH - PULL * out['reduce_sim']
  grads = {v.ref(): tape.gradient(loss, v) for v in params}
  grads = {k: None if g is None else tf.convert_to_tensor(g) for k, g in grads.items()}
  trainable = model.trainable_variables
  g_train = [grads[v.ref()].numpy() for v in trainable]
  norm_all = np.sqrt(sum(float(np.sum(np.square(g.numpy()))) for g in grads.values() if g is not None))
  norm_train = np.sqrt(sum(float(np.sum(np.square(g))) for g in g_train))
  factor = lambda n: min(1.0, max_norm / (n + 1e-6))  # pylint: disable=unnecessary-lambda-assignment
  return ({'all': [g * factor(norm_all) for g in g_train], 'trainable': [g * factor(norm_train) for g in g_train]},
          {'all': norm_all, 'trainable': norm_train})


def _trainer_update(model, batch, scope, max_norm):
  """One trainer step with SGD: returns (-update / learning rate of each trainable variable, logged norm, names of
  frozen parameters that moved)."""
  strategy = STRATEGY
  before = [v.numpy().copy() for v in model.variables]
  with strategy.scope():
    opt = tf_keras.optimizers.SGD(learning_rate=LR)
    opt.build(model.trainable_variables)
    step, task = tf.Variable(0, dtype=tf.int64), tf.Variable(0)
    method = l2p_method.L2P(prompt_pool=None, model=lambda **_: model, pull_coefficient=PULL)
    method.build(backbone=lambda: None, num_classes=model.num_classes, num_tasks=1)
  trainer = trainer_lib.Trainer(strategy=strategy, method=method, optimizer=opt, global_step=step, task_index=task,
                                global_batch_size=BATCH, grad_clip_norm=max_norm, grad_clip_scope=scope)
  trainer.train_dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch).repeat())
  try:
    out = trainer.train(tf.constant(1))
  finally:
    trainer.train_dataset = None
  start = {v.ref(): b for v, b in zip(model.variables, before)}
  applied = [(start[v.ref()] - v.numpy()) / LR for v in model.trainable_variables]
  frozen_moved = [v.name for v in clipping.frozen_parameters(model) if not np.array_equal(start[v.ref()], v.numpy())]
  for v, b in zip(model.variables, before):
    v.assign(b)
  return applied, float(out['grad_norm']), frozen_moved


def test_frozen_parameters_are_the_backbone():
  model = _model()
  frozen = {v.ref() for v in clipping.frozen_parameters(model)}
  assert frozen == {v.ref() for v in model.vit.variables}
  assert model.prompt_pool.usage.ref() not in frozen  # State, not a parameter.
  assert not frozen & {v.ref() for v in model.trainable_variables}


@pytest.mark.parametrize('scope', ['all', 'trainable'])
def test_trainer_clip_equals_the_reference(scope):
  model = _model()
  batch = _batch()
  max_norm = 1e-3  # Far below both norms: the factor acts in both scopes.
  expected, norms = _reference(model, batch, max_norm)
  # The backbone's gradients are large enough here that the two scopes clip differently.
  assert norms['all'] > 1.5 * norms['trainable'], norms
  applied, logged, frozen_moved = _trainer_update(model, batch, scope, max_norm)
  np.testing.assert_allclose(logged, norms[scope], rtol=1e-4)
  for a, e in zip(applied, expected[scope]):
    np.testing.assert_allclose(a, e, rtol=2e-3, atol=1e-9)
  other = 'trainable' if scope == 'all' else 'all'
  assert not all(np.allclose(a, e, rtol=2e-3, atol=1e-9) for a, e in zip(applied, expected[other]))
  assert not frozen_moved  # The frozen parameters' gradients enter the norm only.


def test_clip_function_in_a_replica_context_sums_before_the_norm():
  strategy = STRATEGY
  with strategy.scope():
    a = tf.Variable([3.0, 0.0])
    frozen = tf.Variable([0.0, 4.0])

  def fn():
    clip = clipping.GlobalNormClip(max_norm=1.0, scope='all', frozen_variables=[frozen])
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(clip.sources([a]))
      loss = tf.reduce_sum(a * tf.constant([1.0, 1.0])) * 3.0 + tf.reduce_sum(frozen * 2.0)
    return clip(tape, loss, [a], replica_context=tf.distribute.get_replica_context())

  (grads,), norm = strategy.run(fn)
  # Gradients: a -> (3, 3), frozen -> (2, 2); norm sqrt(9 + 9 + 4 + 4) = sqrt(26); factor 1 / (sqrt(26) + 1e-6).
  np.testing.assert_allclose(float(norm), np.sqrt(26.0), rtol=1e-6)
  np.testing.assert_allclose(grads.numpy(), np.array([3.0, 3.0]) / (np.sqrt(26.0) + 1e-6), rtol=1e-6)


def test_factor_is_the_official_formula_and_no_clip_below_the_threshold():
  np.testing.assert_allclose(float(clipping.clip_factor(4.0, 1.0)), 1.0 / (4.0 + 1e-6), rtol=1e-7)
  assert float(clipping.clip_factor(0.5, 1.0)) == 1.0
  assert np.isnan(float(clipping.clip_factor(float('nan'), 1.0)))


def test_bad_scope_and_norm_are_refused_with_the_value():
  with pytest.raises(ValueError, match="'backbone'"):
    clipping.GlobalNormClip(scope='backbone')
  with pytest.raises(ValueError, match='-1.0'):
    clipping.GlobalNormClip(max_norm=-1.0)
