r"""Runs an L2P continual-learning experiment from gin files.

  python -m l2p_tf.main --model_dir=/tmp/l2p --gin_file=gin_configs/experiments/cifar100_l2p.gin \
      [--gin_file=gin_configs/local_tiny.gin] [--gin_bindings='INIT_CHECKPOINT = "/ckpt/ViT-B_16.npz"'] \
      [--strategy=one_device|mirrored|multi_worker_mirrored|tpu] [--tpu=ADDRESS] \
      [--tfds_data_dir=DIR] [--tfds_manual_dir=DIR] [--mode=train|eval] [--overwrite]

`--mode=eval` without --gin_file uses the run's own MODEL_DIR/config.gin. The full log (INFO and up, tracebacks of
errors included) is kept in MODEL_DIR/logs/main.log.

Flags carry infrastructure only; every hyperparameter is a gin binding (see gin_configs/). A rerun of the same
command resumes from the newest checkpoint in --model_dir. Exit codes: 0 done; 2 bad input or a failed run (one
`error:` line on stderr, see docs/errors.md); 75 preempted by SIGTERM / SIGINT (checkpoint written; rerun to resume).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

import l2p_tf  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from l2p_tf import cli

FLAGS = flags.FLAGS
cli.define_flags('Directory for checkpoints, summaries, config.gin and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'train (or resume), or re-evaluate the newest checkpoint '
                  '(with MODEL_DIR/config.gin unless --gin_file is given).')
flags.DEFINE_bool('overwrite', False, 'Start afresh even if --model_dir holds a run (needed when its config differs): '
                  'the old run is first moved to <model_dir>.overwritten-<time>/.')


def main(argv):
  cli.start(argv)
  from l2p_tf import train_lib  # pylint: disable=g-import-not-at-top
  # --mode=eval re-evaluates a run with its own operative config unless gin files are given.
  run = cli.gin_configured(lambda: train_lib.run, 'gin_configs/experiments/quickstart.gin',
                           default_gin_file=(os.path.join(FLAGS.model_dir, 'config.gin') if FLAGS.mode == 'eval'
                                             else None))
  if run is None:
    return 2
  strategy = cli.strategy_from_flags()
  logging.info('Strategy %s with %d replicas.', type(strategy).__name__, strategy.num_replicas_in_sync)
  preemption = train_lib.Preemption().install()
  try:
    run(model_dir=FLAGS.model_dir, strategy=strategy, mode=FLAGS.mode, data_dir=FLAGS.tfds_data_dir,
        manual_dir=FLAGS.tfds_manual_dir, preemption=preemption, overwrite=FLAGS.overwrite)
  except train_lib.PreemptedError as e:
    print(f'preempted: {user_message(e)}', file=sys.stderr)
    return train_lib.PREEMPTED_EXIT_CODE
  except (ValueError, RuntimeError) as e:
    # Bad input (checkpoint, config, data): one clear line; the traceback stays in the log for whoever wants it.
    logging.info('Traceback of the error below:', exc_info=True)
    print(f'error: {user_message(e)}\n{cli.traceback_hint()}', file=sys.stderr)
    return 2
  finally:
    preemption.uninstall()
  return 0


def user_message(e: BaseException) -> str:
  """The exception's message without gin's "In call to configurable ..." trailer."""
  lines = [l for l in str(e).splitlines() if not l.strip().startswith('In call to configurable')]
  return '\n'.join(lines).strip()


def run() -> None:
  """The command-line entry point (`python -m l2p_tf.main`, `l2p-train`)."""
  from l2p_tf import quiet  # pylint: disable=g-import-not-at-top
  quiet.filter_stderr()
  app.run(main)


if __name__ == '__main__':
  run()
