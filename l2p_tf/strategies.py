"""The tf.distribute strategy named on a command line (shared by l2p_tf.main and l2p_tf.pretrain)."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

STRATEGIES = ('one_device', 'mirrored', 'multi_worker_mirrored', 'tpu')


def make_strategy(name: str, tpu: str = '', num_gpus: Optional[int] = None) -> tf.distribute.Strategy:
  """Builds a strategy: 'one_device', 'mirrored', 'multi_worker_mirrored' (TF_CONFIG) or 'tpu' (address `tpu`).

  Args:
    name: one of `STRATEGIES`.
    tpu: TPU address for 'tpu'; '' or 'local' on a TPU VM.
    num_gpus: GPUs to use (mirrored / one_device); None: every visible GPU.
  """
  from official.common import distribute_utils  # pylint: disable=g-import-not-at-top
  if name not in STRATEGIES:
    raise ValueError(f'Unknown strategy {name!r}; use one of {STRATEGIES}.')
  gpus = len(tf.config.list_physical_devices('GPU')) if num_gpus is None else num_gpus
  if name == 'one_device':
    return tf.distribute.OneDeviceStrategy('/gpu:0' if gpus else '/cpu:0')
  if name == 'tpu':
    return distribute_utils.get_distribution_strategy('tpu', tpu_address=tpu or '')
  return distribute_utils.get_distribution_strategy(name, num_gpus=gpus)
