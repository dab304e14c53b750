"""`python -m tests.mock_pretrain FLAGS...`: l2p_tf.pretrain on `tfds.testing.mock_data` (deterministic random images,
nothing read or downloaded), for tests that need a real process (signals), with the fault injection of
tests/faults.py installed (from the L2P_FAULT_INJECTION environment variable)."""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

from absl import app  # pylint: disable=g-import-not-at-top,g-bad-import-order
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

from l2p_tf import pretrain  # pylint: disable=g-import-not-at-top
from tests import faults  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  pretrain._define_flags()  # pylint: disable=protected-access  (its __main__ block does the same)
  faults.install()
  with tfds.testing.mock_data(num_examples=500):
    app.run(pretrain.main)
