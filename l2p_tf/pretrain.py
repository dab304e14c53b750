r"""Supervised pretraining of a ViT from scratch, ending with an export to the original `.npz` layout.

  python -m l2p_tf.pretrain --model_dir=/tmp/pretrain \
      --gin_file=gin_configs/pretrain/cifar100_50-99_mini.gin --tfds_manual_dir=../shared/data

Trains `VisionTransformer(num_classes=len(classes))` on a tfds dataset, or a class subset of one (labels become
positions in the subset), with AdamW (decoupled weight decay on kernels only), linear warm-up then cosine decay,
label smoothing, and random-resized-crop / flip / RandAugment-style augmentation (`l2p_tf/augment.py`), all gin
options of `run`. It runs on the same strategies as the continual trainer (`--strategy`), checkpoints every
`checkpoint_every_steps` and at each epoch's end, evaluates on the held-out test images of the same classes after
every epoch (TensorBoard: model_dir/train, model_dir/eval), and resumes from the newest checkpoint when rerun (the
data position follows the global step, so a resumed run sees exactly the batches of an uninterrupted one).

At the end it writes the backbone to `model_dir/<export_name>` in the layout of google-research/vision_transformer
(what `l2p_tf/checkpoints/npz_loader.py` reads; the head is included and skipped by the loader), reloads that file
into a fresh model through the npz loader, re-measures the test accuracy, and writes `model_dir/pretrain_results.json`
with both accuracies, the file's sha256 and the command.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

import l2p_tf  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from l2p_tf import cli

FLAGS = flags.FLAGS
EXPORT_DTYPES = ('float16', 'float32')


def _define_flags():
  cli.define_flags('Directory for checkpoints, summaries and the exported .npz.')


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Training augmentation: random-resized crop (area range, 3/4-4/3 aspect), flip, then RandAugment."""
  crop_area_range: tuple[float, float] = (0.35, 1.0)
  flip: bool = True
  randaugment_ops: int = 2
  randaugment_magnitude: float = 5.0


def _load_split(dataset: str, split: str, subset, *, data_dir, manual_dir):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from l2p_tf import continual  # pylint: disable=g-import-not-at-top
  from l2p_tf import input_pipeline  # pylint: disable=g-import-not-at-top
  builder = input_pipeline.get_builder(dataset, data_dir=data_dir, manual_dir=manual_dir)
  num_classes = builder.info.features['label'].num_classes
  ids = continual.parse_classes(subset, num_classes)
  images, labels = input_pipeline.load_arrays(builder, split)
  if ids is None:
    return images, labels.astype(np.int64), list(builder.info.features['label'].names)
  lut = np.full(num_classes, -1, np.int64)
  lut[ids] = np.arange(len(ids))
  new = lut[labels]
  keep = np.flatnonzero(new >= 0)
  names = builder.info.features['label'].names
  return images[keep], new[keep], [names[i] for i in ids]


def train_dataset(images, labels, input_context, *, global_batch_size: int, steps: int, seed: int, start_step: int,
                  image_size: int, augmentation: Augmentation):
  """Per-replica batches {'image', 'label'} of steps [start_step, steps) of a seeded multi-epoch plan."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from l2p_tf import augment  # pylint: disable=g-import-not-at-top
  from l2p_tf import input_pipeline  # pylint: disable=g-import-not-at-top
  from l2p_tf import preprocessing  # pylint: disable=g-import-not-at-top
  plan = input_pipeline.epoch_plan(len(labels), steps=steps, global_batch_size=global_batch_size, seed=seed, task=0)
  ctx = input_context or tf.distribute.InputContext()
  b = ctx.get_per_replica_batch_size(global_batch_size)
  per_pipeline = global_batch_size // ctx.num_input_pipelines
  cols = slice(ctx.input_pipeline_id * per_pipeline, (ctx.input_pipeline_id + 1) * per_pipeline)
  element = np.arange(steps * global_batch_size, dtype=np.int64).reshape(steps, global_batch_size)
  rows = plan[start_step:, cols].reshape(-1)
  index = element[start_step:, cols].reshape(-1)
  base = input_pipeline.seed_base(seed, 1_000_003)
  images_t, labels_t = tf.constant(images), tf.constant(labels.astype(np.int32))

  def fn(row, i):
    crop_seed, aug_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.stack([tf.constant(base, tf.int64), i]), num=2))
    image = preprocessing.train_preprocess(tf.gather(images_t, row), crop_seed, image_size=image_size,
                                           area_range=augmentation.crop_area_range, flip=augmentation.flip)
    image = augment.rand_augment(image, aug_seed, num_ops=augmentation.randaugment_ops,
                                 magnitude=augmentation.randaugment_magnitude)
    return {'image': image, 'label': tf.gather(labels_t, row)}

  ds = tf.data.Dataset.from_tensor_slices((rows, index))
  ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(b, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def eval_dataset(images, labels, input_context, *, global_batch_size: int, image_size: int):
  """Every test example once, padded to whole global batches ({'image', 'label', 'valid'})."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from l2p_tf import input_pipeline  # pylint: disable=g-import-not-at-top
  part = input_pipeline.ArrayPart(images=images, labels=labels, indices=np.arange(len(labels), dtype=np.int64))
  return input_pipeline.array_eval_dataset(part, input_context=input_context, global_batch_size=global_batch_size,
                                           preprocess=input_pipeline.PreprocessConfig(image_size=image_size))


def export_npz(vit, path: str, dtype: str = 'float16') -> str:
  """Writes every variable of `vit` under its original-checkpoint key (atomically); returns the file's sha256."""
  import io  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from l2p_tf import results as results_lib  # pylint: disable=g-import-not-at-top
  if dtype not in EXPORT_DTYPES:
    raise ValueError(f'export_dtype={dtype!r}; use one of {EXPORT_DTYPES}.')
  buf = io.BytesIO()
  np.savez(buf, **{k: v.numpy().astype(dtype) for k, v in sorted(vit.npz_variables().items())})
  data = buf.getvalue()
  results_lib.atomic_write(path, data, binary=True)
  return hashlib.sha256(data).hexdigest()


def load_classifier_npz(vit, path: str):
  """Loads an exported file into a ViT built with a head: the backbone through the strict npz loader (which skips
  the head on purpose), then the head arrays themselves."""
  from l2p_tf.checkpoints import npz_loader  # pylint: disable=g-import-not-at-top
  report = npz_loader.load_vit_npz(vit, path)
  arrays = npz_loader.read_npz(path)
  for key in ('head/kernel', 'head/bias'):
    var = vit.npz_variables()[key]
    if key not in arrays or tuple(arrays[key].shape) != tuple(var.shape):
      raise npz_loader.CheckpointError(f'{path}: {key} is missing or has the wrong shape for a {var.shape} head.')
    var.assign(arrays[key].astype(var.dtype.as_numpy_dtype))
  return report


def make_evaluator(strategy, vit) -> Callable:
  """Returns `evaluate(dataset)` -> top-1 accuracy (percent) of `vit` over a distributed dataset with a `valid` mask
  (one compiled step, traced once, reused for every evaluation)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @tf.function
  def step(batch):
    def replica(b):
      pred = tf.argmax(vit(b['image'], training=False), axis=-1, output_type=tf.int32)
      ok = tf.cast(b['valid'], tf.int32)
      return tf.reduce_sum(tf.cast(tf.equal(pred, b['label']), tf.int32) * ok), tf.reduce_sum(ok)
    correct, count = strategy.run(replica, args=(batch,))
    return (strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None))

  def evaluate(dataset) -> float:
    correct = count = 0
    for batch in dataset:
      c, n = step(batch)
      correct += int(c)
      count += int(n)
    return 100.0 * correct / max(count, 1)

  return evaluate


def run(*, model_dir: str, strategy, vit: Callable, dataset: str = 'cifar100', classes=None,
        train_split: str = 'train', test_split: str = 'test', data_dir: Optional[str] = None,
        manual_dir: Optional[str] = None, image_size: int = 32, epochs: int = 30, global_batch_size: int = 128,
        eval_batch_size: int = 500, learning_rate: float = 1e-3, weight_decay: float = 0.05,
        warmup_epochs: float = 2.0, label_smoothing: float = 0.1, grad_clip_norm: Optional[float] = 1.0,
        augmentation: Augmentation = Augmentation(), seed: int = 0, steps_per_loop: int = 50,
        checkpoint_every_steps: int = 1000, export_name: str = 'vit_pretrained.npz',
        export_dtype: str = 'float16', stop_after_step: Optional[int] = None, command: Sequence[str] = ()) -> dict:
  """Pretrains (or resumes) and exports; returns the results dict also written to `pretrain_results.json`.

  Args:
    model_dir: checkpoints (model_dir/checkpoints), summaries, the exported `.npz` and the results.
    strategy: a tf.distribute strategy.
    vit: `vit(num_classes=...)` -> a `VisionTransformer` (gin: `@vit.VisionTransformer` with variant and
      image_size bound).
    dataset: tfds name (with `manual_dir`, the local-file builders of datasets/local_files.py).
    classes: class subset ('50-99', '1,4,9' or a list; None: every class); labels become positions in it.
    train_split, test_split: tfds splits to train on and to measure the accuracy on.
    data_dir, manual_dir: tfds data and manual-download directories (command-line flags).
    image_size: network input side.
    epochs: passes over the training images.
    global_batch_size: examples per step over all replicas.
    eval_batch_size: examples per evaluation step over all replicas.
    learning_rate: AdamW peak learning rate (not scaled by the batch).
    weight_decay: decoupled weight decay on kernels (not on biases, LayerNorm, position embedding or [CLS]).
    warmup_epochs: linear warm-up from 0, then cosine decay to 0 at the last step.
    label_smoothing: cross-entropy label smoothing.
    grad_clip_norm: global-norm clipping (None or 0: off).
    augmentation: `Augmentation` options (gin: `pretrain.Augmentation.randaugment_ops = 2`, ...).
    seed: initialisation, data order and augmentation seed.
    steps_per_loop: steps per compiled loop (progress-line cadence).
    checkpoint_every_steps: checkpoint cadence (also at every epoch's end).
    export_name: file name of the exported `.npz` in model_dir.
    export_dtype: 'float16' (half the size; what the repository ships) or 'float32'.
    stop_after_step: end this invocation once the global step reaches this value, after a checkpoint (a
      time-boxed job, or a test of resuming); rerunning without it continues to the end.
    command: the command line, recorded in the results.

  Returns:
    {'test_accuracy', 'roundtrip_test_accuracy', 'npz', 'sha256', ...}; {'stopped_at_step': N} when stopped early.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbit  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  from l2p_tf import results as results_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf import train_lib  # pylint: disable=g-import-not-at-top

  wall_start = time.time()
  if export_dtype not in EXPORT_DTYPES:
    raise ValueError(f'export_dtype={export_dtype!r}; use one of {EXPORT_DTYPES}.')
  replicas = strategy.num_replicas_in_sync
  for what, value in (('global_batch_size', global_batch_size), ('eval_batch_size', eval_batch_size)):
    if value % replicas:
      raise ValueError(f'{what}={value} is not divisible by the {replicas} replicas; use a multiple of {replicas}.')
  chief = train_lib.is_chief(strategy)
  tf_keras.utils.set_random_seed(seed)

  x_train, y_train, class_names = _load_split(dataset, train_split, classes, data_dir=data_dir, manual_dir=manual_dir)
  x_test, y_test, _ = _load_split(dataset, test_split, classes, data_dir=data_dir, manual_dir=manual_dir)
  num_classes = len(class_names)
  steps_per_epoch = len(y_train) // global_batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'{len(y_train)} training images are fewer than one global batch of {global_batch_size}.')
  total_steps = steps_per_epoch * epochs
  warmup_steps = int(round(warmup_epochs * steps_per_epoch))

  with strategy.scope():
    model = vit(num_classes=num_classes)
    if model.image_size != image_size:
      raise ValueError(f'The ViT is built for {model.image_size}px but image_size={image_size}; bind both to the '
                       'same value.')
    schedule = tf_keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate, decay_steps=max(total_steps - warmup_steps, 1),
        warmup_target=learning_rate if warmup_steps else None, warmup_steps=warmup_steps)
    optimizer = tf_keras.optimizers.AdamW(schedule, weight_decay=weight_decay, beta_1=0.9, beta_2=0.999)
    optimizer.exclude_from_weight_decay(var_names=['bias', 'gamma', 'beta', 'pos_embedding', 'cls'])
    optimizer.build(model.trainable_variables)
    global_step = orbit.utils.create_global_step()
    loss_metric = tf_keras.metrics.Mean('loss')
    acc_metric = tf_keras.metrics.SparseCategoricalAccuracy('train_accuracy')

  ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, global_step=global_step)
  ckpt_dir = os.path.join(model_dir, 'checkpoints' if chief else f'.worker_{strategy.cluster_resolver.task_id}')
  manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=2, step_counter=global_step,
                                       checkpoint_interval=checkpoint_every_steps)
  restored = manager.restore_or_initialize()

  class Trainer(orbit.StandardTrainer):
    """One AdamW step on label-smoothed cross-entropy."""

    def train_loop_begin(self):
      loss_metric.reset_state()
      acc_metric.reset_state()
      self._t0 = time.perf_counter()
      self._s0 = int(global_step.numpy())

    def train_step(self, iterator):
      def replica(batch):
        with tf.GradientTape() as tape:
          logits = model(batch['image'], training=True)
          onehot = tf.one_hot(batch['label'], num_classes)
          per_example = tf_keras.losses.categorical_crossentropy(
              onehot, logits, from_logits=True, label_smoothing=label_smoothing)
          loss = tf.reduce_sum(per_example) / global_batch_size
        grads = tape.gradient(loss, model.trainable_variables)
        grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        if grad_clip_norm:
          grads, _ = tf.clip_by_global_norm(grads, grad_clip_norm)
        optimizer.apply_gradients(zip(grads, model.trainable_variables), skip_gradients_aggregation=True)
        loss_metric.update_state(loss * replicas)
        acc_metric.update_state(batch['label'], logits)
      strategy.run(replica, args=(next(iterator),))
      global_step.assign_add(1)

    def train_loop_end(self):
      step = int(global_step.numpy())
      rate = (step - self._s0) * global_batch_size / max(time.perf_counter() - self._t0, 1e-9)
      return {'loss': loss_metric.result(), 'train_accuracy': acc_metric.result() * 100.0,
              'learning_rate': tf.cast(schedule(optimizer.iterations), tf.float32), 'images_per_second': rate}

  trainer = Trainer(train_dataset=None, options=orbit.StandardTrainerOptions(use_tf_while_loop=True))
  summary_root = model_dir if chief else ckpt_dir
  eval_writer = tf.summary.create_file_writer(os.path.join(summary_root, 'eval')) if chief else (
      tf.summary.create_noop_writer())
  test_ds = strategy.distribute_datasets_from_function(
      lambda ctx: eval_dataset(x_test, y_test, ctx, global_batch_size=eval_batch_size, image_size=image_size))

  def progress(output):
    step = int(global_step.numpy())
    epoch = step / steps_per_epoch
    print(f'[pretrain] step {step}/{total_steps} (epoch {epoch:.2f}/{epochs})  loss {float(output["loss"]):.4f}  '
          f'train_acc {float(output["train_accuracy"]):.2f}%  lr {float(output["learning_rate"]):.2e}  '
          f'{float(output["images_per_second"]):.0f} img/s', flush=True)

  evaluate = make_evaluator(strategy, model)
  controller = orbit.Controller(
      global_step=global_step, trainer=trainer, strategy=strategy, steps_per_loop=steps_per_loop,
      checkpoint_manager=manager, summary_dir=os.path.join(summary_root, 'train'), train_actions=[progress])

  print(f'l2p-tf pretrain | {dataset}{"" if classes is None else f"[{classes}]"}: {num_classes} classes, '
        f'{len(y_train)} training / {len(y_test)} test images | ViT-{model.variant} {image_size}px, '
        f'{sum(int(np.prod(v.shape)) for v in model.trainable_variables):,} parameters | {epochs} epochs x '
        f'{steps_per_epoch} steps, global batch {global_batch_size} | {train_lib.strategy_name(strategy)} x{replicas}'
        f' | model_dir {model_dir}', flush=True)
  if restored:
    print(f'Resuming from {restored} (step {int(global_step.numpy())}).', flush=True)

  if chief:
    tf.io.gfile.makedirs(model_dir)
    if gin.config_str():
      results_lib.atomic_write(os.path.join(model_dir, 'config.gin'), gin.operative_config_str())
  history = []
  start = int(global_step.numpy())
  # One pipeline from the current step to the end (its iterator lives across the epochs below).
  trainer.train_dataset = strategy.distribute_datasets_from_function(
      lambda ctx: train_dataset(x_train, y_train, ctx, global_batch_size=global_batch_size, steps=total_steps,
                                seed=seed, start_step=start, image_size=image_size, augmentation=augmentation))
  try:
    while int(global_step.numpy()) < total_steps:
      step = int(global_step.numpy())
      epoch_end = min(total_steps, (step // steps_per_epoch + 1) * steps_per_epoch)
      if stop_after_step is not None and stop_after_step < epoch_end:
        controller.train(steps=max(stop_after_step, step))
        manager.save(checkpoint_number=int(global_step.numpy()), check_interval=False)
        print(f'[pretrain] stopped at step {int(global_step.numpy())} (stop_after_step); rerun to continue.',
              flush=True)
        return {'stopped_at_step': int(global_step.numpy())}
      controller.train(steps=epoch_end)
      manager.save(checkpoint_number=epoch_end, check_interval=False)
      acc = evaluate(test_ds)
      history.append({'epoch': epoch_end // steps_per_epoch, 'step': epoch_end, 'test_accuracy': round(acc, 2)})
      with eval_writer.as_default():
        tf.summary.scalar('test_accuracy', acc, step=epoch_end)
      eval_writer.flush()
      print(f'[pretrain] epoch {epoch_end // steps_per_epoch}/{epochs}: test accuracy {acc:.2f}% '
            f'({len(y_test)} images)', flush=True)
  finally:
    trainer.train_dataset = None  # Frees the iterator now, not in Python's cycle collector (see train_lib's loop).

  final_acc = evaluate(test_ds)
  npz_path = os.path.join(model_dir, export_name)
  result = {'dataset': dataset, 'classes': classes, 'num_classes': num_classes, 'variant': model.variant,
            'image_size': image_size, 'epochs': epochs, 'global_batch_size': global_batch_size,
            'train_images': int(len(y_train)), 'test_images': int(len(y_test)), 'test_accuracy': round(final_acc, 2),
            'history': history, 'npz': npz_path, 'export_dtype': export_dtype, 'command': list(command)}
  if chief:
    sha = export_npz(model, npz_path, export_dtype)
    with strategy.scope():
      fresh = vit(num_classes=num_classes)
    load_classifier_npz(fresh, npz_path)
    rt_acc = make_evaluator(strategy, fresh)(test_ds)
    result.update({'sha256': sha, 'npz_bytes': os.path.getsize(npz_path), 'roundtrip_test_accuracy': round(rt_acc, 2),
                   'wall_time_seconds': round(time.time() - wall_start, 1)})
    results_lib.atomic_write(os.path.join(model_dir, 'pretrain_results.json'), json.dumps(result, indent=2) + '\n')
    print(f'Done: test accuracy {final_acc:.2f}% on {len(y_test)} held-out images; exported {npz_path} '
          f'({export_dtype}, {result["npz_bytes"] / 1e6:.1f} MB, sha256 {sha[:12]}...); after reloading it through '
          f'the npz loader: {rt_acc:.2f}%.', flush=True)
  return result


def main(argv):
  cli.start(argv)
  from l2p_tf import pretrain as pretrain_lib  # pylint: disable=g-import-not-at-top
  configured = cli.gin_configured(lambda: pretrain_lib.run, 'gin_configs/pretrain/cifar100_50-99_mini.gin')
  if configured is None:
    return 2
  try:
    strategy = cli.strategy_from_flags()  # Inside: missing devices / no TPU are one error line.
    configured(model_dir=FLAGS.model_dir, strategy=strategy, data_dir=FLAGS.tfds_data_dir,
               manual_dir=FLAGS.tfds_manual_dir, command=['python', '-m', 'l2p_tf.pretrain'] + sys.argv[1:])
  except (ValueError, RuntimeError) as e:
    logging.info('Traceback of the error below:', exc_info=True)
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  _define_flags()
  app.run(main)
