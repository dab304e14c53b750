"""`python -m tests.mock_main FLAGS...`: l2p_tf.main on `tfds.testing.mock_data` (deterministic random images, nothing
read or downloaded), for tests that need a real process (signals, SIGKILL). The fault injection of tests/faults.py
is installed here (from the L2P_FAULT_INJECTION environment variable), never by l2p_tf itself."""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

from absl import app  # pylint: disable=g-import-not-at-top,g-bad-import-order
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

from l2p_tf import main  # pylint: disable=g-import-not-at-top
from tests import faults  # pylint: disable=g-import-not-at-top

NUM_EXAMPLES = 1000  # As tests/train_lib_test.py, so runs here and there see the same data.

if __name__ == '__main__':
  faults.install()
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    app.run(main.main)
