"""tf.distribute strategies: the one a command line names, which worker is the chief, how many hosts run, and
agreement across workers."""

from __future__ import annotations

import os
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


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True on the one worker that writes results, summaries and the real checkpoints."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not getattr(resolver, 'task_type', None):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type == 'chief':
    return True
  has_chief = 'chief' in resolver.cluster_spec().as_dict()
  return task_type == 'worker' and task_id == 0 and not has_chief


def worker_scratch_dir(strategy: tf.distribute.Strategy, model_dir: str) -> str:
  """Where a non-chief worker writes what it must write (collective checkpoint saves, summaries): never read."""
  return os.path.join(model_dir, f'.worker_{strategy.cluster_resolver.task_id}')


def strategy_name(strategy: tf.distribute.Strategy) -> str:
  """The public name of a strategy (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy)."""
  name = type(strategy).__name__
  return 'MultiWorkerMirroredStrategy' if name == 'CollectiveAllReduceStrategy' else name


def num_hosts(strategy: tf.distribute.Strategy) -> int:
  """Workers (MultiWorkerMirrored) or hosts (TPU pod) that run this program side by side."""
  extended = strategy.extended
  return int(getattr(extended, '_num_workers', 0) or getattr(extended, 'num_hosts', 1) or 1)


class AnyWorker:
  """`AnyWorker(strategy)(flag)`: True on every worker if `flag` is True on any (a collective: call on all workers at
  the same point). Single-host strategies need no collective and return `flag` itself."""

  def __init__(self, strategy: tf.distribute.Strategy):
    self.strategy = strategy
    self._fn = tf.function(self._any_replica) if num_hosts(strategy) > 1 else None

  def __call__(self, flag: bool) -> bool:
    if self._fn is None:
      return bool(flag)
    return bool(self._fn(tf.constant(float(flag))))

  def _any_replica(self, flag):
    def replica_fn(x):
      # tf.identity places the flag on this replica's device (MultiWorkerMirrored refuses an unplaced input).
      return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(x))
    return self.strategy.experimental_local_results(self.strategy.run(replica_fn, args=(flag,)))[0] > 0
