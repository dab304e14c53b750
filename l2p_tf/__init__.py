"""l2p-tf: a TensorFlow production trainer for Learning to Prompt for Continual Learning (L2P, CVPR 2022)."""

import os

# tf.keras is Keras 3 on TensorFlow >= 2.16. This project uses the Keras 2 API from `tf_keras` everywhere; the
# variable below makes any library that still says `tf.keras` (orbit, official.*) resolve to tf_keras too, so the
# two are never mixed. It must be set before TensorFlow is first imported.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

# TensorFlow's C++ logs: errors only, or nothing on a machine without an NVIDIA device, where the only error logged
# is the failing CUDA probe (l2p_tf/quiet.py). An explicit TF_CPP_MIN_LOG_LEVEL is kept.
from l2p_tf import quiet as _quiet  # pylint: disable=g-import-not-at-top,wrong-import-position

_quiet.set_environment_defaults()
