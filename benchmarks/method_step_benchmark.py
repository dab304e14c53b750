r"""Training-step and evaluation throughput of each prompt method, built through the engine. Not a test.

    .venv/bin/python benchmarks/method_step_benchmark.py --model=Ti/16 --image_size=224 \
        --experiments=cifar100_l2p,cifar100_dualprompt,cifar100_coda_prompt,cifar100_l2p_plus_plus

Each experiment runs in its own subprocess, one after the other: its gin files (gin_configs/experiments/NAME.gin) with
the ViT variant and image size bound on top, the engine's build recipe (no data read), the engine's `Trainer` (one
step per call, gradient clip over all parameters as base.gin) on a fixed batch of random images, and the method's
`predict`. Reports medians of wall-clock and process-CPU seconds (the CPU seconds move less when other processes
share the cores) and the load average before and after.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

_EXPERIMENTS = flags.DEFINE_list(
    'experiments', ['cifar100_l2p', 'cifar100_dualprompt', 'cifar100_coda_prompt', 'cifar100_l2p_plus_plus'],
    'Experiment gin names (gin_configs/experiments/NAME.gin).')
_MODEL = flags.DEFINE_string('model', 'Ti/16', 'ViT variant.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Input side.')
_BATCH = flags.DEFINE_integer('batch_size', 16, 'Images per step (one replica).')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Timed calls of each function (medians reported).')
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed calls first (the first one traces).')
_WORKER = flags.DEFINE_string('worker', None, 'Internal: run one experiment (JSON config), print its JSON result.')

RESULT_PREFIX = 'METHOD_BENCHMARK_RESULT '


def _timed(fn, rounds):
  wall, cpu = [], []
  for _ in range(rounds):
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return statistics.median(wall), statistics.median(cpu)


def run_one(cfg: dict) -> dict:
  """Builds one experiment's method and times its training step and its prediction."""
  import gin  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from l2p_tf import gin_utils  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import config as config_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

  load_before = [round(x, 2) for x in os.getloadavg()]
  batch, size = cfg['batch_size'], cfg['image_size']
  gin_utils.parse([f"experiments/{cfg['experiment']}.gin"], [
      f"vit.VisionTransformer.variant = '{cfg['model']}'", f'IMAGE_SIZE = {size}'])
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  spec = gin.get_configurable(experiment_lib.Experiment)()
  built = experiment_lib.build(spec, config_lib.Training(global_batch_size=batch, precision='float32'),
                               strategy=strategy)
  method = built.method
  with strategy.scope():
    opt = spec.optimizer(global_batch_size=batch)
    opt.build(method.trainable_variables)
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False)
    task_index = tf.Variable(0, dtype=tf.int32, trainable=False)
  gin.clear_config()
  method.begin_task(0)
  trainer = trainer_lib.Trainer(strategy=strategy, method=method, optimizer=opt, global_step=global_step,
                                task_index=task_index, global_batch_size=batch, grad_clip_norm=1.0,
                                grad_clip_scope='all')
  rng = np.random.default_rng(0)
  images = tf.constant(rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32))
  mask = np.zeros((batch, built.benchmark.num_classes), bool)
  mask[:, :10] = True
  data = {'image': images, 'label': tf.constant(rng.integers(0, 10, batch).astype(np.int32)),
          'label_mask': tf.constant(mask)}
  trainer.train_dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(data).repeat())
  selection = method.selections[0]
  predict = tf.function(lambda x: method.predict(x, selection=selection)['logits'])

  def step():
    float(trainer.train(tf.constant(1, tf.int32))['loss'])

  def evaluate():
    float(tf.reduce_sum(predict(images)))

  for _ in range(cfg['warmup']):
    step()
    evaluate()
  step_s, step_cpu = _timed(step, cfg['rounds'])
  eval_s, eval_cpu = _timed(evaluate, cfg['rounds'])
  trainer.train_dataset = None
  return {**cfg, 'method': method.name, 'describe': method.describe(), 'step_s': step_s, 'step_cpu_s': step_cpu,
          'train_img_per_s': batch / step_s, 'eval_s': eval_s, 'eval_cpu_s': eval_cpu,
          'eval_img_per_s': batch / eval_s, 'load_avg': [load_before, [round(x, 2) for x in os.getloadavg()]]}


def main(argv):
  del argv
  if _WORKER.value:
    print(RESULT_PREFIX + json.dumps(run_one(json.loads(_WORKER.value))), flush=True)
    return
  rows = []
  for name in _EXPERIMENTS.value:
    cfg = {'experiment': name, 'model': _MODEL.value, 'image_size': _IMAGE_SIZE.value,
           'batch_size': _BATCH.value, 'rounds': _ROUNDS.value, 'warmup': _WARMUP.value}
    out = subprocess.run([sys.executable, os.path.abspath(__file__), f'--worker={json.dumps(cfg)}'],
                         capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
      print(f'{name}: failed\n{out.stderr[-3000:]}', file=sys.stderr)
      continue
    rows.append(json.loads(lines[-1][len(RESULT_PREFIX):]))
  print('| experiment | model | px | batch | train img/s | step s | step CPU-s | eval img/s | eval s | load avg |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    load = f"{r['load_avg'][0][0]}-{r['load_avg'][1][0]}"
    print(f"| {r['experiment']} | {r['model']} | {r['image_size']} | {r['batch_size']} | "
          f"{r['train_img_per_s']:.2f} | {r['step_s']:.3f} | {r['step_cpu_s']:.3f} | {r['eval_img_per_s']:.2f} | "
          f"{r['eval_s']:.3f} | {load} |")
  for r in rows:
    print(f"{r['experiment']}: {r['describe']}")


if __name__ == '__main__':
  app.run(main)
