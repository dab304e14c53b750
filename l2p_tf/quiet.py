"""Quiet, useful logs for the command-line tools: no third-party chatter on a healthy run, and a log file per run.

A healthy run prints its own progress on stdout and nothing on stderr. What is removed, and why it is safe:

* TensorFlow's C++ log lines. `TF_CPP_MIN_LOG_LEVEL` defaults to 2 (errors only); on a machine with no NVIDIA
  device node (`/dev/nvidiactl`, `/proc/driver/nvidia`) it defaults to 3, because there the only "error" TensorFlow
  logs is its failing CUDA probe (`failed call to cuInit`), which says nothing about the run. An explicit
  `TF_CPP_MIN_LOG_LEVEL` is always kept (set it to 0 to see everything).
* matplotlib's warning that its config folder is not writable (a read-only home): it gets a temporary one.
* tensorflow-datasets' progress bars (tqdm escape sequences in every log file), its "Downloading and preparing
  dataset Unknown size ..." banners (replaced by one line naming the dataset and the folder) and its warning about
  a variant folder without `dataset_info.json` (it is how tfds finds a folder it is about to prepare).

* Two lines of the C++ absl logger, which TF_CPP_MIN_LOG_LEVEL does not govern: `WARNING: All log messages before
  absl::InitializeLog() is called are written to STDERR` and its INFO lines (`I0000 00:00:...`, e.g. XLA's
  "Compiled cluster using XLA!"). `filter_stderr` (called by the command-line entry points only) passes the process's
  stderr through a small filter process that drops exactly these lines; `L2P_RAW_STDERR=1` turns it off.

`LogFile` keeps the full INFO-level log (tracebacks of errors included) in `MODEL_DIR/logs/<program>.log` once the run
owns its directory, so an `error:` line can say where the details are.
"""

from __future__ import annotations

import json
import logging as py_logging
import os
import time
from typing import Optional

_GPU_NODES = ('/dev/nvidiactl', '/dev/nvidia0', '/proc/driver/nvidia')
LOG_DIR_NAME = 'logs'


def has_nvidia_device() -> bool:
  """Whether this machine has an NVIDIA driver device node (without importing TensorFlow)."""
  return any(os.path.exists(p) for p in _GPU_NODES)


def set_environment_defaults() -> None:
  """Sets TensorFlow's log-level default (see the module docstring); call before TensorFlow is imported."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2' if has_nvidia_device() else '3')


def set_matplotlib_config_dir() -> None:
  """Points matplotlib at a temporary config folder when its default one cannot be written (a read-only home, a
  sandbox), where it would warn on every import; an explicit MPLCONFIGDIR is kept."""
  if 'MPLCONFIGDIR' in os.environ:
    return
  default = os.path.join(os.environ.get('XDG_CONFIG_HOME') or os.path.join(os.path.expanduser('~'), '.config'),
                         'matplotlib')
  try:
    os.makedirs(default, exist_ok=True)
    if os.access(default, os.W_OK):
      return
  except OSError:
    pass
  import tempfile  # pylint: disable=g-import-not-at-top
  folder = os.path.join(tempfile.gettempdir(), f'matplotlib-{os.getuid()}')
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError:
    return
  os.environ['MPLCONFIGDIR'] = folder


class _DropRecords(py_logging.Filter):
  """Drops the third-party log records listed in `_NOISE` (logger name prefix, message format)."""

  _NOISE = (
      # tfds, while preparing a dataset into a fresh folder (tensorflow_datasets/core/utils/file_utils.py).
      ('absl', 'Variant folder %s has no %s'),
  )

  def filter(self, record: py_logging.LogRecord) -> bool:
    return not any(record.name.startswith(name) and record.msg == msg for name, msg in self._NOISE)


_FILTER = _DropRecords()
_TFDS_QUIETED = False
_current: Optional['LogFile'] = None


def quiet_tfds() -> None:
  """No progress bars, one plain line instead of tfds's banners, no variant-folder warning (idempotent)."""
  global _TFDS_QUIETED
  for name in ('absl', ''):
    logger = py_logging.getLogger(name)
    if _FILTER not in logger.filters:
      logger.addFilter(_FILTER)
  if _TFDS_QUIETED:
    return
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  builder_cls = tfds.core.DatasetBuilder

  def log_download_bytes(self) -> None:
    print(f'Preparing dataset {self.name} {self.version} in {self.data_dir} (once; later runs reuse it).', flush=True)

  def log_download_done(self) -> None:
    py_logging.getLogger('absl').info('Dataset %s prepared in %s.', self.name, self.data_dir)

  # The two methods only print banners (tensorflow_datasets/core/dataset_builder.py); guarded so that a tfds
  # without them keeps its own.
  if hasattr(builder_cls, '_log_download_bytes'):
    builder_cls._log_download_bytes = log_download_bytes  # pylint: disable=protected-access
  if hasattr(builder_cls, '_log_download_done'):
    builder_cls._log_download_done = log_download_done  # pylint: disable=protected-access
  _TFDS_QUIETED = True


class LogFile(py_logging.Handler):
  """Writes every log record (INFO and up) to `MODEL_DIR/logs/<program>.log`, once this run has accepted `MODEL_DIR`.

  A run has accepted its directory once it has written its own files there (`class_names.txt` or `config.gin`,
  written by every run that passed its checks, newer than this process). Before that, records are held in memory, so
  a refused command (bad input) leaves the directory exactly as it was. Each record is appended with its own open /
  close, so the file follows the directory when `--overwrite` moves an old run aside. Remote directories (gs://) get
  no log file: the launch scripts keep each worker's output instead.
  """

  MARKERS = ('class_names.txt', 'config.gin')

  def __init__(self, model_dir: str, program: str, *, max_held: int = 20000):
    super().__init__(level=py_logging.INFO)
    self.model_dir = model_dir
    self.path = os.path.join(model_dir, LOG_DIR_NAME, f'{program}.log')
    self._held: list[str] = []
    self._max_held = max_held
    self._owned = False
    self._start = time.time()
    self.setFormatter(py_logging.Formatter('%(asctime)s %(levelname)s %(filename)s:%(lineno)d] %(message)s'))

  def _owns_dir(self) -> bool:
    if not self._owned:
      for name in self.MARKERS:
        try:
          if os.path.getmtime(os.path.join(self.model_dir, name)) >= self._start:
            self._owned = True
            break
        except OSError:
          continue
    return self._owned

  def emit(self, record: py_logging.LogRecord) -> None:
    try:
      line = self.format(record) + '\n'
      if not self._owns_dir():
        if len(self._held) < self._max_held:
          self._held.append(line)
        return
      self._write(''.join(self._held) + line)
      self._held = []
    except Exception:  # pylint: disable=broad-except  # Logging must never end a run.
      pass

  def _write(self, text: str) -> None:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    with open(self.path, 'a', encoding='utf-8') as f:
      f.write(text)

  def written(self) -> Optional[str]:
    """The log file's path when records were written to it, else None."""
    return self.path if self._owned and os.path.exists(self.path) else None


# Run by the filter process (`python -I -c`): copies stdin to stdout line by line, dropping the lines above. It
# ignores SIGINT / SIGTERM (the trainer handles them and still has lines to print) and ends when every writer of the
# pipe has closed it.
_FILTER_CODE = r"""
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
drop = re.compile(rb'^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR'
                  rb'|I0000 00:00:[0-9.]+ +[0-9]+ [^ ]+:[0-9]+\] .*)\r?\n?$')
out = sys.stdout.buffer
for line in iter(sys.stdin.buffer.readline, b''):
  if not drop.match(line):
    out.write(line)
    out.flush()
"""
_filter_proc = None


def filter_stderr() -> None:
  """Passes this process's stderr (fd 2, so C++ output too) through the filter process described above.

  Call it first thing in a command-line entry point (before TensorFlow starts threads); never in a library or a test
  process. At exit stderr is restored and the filter is given a moment to write its last lines.
  """
  global _filter_proc
  if _filter_proc is not None or os.environ.get('L2P_RAW_STDERR') == '1':
    return
  import atexit  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  try:
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, '-I', '-c', _FILTER_CODE], stdin=read_end, stdout=original,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
  except OSError:
    return  # Leave stderr as it is.
  _filter_proc = proc

  def restore():
    try:
      sys.stderr.flush()
    except Exception:  # pylint: disable=broad-except
      pass
    try:
      os.dup2(original, 2)  # Closes the pipe's last write end here: the filter sees the end and exits.
      proc.wait(timeout=5)
    except Exception:  # pylint: disable=broad-except  (children that still hold the pipe: leave the filter be)
      pass

  atexit.register(restore)


def _worker_suffix() -> str:
  """'' for a single process or the chief; '.worker<i>' for the other workers of a multi-worker run (TF_CONFIG)."""
  try:
    config = json.loads(os.environ.get('TF_CONFIG', '') or '{}')
    task = config.get('task', {})
    kind, index = task.get('type', 'worker'), int(task.get('index', 0) or 0)
  except (ValueError, AttributeError, TypeError):
    return ''
  has_chief = 'chief' in (config.get('cluster') or {})
  return '' if kind == 'chief' or (kind == 'worker' and index == 0 and not has_chief) else f'.{kind}{index}'


def install(model_dir: Optional[str], program: str, verbosity_given: bool) -> Optional[LogFile]:
  """Quiets third-party logs and, for a local `model_dir`, adds the run's log file; returns it (None: remote).

  Without `--verbosity`, stderr shows warnings and errors only while the log file gets everything from INFO up.
  """
  global _current
  from absl import logging  # pylint: disable=g-import-not-at-top
  set_environment_defaults()
  set_matplotlib_config_dir()
  quiet_tfds()
  handler = logging.get_absl_handler()
  if not verbosity_given:
    handler.setLevel(py_logging.WARNING)  # stderr: warnings and errors only (stdout carries the progress).
  if not model_dir or '://' in model_dir:
    _current = None
    if not verbosity_given:
      logging.set_verbosity(logging.WARNING)
    return None
  if not verbosity_given:
    logging.set_verbosity(logging.INFO)  # The logger passes INFO on; the stderr handler keeps its WARNING level.
  absl_logger = py_logging.getLogger('absl')
  for old in [h for h in absl_logger.handlers if isinstance(h, LogFile)]:  # A second run in the same process.
    absl_logger.removeHandler(old)
  log_file = LogFile(model_dir, program + _worker_suffix())
  absl_logger.addHandler(log_file)
  _current = log_file
  return log_file


def current() -> Optional[LogFile]:
  """The log file `install` added in this process, if any."""
  return _current
