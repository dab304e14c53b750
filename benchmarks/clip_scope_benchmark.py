r"""Cost of clipping over all parameters: the training step with grad_clip_scope 'trainable' vs 'all'. Not a test.

    .venv/bin/python benchmarks/clip_scope_benchmark.py                        # ViT-mini @32 (b64), ViT-B/16 @224 (b16)
    .venv/bin/python benchmarks/clip_scope_benchmark.py --rows=mini:32:64 --rounds=9 --xla=on

Scope 'all' (the official clip) makes the step compute the frozen backbone's weight gradients, for the global norm
only; 'trainable' computes the prompts', keys' and head's. The backward pass through the backbone's activations is
needed either way (the prompts sit at its input), so the extra work is the weight-gradient matmuls (about a third of
the step's FLOPs at most) plus the norm over the backbone's parameters. Each row builds the product's model, optimizer
and trainer from the experiment gin (`--gin_file`, default Split CIFAR-100 L2P) with the row's ViT variant, image
size and batch, one trainer per scope sharing the model, and times single steps (synchronised by reading the loss)
in interleaved rounds after warm-up; it prints medians and writes JSON with `--json_out`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

_GIN_FILE = flags.DEFINE_multi_string('gin_file', ['experiments/cifar100_l2p.gin'], 'Experiment gin file(s).')
_ROWS = flags.DEFINE_list('rows', ['mini:32:64', 'B/16:224:16'], 'VARIANT:IMAGE_SIZE:BATCH per row.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Timed rounds (one step per scope each).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps per scope first.')
_XLA = flags.DEFINE_enum('xla', 'off', ['off', 'on'], 'jit_compile of the step.')
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Write the rows as JSON here.')

SCOPES = ('trainable', 'all')


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def run_row(variant: str, image_size: int, batch: int) -> dict:
  """Times the step with each scope for one model."""
  import gin  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from l2p_tf import gin_utils  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import clipping  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import config as config_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

  gin_utils.parse(_GIN_FILE.value, [f"vit.VisionTransformer.variant = '{variant}'", f'IMAGE_SIZE = {image_size}'])

  gpus = tf.config.list_logical_devices('GPU')
  strategy = tf.distribute.OneDeviceStrategy('/gpu:0' if gpus else '/cpu:0')
  # The engine's build recipe (no data read), as every tool builds.
  spec = gin.get_configurable(experiment_lib.Experiment)()
  built = experiment_lib.build(spec, config_lib.Training(global_batch_size=batch, precision='float32'),
                               strategy=strategy)
  bench, method, net = built.benchmark, built.method, built.method.model
  with strategy.scope():
    rng = np.random.default_rng(0)
    # A non-zero head, as after the first steps: a zero head passes no gradient back into the backbone.
    net.head.kernel.assign(0.01 * rng.standard_normal(net.head.kernel.shape).astype(np.float32))
    trainers = {}
    for scope in SCOPES:
      opt = spec.optimizer(global_batch_size=batch)
      opt.build(method.trainable_variables)
      trainers[scope] = trainer_lib.Trainer(
          strategy=strategy, method=method, optimizer=opt, global_step=tf.Variable(0, dtype=tf.int64),
          task_index=tf.Variable(0), global_batch_size=batch, grad_clip_norm=1.0, grad_clip_scope=scope,
          jit_compile=_XLA.value == 'on')
  gin.clear_config()
  mask = np.zeros((batch, bench.num_classes), bool)
  mask[:, :10] = True
  data = {'image': tf.constant(rng.uniform(0, 1, (batch, image_size, image_size, 3)).astype(np.float32)),
          'label': tf.constant(rng.integers(0, 10, batch).astype(np.int32)), 'label_mask': tf.constant(mask)}
  for t in trainers.values():
    t.train_dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(data).repeat())

  norms = {}

  def step(scope):
    out = trainers[scope].train(tf.constant(1, tf.int32))
    norms[scope] = float(out['grad_norm'])

  for scope in SCOPES:
    for _ in range(_WARMUP.value):
      step(scope)
  times = {s: [] for s in SCOPES}
  for _ in range(_ROUNDS.value):
    for scope in SCOPES:
      t0 = time.perf_counter()
      step(scope)
      times[scope].append(time.perf_counter() - t0)
  for t in trainers.values():
    t.train_dataset = None
  med = {s: statistics.median(v) for s, v in times.items()}
  return {
      'model': variant, 'image_size': image_size, 'batch_size': batch, 'xla': _XLA.value,
      'device': tf.config.experimental.get_device_details(tf.config.list_physical_devices('GPU')[0]).get(
          'device_name', 'GPU') if gpus else _cpu_model(),
      'frozen_params': int(sum(np.prod(v.shape) for v in clipping.frozen_parameters(net))),
      'trainable_params': int(sum(np.prod(v.shape) for v in net.trainable_variables)),
      'step_ms_trainable': 1e3 * med['trainable'], 'step_ms_all': 1e3 * med['all'],
      'all_over_trainable': med['all'] / med['trainable'],
      'grad_norm_trainable_last': norms['trainable'], 'grad_norm_all_last': norms['all'],
      'times_s': {s: [round(x, 4) for x in v] for s, v in times.items()}, 'rounds': _ROUNDS.value,
      'load_average_after': list(os.getloadavg()),
  }


def main(argv):
  del argv
  rows = []
  for spec in _ROWS.value:
    variant, size, batch = spec.split(':')
    rows.append(run_row(variant, int(size), int(batch)))
    r = rows[-1]
    print(f"{r['model']:>6} @{r['image_size']:<3} b{r['batch_size']:<3}  trainable {r['step_ms_trainable']:9.1f} ms  "
          f"all {r['step_ms_all']:9.1f} ms  x{r['all_over_trainable']:.2f}", flush=True)
  print()
  print('| model | image | batch | frozen params | step, scope trainable | step, scope all | all / trainable |')
  print('|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| ViT-{r['model']} | {r['image_size']} | {r['batch_size']} | {r['frozen_params'] / 1e6:.2f} M | "
          f"{r['step_ms_trainable']:.1f} ms | {r['step_ms_all']:.1f} ms | {r['all_over_trainable']:.2f} |")
  print(f"\nDevice: {rows[0]['device']}; XLA {rows[0]['xla']}; medians of {rows[0]['rounds']} interleaved rounds; "
        f"load average after: {rows[-1]['load_average_after']}")
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, 'w') as f:
      json.dump(rows, f, indent=2)


if __name__ == '__main__':
  app.run(main)
