"""Helpers for end-to-end runs in tests: a tiny experiment through the real gin files, the command line in this
process, a stop request at a given step, and a byte snapshot of a directory."""

import contextlib
import os

from absl import flags
import gin
import tensorflow as tf

from l2p_tf import gin_utils
from l2p_tf import main as main_lib
from l2p_tf.engine import loop
from l2p_tf.engine import preemption


def one_device():
  return tf.distribute.OneDeviceStrategy('/cpu:0')


def run_experiment(model_dir, experiment, bindings=(), strategy=None, data_dir=None, manual_dir=None, files_after=(),
                   **kwargs):
  """Parses experiment + local_tiny (+ files_after, + bindings) and runs engine.loop.run; clears gin afterwards."""
  files = [f'experiments/{experiment}.gin', 'local_tiny.gin', *files_after]
  gin_utils.parse(files, list(bindings))
  try:
    return gin.get_configurable(loop.run)(
        model_dir=str(model_dir), strategy=strategy or one_device(), data_dir=data_dir, manual_dir=manual_dir,
        **kwargs)
  finally:
    gin.clear_config()


def run_main(capsys, args, data=None):
  """Runs l2p_tf.main in this process; returns (exit code, stderr, stdout)."""
  argv = ['l2p_tf.main', *[str(a) for a in args]]
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
  capsys.readouterr()
  try:
    with data or contextlib.nullcontext():
      code = main_lib.main(argv[:1])
  finally:
    gin.clear_config()
    flags.FLAGS.unparse_flags()
  captured = capsys.readouterr()
  return code, captured.err, captured.out


class StopAtStep(preemption.Preemption):
  """Asks to stop once `step` steps are done (as a SIGTERM would; checked before every step and at task starts)."""

  def __init__(self, step):
    super().__init__()
    self.step = step

  def should_stop(self, step):
    return step >= self.step


def snapshot(directory):
  """{relative path: bytes} of every file under `directory`."""
  out = {}
  for root, _, files in os.walk(directory):
    for f in files:
      path = os.path.join(root, f)
      with open(path, 'rb') as fh:
        out[os.path.relpath(path, directory)] = fh.read()
  return out
