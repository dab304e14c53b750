"""pytest set-up shared by every test: quiet TensorFlow, and two virtual CPUs for multi-replica tests."""

import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests import test_util  # pylint: disable=g-import-not-at-top

test_util.configure_virtual_cpus()
