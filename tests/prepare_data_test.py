"""l2p_tf.prepare_data and the operations around it: prepare from the gin files, then train offline, quietly.

The command-line tests run real processes as a user would (no TF_CPP_MIN_LOG_LEVEL from the test set-up, HTTP(S)
proxies pointed at a closed port so that nothing reaches the network), on small IDX files written here (MNIST and
notMNIST layouts), so they need no downloaded data.
"""

import gzip
import os
import re
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from l2p_tf import gin_utils
from l2p_tf import prepare_data
from tests import test_util

TINY = 'gin_configs/local_tiny.gin'
# Log lines of absl / TensorFlow at ERROR or WARNING ("E1202 07:30:53.52 ...", "W0000 00:00:..."), or C++'s
# "2026-12-02 07:30:53.524770: E external/...".
LOG_LINE = re.compile(r'^[EW]\d{4} |^\d{4}-\d\d-\d\d [\d:.]+: [EW] ')


def _write_idx(path, array):
  header = struct.pack('>HBB', 0, 0x08, array.ndim) + struct.pack('>' + 'I' * array.ndim, *array.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def _manual_dir(root):
  """MNIST (train + test) and notMNIST (test sample only) as the standard IDX downloads, 10 classes each."""
  rng = np.random.default_rng(0)
  for folder, prefixes in (('mnist', ('train', 't10k')), ('notmnist', ('t10k',))):
    os.makedirs(root / folder)
    for prefix in prefixes:
      n = 200 if prefix == 'train' else 160
      _write_idx(root / folder / f'{prefix}-images-idx3-ubyte.gz', rng.integers(0, 256, (n, 28, 28)))
      _write_idx(root / folder / f'{prefix}-labels-idx1-ubyte.gz', np.arange(n) % 10)
  return root


def _env():
  env = {k: v for k, v in os.environ.items() if k not in ('TF_CPP_MIN_LOG_LEVEL', 'TFDS_DATA_DIR')}
  env.update(HTTP_PROXY='http://127.0.0.1:9', HTTPS_PROXY='http://127.0.0.1:9', NO_PROXY='')
  return env


def _run(module, *args, timeout=300):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=test_util.REPO_ROOT, env=_env(),
                        capture_output=True, text=True, timeout=timeout, check=False)


def _assert_quiet(stderr):
  noisy = [line for line in stderr.splitlines() if LOG_LINE.match(line) or 'Warning' in line]
  assert not noisy, stderr
  assert '\x1b' not in stderr and '\r' not in stderr, repr(stderr[-500:])  # No tqdm / terminal escapes.


@pytest.mark.parametrize('gin_files, bindings, expected', [
    (['experiments/cifar100_l2p.gin'], [], ['cifar100']),
    (['experiments/quickstart.gin'], [], ['cifar100']),
    (['experiments/cifar100_gaussian_l2p.gin', TINY], [], ['cifar100']),
    (['experiments/five_datasets_l2p.gin'], [], ['cifar10', 'mnist', 'svhn_cropped', 'not_mnist', 'fashion_mnist']),
    (['experiments/five_datasets_l2p.gin', TINY], [], ['cifar10', 'mnist']),  # local_tiny keeps 2 tasks.
    (['experiments/five_datasets_l2p.gin'], ["benchmarks.five_datasets.datasets = ('svhn_cropped',)"],
     ['svhn_cropped']),
    (['experiments/domainnet_l2p.gin'], [], ['domainnet_continual']),
    (['experiments/imagenet_r_dualprompt.gin'], [], ['imagenet_r_local']),
    (['experiments/core50_l2p.gin'], [], ['core50_local']),
    (['experiments/cifar100_coda_prompt.gin'], [], ['cifar100']),
    (['pretrain/cifar100_50-99_mini.gin'], [], ['cifar100']),
])
def test_datasets_come_from_the_experiments_gin_files(gin_files, bindings, expected):
  gin_utils.parse(gin_files, bindings)
  assert prepare_data.datasets_from_gin() == expected


def test_a_config_without_a_benchmark_is_refused():
  gin_utils.parse(['models/vit_tiny.gin'])
  with pytest.raises(ValueError, match='bind no benchmark'):
    prepare_data.datasets_from_gin()


def test_prepare_then_train_offline_quietly_then_evaluate_with_the_runs_config(tmp_path):
  manual = _manual_dir(tmp_path / 'manual')
  data_dir = tmp_path / 'tfds'  # Empty: everything the run reads is prepared by the command below.
  experiment = ['--gin_file=gin_configs/experiments/five_datasets_l2p.gin', f'--gin_file={TINY}',
                "--gin_bindings=benchmarks.five_datasets.datasets = ('mnist', 'not_mnist')"]
  prep = _run('l2p_tf.prepare_data', *experiment, f'--tfds_data_dir={data_dir}', f'--tfds_manual_dir={manual}')
  assert prep.returncode == 0, prep.stderr
  assert 'Preparing mnist, not_mnist in' in prep.stdout
  assert re.search(r'ready: mnist: mnist_local 1\.0\.0 in \S+ \(test 160, train 200;', prep.stdout), prep.stdout
  assert re.search(r'ready: not_mnist: not_mnist \S+ in \S+ \(test 160;', prep.stdout), prep.stdout
  _assert_quiet(prep.stderr)

  # Train from the prepared folder alone (no --tfds_manual_dir), with the network blocked: nothing is prepared again.
  # With the XLA-compiled step, as the quickstart (XLA logs a line of its own on first compile).
  model_dir = tmp_path / 'run'
  train = _run('l2p_tf.main', f'--model_dir={model_dir}', *experiment, f'--tfds_data_dir={data_dir}',
               '--gin_bindings=config.Training.jit_compile = True')
  assert train.returncode == 0, train.stdout + train.stderr
  assert 'Preparing dataset' not in train.stdout
  assert 'Done: final avg_acc' in train.stdout
  _assert_quiet(train.stderr)
  assert train.stderr == '', train.stderr
  log = (model_dir / 'logs' / 'main.log').read_text()
  assert 'Strategy OneDeviceStrategy with 1 replicas.' in log
  assert 'eval after task 1 on not_mnist' in log

  # --mode=eval without --gin_file: the run's own config.gin (which holds the datasets binding above).
  evaluate = _run('l2p_tf.main', f'--model_dir={model_dir}', '--mode=eval', f'--tfds_data_dir={data_dir}')
  assert evaluate.returncode == 0, evaluate.stdout + evaluate.stderr
  assert 'not_mnist' in evaluate.stdout and 'avg_acc' in evaluate.stdout, evaluate.stdout
  assert evaluate.stderr == '', evaluate.stderr


def test_domainnet_without_network_or_files_fails_in_seconds(tmp_path):
  start = time.monotonic()
  p = _run('l2p_tf.prepare_data', '--gin_file=gin_configs/experiments/domainnet_l2p.gin',
           f'--tfds_data_dir={tmp_path / "tfds"}', timeout=120)
  seconds = time.monotonic() - start
  assert p.returncode == 2, p.stdout + p.stderr
  assert seconds < 30, f'{seconds:.0f} s'
  assert "error: dataset 'domainnet_continual' is not prepared" in p.stderr
  assert 'cannot be reached (no network?)' in p.stderr and '--tfds_manual_dir' in p.stderr
  assert 'Traceback' not in p.stderr


def test_domainnet_names_its_urls_unless_the_manual_folder_has_the_files():
  from datasets.domainnet import domainnet_dataset_builder as dn  # pylint: disable=g-import-not-at-top
  builder = dn.Builder(data_dir='/nonexistent')
  dummy = os.path.join(test_util.REPO_ROOT, 'datasets', 'domainnet', 'dummy_data')
  assert builder.download_urls(dummy) == []
  urls = builder.download_urls(None)
  assert len(urls) == 18 and urls[0].startswith('http://csr.bu.edu/')
