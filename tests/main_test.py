"""The command line: one clear error line and exit code 2 for bad input, nothing written to model_dir."""

import os
import subprocess
import sys

from tests import test_util


def run_main(*args):
  cmd = [sys.executable, '-m', 'l2p_tf.main', *args]
  return subprocess.run(cmd, cwd=test_util.REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_misspelt_binding_fails_fast_naming_it(tmp_path):
  model_dir = tmp_path / 'run'
  p = run_main(f'--model_dir={model_dir}', '--gin_file=gin_configs/experiments/cifar100_l2p.gin',
               '--gin_bindings=vit.VisionTransformer.variantt = "B/16"')
  assert p.returncode == 2
  assert "doesn't have a parameter named 'variantt'" in p.stderr
  assert 'Traceback' not in p.stderr
  assert not model_dir.exists()


def test_missing_checkpoint_is_one_clear_error(tmp_path):
  model_dir = tmp_path / 'run'
  p = run_main(f'--model_dir={model_dir}', '--gin_file=gin_configs/experiments/cifar100_l2p.gin',
               '--gin_file=gin_configs/local_tiny.gin', '--gin_bindings=INIT_CHECKPOINT = "/nope/ViT-B_16.npz"')
  # No data flags were given: the checkpoint is checked before any data work (no download attempt).
  assert p.returncode == 2
  assert 'error: Checkpoint file /nope/ViT-B_16.npz does not exist' in p.stderr
  assert 'In call to configurable' not in p.stderr and 'Traceback' not in p.stderr
  assert not os.path.exists(model_dir / 'checkpoints')


def test_gin_file_typo_names_file_and_line(tmp_path):
  bad = tmp_path / 'bad.gin'
  bad.write_text("include 'experiments/cifar100_l2p.gin'\n\nprompt_pool.PromptPool.top_kk = 3\n")
  p = run_main(f'--model_dir={tmp_path / "run"}', f'--gin_file={bad}')
  assert p.returncode == 2
  assert f'Gin file {bad}' in p.stderr and 'line 3' in p.stderr and 'top_kk' in p.stderr


def test_misspelt_macro_fails_naming_it(tmp_path):
  model_dir = tmp_path / 'run'
  p = run_main(f'--model_dir={model_dir}', '--gin_file=gin_configs/experiments/cifar100_l2p.gin',
               '--gin_file=gin_configs/local_tiny.gin', '--gin_bindings=POOL_SIZ = 3')
  assert p.returncode == 2
  assert 'error: macro POOL_SIZ is set but used nowhere (misspelt?)' in p.stderr
  assert 'POOL_SIZE' in p.stderr  # The known macros are listed.
  assert 'Traceback' not in p.stderr
  assert not model_dir.exists()


def test_required_settings_left_unset_are_one_error_line(tmp_path):
  model_dir = tmp_path / 'run'
  p = run_main(f'--model_dir={model_dir}', '--gin_file=gin_configs/base.gin')
  assert p.returncode == 2
  [line] = [l for l in p.stderr.splitlines() if l.startswith('error: ')]
  assert 'set to `%gin.REQUIRED` but not subsequently overridden' in line
  assert 'Experiment.benchmark set to' in line and 'an experiment file' in line
  assert not model_dir.exists()


def test_no_gin_file_is_one_error_line_not_the_flag_help(tmp_path):
  p = run_main(f'--model_dir={tmp_path / "run"}')
  assert p.returncode == 2
  assert [l for l in p.stderr.splitlines() if not l.startswith('20')] == [
      'error: give at least one --gin_file (e.g. --gin_file=gin_configs/experiments/quickstart.gin); --help lists '
      'every flag.']
  # --mode=eval of a directory that holds no run: no config.gin to default to, the same line.
  p = run_main(f'--model_dir={tmp_path / "run"}', '--mode=eval')
  assert p.returncode == 2 and '\nerror: give at least one --gin_file' in '\n' + p.stderr
