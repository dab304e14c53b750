"""`python -m tests.phase_main PHASE FLAGS...`: l2p_tf.main on `tfds.testing.mock_data`, stuck in one phase.

PHASE says where the main thread blocks, the way a phase that cannot stop between steps blocks (a C++ call, a
download, a compilation): it prints `[phase] PHASE` and then waits forever without returning to the run.

  devices       the real hang: MirroredStrategy over two GPUs that do not exist; its start-up all-reduce never
                returns (`--num_gpus` is bypassed, as on a VM whose GPUs are listed but broken)
  data          preparing the data (counting the first task's examples)
  compile       tracing the first train step
  evaluation    evaluating the first task
  none          nothing is stuck (a normal run)
"""

import os
import sys
import threading

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

from absl import app  # pylint: disable=g-import-not-at-top,g-bad-import-order
import tensorflow as tf  # pylint: disable=g-import-not-at-top,g-bad-import-order
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top,g-bad-import-order

from l2p_tf import main  # pylint: disable=g-import-not-at-top

PHASES = ('devices', 'data', 'compile', 'evaluation', 'none')


def _block(phase):
  print(f'[phase] {phase}', flush=True)
  threading.Event().wait()


def patch(phase: str) -> None:
  # pylint: disable=g-import-not-at-top
  from l2p_tf.data import benchmark
  from l2p_tf.engine import evaluator
  from l2p_tf.engine import strategies
  from l2p_tf.engine import trainer
  if phase == 'devices':
    check = strategies.check_devices

    def make_strategy(*args, **kwargs):
      del args, kwargs
      return tf.distribute.MirroredStrategy(['/gpu:0', '/gpu:1'])

    def check_devices(strategy, timeout_s=None):
      print('[phase] devices', flush=True)
      return check(strategy, timeout_s)

    strategies.make_strategy = make_strategy
    strategies.check_devices = check_devices
  elif phase == 'data':
    benchmark.ContinualBenchmark.steps_per_task = lambda self, t, global_batch_size: _block('data')
  elif phase == 'compile':
    trainer.Trainer._replica_step_impl = lambda self, batch: _block('compile')  # pylint: disable=protected-access
  elif phase == 'evaluation':
    evaluator.Evaluator.evaluate = lambda self, dataset, **kwargs: _block('evaluation')
  elif phase != 'none':
    raise SystemExit(f'unknown phase {phase!r}; use one of {PHASES}')


if __name__ == '__main__':
  patch(sys.argv.pop(1))
  with tfds.testing.mock_data(num_examples=1000):
    app.run(main.main)
