"""Tests of l2p_tf.pretrain on the engine: the export round trip through the npz loader, exact resume after a stop,
the run-directory protections (changed config refused, SIGTERM -> checkpoint + exit 75), learning on real data."""

import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from l2p_tf import gin_utils
from l2p_tf import pretrain
from l2p_tf.checkpoints import npz_loader
from l2p_tf.checkpoints import npz_writer
from l2p_tf.engine import preemption
from l2p_tf.models import vit as vit_lib
from tests import test_util
from tests.runs import StopAtStep
from tests.runs import snapshot

ONE = tf.distribute.OneDeviceStrategy('/cpu:0')
GIN = 'pretrain/cifar100_50-99_mini.gin'
SMALL = ["vit.VisionTransformer.variant = 'tiny'", "pretraining.pretraining.classes = '50-59'",
         'pretraining.pretraining.epochs = 2', 'config.Training.global_batch_size = 8',
         'config.Evaluation.batch_size = 64', 'optimizers.warmup_cosine_adamw.warmup_tasks = 0.5',
         'config.Cadence.steps_per_loop = 3', 'config.Cadence.checkpoint_every_steps = 4',
         'pretraining.Augmentation.randaugment_ops = 1', "pretrain.NpzExport.file_name = 'vit_pretrained.npz'"]


def _run(tmp_path, name, bindings=(), strategy=ONE, mock=True, **kwargs):
  gin_utils.parse([GIN], SMALL + list(bindings))
  try:
    run = gin.get_configurable(pretrain.run)
    if not mock:
      return run(model_dir=str(tmp_path / name), strategy=strategy, **kwargs)
    with tfds.testing.mock_data(num_examples=500):
      return run(model_dir=str(tmp_path / name), strategy=strategy, data_dir=str(tmp_path / 'tfds'), **kwargs)
  finally:
    gin.clear_config()


def test_export_round_trip_and_exact_resume(tmp_path):
  full = _run(tmp_path, 'full', ["pretrain.NpzExport.dtype = 'float32'"])
  path = full['npz']
  assert os.path.basename(path) == 'vit_pretrained.npz'
  on_disk = json.loads((tmp_path / 'full' / 'pretrain_results.json').read_text())
  assert on_disk['sha256'] == full['sha256'] and len(full['sha256']) == 64
  # The continual trainer's strict loader takes the file with nothing missing; only the head is skipped.
  backbone = vit_lib.VisionTransformer(variant='tiny', image_size=32)
  report = npz_loader.load_vit_npz(backbone, path, strict=True)
  assert sorted(report.skipped) == ['head/bias', 'head/kernel']
  assert len(report.loaded) == len(backbone.npz_variables())
  # Reloaded (float32): the same predictions, so exactly the same accuracy.
  assert full['roundtrip_test_accuracy'] == full['test_accuracy']
  assert full['history'][-1]['test_accuracy'] == full['test_accuracy']
  # Stopped mid-epoch and rerun: bit-identical weights on CPU (the data position follows the global step).
  steps = full['history'][-1]['step']
  assert steps >= 6
  with pytest.raises(preemption.PreemptedError, match=f'at step {steps // 2 - 1}'):
    _run(tmp_path, 'resumed', ["pretrain.NpzExport.dtype = 'float32'"], preemption=StopAtStep(steps // 2 - 1))
  assert not os.path.exists(tmp_path / 'resumed' / 'vit_pretrained.npz')
  resumed = _run(tmp_path, 'resumed', ["pretrain.NpzExport.dtype = 'float32'"])
  assert resumed['sha256'] == full['sha256']
  assert resumed['history'] == full['history']
  # Rerun on the finished directory: nothing trains, the export is the same bytes.
  again = _run(tmp_path, 'resumed', ["pretrain.NpzExport.dtype = 'float32'"])
  assert again['sha256'] == full['sha256']


def test_float16_export(tmp_path):
  model = vit_lib.VisionTransformer(variant='tiny', image_size=32, num_classes=10)
  path = str(tmp_path / 'half.npz')
  sha = npz_writer.export_npz(model, path, 'float16')
  assert len(sha) == 64
  raw = np.load(path)
  assert sorted(raw.files) == sorted(model.npz_variables()) and all(raw[k].dtype == np.float16 for k in raw.files)
  reloaded = vit_lib.VisionTransformer(variant='tiny', image_size=32, num_classes=10)
  npz_writer.load_classifier_npz(reloaded, path)
  for key, var in model.npz_variables().items():
    np.testing.assert_array_equal(reloaded.npz_variables()[key].numpy(), var.numpy().astype(np.float16))
  with pytest.raises(npz_loader.CheckpointError, match='head/kernel'):
    npz_writer.load_classifier_npz(vit_lib.VisionTransformer(variant='tiny', image_size=32, num_classes=7), path)


def test_bad_settings_are_named(tmp_path):
  with pytest.raises(ValueError, match='bfloat8'):
    _run(tmp_path, 'x', ["pretrain.NpzExport.dtype = 'bfloat8'"])
  with pytest.raises(ValueError, match='not divisible'):
    _run(tmp_path, 'z', ['config.Training.global_batch_size = 7'], strategy=test_util.mirrored_strategy())
  with pytest.raises(ValueError, match='fewer than one global batch'):
    _run(tmp_path, 'y', ['config.Training.global_batch_size = 4096'])


def _command(model_dir, tfds_dir, *extra):
  return [sys.executable, '-m', 'tests.mock_pretrain', f'--model_dir={model_dir}', f'--gin_file={GIN}',
          f'--tfds_data_dir={tfds_dir}', *[f'--gin_bindings={b}' for b in SMALL], *extra]


def test_sigterm_checkpoints_resume_is_bit_identical_and_a_changed_config_is_refused(tmp_path):
  model_dir, tfds_dir = tmp_path / 'run', tmp_path / 'tfds'
  # SIGTERM arriving during the 5th train step (a preemption notice): a checkpoint, exit 75, no export yet.
  env = dict(os.environ, L2P_FAULT_INJECTION='train_step:5:term')
  p = subprocess.run(_command(model_dir, tfds_dir), cwd=test_util.REPO_ROOT, env=env, capture_output=True, text=True,
                     timeout=300, check=False)
  assert p.returncode == preemption.PREEMPTED_EXIT_CODE, f'{p.stdout[-2000:]}\n{p.stderr[-3000:]}'
  assert 'preempted: Preempted (SIGTERM)' in p.stderr and 'Traceback' not in p.stderr
  assert tf.train.latest_checkpoint(str(model_dir / 'checkpoints'))
  assert not (model_dir / 'vit_pretrained.npz').exists()
  # The same command resumes and finishes: the exported file is bit-identical to an uninterrupted run's.
  p = subprocess.run(_command(model_dir, tfds_dir), cwd=test_util.REPO_ROOT, capture_output=True, text=True,
                     timeout=300, check=False)
  assert p.returncode == 0, p.stderr[-3000:]
  assert 'Resuming from' in p.stdout
  resumed = json.loads((model_dir / 'pretrain_results.json').read_text())
  uninterrupted = _run(tmp_path, 'reference')
  assert resumed['sha256'] == uninterrupted['sha256'] and resumed['history'] == uninterrupted['history']
  # A changed binding on the finished directory: refused, the binding named, nothing changed.
  before = snapshot(model_dir)
  p = subprocess.run(_command(model_dir, tfds_dir, '--gin_bindings=optimizers.warmup_cosine_adamw.learning_rate = 0.5'),
                     cwd=test_util.REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert p.returncode == 2, p.stderr
  assert 'holds a run of a different config' in p.stderr
  assert '+ optimizers.warmup_cosine_adamw.learning_rate = 0.5' in p.stderr and 'Traceback' not in p.stderr
  assert snapshot(model_dir) == before


def test_command_line_names_a_bad_binding_and_writes_nothing(tmp_path):
  model_dir = tmp_path / 'run'
  p = subprocess.run([sys.executable, '-m', 'l2p_tf.pretrain', f'--model_dir={model_dir}',
                      f'--gin_file=gin_configs/{GIN}', '--gin_bindings=pretraining.pretraining.epochz = 3'],
                     cwd=test_util.REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert p.returncode == 2, p.stderr
  assert "error: Gin binding 'pretraining.pretraining.epochz = 3'" in p.stderr
  assert "doesn't have a parameter named 'epochz'" in p.stderr
  assert 'Traceback' not in p.stderr
  assert not model_dir.exists()


def test_learns_on_real_cifar_classes(tmp_path, shared_data_dirs):
  data_dir, manual_dir = shared_data_dirs
  res = _run(tmp_path, 'real', ['config.Training.global_batch_size = 128', 'config.Evaluation.batch_size = 500',
                                'optimizers.warmup_cosine_adamw.learning_rate = 3e-3', 'config.Cadence.steps_per_loop = 39',
                                'config.Cadence.checkpoint_every_steps = 1000'],
             mock=False, data_dir=data_dir, manual_dir=manual_dir)
  assert res['train_images'] == 5000 and res['test_images'] == 1000
  assert res['test_accuracy'] > 20.0, res['history']  # Chance is 10 %.
