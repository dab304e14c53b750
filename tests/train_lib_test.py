"""The continual trainer end to end: every experiment config, strategies, resume, eval mode, trace count.

Runs go through the real gin files with `local_tiny.gin` last (tiny ViT, 2 tasks, 64 images per task) on data from
`tfds.testing.mock_data` (random images, nothing downloaded), except DomainNet, which uses the builder's dummy data.
"""

import gc
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from l2p_tf.engine import loop
from l2p_tf.engine import preemption
from tests import test_util
from tests.runs import StopAtStep
from tests.runs import one_device
from tests.runs import run_experiment

EXPERIMENTS = ['cifar100_l2p', 'cifar100_gaussian_l2p', 'five_datasets_l2p', 'domainnet_l2p', 'quickstart',
               'cifar100_disjoint_l2p', 'cifar100_dualprompt', 'cifar100_coda_prompt',
               'cifar100_l2p_plus_plus', 'imagenet_r_dualprompt', 'core50_l2p']
# Methods without a prompt pool (no selection histogram, no pull term).
POOL_FREE = {'cifar100_coda_prompt'}
DOMAINNET_DUMMY = os.path.join(test_util.REPO_ROOT, 'datasets', 'domainnet', 'dummy_data')
IMAGENET_R_DUMMY = os.path.join(test_util.REPO_ROOT, 'datasets', 'imagenet_r', 'dummy_data')
CORE50_DUMMY = os.path.join(test_util.REPO_ROOT, 'datasets', 'core50', 'dummy_data')
# Experiments evaluated on one common test set after every task (an accuracy matrix of one column).
ONE_TEST_SET = {'cifar100_gaussian_l2p', 'core50_l2p'}


def event_tags(directory):
  tags = set()
  for path in glob.glob(os.path.join(directory, 'events.out.tfevents*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(v.tag for v in event.summary.value)
  return tags


@pytest.mark.parametrize('experiment', EXPERIMENTS)
def test_every_experiment_runs_with_local_tiny(tmp_path, experiment):
  model_dir = tmp_path / 'run'
  if experiment == 'domainnet_l2p':
    # The dummy data has 2 training images per domain.
    res = run_experiment(model_dir, experiment, ['GLOBAL_BATCH_SIZE = 2', 'EPOCHS = 2'],
                         data_dir=str(tmp_path / 'tfds'), manual_dir=DOMAINNET_DUMMY)
  elif experiment == 'imagenet_r_dualprompt':
    # The dummy data has 3 images of each of the first 40 classes (about 48 training images per task).
    res = run_experiment(model_dir, experiment, ['GLOBAL_BATCH_SIZE = 8'], data_dir=str(tmp_path / 'tfds'),
                         manual_dir=IMAGENET_R_DUMMY)
  elif experiment == 'core50_l2p':
    # The dummy data has 4 frames per session.
    res = run_experiment(model_dir, experiment, ['GLOBAL_BATCH_SIZE = 2'], data_dir=str(tmp_path / 'tfds'),
                         manual_dir=CORE50_DUMMY)
  else:
    with tfds.testing.mock_data(num_examples=1000):
      res = run_experiment(model_dir, experiment, data_dir=str(tmp_path / 'tfds'))
  assert res['complete'] and res['tasks_done'] == 2
  on_disk = json.loads((model_dir / 'results.json').read_text())
  assert on_disk['accuracy_matrix'] == res['accuracy_matrix']
  matrix = np.array(on_disk['accuracy_matrix'], dtype=float)
  if experiment in ONE_TEST_SET:
    assert matrix.shape == (2, 1) and not np.isnan(matrix).any()
  else:
    assert matrix.shape == (2, 2)
    assert on_disk['accuracy_matrix'][0][1] is None and not np.isnan(matrix[1]).any()
    assert len(on_disk['avg_acc']) == 2 and on_disk['forgetting'][0] is None
    assert on_disk['final']['avg_acc'] == pytest.approx(np.mean(matrix[1]), abs=1e-3)
  primary = json.loads((model_dir / 'results.json').read_text())['primary_protocol']
  assert (model_dir / 'accuracy_matrix.csv').read_text().startswith(f'after_task ({primary} protocol),')
  assert (model_dir / 'accuracy_matrix.png').read_bytes()[:4] == b'\x89PNG'
  assert 'config.Training.global_batch_size' in (model_dir / 'config.gin').read_text()
  assert len(on_disk['gin_config_hash']) == 16
  eval_tags = event_tags(model_dir / 'eval')
  assert {'accuracy/task_0', 'metrics/avg_acc', 'accuracy_matrix', 'gin/operative_config'} <= eval_tags
  if experiment not in ONE_TEST_SET:
    assert {'accuracy/task_1', 'metrics/forgetting', 'metrics/backward', 'metrics/learning_acc'} <= eval_tags
    assert ('prompt_usage/task_0' in eval_tags) == (experiment not in POOL_FREE)
  train_tags = event_tags(model_dir / 'train')
  assert {'loss', 'train_accuracy', 'learning_rate', 'grad_norm', 'images_per_second'} <= train_tags
  assert ('reduce_sim' in train_tags) == (experiment not in POOL_FREE)
  # One trace of the train step for the whole run (the task and its mask are data, not Python values).
  assert res['train_step_traces_this_process'] == 1
  assert glob.glob(str(model_dir / 'checkpoints' / 'ckpt-*.index'))


def test_one_device_and_mirrored_agree(tmp_path):
  bindings = ["prompt_pool.PromptPool.selection = 'instancewise'",
              "config.Evaluation.primary = 'per_sample'"]
  results = []
  for name, strategy in (('one', one_device()), ('mirrored', test_util.mirrored_strategy())):
    with tfds.testing.mock_data(num_examples=1000):
      results.append(run_experiment(tmp_path / name, 'cifar100_l2p', bindings, strategy=strategy,
                                    data_dir=str(tmp_path / 'tfds')))
  assert results[1]['num_replicas'] == 2
  a, b = (np.array(r['accuracy_matrix'], dtype=float) for r in results)
  np.testing.assert_allclose(a, b, atol=0.5)


def test_a_finished_run_leaves_no_input_iterator_to_the_cycle_collector(tmp_path):
  """Iterators are freed by reference count when a task ends. One left on the trainer (which sits in reference
  cycles) is freed later by Python's cycle collector, at an arbitrary moment and in an arbitrary order of its parts,
  which can deadlock tf.data's multi-device iterator: a rare hang of this suite under MirroredStrategy."""
  gc.collect()
  with tfds.testing.mock_data(num_examples=1000):
    run_experiment(tmp_path / 'run', 'cifar100_l2p', strategy=test_util.mirrored_strategy(),
                   data_dir=str(tmp_path / 'tfds'))
  gc.set_debug(gc.DEBUG_SAVEALL)  # Keep what the collector finds in gc.garbage instead of freeing it.
  try:
    gc.collect()
    left = sorted({type(o).__name__ for o in gc.garbage
                   if isinstance(o, (tf.data.Iterator, tf.distribute.DistributedIterator))})
  finally:
    gc.set_debug(0)
    gc.garbage.clear()
  assert not left, f'iterators left to the cycle collector: {left}'


def test_resume_mid_task_matches_uninterrupted_run(tmp_path):
  with tfds.testing.mock_data(num_examples=1000):
    full = run_experiment(tmp_path / 'full', 'cifar100_l2p', data_dir=str(tmp_path / 'tfds'))
    # Each task has 4 steps (64 / 16); stop after step 6, in the middle of task 2.
    with pytest.raises(preemption.PreemptedError, match=r'at step 6, task 2/2 \(2/4 steps\)'):
      run_experiment(tmp_path / 'cut', 'cifar100_l2p', data_dir=str(tmp_path / 'tfds'), preemption=StopAtStep(6))
    partial = json.loads((tmp_path / 'cut' / 'results.json').read_text())
    assert partial['tasks_done'] == 1 and not partial['complete']
    resumed = run_experiment(tmp_path / 'cut', 'cifar100_l2p', data_dir=str(tmp_path / 'tfds'))
  assert resumed['accuracy_matrix'] == full['accuracy_matrix']
  assert resumed['final'] == full['final']
  assert resumed['prompt_usage_train'] == full['prompt_usage_train']
  # Every protocol's rows: task 1's come back from results.json (the checkpoint holds the primary matrix only).
  assert resumed['protocols'] == full['protocols']


def test_eval_mode_reproduces_the_final_row(tmp_path):
  with tfds.testing.mock_data(num_examples=1000):
    res = run_experiment(tmp_path / 'run', 'cifar100_l2p', data_dir=str(tmp_path / 'tfds'))
    again = run_experiment(tmp_path / 'run', 'cifar100_l2p', data_dir=str(tmp_path / 'tfds'), mode='eval')
  assert again['accuracy_matrix'][-1] == res['accuracy_matrix'][-1]
  assert (tmp_path / 'run' / 'eval_results.json').exists()


def test_eval_mode_without_checkpoint_is_refused(tmp_path):
  with tfds.testing.mock_data(num_examples=1000):
    with pytest.raises(ValueError, match='--mode=eval needs a checkpoint'):
      run_experiment(tmp_path / 'empty', 'cifar100_l2p', data_dir=str(tmp_path / 'tfds'), mode='eval')


def test_batch_not_divisible_by_replicas(tmp_path):
  with tfds.testing.mock_data(num_examples=1000):
    with pytest.raises(ValueError, match=r'global_batch_size=15 is not divisible by the 2 replicas'):
      run_experiment(tmp_path / 'x', 'cifar100_l2p', ['GLOBAL_BATCH_SIZE = 15'],
                     strategy=test_util.mirrored_strategy(), data_dir=str(tmp_path / 'tfds'))


def test_init_checkpoint_is_read_on_a_fresh_start_only(tmp_path, capsys):
  npz = tmp_path / 'vit_tiny.npz'
  arrays = test_util.write_fake_npz(str(npz), variant='tiny', image_size=32)
  binding = [f'INIT_CHECKPOINT = "{npz}"']
  with tfds.testing.mock_data(num_examples=1000):
    with pytest.raises(preemption.PreemptedError):
      run_experiment(tmp_path / 'run', 'cifar100_l2p', binding, data_dir=str(tmp_path / 'tfds'),
                     preemption=StopAtStep(2))
    assert 'Backbone: loaded' in capsys.readouterr().out
    reader = tf.train.load_checkpoint(str(tmp_path / 'run' / 'checkpoints'))
    np.testing.assert_array_equal(reader.get_tensor('model/vit/cls/.ATTRIBUTES/VARIABLE_VALUE'), arrays['cls'])
    npz.unlink()  # A resume must not read it again (the checkpoint holds the backbone).
    res = run_experiment(tmp_path / 'run', 'cifar100_l2p', binding, data_dir=str(tmp_path / 'tfds'))
  assert res['complete']
  assert 'Backbone: loaded' not in capsys.readouterr().out
