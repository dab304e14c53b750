r"""Runs an L2P continual-learning experiment from gin files.

  python -m l2p_tf.main --model_dir=/tmp/l2p --gin_file=gin_configs/experiments/cifar100_l2p.gin \
      [--gin_file=gin_configs/local_tiny.gin] [--gin_bindings='INIT_CHECKPOINT = "/ckpt/ViT-B_16.npz"'] \
      [--strategy=one_device|mirrored|multi_worker_mirrored|tpu] [--tpu=ADDRESS] \
      [--tfds_data_dir=DIR] [--tfds_manual_dir=DIR] [--mode=train|eval] [--overwrite]

Flags carry infrastructure only; every hyperparameter is a gin binding (see gin_configs/). A rerun of the same
command resumes from the newest checkpoint in --model_dir. Exit codes: 0 done; 2 bad input or a failed run (one
`error:` line on stderr, see docs/errors.md); 75 preempted by SIGTERM / SIGINT (checkpoint written; rerun to resume).
"""

import signal
import sys

from absl import app
from absl import flags
from absl import logging

import l2p_tf  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from l2p_tf import cli

FLAGS = flags.FLAGS
cli.define_flags('Directory for checkpoints, summaries, config.gin and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'train (or resume), or re-evaluate the newest checkpoint.')
flags.DEFINE_bool('eval_with_changed_config', False, '--mode=eval: evaluate even though the gin bindings differ '
                  'from the run\'s config.gin (the differences are printed; the results go to eval_results.json).')
flags.DEFINE_bool('overwrite', False, 'Start afresh even if --model_dir holds a run (needed when its config differs): '
                  'the old run is first moved to <model_dir>.overwritten-<time>/.')


def main(argv):
  cli.start(argv)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from l2p_tf import train_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf import watchdog  # pylint: disable=g-import-not-at-top
  run = cli.gin_configured(lambda: train_lib.run, 'gin_configs/experiments/quickstart.gin')
  if run is None:
    return 2
  # Signals are watched from here on: a SIGTERM while the devices are checked or the data prepared (phases that
  # cannot stop between steps) still ends the process within --stop_grace_s.
  preemption = train_lib.Preemption().install()
  guard = watchdog.SignalWatchdog(grace_s=FLAGS.stop_grace_s).install()
  guard.guard(preemption)
  try:
    strategy = cli.strategy_from_flags()
    # A multi-worker strategy's coordination service installs TensorFlow's own SIGTERM handler, which takes the
    # signal away from Python: put the Python handlers (and with them the wake-up socket) back in place.
    for sig in (signal.SIGTERM, signal.SIGINT):
      signal.signal(sig, signal.getsignal(sig))
    logging.info('Strategy %s with %d replicas.', type(strategy).__name__, strategy.num_replicas_in_sync)
    run(model_dir=FLAGS.model_dir, strategy=strategy, mode=FLAGS.mode, data_dir=FLAGS.tfds_data_dir,
        manual_dir=FLAGS.tfds_manual_dir, preemption=preemption, overwrite=FLAGS.overwrite,
        eval_with_changed_config=FLAGS.eval_with_changed_config)
  except train_lib.PreemptedError as e:
    print(f'preempted: {e}', file=sys.stderr)
    return train_lib.PREEMPTED_EXIT_CODE
  except (ValueError, RuntimeError, TypeError, OSError, tf.errors.OpError) as e:
    # Bad input (checkpoint, config, data), a full disk, a device that fails: one clear line; the traceback stays in
    # the log for whoever wants it.
    logging.info('Traceback of the error below:', exc_info=True)
    print(f'error: {user_message(e)}\n(the traceback is in the log: rerun with --verbosity=0 to see it)',
          file=sys.stderr)
    return 2
  finally:
    guard.uninstall()
    preemption.uninstall()
  return 0


def user_message(e: BaseException) -> str:
  """The error's text for the `error:` line (see `cli.error_message`)."""
  return cli.error_message(e)


if __name__ == '__main__':
  app.run(main)
