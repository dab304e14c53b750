"""pyproject.toml: a wheel and an editable install work in a fresh virtual environment, from any directory.

The fresh environment reuses the project's installed dependencies through a `.pth` file (no download, no index) and
gets l2p-tf itself with `pip install --no-deps --no-build-isolation`, as an offline user would.
"""

import os
import shutil
import site
import subprocess
import sys
import zipfile

import pytest

from tests import test_util

SOURCES = ('l2p_tf', 'datasets', 'gin_configs', 'pretrained', 'pyproject.toml', 'README.md')
SCRIPTS = ('l2p-train', 'l2p-pretrain', 'l2p-export', 'l2p-predict', 'l2p-summarize', 'l2p-inspect-npz', 'l2p-seeds',
           'l2p-prepare-data')


def _copy_sources(dest):
  """The files a build reads, copied (the build writes build/ and *.egg-info/ next to them)."""
  dest.mkdir()
  for name in SOURCES:
    src = os.path.join(test_util.REPO_ROOT, name)
    if os.path.isdir(src):
      shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns('__pycache__', '*.pyc', 'BUILD'))
    else:
      shutil.copy(src, dest / name)
  return dest


def _fresh_venv(path):
  """A virtual environment without l2p-tf whose imports fall back on this environment's site-packages."""
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(path)], check=True, timeout=60)
  [own] = list((path / 'lib').glob('python3*/site-packages'))
  (own / '_project_dependencies.pth').write_text('\n'.join(site.getsitepackages()) + '\n')
  python = path / 'bin' / 'python'
  probe = subprocess.run([str(python), '-c', 'import l2p_tf'], capture_output=True, text=True, cwd=path, env=_env(),
                         check=False)
  assert probe.returncode != 0, 'the fresh environment already sees an l2p_tf'
  return python


def _pip_install(python, *args):
  p = subprocess.run([sys.executable, '-m', 'pip', '--python', str(python), 'install', '--no-deps', '--no-index',
                      '--no-build-isolation', '--quiet', *args], capture_output=True, text=True, timeout=300,
                     check=False)
  assert p.returncode == 0, p.stdout + p.stderr


def _env():
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'TF_CPP_MIN_LOG_LEVEL')}
  # Nothing may reach for the network.
  env.update(HTTP_PROXY='http://127.0.0.1:9', HTTPS_PROXY='http://127.0.0.1:9')
  return env


@pytest.mark.slow  # About 40 s: a wheel, a venv, then a one-task quickstart on 2 CPU cores.
def test_wheel_runs_the_quickstart_from_another_directory(tmp_path, shared_data_dirs):
  data_dir, manual_dir = shared_data_dirs
  src = _copy_sources(tmp_path / 'src')
  built = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-index', '--no-build-isolation',
                          '--quiet', '-w', str(tmp_path / 'dist'), str(src)], capture_output=True, text=True,
                         timeout=300, check=False)
  assert built.returncode == 0, built.stdout + built.stderr
  [wheel] = list((tmp_path / 'dist').glob('l2p_tf-*.whl'))
  names = set(zipfile.ZipFile(wheel).namelist())
  for expected in ('l2p_tf/gin_configs/experiments/quickstart.gin', 'l2p_tf/gin_configs/base.gin',
                   'l2p_tf/pretrained/vit_mini_cifar100_50-99.npz', 'datasets/domainnet/class_names.txt',
                   'l2p_tf/prepare_data.py', 'datasets/local_files.py'):
    assert expected in names

  python = _fresh_venv(tmp_path / 'venv')
  _pip_install(python, str(wheel))
  for script in SCRIPTS:
    assert (tmp_path / 'venv' / 'bin' / script).exists(), script

  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  where = subprocess.run([str(python), '-c', 'import l2p_tf; print(l2p_tf.__file__)'], capture_output=True,
                         text=True, cwd=elsewhere, check=True, env=_env()).stdout
  assert where.startswith(str(tmp_path / 'venv')), where

  # README command (1), shortened to one small task, by the console script, from a directory without the repository:
  # the gin file and the shipped backbone (a relative path in quickstart.gin) come from the installed package.
  model_dir = tmp_path / 'quickstart'
  run = subprocess.run(
      [str(tmp_path / 'venv' / 'bin' / 'l2p-train'), f'--model_dir={model_dir}',
       '--gin_file=gin_configs/experiments/quickstart.gin', f'--tfds_data_dir={data_dir}',
       f'--tfds_manual_dir={manual_dir}',
       '--gin_bindings=benchmarks.Limits.max_tasks = 1',
       '--gin_bindings=benchmarks.Limits.max_train_examples_per_task = 128',
       '--gin_bindings=benchmarks.Limits.max_eval_examples_per_task = 64',
       '--gin_bindings=config.Training.jit_compile = False'],
      capture_output=True, text=True, cwd=elsewhere, env=_env(), timeout=600, check=False)
  assert run.returncode == 0, run.stdout + run.stderr
  assert 'Backbone: loaded' in run.stdout and 'vit_mini_cifar100_50-99.npz' in run.stdout, run.stdout
  assert (model_dir / 'results.json').exists()

  table = subprocess.run([str(tmp_path / 'venv' / 'bin' / 'l2p-summarize'), str(model_dir)], capture_output=True,
                         text=True, cwd=elsewhere, env=_env(), timeout=120, check=False)
  assert table.returncode == 0, table.stderr
  assert '| quickstart |' in table.stdout


def test_editable_install_finds_configs_and_backbone_from_any_directory(tmp_path):
  src = _copy_sources(tmp_path / 'src')
  python = _fresh_venv(tmp_path / 'venv')
  _pip_install(python, '-e', str(src))
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  code = ('import l2p_tf\n'
          'from l2p_tf import gin_utils, resources\n'
          'print(l2p_tf.__file__)\n'
          'print(resources.find("pretrained/vit_mini_cifar100_50-99.npz"))\n'
          'print(gin_utils._resolve("gin_configs/experiments/quickstart.gin", [gin_utils.GIN_CONFIGS_DIR, '
          'gin_utils.REPO_ROOT]))\n')
  p = subprocess.run([str(python), '-c', code], capture_output=True, text=True, cwd=elsewhere, env=_env(),
                     timeout=120, check=False)
  assert p.returncode == 0, p.stderr
  module, npz, gin_file = p.stdout.split()
  assert module == str(src / 'l2p_tf' / '__init__.py')
  assert npz == str(src / 'pretrained' / 'vit_mini_cifar100_50-99.npz')
  assert gin_file == str(src / 'gin_configs' / 'experiments' / 'quickstart.gin')
  assert (tmp_path / 'venv' / 'bin' / 'l2p-prepare-data').exists()
