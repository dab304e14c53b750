"""The checkpoint inspection tool reports the variant, parameter count and what would not load."""

import subprocess
import sys

import numpy as np

from l2p_tf.checkpoints import inspect_npz
from tests import test_util


def test_reports_variant_count_and_clean_load(tmp_path):
  path = str(tmp_path / 'tiny.npz')
  arrays = test_util.write_fake_npz(path, variant='tiny', image_size=32, num_classes=10)
  text, ok = inspect_npz.inspect(path, image_size=32)
  assert ok
  assert '-> variant tiny' in text
  assert f'parameters: {sum(a.size for a in arrays.values()):,}' in text
  assert 'head: 10 classes (skipped when loading)' in text
  assert 'loads cleanly' in text


def test_checks_at_the_files_own_resolution_by_default(tmp_path):
  path = str(tmp_path / 'tiny.npz')
  test_util.write_fake_npz(path, variant='tiny', image_size=32)
  text, ok = inspect_npz.inspect(path)
  assert ok, text
  assert 'position grid: 8x8 (32 pixels)' in text
  assert 'against ViT-tiny at 32px:' in text
  assert 'resampled' not in text
  text, ok = inspect_npz.inspect(path, image_size=64)
  assert ok and 'against ViT-tiny at 64px:' in text and 'position embedding resampled' in text


def test_reports_what_would_not_load(tmp_path):
  path = str(tmp_path / 'tiny.npz')
  arrays = test_util.random_vit_arrays('tiny', 32)
  arrays['embedding/bias'] = np.zeros(3, np.float32)
  np.savez(path, **arrays)
  text, ok = inspect_npz.inspect(path, variant='tiny', image_size=32)
  assert not ok
  assert 'embedding/bias: file (3,) vs model (64,)' in text


def test_command_line_exit_codes(tmp_path):
  path = str(tmp_path / 'tiny.npz')
  test_util.write_fake_npz(path, variant='tiny', image_size=32)
  cmd = [sys.executable, '-m', 'l2p_tf.checkpoints.inspect_npz', path]
  ok = subprocess.run(cmd, capture_output=True, text=True, cwd=test_util.REPO_ROOT, check=False)
  assert ok.returncode == 0, ok.stderr
  assert 'variant tiny' in ok.stdout
  bad = subprocess.run(cmd[:3] + [str(tmp_path / 'missing.npz')], capture_output=True, text=True,
                       cwd=test_util.REPO_ROOT, check=False)
  assert bad.returncode == 2
  assert 'does not exist' in bad.stderr
