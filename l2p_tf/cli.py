"""The command line that l2p_tf.main and l2p_tf.pretrain share: infrastructure flags, gin parsing, the strategy, and
the one error path (exit 2 with one `error:` line, 75 when preempted).

Flags carry infrastructure only (where to write, which strategy, where the data is); every hyperparameter is a gin
binding.
"""

from __future__ import annotations

import os
import re
import signal
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
  flags.DEFINE_float('device_timeout_s', 120.0, 'Seconds the start-up device check (one all-reduce over every replica) '
                     'may take before the run ends with an error; 0: unbounded.')
  flags.DEFINE_float('stop_grace_s', 10.0, 'Seconds after SIGTERM / SIGINT for the run to begin its orderly stop (a '
                     'checkpoint at the next step); past it, a run stuck in a phase that cannot stop between steps '
                     'exits with code 75 without a new checkpoint.')
  flags.DEFINE_string('tfds_data_dir', None, 'tensorflow-datasets data directory (local or gs://).')
  flags.DEFINE_string('tfds_manual_dir', None,
                      'Directory with manually downloaded dataset files (e.g. ../shared/data with cifar-100-python/); '
                      'switches CIFAR-100, MNIST, notMNIST and Fashion-MNIST to local-file builders (no network).')


def define_run_flags() -> None:
  """--overwrite (both commands: a run directory holding another config is refused without it)."""
  flags.DEFINE_bool('overwrite', False, 'Start afresh even if --model_dir holds a run (needed when its config '
                    'differs): the old run is first moved to <model_dir>.overwritten-<time>/.')



def start(argv, program: Optional[str] = None):
  """Refuses positional arguments; quiets third-party logs; adds the run's log file (`l2p_tf.quiet`).

  stderr shows warnings and errors only unless --verbosity was given (stdout carries the progress); the log file
  `MODEL_DIR/logs/<program>.log` gets everything from INFO up once the run owns MODEL_DIR. Returns the log file
  handler (None for a remote MODEL_DIR). `program` defaults to 'pretrain' for l2p_tf.pretrain, else 'main'.
  """
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from l2p_tf import quiet  # pylint: disable=g-import-not-at-top
  program = program or ('pretrain' if 'pretrain' in os.path.basename(sys.argv[0]) else 'main')
  return quiet.install(FLAGS.model_dir, program, verbosity_given=FLAGS['verbosity'].present)


def traceback_hint() -> str:
  """Where an error's traceback can be read: the run's log file when it has one, else how to show it."""
  from l2p_tf import quiet  # pylint: disable=g-import-not-at-top
  log_file = quiet.current()
  path = log_file.written() if log_file is not None else None
  if path:
    return f'(the traceback is in {path})'
  return '(the traceback is in the log: rerun with --verbosity=0 to see it)'


def gin_configured(get_target: Callable[[], Callable], example_gin_file: str,
                   default_gin_file: Optional[str] = None) -> Optional[Callable]:
  """Parses --gin_file and --gin_bindings, checks and finalizes gin, and returns `get_target()` configured.

  `get_target` is called after parsing (under `python -m`, the function must come from the imported module, not
  from `__main__`, for gin to know it). Without --gin_file, `default_gin_file` is used when it exists (the run's own
  config.gin for `--mode=eval`). A bad gin file or binding, a macro that is defined but used nowhere (a misspelt
  name), a macro used but never defined, or a `%gin.REQUIRED` setting left unset prints one `error:` line naming it
  to stderr and returns None (the caller exits with code 2), as does a missing --gin_file.
  """
  import gin  # pylint: disable=g-import-not-at-top
  from l2p_tf import gin_utils  # pylint: disable=g-import-not-at-top
  gin_files = list(FLAGS.gin_file)
  if not gin_files and default_gin_file:
    gin_files = _local_copy(default_gin_file)
  if not gin_files:
    print(f'error: give at least one --gin_file (e.g. --gin_file={example_gin_file}); --help lists every flag.',
          file=sys.stderr)
    return None
  try:
    gin_utils.parse(gin_files, FLAGS.gin_bindings, FLAGS.gin_search_paths)
    configured = gin.get_configurable(get_target())
    gin.finalize()  # Runs gin's check that every `%gin.REQUIRED` setting was given a value.
    gin_utils.check_macros()
  except (gin_utils.GinConfigError, ValueError, RuntimeError) as e:
    hint = ''
    if '%gin.REQUIRED' in str(e):
      hint = (f' Bind it in a --gin_file or with --gin_bindings; an experiment file (e.g. {example_gin_file}) '
              'includes base.gin and sets every part a run needs.')
    print(f'error: {e}{hint}', file=sys.stderr)
    return None
  return configured


def _local_copy(path: str) -> list[str]:
  """[path] when it exists locally, [a local copy] of a remote (gs://) file, or [] when there is no such file."""
  if '://' not in path:
    return [path] if os.path.exists(path) else []
  import tempfile  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  with tempfile.NamedTemporaryFile('w', suffix='.gin', prefix='config-', delete=False) as f:
    f.write(text)
  return [f.name]


def strategy_from_flags():
  """The tf.distribute strategy that --strategy, --tpu and --num_gpus name, checked within --device_timeout_s.

  Raises:
    strategies.StrategyError: the devices asked for are not there, or fail the check.
  """
  from l2p_tf.engine import strategies  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import watchdog  # pylint: disable=g-import-not-at-top
  # Building a multi-worker or TPU strategy connects to its peers (and waits for them, holding the interpreter lock).
  with watchdog.phase(f'starting --strategy={FLAGS.strategy}', FLAGS.device_timeout_s,
                      'its devices or peers do not answer: for multi-worker runs, start every worker of TF_CONFIG '
                      '(they wait for each other) and check the addresses; for --strategy=tpu, check --tpu; or raise '
                      '--device_timeout_s.'):
    strategy = strategies.make_strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.num_gpus)
  strategies.check_devices(strategy, FLAGS.device_timeout_s)
  return strategy



def error_message(e: BaseException) -> str:
  """The one-line (or few-line) text of an error for the `error:` line: what failed, the culprit, what to do.

  gin's "In call to configurable ..." trailer is dropped, but a type error keeps the configurable's name (it is the
  culprit: a binding of the wrong type); a full disk names the file and says that nothing written was lost.
  """
  import errno  # pylint: disable=g-import-not-at-top
  text = str(e)
  lines = [l for l in text.splitlines() if not l.strip().startswith('In call to configurable')]
  configurable = [l.strip().split("'")[1] for l in text.splitlines()
                  if l.strip().startswith('In call to configurable') and "'" in l]
  message = '\n'.join(lines).strip()
  if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or 'No space left on device' in text:
    where = getattr(e, 'filename', None)
    if not where:  # gin re-raises a copy without the attribute; the path is at the end of the text.
      m = re.search(r"No space left on device: '(.+?)'", text) or re.search(r'(/[^\s:\']+)', text)
      where = m.group(1) if m else ''
    return (f'no space left on device{" writing " + where if where else f" ({message.splitlines()[0][:200]})"}. '
            'Free space there and rerun the same command: it resumes from the newest complete checkpoint (files are '
            'written to a temporary name and renamed, so nothing already written was changed).')
  if isinstance(e, TypeError):
    culprit = f' in {configurable[0]}' if configurable else ''
    return (f'a value of the wrong type{culprit}: {message}. Check the gin bindings of '
            f'{configurable[0] if configurable else "it"} (a number written in quotes is a string; True/False '
            'without quotes are booleans).')
  if isinstance(e, OSError) and not isinstance(e, ValueError):
    return f'{type(e).__name__}: {message}'
  if not isinstance(e, (ValueError, RuntimeError)):  # tf.errors.OpError and the like: name the kind.
    return f'{type(e).__name__}: {message}'
  return message


def user_message(e: BaseException) -> str:
  """The error's text for the `error:` line (see `error_message`)."""
  return error_message(e)


def run_configured(get_target: Callable[[], Callable], example_gin_file: str, default_gin_file: Optional[str] = None,
                   **kwargs) -> int:
  """Runs the gin-configured `get_target()` (an engine run) with the flags' model_dir, strategy and data dirs.

  SIGTERM / SIGINT ask the run to stop after the current step (it writes a checkpoint first). `default_gin_file` is
  parsed when no --gin_file is given (see `gin_configured`).

  Returns:
    The exit code: 0 done, 2 bad input or a failed run (one `error:` line on stderr), 75 preempted.
  """
  run = gin_configured(get_target, example_gin_file, default_gin_file)
  if run is None:
    return 2
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import preemption as preemption_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import watchdog  # pylint: disable=g-import-not-at-top
  # Signals are watched from here on: a SIGTERM while the devices are checked or the data prepared (phases that
  # cannot stop between steps) still ends the process within --stop_grace_s.
  preemption = preemption_lib.Preemption().install()
  guard = watchdog.SignalWatchdog(grace_s=FLAGS.stop_grace_s).install()
  guard.guard(preemption)
  try:
    strategy = strategy_from_flags()  # Inside: missing devices / no TPU are one error line.
    # A multi-worker strategy's coordination service installs TensorFlow's own SIGTERM handler, which takes the
    # signal away from Python: put the Python handlers (and with them the wake-up socket) back in place.
    for sig in (signal.SIGTERM, signal.SIGINT):
      signal.signal(sig, signal.getsignal(sig))
    logging.info('Strategy %s with %d replicas.', type(strategy).__name__, strategy.num_replicas_in_sync)
    run(model_dir=FLAGS.model_dir, strategy=strategy, data_dir=FLAGS.tfds_data_dir, manual_dir=FLAGS.tfds_manual_dir,
        preemption=preemption, overwrite=FLAGS.overwrite, **kwargs)
  except preemption_lib.PreemptedError as e:
    print(f'preempted: {user_message(e)}', file=sys.stderr)
    return preemption_lib.PREEMPTED_EXIT_CODE
  except (ValueError, RuntimeError, TypeError, OSError, tf.errors.OpError) as e:
    # Bad input (checkpoint, config, data), a full disk, a device that fails: one clear line; the traceback stays in
    # the log for whoever wants it.
    logging.info('Traceback of the error below:', exc_info=True)
    print(f'error: {user_message(e)}\n{traceback_hint()}', file=sys.stderr)
    return 2
  finally:
    guard.uninstall()
    preemption.uninstall()
  return 0


def run_tool(define: Callable[[], None], main: Callable) -> None:
  """The `__main__` of a command that defines its own flags (export, predict): quiet stderr, the flags, absl's app."""
  from l2p_tf import quiet  # pylint: disable=g-import-not-at-top
  quiet.filter_stderr()  # Drops the C++ absl logger's chatter (l2p_tf/quiet.py).
  define()
  app.run(main)
