"""The command line that l2p_tf.main and l2p_tf.pretrain share: infrastructure flags, gin parsing, the strategy, and
the one error path (exit 2 with one `error:` line, 75 when preempted).

Flags carry infrastructure only (where to write, which strategy, where the data is); every hyperparameter is a gin
binding.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS


def define_flags(model_dir_help: str) -> None:
  """Defines --model_dir (with `model_dir_help`), the gin flags, the strategy flags and the tfds directories."""
  flags.DEFINE_string('model_dir', None, model_dir_help, required=True)
  flags.DEFINE_multi_string('gin_file', [], 'Gin files, parsed in order (later ones override earlier ones).')
  flags.DEFINE_multi_string('gin_bindings', [], 'Gin bindings, applied after the files, e.g. "SEED = 1".')
  flags.DEFINE_multi_string('gin_search_paths', [], 'Extra directories to look for gin files and includes in.')
  flags.DEFINE_enum('strategy', 'one_device', ['one_device', 'mirrored', 'multi_worker_mirrored', 'tpu'],
                    'tf.distribute strategy.')
  flags.DEFINE_string('tpu', '', 'TPU address (tpu strategy); "" or "local" on a TPU VM.')
  flags.DEFINE_integer('num_gpus', None, 'GPUs to use (mirrored / one_device); default: all visible.')
  flags.DEFINE_string('tfds_data_dir', None, 'tensorflow-datasets data directory (local or gs://).')
  flags.DEFINE_string('tfds_manual_dir', None,
                      'Directory with manually downloaded dataset files (e.g. ../shared/data with cifar-100-python/); '
                      'switches CIFAR-100, MNIST, notMNIST and Fashion-MNIST to local-file builders (no network).')


def define_run_flags() -> None:
  """--overwrite (both commands: a run directory holding another config is refused without it)."""
  flags.DEFINE_bool('overwrite', False, 'Start afresh even if --model_dir holds a run (needed when its config '
                    'differs): the old run is first moved to <model_dir>.overwritten-<time>/.')


def start(argv) -> None:
  """Refuses positional arguments; logs warnings only unless --verbosity was given (stdout carries the progress)."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def gin_configured(get_target: Callable[[], Callable], example_gin_file: str) -> Optional[Callable]:
  """Parses --gin_file and --gin_bindings, finalizes gin, and returns `get_target()` with its gin bindings applied.

  `get_target` is called after parsing (under `python -m`, the function must come from the imported module, not
  from `__main__`, for gin to know it). A bad gin file or binding prints one `error:` line naming it to stderr and
  returns None (the caller exits with code 2).

  Raises:
    app.UsageError: no --gin_file (the message suggests `example_gin_file`).
  """
  import gin  # pylint: disable=g-import-not-at-top
  from l2p_tf import gin_utils  # pylint: disable=g-import-not-at-top
  if not FLAGS.gin_file:
    raise app.UsageError(f'Give at least one --gin_file (e.g. {example_gin_file}).')
  try:
    gin_utils.parse(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
    configured = gin.get_configurable(get_target())
  except (gin_utils.GinConfigError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return None
  gin.finalize()
  return configured


def strategy_from_flags():
  """The tf.distribute strategy that --strategy, --tpu and --num_gpus name."""
  from l2p_tf.engine import strategies  # pylint: disable=g-import-not-at-top
  return strategies.make_strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.num_gpus)


def user_message(e: BaseException) -> str:
  """The exception's message without gin's "In call to configurable ..." trailer."""
  lines = [l for l in str(e).splitlines() if not l.strip().startswith('In call to configurable')]
  return '\n'.join(lines).strip()


def run_configured(get_target: Callable[[], Callable], example_gin_file: str, **kwargs) -> int:
  """Runs the gin-configured `get_target()` (an engine run) with the flags' model_dir, strategy and data dirs.

  SIGTERM / SIGINT ask the run to stop after the current step (it writes a checkpoint first).

  Returns:
    The exit code: 0 done, 2 bad input or a failed run (one `error:` line on stderr), 75 preempted.
  """
  run = gin_configured(get_target, example_gin_file)
  if run is None:
    return 2
  from l2p_tf.engine import preemption as preemption_lib  # pylint: disable=g-import-not-at-top
  strategy = strategy_from_flags()
  logging.info('Strategy %s with %d replicas.', type(strategy).__name__, strategy.num_replicas_in_sync)
  preemption = preemption_lib.Preemption().install()
  try:
    run(model_dir=FLAGS.model_dir, strategy=strategy, data_dir=FLAGS.tfds_data_dir, manual_dir=FLAGS.tfds_manual_dir,
        preemption=preemption, overwrite=FLAGS.overwrite, **kwargs)
  except preemption_lib.PreemptedError as e:
    print(f'preempted: {e}', file=sys.stderr)
    return preemption_lib.PREEMPTED_EXIT_CODE
  except (ValueError, RuntimeError) as e:
    # Bad input (checkpoint, config, data): one clear line; the traceback stays in the log for whoever wants it.
    logging.info('Traceback of the error below:', exc_info=True)
    print(f'error: {user_message(e)}\n(the traceback is in the log: rerun with --verbosity=0 to see it)',
          file=sys.stderr)
    return 2
  finally:
    preemption.uninstall()
  return 0
