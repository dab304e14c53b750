"""pytest set-up shared by every test: quiet TensorFlow, and two virtual CPUs for multi-replica tests."""

import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests import test_util  # pylint: disable=g-import-not-at-top

test_util.configure_virtual_cpus()

import fcntl  # pylint: disable=g-import-not-at-top,g-bad-import-order

import pytest  # pylint: disable=g-import-not-at-top,g-bad-import-order

CACHE_DIR = os.path.join(test_util.REPO_ROOT, '.cache', 'test_tfds')


@pytest.fixture(scope='session')
def shared_data_dirs():
  """(tfds data_dir, manual_dir) with CIFAR-100 prepared from ../shared/data by the local-file builder.

  Prepared once into the git-ignored .cache/ (about 30 s the first time) under a file lock, so parallel test
  workers and later runs share it. Skips when ../shared/data is absent.
  """
  if not os.path.isdir(os.path.join(test_util.SHARED_DATA, 'cifar-100-python')):
    pytest.skip(f'real data not found at {test_util.SHARED_DATA} (cifar-100-python/); see its README')
  os.makedirs(CACHE_DIR, exist_ok=True)
  with open(os.path.join(CACHE_DIR, '.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    from l2p_tf.data import benchmarks  # pylint: disable=g-import-not-at-top
    from l2p_tf.data import pipelines  # pylint: disable=g-import-not-at-top
    bench = benchmarks.split_cifar100(data_dir=CACHE_DIR, manual_dir=test_util.SHARED_DATA,
                                      preprocess=pipelines.PreprocessConfig(image_size=32))
    bench.num_train_examples(0)  # Prepares the builder (writes its records) if needed.
  return CACHE_DIR, test_util.SHARED_DATA
