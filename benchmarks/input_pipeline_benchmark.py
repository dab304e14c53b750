r"""Throughput of the input pipeline (images/s), printed as a table. Not a test.

Measures the training pipeline (32x32 in memory -> resize 256 -> random-resized crop 224 -> flip -> [0, 1], per-replica
batches) with and without the JPEG round trip, and the evaluation pipeline (resize 256, centre crop 224).

    .venv/bin/python benchmarks/input_pipeline_benchmark.py                  # synthetic 32x32 images (no data needed)
    .venv/bin/python benchmarks/input_pipeline_benchmark.py --data=cifar100 \
        --manual_dir=../shared/data --data_dir=/tmp/tfds                     # real CIFAR-100 (prepares once, ~30 s)

The images come from memory either way (the pipeline caches decoded 32x32 images), so the two give the same rate;
`--data=cifar100` checks it on the real pixels.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf

from l2p_tf.data import benchmarks
from l2p_tf.data import pipelines
from l2p_tf.data import sources


def _define_flags():
  """Flags of the script (defined only when it runs as a script: benchmarks/l2p_benchmark.py imports `measure`)."""
  return dict(
      data=flags.DEFINE_enum('data', 'synthetic', ['synthetic', 'cifar100'], 'Where the 32x32 images come from.'),
      data_dir=flags.DEFINE_string('data_dir', None, 'tfds data dir (with --data=cifar100).'),
      manual_dir=flags.DEFINE_string('manual_dir', None, 'Local downloads (with --data=cifar100).'),
      global_batch_size=flags.DEFINE_integer('global_batch_size', 128, 'Global batch.'),
      image_size=flags.DEFINE_integer('image_size', 224, 'Network input side.'),
      warmup=flags.DEFINE_integer('warmup_batches', 5, 'Batches before timing starts.'),
      batches=flags.DEFINE_integer('batches', 40, 'Timed batches per row.'))


def _time(ds, warmup, batches, batch_size):
  it = iter(ds)
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  n = 0
  for _ in range(batches):
    x = next(it)
    n += int(x['image'].shape[0])
  _ = x['image'].numpy()
  del batch_size
  return n / (time.perf_counter() - start)


def measure(*, data: str = 'synthetic', data_dir=None, manual_dir=None, global_batch_size: int = 128,
            image_size: int = 224, warmup: int = 5, batches: int = 40) -> list[tuple[str, float]]:
  """[(pipeline, images/s)] for the training pipeline (without and with JPEG round trip) and the eval pipeline."""
  gbs, size = global_batch_size, image_size
  if data == 'cifar100':
    bench = benchmarks.split_cifar100(data_dir=data_dir, manual_dir=manual_dir,
                                      preprocess=pipelines.PreprocessConfig(image_size=size))
    part = bench.train_part(0)
  else:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5000, 32, 32, 3), dtype=np.uint8)
    part = sources.ArrayPart(images=images, labels=rng.integers(0, 10, 5000), indices=np.arange(5000))
  steps = warmup + batches
  plan = pipelines.epoch_plan(part.num_examples, steps=steps, global_batch_size=gbs, seed=0, task=0)
  masks = np.ones((1, 100), bool)
  rows = []
  for label, jpeg in (('train, 32 -> 224, augmentation', False), ('train, + JPEG round trip', True)):
    ds = pipelines.array_train_dataset(
        part, plan, masks=masks, mask_ids=None, seed=0, input_context=None, global_batch_size=gbs,
        preprocess=pipelines.PreprocessConfig(image_size=size, jpeg_round_trip=jpeg))
    rows.append((label, _time(ds, warmup, batches, gbs)))
  eval_part = sources.ArrayPart(images=part.images, labels=part.labels,
                                indices=part.indices[:gbs * steps] if len(part.indices) >= gbs * steps
                                else np.resize(part.indices, gbs * steps))
  ds = pipelines.array_eval_dataset(eval_part, input_context=None, global_batch_size=gbs,
                                    preprocess=pipelines.PreprocessConfig(image_size=size))
  rows.append(('eval, 32 -> 256 -> centre 224', _time(ds, warmup, batches, gbs)))
  return rows


def main(argv, flag_holders):
  del argv
  kw = {k: v.value for k, v in flag_holders.items()}
  rows = measure(**kw)
  print(f'\nInput pipeline throughput: data={kw["data"]}, global batch {kw["global_batch_size"]}, image '
        f'{kw["image_size"]}, {os.cpu_count()} CPU cores visible, TensorFlow {tf.__version__}')
  print(f'| {"pipeline":<34} | {"images/s":>9} |')
  print(f'|{"-" * 36}|{"-" * 11}|')
  for label, rate in rows:
    print(f'| {label:<34} | {rate:>9.0f} |')


if __name__ == '__main__':
  _holders = _define_flags()
  app.run(lambda argv: main(argv, _holders))
