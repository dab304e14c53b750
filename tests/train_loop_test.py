"""Device loops of several train steps (`config.Cadence.steps_per_device_loop`) give the results of one step per call,
bit for bit, and resume exactly after a stop."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from l2p_tf.engine import checkpointing
from l2p_tf.engine import config
from l2p_tf.engine import precision
from l2p_tf.engine import preemption
from tests.runs import StopAtStep
from tests.runs import run_experiment

# Each tiny task has 4 steps (64 / 16); an orbit loop of 6 cuts them into device loops of 3 + a clipped 1.
CADENCE = ['config.Cadence.steps_per_loop = 6', 'config.Cadence.checkpoint_every_steps = 6']


def final_weights(model_dir) -> dict:
  reader = tf.train.load_checkpoint(checkpointing.checkpoint_dir(str(model_dir)))
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if 'model' in k or 'optimizer' in k}


def assert_same_weights(a, b):
  assert a.keys() == b.keys() and a
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_steps_per_device_loop_is_bit_identical_and_resumes_exactly(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  with tfds.testing.mock_data(num_examples=1000):
    one = run_experiment(tmp_path / 'one', 'cifar100_l2p', CADENCE + ['config.Cadence.steps_per_device_loop = 1'],
                         data_dir=data_dir)
    three = run_experiment(tmp_path / 'three', 'cifar100_l2p',
                           CADENCE + ['config.Cadence.steps_per_device_loop = 3'], data_dir=data_dir)
    # A stop is checked once per device loop: asked for after step 5, it comes after the loop of steps 5-7.
    cut_bindings = CADENCE + ['config.Cadence.steps_per_device_loop = 3']
    with pytest.raises(preemption.PreemptedError, match=r'at step 7, task 2/2 \(3/4 steps\)'):
      run_experiment(tmp_path / 'cut', 'cifar100_l2p', cut_bindings, data_dir=data_dir, preemption=StopAtStep(5))
    resumed = run_experiment(tmp_path / 'cut', 'cifar100_l2p', cut_bindings, data_dir=data_dir)
  for res in (three, resumed):
    assert res['accuracy_matrix'] == one['accuracy_matrix']
    assert res['final'] == one['final']
    assert res['prompt_usage_train'] == one['prompt_usage_train']
  saved = json.loads((tmp_path / 'three' / 'results.json').read_text())
  assert saved['accuracy_matrix'] == json.loads((tmp_path / 'one' / 'results.json').read_text())['accuracy_matrix']
  assert_same_weights(final_weights(tmp_path / 'one'), final_weights(tmp_path / 'three'))
  assert_same_weights(final_weights(tmp_path / 'one'), final_weights(tmp_path / 'cut'))


def test_auto_is_one_step_per_call_on_cpu():
  cpu = tf.distribute.OneDeviceStrategy('/cpu:0')
  assert precision.resolve_steps_per_loop('auto', cpu, accelerator_steps=26) == 1
  assert precision.resolve_steps_per_loop(4, cpu) == 4
  for bad in (0, -1, True, 'fast', 2.0):
    with pytest.raises(ValueError):
      precision.resolve_steps_per_loop(bad, cpu)
    if not isinstance(bad, str) or bad != 'auto':
      with pytest.raises((ValueError, TypeError)):
        config.Cadence(steps_per_device_loop=bad)


def test_a_device_loop_ends_at_its_first_non_finite_step(tmp_path, monkeypatch):
  from l2p_tf import losses  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(losses, 'pull_loss', lambda reduce_sim, coefficient: tf.constant(float('nan')))
  with tfds.testing.mock_data(num_examples=1000):
    # Every step is NaN: the first device loop (steps 1-3) stops after step 1, which the error names.
    with pytest.raises(preemption.NonFiniteLossError, match=r'in train step 1 \(task 1/2 task_0, step 1/4 '):
      run_experiment(tmp_path / 'run', 'cifar100_l2p', CADENCE + ['config.Cadence.steps_per_device_loop = 3'],
                     data_dir=str(tmp_path / 'tfds'))
