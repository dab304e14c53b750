r"""Where a training step's time goes, by TensorFlow op type: profiles a few trainer steps and prints a table. Not a test.

    .venv/bin/python benchmarks/step_profile.py --model=mini --image_size=32 --batch_size=64 --jit_compile=false

Builds the experiment (`--gin_file`, default the quickstart) through engine/experiment.py, as the runs do, with the
ViT variant, image size and batch bound on top; runs `--warmup` untimed steps, then profiles `--steps` steps with
`tf.profiler` and prints the host-side op statistics (self time per op type, the top `--top`), plus the step's
median wall time. With XLA on, the step is one cluster and the table shows the XLA ops.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

_GIN_FILE = flags.DEFINE_multi_string('gin_file', ['experiments/quickstart.gin'], 'Experiment gin file(s).')
_MODEL = flags.DEFINE_string('model', 'mini', 'ViT variant.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 32, 'Input side.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Images per step.')
_JIT = flags.DEFINE_string('jit_compile', 'false', "true | false | auto")
_STEPS = flags.DEFINE_integer('steps', 5, 'Profiled steps.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps first.')
_TOP = flags.DEFINE_integer('top', 25, 'Op types shown.')


def build_trainer(jit_compile, steps_per_loop=1):
  """The product's model, optimizer and trainer for the flags' variant / size / batch, fed one repeated batch."""
  import gin  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from l2p_tf import gin_utils  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import config as config_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

  batch, size = _BATCH.value, _IMAGE_SIZE.value
  gin_utils.parse(list(_GIN_FILE.value), [f"vit.VisionTransformer.variant = '{_MODEL.value}'",
                                          f'IMAGE_SIZE = {size}'])
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  spec = gin.get_configurable(experiment_lib.Experiment)()
  built = experiment_lib.build(spec, config_lib.Training(global_batch_size=batch, precision='float32'),
                               strategy=strategy)
  with strategy.scope():
    opt = spec.optimizer(global_batch_size=batch)
    opt.build(built.method.trainable_variables)
    trainer = trainer_lib.Trainer(
        strategy=strategy, method=built.method, optimizer=opt, global_step=tf.Variable(0, dtype=tf.int64),
        task_index=tf.Variable(0, dtype=tf.int32), global_batch_size=batch, jit_compile=jit_compile,
        steps_per_loop=steps_per_loop)
  gin.clear_config()
  rng = np.random.default_rng(0)
  mask = np.zeros((batch, built.benchmark.num_classes), bool)
  mask[:, :10] = True
  data = {'image': tf.constant(rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)),
          'label': tf.constant(rng.integers(0, 10, batch).astype(np.int32)), 'label_mask': tf.constant(mask)}
  trainer.train_dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(data).repeat())
  return trainer


def op_table(logdir: str, top: int) -> str:
  """Self time per op type from the profile in `logdir` (the profiler's 'framework_op_stats' tool)."""
  import glob  # pylint: disable=g-import-not-at-top
  from tensorflow.python.profiler.internal import _pywrap_profiler_plugin  # pylint: disable=g-import-not-at-top
  paths = glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True)
  data, _ = _pywrap_profiler_plugin.xspace_to_tools_data(paths, 'framework_op_stats', {})
  table = json.loads(data)
  table = table[0] if isinstance(table, list) else table
  cols = [c['id'] for c in table['cols']]
  rows = [dict(zip(cols, [cell.get('v') for cell in r['c']])) for r in table['rows']]
  by_type = {}
  for r in rows:
    if r.get('host_or_device') not in ('Host', 'Device', None):
      continue
    t = r.get('type') or '?'
    total = by_type.setdefault(t, [0.0, 0])
    total[0] += float(r.get('total_self_time') or 0.0)
    total[1] += int(r.get('occurrences') or 0)
  whole = sum(v[0] for v in by_type.values()) or 1.0
  lines = ['| op type | self time ms | share | occurrences |', '|---|---|---|---|']
  for t, (us, n) in sorted(by_type.items(), key=lambda kv: -kv[1][0])[:top]:
    lines.append(f'| {t} | {us / 1000:.1f} | {100 * us / whole:.1f}% | {n} |')
  return '\n'.join(lines)


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  jit = {'true': True, 'false': False}.get(_JIT.value.lower(), _JIT.value)
  trainer = build_trainer(jit)

  def step():
    float(trainer.train(tf.constant(1, tf.int32))['loss'])

  for _ in range(_WARMUP.value):
    step()
  times = []
  for _ in range(_STEPS.value):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  logdir = tempfile.mkdtemp(prefix='step_profile_')
  tf.profiler.experimental.start(logdir)
  for _ in range(_STEPS.value):
    step()
  tf.profiler.experimental.stop()
  print(f'jit_compile={jit} (resolved {trainer.jit_compile}) step median {1000 * statistics.median(times):.0f} ms '
        f'over {_STEPS.value} steps; load average {os.getloadavg()}')
  try:
    print(op_table(logdir, _TOP.value))
  except Exception as e:  # pylint: disable=broad-except
    print(f'(no op table: {e!r}); the profile is in {logdir} (TensorBoard profile plugin)')


if __name__ == '__main__':
  app.run(main)
