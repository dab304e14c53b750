"""tf.distribute strategies: the one a command line names (checked to work), which worker is the chief, how many hosts
run, and agreement across workers.

A strategy that asks for devices that are not there does not fail: MirroredStrategy over two GPUs on a machine
without them is created in milliseconds, places its variables on the CPU, and hangs forever in its first all-reduce.
So `make_strategy` refuses GPU counts that the machine does not have, and `check_devices` runs one all-reduce under a
deadline (`watchdog.phase`), so absent or broken devices and a missing multi-worker peer end with one error line.
"""

from __future__ import annotations

import os
from typing import Optional

import tensorflow as tf

from l2p_tf.engine import watchdog

STRATEGIES = ('one_device', 'mirrored', 'multi_worker_mirrored', 'tpu')
DEFAULT_DEVICE_TIMEOUT_S = 120.0
# A collective that waits longer than this for a peer fails (DeadlineExceeded) instead of waiting forever.
COLLECTIVE_TIMEOUT_S = 600.0


class StrategyError(ValueError):
  """The strategy cannot be built on this machine as asked (devices missing, no TPU)."""


def make_strategy(name: str, tpu: str = '', num_gpus: Optional[int] = None) -> tf.distribute.Strategy:
  """Builds a strategy: 'one_device', 'mirrored', 'multi_worker_mirrored' (TF_CONFIG) or 'tpu' (address `tpu`).

  Args:
    name: one of `STRATEGIES`.
    tpu: TPU address for 'tpu'; '' or 'local' on a TPU VM.
    num_gpus: GPUs to use (mirrored / one_device); None: every visible GPU; 0: the CPU.

  Raises:
    StrategyError: an unknown name, more GPUs asked for than are visible, or no TPU where 'tpu' looks for one.
  """
  from official.common import distribute_utils  # pylint: disable=g-import-not-at-top
  if name not in STRATEGIES:
    raise StrategyError(f'Unknown strategy {name!r}; use one of {STRATEGIES}.')
  visible = len(tf.config.list_physical_devices('GPU'))
  if num_gpus is not None and num_gpus < 0:
    raise StrategyError(f'--num_gpus={num_gpus} is negative; give 0 (CPU) or a GPU count.')
  if num_gpus and num_gpus > visible:
    why = ('none is visible to TensorFlow: no driver, a build without CUDA, or CUDA_VISIBLE_DEVICES hides them'
           if not visible else 'fewer than asked')
    raise StrategyError(
        f'--num_gpus={num_gpus} but this machine has {visible} usable GPU(s) ({why}). Pass --num_gpus={visible}'
        f'{" (the CPU)" if not visible else ""} or leave --num_gpus unset to use what is there, or fix the GPU '
        'set-up (nvidia-smi).')
  gpus = visible if num_gpus is None else num_gpus
  if name == 'one_device':
    return tf.distribute.OneDeviceStrategy('/gpu:0' if gpus else '/cpu:0')
  if name == 'tpu':
    try:
      return distribute_utils.get_distribution_strategy('tpu', tpu_address=tpu or '')
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
      raise StrategyError(
          f'--strategy=tpu: no TPU found at {tpu or "this machine (--tpu unset)"} ({type(e).__name__}: '
          f'{str(e).splitlines()[0] if str(e) else ""}). On a Cloud TPU VM pass --tpu=local; elsewhere pass the TPU '
          'name or grpc:// address, or use --strategy=one_device / mirrored.') from e
  if name == 'multi_worker_mirrored':
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(timeout_seconds=COLLECTIVE_TIMEOUT_S))
  return distribute_utils.get_distribution_strategy(name, num_gpus=gpus)


def check_devices(strategy: tf.distribute.Strategy, timeout_s: Optional[float] = DEFAULT_DEVICE_TIMEOUT_S) -> None:
  """Runs one all-reduce over every replica of `strategy` within `timeout_s` seconds (None: unbounded).

  On a device that does not answer (absent, broken, a multi-worker peer that never came up) the process ends with
  `error: device check ... did not finish within N s ...` and exit code 2 (see `watchdog.phase`); a
  one-device strategy on the CPU is not checked (nothing there can hang).

  Raises:
    StrategyError: the all-reduce failed outright, or returned a wrong sum.
  """
  devices = list(strategy.extended.worker_devices)
  if isinstance(strategy, tf.distribute.OneDeviceStrategy) and 'CPU' in devices[0].upper():
    return
  replicas = strategy.num_replicas_in_sync
  advice = (f'the devices of {type(strategy).__name__} ({", ".join(devices)}) do not answer. Check that they exist '
            'and work (nvidia-smi; for multi-worker runs, that every worker of TF_CONFIG is started and reachable), '
            'or choose another --strategy / --num_gpus.')

  @tf.function
  def all_reduce():
    ctx = tf.distribute.get_replica_context
    return strategy.run(lambda: ctx().all_reduce(tf.distribute.ReduceOp.SUM, tf.constant(1.0)))

  with watchdog.phase(f'device check of {replicas} replica(s)', timeout_s, advice):
    try:
      out = strategy.experimental_local_results(all_reduce())
      total = float(out[0].numpy())
    except (tf.errors.OpError, ValueError, RuntimeError) as e:
      raise StrategyError(f'device check failed: {advice} ({type(e).__name__}: '
                          f'{str(e).splitlines()[0] if str(e) else ""})') from e
  if total != replicas:
    raise StrategyError(f'device check: an all-reduce over {replicas} replica(s) gave {total}; {advice}')


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
