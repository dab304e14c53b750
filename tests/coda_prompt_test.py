"""CODA-Prompt: earlier tasks' components frozen, Gram-Schmidt re-initialisation, orthogonality penalty by hand,
batch-composition invariance."""

import functools

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from l2p_tf.methods import coda_prompt
from l2p_tf.models import coda_model
from l2p_tf.models import vit as vit_lib

M, T, C = 6, 3, 6  # 2 components and 2 classes per task


def make_method(ortho_coefficient=0.0):
  tf.keras.utils.set_random_seed(0)
  method = coda_prompt.CodaPrompt(
      model=functools.partial(coda_model.CodaPromptModel, num_components=M, prompt_length=4, layers=(0, 1)),
      ortho_coefficient=ortho_coefficient)
  method.build(backbone=lambda: vit_lib.VisionTransformer(variant='tiny', image_size=32), num_classes=C,
               num_tasks=T)
  return method


def batch(task, n=4, seed=0):
  rng = np.random.default_rng(seed)
  labels = 2 * task + rng.integers(0, 2, n)
  return {'image': rng.uniform(0, 1, (n, 32, 32, 3)).astype(np.float32), 'label': labels,
          'label_mask': np.tile(np.arange(C)[np.newaxis] // 2 == task, (n, 1))}


def train(method, optimizer, task, steps=3):
  for step in range(steps):
    b = batch(task, seed=step)
    with tf.GradientTape() as tape:
      out = method.loss(b, frozen=method.frozen_features(b['image']), task_index=tf.constant(task),
                        global_batch_size=4, num_replicas=1)
    grads = tape.gradient(out.loss, method.trainable_variables)
    optimizer.apply_gradients(zip(grads, method.trainable_variables))


def effective(method, layer=0):
  return {p: v.numpy() for p, v in method.model.effective(layer).items()}


def test_earlier_tasks_components_stay_frozen_through_a_second_task():
  method = make_method()
  # One optimizer for both tasks (no reset): its moments must not move task 0's components either.
  optimizer = tf_keras.optimizers.Adam(0.05)
  method.begin_task(0)
  initial = effective(method)
  train(method, optimizer, 0)
  after_0 = effective(method)
  assert np.abs(after_0['components'][:2] - initial['components'][:2]).max() > 1e-3  # task 0 trained
  method.begin_task(1)
  start_1 = effective(method)
  train(method, optimizer, 1)
  after_1 = effective(method)
  for p in coda_model.PARTS:
    np.testing.assert_array_equal(start_1[p][:2], after_0[p][:2])  # committed at the switch
    np.testing.assert_array_equal(after_1[p][:2], after_0[p][:2])  # and frozen through task 1
    assert not after_1[p][4:].any()  # rows of later tasks unused
  assert np.abs(after_1['components'][2:4] - start_1['components'][2:4]).max() > 1e-3  # task 1 trained
  # The head of task 0's classes keeps what task 0 learnt only through the label mask; the components are exact.
  assert int(method.model.task.numpy()) == 1


def test_gram_schmidt_new_rows_are_orthonormal_and_later_rows_zero():
  rng = np.random.default_rng(0)
  old = np.linalg.qr(rng.normal(size=(16, 3)))[0].T  # 3 orthonormal rows
  rows = np.concatenate([old, rng.normal(size=(5, 16))])
  out = coda_model.gram_schmidt_rows(rows, 3, 6, np.random.default_rng(1))
  np.testing.assert_array_equal(out[:3], old.astype(np.float32))
  np.testing.assert_allclose(out[:6] @ out[:6].T, np.eye(6), atol=1e-5)
  assert not out[6:].any()
  method = make_method()
  method.begin_task(1)
  keys = effective(method)['keys']
  np.testing.assert_allclose(np.linalg.norm(keys[2:4], axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(keys[2:4] @ keys[:2].T, 0.0, atol=1e-5)  # task 0's rows were orthonormal still


def hand_ortho(t):
  g = t @ t.T - np.eye(len(t))
  return (g ** 2).mean()


def test_orthogonality_penalty_matches_a_hand_computation():
  method = make_method(ortho_coefficient=0.5)
  method.begin_task(1)
  rng = np.random.default_rng(3)
  for layer in method.model.trained:  # Non-orthogonal rows everywhere.
    for v in layer.values():
      v.assign(rng.normal(0, 1, v.shape).astype(np.float32))
  f = 4
  want = 0.0
  for i in range(2):
    e = effective(method, i)
    want += hand_ortho(e['keys'][:f].astype(np.float64)) + hand_ortho(e['attention'][:f].astype(np.float64))
    want += hand_ortho(e['components'][:f].reshape(f, -1).astype(np.float64))
  np.testing.assert_allclose(method.model.ortho_loss().numpy(), want, rtol=1e-5)
  b = batch(1)
  out = method.loss(b, frozen=method.frozen_features(b['image']), task_index=tf.constant(1), global_batch_size=4,
                    num_replicas=2)
  np.testing.assert_allclose(out.scalars['ortho_penalty'].numpy(), want, rtol=1e-5)
  np.testing.assert_allclose(out.loss.numpy(), out.scalars['cross_entropy'].numpy() / 2 + 0.5 * want / 2,
                             rtol=1e-5)


def test_logits_do_not_depend_on_the_rest_of_the_batch():
  method = make_method()
  method.begin_task(1)
  rng = np.random.default_rng(4)
  for v in method.model.trainable_variables:
    v.assign(v.numpy() + rng.normal(0, 1, v.shape).astype(np.float32))
  x = batch(1, n=5, seed=9)['image']
  got = method.predict(x)['logits'].numpy()
  assert np.abs(got).max() > 1e-2
  alone = np.concatenate([method.predict(x[i:i + 1])['logits'].numpy() for i in range(len(x))])
  reverse = method.predict(x[::-1])['logits'].numpy()[::-1]
  np.testing.assert_allclose(got, alone, atol=1e-5)
  np.testing.assert_allclose(got, reverse, atol=1e-5)


def test_only_the_current_tasks_rows_get_gradients_and_the_counts():
  method = make_method()
  method.begin_task(1)
  method.model.head.kernel.assign(np.random.default_rng(5).normal(0, 1, (64, C)))  # zero head: zero prompt gradients
  b = batch(1)
  with tf.GradientTape() as tape:
    out = method.loss(b, frozen=method.frozen_features(b['image']), task_index=tf.constant(1), global_batch_size=4,
                      num_replicas=1)
  grads = dict(zip([v.name for v in method.trainable_variables],
                   tape.gradient(out.loss, method.trainable_variables)))
  g = tf.convert_to_tensor(grads[method.model.trained[0]['components'].name]).numpy()
  assert not g[:2].any() and not g[4:].any() and g[2:4].any()
  counts = method.model.param_counts()
  assert counts['prompts'] == 2 * (M * 4 * 64 + 2 * M * 64)
  assert counts['trainable'] == counts['prompts'] + 64 * C + C
  with pytest.raises(ValueError, match='even'):
    coda_model.CodaPromptModel(vit=method.backbone, num_classes=C, num_tasks=T, prompt_length=3, layers=(0,))
