r"""Speed and memory of L2P training and evaluation for a given experiment: prints a table, writes JSON. Not a test.

    .venv/bin/python benchmarks/l2p_benchmark.py --models=B/16 --precisions=float32 --xla=off \
        --backbone_copies=1,2 --json_out=/tmp/l2p_bench.json
    .venv/bin/python benchmarks/l2p_benchmark.py --models=tiny,Ti/16,S/16,B/16 --precisions=float32,mixed_bfloat16 \
        --xla=off,on                                          # the full grid (B/16 rows take minutes each on 2 cores)

The model, prompt pool, optimizer and trainer are the product's own (`--gin_file` experiment + overlays,
`--gin_bindings`; default Split CIFAR-100 L2P: M=10, Lp=10, N=4), with the ViT variant and image size of each row
bound on top. Each row (model x precision x XLA x backbone copies) runs in its own subprocess, so its peak host
memory is its own; the parent collects one JSON object per row. Per row, after warm-up, timed rounds interleave

  * the training step (`L2PTrainer`, one step per call, synchronised by reading the loss; task index changed after
    warm-up, so `traces` shows the step is not retraced for a new task),
  * its parts: the query pass alone, and the prompted pass (forward + backward to prompts, keys and head, no
    optimizer),
  * a plain ViT forward pass (`vit.represent`, no prompts) on the same images, same precision and XLA setting,
  * evaluation (`model(images, training=False)`),
  * a large matrix multiply (`--matmul_size`, the compute dtype): the machine's measured peak,

and reports medians of wall-clock time. FLOPs are counted from the shapes (`l2p_tf/flops.py`: query pass + prompted
forward + backward to the prompts, matmuls only), giving the step's FLOP/s, the plain forward's FLOP/s and their
ratio (`step/fwd`), and the ratio to the matmul peak (`step/peak`). `step/fwd CPU-s` is the same ratio per
CPU-second of the process (`time.process_time`, all threads): on a machine other jobs share, load changes between
two timings move the wall-clock ratio but hardly this one. Peak host memory is the process's VmHWM, read after the
training steps alone (`host GiB (train)`, before anything else ran) and at the end; on GPU,
`tf.config.experimental.get_memory_info('GPU:0')['peak']`.

`--backbone_copies=2` builds the variant the original JAX code runs: the query pass uses a second, frozen copy of
the ViT weights (`original_vit_params`); the product always shares one copy. `--input_pipeline` (default on) adds
the input pipeline's own images/s (benchmarks/input_pipeline_benchmark.py).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

_GIN_FILE = flags.DEFINE_multi_string('gin_file', ['experiments/cifar100_l2p.gin'],
                                      'Experiment gin file(s), relative to gin_configs/ or absolute.')
_GIN_BINDINGS = flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings.')
_MODELS = flags.DEFINE_list('models', ['tiny', 'Ti/16', 'S/16', 'B/16'], 'ViT variants.')
_PRECISIONS = flags.DEFINE_list('precisions', ['float32', 'mixed_bfloat16'], 'float32 | mixed_bfloat16.')
_XLA = flags.DEFINE_list('xla', ['off', 'on'], "jit_compile of the step functions: off | on | auto (the trainer's "
                         "per-device default, precision.resolve_jit_compile).")
_COPIES = flags.DEFINE_list('backbone_copies', ['1'], '1 (shared weights) | 2 (separate frozen query copy).')
_BATCH = flags.DEFINE_integer('batch_size', 16, 'Images per step (per replica; one replica).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', None, 'Input side; default 224, and 32 for the tiny model.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Timed rounds (each times every function once); medians are reported.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed calls of each function first (the first one compiles).')
_MATMUL = flags.DEFINE_integer('matmul_size', 4096, 'Side of the square matmul that measures the peak.')
_INPUT = flags.DEFINE_bool('input_pipeline', True, "Also measure the input pipeline's images/s on its own.")
_JSON = flags.DEFINE_string('json_out', None, 'Write every result here as JSON.')
_NOTE = flags.DEFINE_string('note', '', 'Free text stored in the JSON (e.g. what else ran on the machine).')
_WORKER = flags.DEFINE_string('worker', None, 'Internal: run one row (a JSON config) and print its JSON result.')

RESULT_PREFIX = 'L2P_BENCHMARK_RESULT '


def load_average() -> list[float]:
  return [round(x, 2) for x in os.getloadavg()]


def peak_host_gib() -> float:
  """This process's peak resident memory (VmHWM), GiB."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 2 ** 20
  import resource  # pylint: disable=g-import-not-at-top
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def host_rss_gib() -> float:
  """This process's resident memory now (VmRSS), GiB."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) / 2 ** 20
  return float('nan')


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _time_call(fn, wall, cpu):
  """Appends the wall-clock and the process CPU seconds (all threads) of one call of `fn`."""
  start, start_cpu = time.perf_counter(), time.process_time()
  fn()
  wall.append(time.perf_counter() - start)
  cpu.append(time.process_time() - start_cpu)


def run_row(cfg: dict) -> dict:
  """Builds the model of one row and measures it (see the module docstring)."""
  import gin  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from l2p_tf import flops as flops_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf import gin_utils  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import config as config_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import precision as precision_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

  load_before = load_average()
  variant, size, batch = cfg['model'], cfg['image_size'], cfg['batch_size']
  xla = {'on': True, 'off': False}.get(cfg['xla'], cfg['xla'])
  gin_utils.parse(cfg['gin_files'], list(cfg['gin_bindings']) + [
      f"vit.VisionTransformer.variant = '{variant}'", f'IMAGE_SIZE = {size}'])

  gpus = tf.config.list_logical_devices('GPU')
  device = 'GPU:0' if gpus else 'CPU:0'
  strategy = tf.distribute.OneDeviceStrategy(f'/{device.lower()}')
  # The engine's build recipe (no data read), as every tool builds.
  spec = gin.get_configurable(experiment_lib.Experiment)()
  built = experiment_lib.build(spec, config_lib.Training(global_batch_size=batch, precision=cfg['precision']),
                               strategy=strategy)
  method, policy = built.method, built.policy_name
  net, backbone, num_classes = method.model, method.backbone, built.benchmark.num_classes
  with strategy.scope(), precision_lib.policy_scope(cfg['precision'], strategy):
    opt = spec.optimizer(global_batch_size=batch)
    opt.build(method.trainable_variables)
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False)
    task_index = tf.Variable(0, dtype=tf.int32, trainable=False)
    if cfg['backbone_copies'] == 2:
      # The original's `original_vit_params`: a second, frozen copy of the backbone for the query pass only.
      query_vit = spec.backbone()
      for dst, src in zip(query_vit.weights, backbone.weights):
        dst.assign(src)
      query_vit.trainable = False

      def two_copy_query_pass(images):
        images = tf.cast(images, net.compute_dtype)
        query = tf.cast(query_vit.encode(query_vit.embed(images), training=False)[:, 0], tf.float32)
        return {'tokens': tf.stop_gradient(backbone.embed(images)), 'query': tf.stop_gradient(query)}
      net.query_pass = two_copy_query_pass
  gin.clear_config()
  rss_after_build = host_rss_gib()  # Weights (one or two backbone copies) + the runtime, before any step.
  trainer = trainer_lib.Trainer(
      strategy=strategy, method=method, optimizer=opt, global_step=global_step, task_index=task_index,
      global_batch_size=batch, grad_clip_norm=1.0, jit_compile=xla)
  xla = trainer.jit_compile  # 'auto' resolved, for the other functions too.

  rng = np.random.default_rng(0)
  images = tf.constant(rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32))
  labels = tf.constant(rng.integers(0, 10, batch).astype(np.int32))
  mask = np.zeros((batch, num_classes), bool)
  mask[:, :10] = True
  data = {'image': images, 'label': labels, 'label_mask': tf.constant(mask)}
  trainer.train_dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(data).repeat())

  def train_step():
    float(trainer.train(tf.constant(1, tf.int32))['loss'])

  compute_dtype = tf.as_dtype(net.compute_dtype)
  with tf.device(device):
    @tf.function(jit_compile=xla)
    def query_fn(x):
      return net.query_pass(x)['query']

    @tf.function(jit_compile=xla)
    def prompted_only_fn(x, y, m, tokens, query):
      return _prompted({'tokens': tokens, 'query': query}, x, y, m)

    def _prompted(qp, x, y, m):
      variables = net.trainable_variables
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(variables)
        out = net(x, task_index=task_index, training=True, query_pass=qp)
        ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=tf.where(m, out['logits'], -1e9)))
        loss = ce - out['reduce_sim']
      return tf.linalg.global_norm(tape.gradient(loss, variables))

    @tf.function(jit_compile=xla)
    def forward_fn(x):
      return backbone.represent(tf.cast(x, compute_dtype))

    @tf.function(jit_compile=xla)
    def eval_fn(x):
      return net(x, training=False)['logits']

    @tf.function(jit_compile=xla)
    def matmul_fn(a, b):
      return tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32))

  # Training first, alone: its peak memory is read before anything else runs.
  if gpus:
    tf.config.experimental.reset_memory_stats('GPU:0')
  t0 = time.perf_counter()
  train_step()  # Traces and compiles.
  first_step_s = time.perf_counter() - t0
  for _ in range(cfg['warmup'] - 1):
    train_step()
  task_index.assign(1)  # A new task: the step must not be traced again.
  train_step()
  peak_train_gib = peak_host_gib()
  gpu_peak_train = tf.config.experimental.get_memory_info('GPU:0')['peak'] / 2 ** 30 if gpus else None

  with tf.device(device):
    # The prompted pass alone takes the query pass's result as an input: computed once here.
    qp_fixed = {k: tf.identity(v) for k, v in net.query_pass(images).items()}
    n = cfg['matmul_size']
    mat_a = tf.constant(rng.standard_normal((n, n)).astype(np.float32) / np.sqrt(n), dtype=compute_dtype)
    mat_b = tf.constant(rng.standard_normal((n, n)).astype(np.float32) / np.sqrt(n), dtype=compute_dtype)
  sync = lambda t: float(tf.reduce_sum(tf.cast(t, tf.float32)))  # pylint: disable=unnecessary-lambda-assignment
  timed = {
      'step': train_step,
      'query': lambda: sync(query_fn(images)),
      'prompted': lambda: sync(prompted_only_fn(images, labels, data['label_mask'], qp_fixed['tokens'],
                                                qp_fixed['query'])),
      'forward': lambda: sync(forward_fn(images)),
      'eval': lambda: sync(eval_fn(images)),
      'matmul': lambda: sync(matmul_fn(mat_a, mat_b)),
  }
  for name, fn in timed.items():
    if name != 'step':
      for _ in range(cfg['warmup']):
        fn()
  times = {name: [] for name in timed}
  cpu_times = {name: [] for name in timed}
  for _ in range(cfg['rounds']):
    for name, fn in timed.items():
      _time_call(fn, times[name], cpu_times[name])
  med = {name: statistics.median(v) for name, v in times.items()}
  med_cpu = {name: statistics.median(v) for name, v in cpu_times.items()}

  config = backbone.config
  step_flops = flops_lib.l2p_step_flops(config, size, net.num_prompt_tokens)
  fwd_flops = flops_lib.forward_flops(config, size)
  step_rate = step_flops.total * batch / med['step']
  fwd_rate = fwd_flops * batch / med['forward']
  peak_rate = 2 * n ** 3 / med['matmul']
  # The same ratios per CPU-second of this process: robust to other processes taking the cores (a shared machine).
  step_rate_cpu = step_flops.total * batch / med_cpu['step']
  fwd_rate_cpu = fwd_flops * batch / med_cpu['forward']
  peak_rate_cpu = 2 * n ** 3 / med_cpu['matmul']
  trainer.train_dataset = None  # Frees the iterator now, not in the cycle collector (see engine/loop.py).
  return {
      'model': variant, 'image_size': size, 'batch_size': batch, 'precision': policy, 'xla': cfg['xla'],
      'backbone_copies': cfg['backbone_copies'], 'device': device,
      'device_name': (tf.config.experimental.get_device_details(tf.config.list_physical_devices('GPU')[0]).get(
          'device_name', 'GPU') if gpus else cpu_model()),
      'train_images_per_s': batch / med['step'],
      'step_ms': 1e3 * med['step'], 'query_ms': 1e3 * med['query'], 'prompted_ms': 1e3 * med['prompted'],
      'other_ms': 1e3 * (med['step'] - med['query'] - med['prompted']),
      'first_step_s': first_step_s,
      'eval_images_per_s': batch / med['eval'], 'forward_images_per_s': batch / med['forward'],
      'step_gflop_per_image': step_flops.total / 1e9, 'query_gflop_per_image': step_flops.query / 1e9,
      'prompted_gflop_per_image': step_flops.prompted / 1e9, 'forward_gflop_per_image': fwd_flops / 1e9,
      'step_gflops': step_rate / 1e9, 'forward_gflops': fwd_rate / 1e9, 'matmul_peak_gflops': peak_rate / 1e9,
      'step_vs_forward': step_rate / fwd_rate, 'step_vs_peak': step_rate / peak_rate,
      'forward_vs_peak': fwd_rate / peak_rate, 'matmul_size': n,
      'step_vs_forward_cpu_time': step_rate_cpu / fwd_rate_cpu, 'step_vs_peak_cpu_time': step_rate_cpu / peak_rate_cpu,
      'step_gflop_per_cpu_s': step_rate_cpu / 1e9, 'forward_gflop_per_cpu_s': fwd_rate_cpu / 1e9,
      'matmul_gflop_per_cpu_s': peak_rate_cpu / 1e9,
      'host_gib_after_build': rss_after_build, 'peak_host_gib_training': peak_train_gib, 'peak_host_gib': peak_host_gib(),
      'peak_gpu_gib_training': gpu_peak_train,
      'peak_gpu_gib': tf.config.experimental.get_memory_info('GPU:0')['peak'] / 2 ** 30 if gpus else None,
      'train_step_traces': trainer.trace_count, 'rounds': cfg['rounds'],
      'times_s': {k: [round(x, 4) for x in v] for k, v in times.items()},
      'cpu_times_s': {k: [round(x, 4) for x in v] for k, v in cpu_times.items()},
      'load_average_before': load_before, 'load_average_after': load_average(),
      'trainable_params': int(sum(np.prod(v.shape) for v in net.trainable_variables)),
      'num_prompt_tokens': net.num_prompt_tokens,
  }


def run_input_pipeline(cfg: dict) -> dict:
  import input_pipeline_benchmark  # pylint: disable=g-import-not-at-top
  rows = input_pipeline_benchmark.measure(global_batch_size=cfg['global_batch_size'], image_size=cfg['image_size'],
                                          warmup=3, batches=cfg['batches'])
  return {'global_batch_size': cfg['global_batch_size'], 'image_size': cfg['image_size'],
          'rows': [{'pipeline': k, 'images_per_s': v} for k, v in rows], 'load_average_after': load_average()}


def _worker(cfg: dict) -> None:
  result = run_input_pipeline(cfg) if cfg.get('kind') == 'input_pipeline' else run_row(cfg)
  print(RESULT_PREFIX + json.dumps(result), flush=True)


def _spawn(cfg: dict) -> dict:
  """Runs one configuration in a fresh Python process (its own peak memory) and returns its JSON result."""
  cmd = [sys.executable, os.path.abspath(__file__), '--worker=' + json.dumps(cfg)]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
  for line in proc.stdout.splitlines():
    if line.startswith(RESULT_PREFIX):
      return json.loads(line[len(RESULT_PREFIX):])
  raise RuntimeError(f'benchmark worker failed (exit {proc.returncode}) for {cfg}:\n{proc.stderr[-4000:]}')


COLUMNS = [
    ('model', 'model', '{}'), ('px', 'image_size', '{}'), ('batch', 'batch_size', '{}'), ('precision', 'precision',
                                                                                          '{}'),
    ('XLA', 'xla', '{}'), ('copies', 'backbone_copies', '{}'), ('train img/s', 'train_images_per_s', '{:.2f}'),
    ('step ms', 'step_ms', '{:.0f}'), ('query ms', 'query_ms', '{:.0f}'), ('prompted ms', 'prompted_ms', '{:.0f}'),
    ('eval img/s', 'eval_images_per_s', '{:.2f}'), ('fwd img/s', 'forward_images_per_s', '{:.2f}'),
    ('step GFLOP/s', 'step_gflops', '{:.0f}'), ('fwd GFLOP/s', 'forward_gflops', '{:.0f}'),
    ('matmul GFLOP/s', 'matmul_peak_gflops', '{:.0f}'), ('step/fwd', 'step_vs_forward', '{:.0%}'),
    ('step/peak', 'step_vs_peak', '{:.0%}'), ('step/fwd CPU-s', 'step_vs_forward_cpu_time', '{:.0%}'),
    ('host GiB (built)', 'host_gib_after_build', '{:.2f}'), ('host GiB (train)', 'peak_host_gib_training', '{:.2f}'), ('host GiB', 'peak_host_gib', '{:.2f}'),
    ('GPU GiB', 'peak_gpu_gib', '{:.2f}'), ('traces', 'train_step_traces', '{}'),
]


def format_table(rows: list[dict]) -> str:
  lines = ['| ' + ' | '.join(c[0] for c in COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
  for r in rows:
    cells = ['-' if r.get(key) is None else fmt.format(r[key]) for _, key, fmt in COLUMNS]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv):
  del argv
  if _WORKER.value:
    _worker(json.loads(_WORKER.value))
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  machine = {'cpu': cpu_model(), 'cpu_cores': os.cpu_count(), 'tensorflow': tf.__version__,
             'platform': platform.platform(), 'load_average_start': load_average(),
             'date': time.strftime('%Y-%m-%d %H:%M:%S'), 'note': _NOTE.value}
  rows = []
  for variant in _MODELS.value:
    size = _IMAGE_SIZE.value or (32 if variant == 'tiny' else 224)
    for precision in _PRECISIONS.value:
      for xla in _XLA.value:
        for copies in _COPIES.value:
          cfg = {'model': variant, 'image_size': size, 'batch_size': _BATCH.value, 'precision': precision,
                 'xla': xla, 'backbone_copies': int(copies), 'rounds': _ROUNDS.value, 'warmup': _WARMUP.value,
                 'matmul_size': _MATMUL.value, 'gin_files': list(_GIN_FILE.value),
                 'gin_bindings': list(_GIN_BINDINGS.value)}
          print(f'running {variant} {size}px batch {_BATCH.value} {precision} XLA {xla} copies {copies} ...',
                flush=True)
          rows.append(_spawn(cfg))
          print(format_table(rows[-1:]).splitlines()[-1], flush=True)
  pipeline = None
  if _INPUT.value:
    size = _IMAGE_SIZE.value or 224
    pipeline = _spawn({'kind': 'input_pipeline', 'global_batch_size': 128, 'image_size': size, 'batches': 20})
  machine['load_average_end'] = load_average()
  print(f'\nL2P benchmark: {machine["cpu"]}, {machine["cpu_cores"]} cores visible, TensorFlow {machine["tensorflow"]}'
        f', load average at start {machine["load_average_start"]}, at end {machine["load_average_end"]}')
  print(f'experiment: {" + ".join(_GIN_FILE.value)} {" ".join(_GIN_BINDINGS.value)}')
  if rows:
    print(format_table(rows))
  if pipeline:
    print(f'\nInput pipeline alone (global batch {pipeline["global_batch_size"]}, {pipeline["image_size"]}px):')
    for r in pipeline['rows']:
      print(f'| {r["pipeline"]} | {r["images_per_s"]:.0f} images/s |')
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump({'machine': machine, 'rows': rows, 'input_pipeline': pipeline}, f, indent=1)
    print(f'\nwrote {_JSON.value}')


if __name__ == '__main__':
  app.run(main)
