r"""Runs a continual-learning experiment from gin files.

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

from absl import app
from absl import flags

import l2p_tf  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from l2p_tf import cli

FLAGS = flags.FLAGS
cli.define_flags('Directory for checkpoints, summaries, config.gin and results.')
cli.define_run_flags()
flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'train (or resume), or re-evaluate the newest checkpoint '
                  '(with MODEL_DIR/config.gin unless --gin_file is given).')
flags.DEFINE_bool('eval_with_changed_config', False, '--mode=eval: evaluate even though the gin bindings differ '
                  'from the run\'s config.gin (the differences are printed; the results go to eval_results.json).')


def main(argv):
  cli.start(argv)
  from l2p_tf.engine import loop  # pylint: disable=g-import-not-at-top
  # --mode=eval re-evaluates a run with its own operative config unless gin files are given.
  default = os.path.join(FLAGS.model_dir, 'config.gin') if FLAGS.mode == 'eval' else None
  return cli.run_configured(lambda: loop.run, 'gin_configs/experiments/quickstart.gin', default_gin_file=default,
                            mode=FLAGS.mode, eval_with_changed_config=FLAGS.eval_with_changed_config)


def run() -> None:
  """The command-line entry point (`python -m l2p_tf.main`, `l2p-train`)."""
  from l2p_tf import quiet  # pylint: disable=g-import-not-at-top
  quiet.filter_stderr()
  app.run(main)


if __name__ == '__main__':
  run()
