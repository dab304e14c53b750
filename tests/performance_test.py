"""Performance contracts (no timings: benchmarks/l2p_benchmark.py measures speed and memory).

The query pass outside the tape changes nothing, the tape watches only prompts, keys and head, the XLA step is traced
once for a whole run, mixed bfloat16 keeps its float32 islands and loads checkpoints into float32 variables, mixed
precision ends within 1 point of float32 on a learnable task, the FLOP counter matches hand counts, and the benchmark
script runs and writes the fields the docs quote.
"""

import functools
import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import tf_keras

from l2p_tf import flops
from l2p_tf import gin_utils
from l2p_tf import optimizers
from l2p_tf.engine import precision
from l2p_tf.engine import loop
from l2p_tf.engine import preemption
from l2p_tf.engine import config
from l2p_tf.engine import experiment
from l2p_tf.engine import trainer as trainer_lib
from l2p_tf.methods import l2p as l2p_method
from l2p_tf.checkpoints import npz_loader
from l2p_tf.data import benchmark as benchmark_lib
from l2p_tf.data import pipelines
from l2p_tf.data import segmented
from l2p_tf.data import sources
from l2p_tf.models import l2p_model
from l2p_tf.models import prompt_pool as prompt_pool_lib
from l2p_tf.models import vit as vit_lib
from tests import test_util


def tiny_model(num_classes=10, num_tasks=2):
  vit = vit_lib.VisionTransformer(variant='tiny', image_size=32)
  pool = prompt_pool_lib.PromptPool(embed_dim=vit.hidden_size, pool_size=6, prompt_length=3, top_k=2,
                                    num_tasks=num_tasks, prompt_init='uniform_pm1', key_init='uniform_pm1')
  return l2p_model.L2PModel(vit=vit, num_classes=num_classes, prompt_pool=pool)


def images(batch=8, seed=0):
  return tf.constant(np.random.default_rng(seed).uniform(size=(batch, 32, 32, 3)).astype(np.float32))


@pytest.fixture
def float32_policy():
  yield
  tf_keras.mixed_precision.set_global_policy('float32')


def test_query_pass_outside_the_tape_gives_identical_outputs_and_gradients():
  model = tiny_model()
  rng = np.random.default_rng(1)
  model.head.kernel.assign(rng.standard_normal(model.head.kernel.shape).astype(np.float32))
  x, task = images(), tf.Variable(1)
  results = []
  for separate in (False, True):
    qp = model.query_pass(x) if separate else None
    with tf.GradientTape() as tape:
      out = model(x, task_index=task, training=True, **({'query_pass': qp} if separate else {}))
      loss = tf.reduce_sum(out['logits'] ** 2) - out['reduce_sim']
    grads = tape.gradient(loss, model.trainable_variables)
    results.append((out, grads))
  (a, ga), (b, gb) = results
  for key in ('logits', 'reduce_sim', 'prompt_ids', 'query'):
    np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
  for g1, g2 in zip(ga, gb):
    np.testing.assert_array_equal(tf.convert_to_tensor(g1).numpy(), tf.convert_to_tensor(g2).numpy())


def test_trainer_tape_watches_only_prompts_keys_and_head(monkeypatch):
  watched = []

  class RecordingTape(tf.GradientTape):

    def __exit__(self, *args):
      super().__exit__(*args)
      watched.append({v.ref() for v in self.watched_variables()})

  monkeypatch.setattr(tf, 'GradientTape', RecordingTape)
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  with strategy.scope():
    method = l2p_method.L2P(prompt_pool=None, model=lambda **_: tiny_model())
    model = method.build(backbone=lambda: None, num_classes=10, num_tasks=2)
    opt = optimizers.build_optimizer(global_batch_size=8)
    opt.build(model.trainable_variables)
    step, task = tf.Variable(0, dtype=tf.int64), tf.Variable(0)
  trainer = trainer_lib.Trainer(strategy=strategy, method=method, optimizer=opt, global_step=step,
                                task_index=task, global_batch_size=8)
  mask = np.zeros((8, 10), bool)
  mask[:, :5] = True
  data = {'image': images(), 'label': tf.constant(np.arange(8) % 5, tf.int32), 'label_mask': tf.constant(mask)}
  trainer.train_dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(data).repeat())
  try:
    trainer.train(tf.constant(2))
  finally:
    trainer.train_dataset = None  # Not left to the cycle collector (see engine/loop.py).
  assert watched, 'the trainer opened no GradientTape'
  expected = {v.ref() for v in model.prompt_pool.trainable_weights + model.head.trainable_weights}
  assert all(w == expected for w in watched), [sorted(v.deref().name for v in w) for w in watched]
  assert len(model.vit.trainable_variables) == 0 and trainer.trace_count == 1


def test_xla_train_step_is_traced_once_for_the_whole_run(tmp_path):
  gin_utils.parse(['experiments/cifar100_l2p.gin', 'local_tiny.gin'], ['config.Training.jit_compile = True'])
  try:
    with tfds.testing.mock_data(num_examples=1000):
      res = gin.get_configurable(loop.run)(model_dir=str(tmp_path / 'run'),
                                                strategy=tf.distribute.OneDeviceStrategy('/cpu:0'),
                                                data_dir=str(tmp_path / 'tfds'))
  finally:
    gin.clear_config()
  assert res['complete'] and res['tasks_done'] == 2
  assert res['train_step_traces_this_process'] == 1
  assert res['precision'] == 'float32'  # 'auto' on CPU.


def test_precision_resolution():
  cpu = tf.distribute.OneDeviceStrategy('/cpu:0')
  assert precision.resolve('auto', cpu) == 'float32'
  assert precision.resolve('auto', test_util.mirrored_strategy()) == 'float32'
  assert precision.resolve('mixed_bfloat16', cpu) == 'mixed_bfloat16'
  assert precision.resolve('float32') == 'float32'
  with pytest.raises(ValueError, match="'fp16'"):
    precision.resolve('fp16')
  assert precision.resolve_jit_compile('auto', cpu) is True  # float32 on CPU: XLA needs fewer CPU-seconds.
  assert precision.resolve_jit_compile('auto', cpu, 'float32') is True
  assert precision.resolve_jit_compile('auto', cpu, 'mixed_bfloat16') is False
  assert precision.resolve_jit_compile(True, cpu) is True
  with pytest.raises(ValueError, match="'yes'"):
    precision.resolve_jit_compile('yes', cpu)


def test_mixed_bfloat16_keeps_float32_variables_and_islands(tmp_path, float32_policy):
  del float32_policy
  path = str(tmp_path / 'tiny.npz')
  arrays = test_util.write_fake_npz(path, variant='tiny', image_size=32)
  models = {}
  for name in ('float32', 'mixed_bfloat16'):
    with precision.policy_scope(name) as policy:
      assert policy == name
      models[name] = tiny_model()
    npz_loader.load_vit_npz(models[name].vit, path)
  assert tf_keras.mixed_precision.global_policy().name == 'float32'  # Restored after the scope.
  mixed, full = models['mixed_bfloat16'], models['float32']
  assert all(v.dtype == tf.float32 for v in mixed.weights)
  for key, var in mixed.vit.npz_variables().items():
    if key in arrays:
      np.testing.assert_array_equal(tf.convert_to_tensor(var).numpy(), arrays[key].astype(np.float32))
  assert mixed.vit.blocks[0].compute_dtype == 'bfloat16' and mixed.vit.embedding.compute_dtype == 'bfloat16'
  assert mixed.head.compute_dtype == 'float32' and mixed.prompt_pool.compute_dtype == 'float32'
  for v_full, v_mixed in zip(full.prompt_pool.weights + full.head.weights,
                             mixed.prompt_pool.weights + mixed.head.weights):
    v_mixed.assign(v_full)
  x = images()
  qp = mixed.query_pass(x)
  assert qp['query'].dtype == tf.float32 and qp['tokens'].dtype == tf.bfloat16
  with tf.GradientTape() as tape:
    out = mixed(x, task_index=tf.Variable(0), training=True, query_pass=qp)
    loss = tf.reduce_sum(out['logits']) - out['reduce_sim']
  assert out['logits'].dtype == tf.float32 and out['reduce_sim'].dtype == tf.float32
  assert all(g.dtype == tf.float32 for g in tape.gradient(loss, mixed.trainable_variables))
  # bfloat16 has 8 bits of mantissa: the query agrees with float32's to about 1%.
  ref = full.query_pass(x)['query'].numpy()
  np.testing.assert_allclose(qp['query'].numpy(), ref, atol=0.05 * np.abs(ref).max())


def color_benchmark(*, num_classes=10, train_per_class=150, eval_per_class=60, seed=0, data_dir=None,
                    manual_dir=None):
  """Two tasks of five classes whose images are noisy, shifted copies of a class colour (learnable, not trivial)."""
  del data_dir, manual_dir
  rng = np.random.default_rng(seed)
  palette = rng.uniform(70, 185, (num_classes, 3))

  def make(per_class):
    labels = np.repeat(np.arange(num_classes), per_class)
    shift = rng.normal(0, 22, (len(labels), 1, 1, 3))  # Whole-image colour shift: classes overlap.
    noise = rng.normal(0, 30, (len(labels), 32, 32, 3))
    return np.clip(palette[labels][:, None, None] + shift + noise, 0, 255).astype(np.uint8), labels

  train_x, train_y = make(train_per_class)
  eval_x, eval_y = make(eval_per_class)
  half = num_classes // 2
  tasks = [benchmark_lib.Task(index=t, name=f'task_{t}', classes=tuple(range(t * half, (t + 1) * half)))
           for t in range(2)]

  def part(x, y, t):
    return lambda: sources.ArrayPart(images=x, labels=y, indices=np.flatnonzero(
        np.isin(y, tasks[t].classes)))

  return segmented.SegmentedBenchmark(
      name='colors', num_classes=num_classes, class_names=[f'c{i}' for i in range(num_classes)], tasks=tasks,
      scenario='class_incremental', eval_names=[t.name for t in tasks], epochs=2,
      preprocess=pipelines.PreprocessConfig(image_size=32),
      train_parts=[part(train_x, train_y, t) for t in range(2)], eval_parts=[part(eval_x, eval_y, t) for t in range(2)])


def test_mixed_bfloat16_final_accuracy_within_one_point_of_float32(tmp_path, float32_policy):
  del float32_policy
  finals = {}
  for name in ('float32', 'mixed_bfloat16'):
    spec = experiment.Experiment(
        benchmark=color_benchmark, backbone=functools.partial(vit_lib.VisionTransformer, variant='tiny', image_size=32),
        method=functools.partial(l2p_method.L2P, prompt_pool=functools.partial(
            prompt_pool_lib.PromptPool, pool_size=10, prompt_length=5, top_k=2)),
        optimizer=functools.partial(optimizers.build_optimizer, base_learning_rate=0.03))
    res = loop.run(
        model_dir=str(tmp_path / name), strategy=tf.distribute.OneDeviceStrategy('/cpu:0'), experiment=spec,
        training=config.Training(global_batch_size=32, precision=name),
        cadence=config.Cadence(steps_per_loop=10, log_every_steps=1000))
    assert res['precision'] == name
    finals[name] = res['final']['avg_acc']
  # The task is learnt (chance: 10% over 10 classes) and not trivially solved, so 1 point is a real bound.
  assert 30 < finals['float32'] < 99, finals
  assert abs(finals['float32'] - finals['mixed_bfloat16']) < 1.0, finals


def test_flop_counts_by_hand():
  tiny = vit_lib.get_config('tiny')  # D=64, F=128, 2 layers, patch 4: 64 patches at 32px.
  per_block = 8 * 65 * 64 * 64 + 4 * 65 * 64 * 128 + 4 * 65 * 65 * 64
  assert flops.forward_flops(tiny, 32) == 2 * 64 * 48 * 64 + 2 * per_block
  step = flops.l2p_step_flops(tiny, 32, num_prompt_tokens=8)
  dense, attn = 8 * 73 * 64 * 64 + 4 * 73 * 64 * 128, 4 * 73 * 73 * 64
  assert step.query == flops.forward_flops(tiny, 32)
  assert step.prompted_forward == 2 * (dense + attn) and step.prompted_backward == 2 * (dense + 2 * attn)
  assert step.total == step.query + step.prompted_forward + step.prompted_backward
  # ViT-B/16 at 224: the usual 17.6 GMACs = 35.1 GFLOPs per image.
  assert flops.forward_flops(vit_lib.get_config('B/16'), 224) == pytest.approx(35.13e9, rel=1e-3)


def test_benchmark_script_writes_its_table_and_json(tmp_path):
  out = tmp_path / 'bench.json'
  proc = subprocess.run(
      [sys.executable, os.path.join(test_util.REPO_ROOT, 'benchmarks', 'l2p_benchmark.py'), '--models=tiny',
       '--precisions=float32', '--xla=off', '--backbone_copies=1,2', '--rounds=1', '--warmup=1',
       '--matmul_size=128', '--input_pipeline=false', f'--json_out={out}'],
      capture_output=True, text=True, check=False, cwd=test_util.REPO_ROOT, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '| model | px |' in proc.stdout and 'step/fwd' in proc.stdout
  data = json.loads(out.read_text())
  assert data['machine']['cpu_cores'] >= 1 and len(data['machine']['load_average_start']) == 3
  rows = data['rows']
  assert [r['backbone_copies'] for r in rows] == [1, 2]
  for r in rows:
    assert r['model'] == 'tiny' and r['image_size'] == 32 and r['precision'] == 'float32'
    assert r['train_step_traces'] == 1
    for key in ('train_images_per_s', 'eval_images_per_s', 'forward_images_per_s', 'query_ms', 'prompted_ms',
                'step_gflops', 'forward_gflops', 'matmul_peak_gflops', 'step_vs_forward', 'step_vs_peak',
                'peak_host_gib', 'peak_host_gib_training', 'step_vs_forward_cpu_time', 'step_vs_peak_cpu_time'):
      assert r[key] > 0, (key, r[key])
    assert r['peak_gpu_gib'] is None or r['peak_gpu_gib'] > 0
