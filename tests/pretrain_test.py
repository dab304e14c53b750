"""Tests of l2p_tf.pretrain: the export round trip through the npz loader, exact resume, and learning on real data."""

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from l2p_tf import pretrain
from l2p_tf.checkpoints import npz_loader
from l2p_tf.models import vit as vit_lib
from tests import test_util

ONE = tf.distribute.OneDeviceStrategy('/cpu:0')
TINY = functools.partial(vit_lib.VisionTransformer, variant='tiny', image_size=32)
SMALL = dict(vit=TINY, classes='50-59', image_size=32, epochs=2, global_batch_size=8, eval_batch_size=64,
             warmup_epochs=0.5, steps_per_loop=3, checkpoint_every_steps=4,
             augmentation=pretrain.Augmentation(randaugment_ops=1))


def _mock_run(tmp_path, name, **kwargs):
  with tfds.testing.mock_data(num_examples=500):
    return pretrain.run(model_dir=str(tmp_path / name), strategy=ONE, data_dir=str(tmp_path / 'tfds'),
                        **{**SMALL, **kwargs})


def test_export_round_trip_and_exact_resume(tmp_path):
  full = _mock_run(tmp_path, 'full', export_dtype='float32')
  path = full['npz']
  assert os.path.basename(path) == 'vit_pretrained.npz'
  on_disk = json.loads((tmp_path / 'full' / 'pretrain_results.json').read_text())
  assert on_disk['sha256'] == full['sha256'] and len(full['sha256']) == 64
  # The continual trainer's strict loader takes the file with nothing missing; only the head is skipped.
  backbone = TINY()
  report = npz_loader.load_vit_npz(backbone, path, strict=True)
  assert sorted(report.skipped) == ['head/bias', 'head/kernel']
  assert len(report.loaded) == len(backbone.npz_variables())
  # Reloaded (float32): the same predictions, so exactly the same accuracy.
  assert full['roundtrip_test_accuracy'] == full['test_accuracy']
  assert full['history'][-1]['test_accuracy'] == full['test_accuracy']
  # Stopped mid-epoch and rerun: bit-identical weights on CPU (the data position follows the global step).
  steps = full['history'][-1]['step']
  assert steps >= 6
  stopped = _mock_run(tmp_path, 'resumed', export_dtype='float32', stop_after_step=steps // 2 - 1)
  assert stopped == {'stopped_at_step': steps // 2 - 1}
  assert not os.path.exists(tmp_path / 'resumed' / 'vit_pretrained.npz')
  resumed = _mock_run(tmp_path, 'resumed', export_dtype='float32')
  assert resumed['sha256'] == full['sha256']
  assert resumed['history'] == full['history']


def test_float16_export(tmp_path):
  model = TINY(num_classes=10)
  path = str(tmp_path / 'half.npz')
  sha = pretrain.export_npz(model, path, 'float16')
  assert len(sha) == 64
  raw = np.load(path)
  assert sorted(raw.files) == sorted(model.npz_variables()) and all(raw[k].dtype == np.float16 for k in raw.files)
  reloaded = TINY(num_classes=10)
  pretrain.load_classifier_npz(reloaded, path)
  for key, var in model.npz_variables().items():
    np.testing.assert_array_equal(reloaded.npz_variables()[key].numpy(), var.numpy().astype(np.float16))
  with pytest.raises(npz_loader.CheckpointError, match='head/kernel'):
    pretrain.load_classifier_npz(TINY(num_classes=7), path)


def test_bad_settings_are_named(tmp_path):
  with pytest.raises(ValueError, match='export_dtype'):
    _mock_run(tmp_path, 'x', export_dtype='bfloat8')
  with pytest.raises(ValueError, match='not divisible'):
    pretrain.run(model_dir=str(tmp_path / 'z'), strategy=test_util.mirrored_strategy(), **{**SMALL,
                                                                                        'global_batch_size': 7})
  with pytest.raises(ValueError, match='fewer than one global batch'):
    _mock_run(tmp_path, 'y', global_batch_size=4096)


def test_command_line_names_a_bad_binding_and_writes_nothing(tmp_path):
  model_dir = tmp_path / 'run'
  p = subprocess.run([sys.executable, '-m', 'l2p_tf.pretrain', f'--model_dir={model_dir}',
                      '--gin_file=gin_configs/pretrain/cifar100_50-99_mini.gin', '--gin_bindings=pretrain.run.epochz = 3'],
                     cwd=test_util.REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert p.returncode == 2, p.stderr
  assert "error: Gin binding 'pretrain.run.epochz = 3'" in p.stderr
  assert "doesn't have a parameter named 'epochz'" in p.stderr
  assert 'Traceback' not in p.stderr
  assert not model_dir.exists()


def test_learns_on_real_cifar_classes(tmp_path, shared_data_dirs):
  data_dir, manual_dir = shared_data_dirs
  res = pretrain.run(model_dir=str(tmp_path / 'real'), strategy=ONE, data_dir=data_dir, manual_dir=manual_dir,
                     **{**SMALL, 'global_batch_size': 128, 'eval_batch_size': 500, 'epochs': 2,
                        'learning_rate': 3e-3, 'steps_per_loop': 39, 'checkpoint_every_steps': 1000})
  assert res['train_images'] == 5000 and res['test_images'] == 1000
  assert res['test_accuracy'] > 20.0, res['history']  # Chance is 10 %.
