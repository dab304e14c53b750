"""The command line that l2p_tf.main and l2p_tf.pretrain share: infrastructure flags, gin parsing, the strategy.

Flags carry infrastructure only (where to write, which strategy, where the data is); every hyperparameter is a gin
binding.
"""

from __future__ import annotations

import re
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
  try:
    gin.finalize()  # Checks that every %gin.REQUIRED was bound.
  except (ValueError, RuntimeError) as e:
    print(f'error: Gin config: {e} Bind it in a --gin_file or with --gin_bindings.', file=sys.stderr)
    return None
  return configured


def strategy_from_flags():
  """The tf.distribute strategy that --strategy, --tpu and --num_gpus name, checked within --device_timeout_s.

  Raises:
    strategies.StrategyError: the devices asked for are not there, or fail the check.
  """
  from l2p_tf import strategies  # pylint: disable=g-import-not-at-top
  from l2p_tf import watchdog  # pylint: disable=g-import-not-at-top
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
