r"""Supervised pretraining of a ViT from scratch, ending with an export to the original `.npz` layout.

  python -m l2p_tf.pretrain --model_dir=/tmp/pretrain \
      --gin_file=gin_configs/pretrain/cifar100_50-99_mini.gin --tfds_manual_dir=../shared/data

Pretraining runs on the same engine as continual training (engine/loop.py): the benchmark is
`data.pretraining.pretraining` (a tfds dataset or a class subset of one; one segment per epoch, evaluated on the
held-out test images of the same classes after each), the method is `methods.supervised.Supervised` (the ViT's own
head, label-smoothed cross-entropy) and the optimizer `optimizers.warmup_cosine_adamw`. So it has what training has:
the model_dir lock, the config comparison (`--overwrite` to start afresh), a checkpoint and exit code 75 on SIGTERM,
exact resume (the data position follows the global step), TensorBoard (`train/`, `eval/`).

At the end it writes the backbone to `model_dir/<file_name>` in the layout of google-research/vision_transformer
(what `l2p_tf/checkpoints/npz_loader.py` reads; the head is included and skipped by the loader), reloads that file
into a fresh model through the npz loader, re-measures the test accuracy, and writes `model_dir/pretrain_results.json`
with both accuracies, the file's sha256 and the command. A rerun on a finished run directory exports again (the same
bytes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Optional, Sequence

from absl import app
from absl import flags

import l2p_tf  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from l2p_tf import cli

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class NpzExport:
  """The exported backbone file.

  Attributes:
    file_name: file name of the `.npz` in model_dir.
    dtype: 'float16' (half the size; what the repository ships) or 'float32'.
  """
  file_name: str = 'vit_pretrained.npz'
  dtype: str = 'float16'


def run(*, model_dir: str, strategy, experiment, training, evaluation, cadence, export: NpzExport = NpzExport(),
        data_dir: Optional[str] = None, manual_dir: Optional[str] = None, preemption=None, overwrite: bool = False,
        command: Sequence[str] = ()) -> dict:
  """Pretrains (or resumes) on the engine, then exports and re-measures; returns the dict of `pretrain_results.json`.

  Args:
    model_dir, strategy, data_dir, manual_dir, preemption, overwrite: as `engine.loop.run`.
    experiment, training, evaluation, cadence: the engine's settings (gin_configs/pretrain/*.gin binds them).
    export: the exported file.
    command: the command line, recorded in the results.

  Raises:
    ValueError / RuntimeError / PreemptedError: as `engine.loop.run`; ValueError for an unknown export dtype.
  """
  from l2p_tf.checkpoints import npz_writer  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import loop  # pylint: disable=g-import-not-at-top
  npz_writer.check_dtype(export.dtype)
  wall_start = time.time()
  res = loop.run(model_dir=model_dir, strategy=strategy, experiment=experiment, training=training,
                 evaluation=evaluation, cadence=cadence, data_dir=data_dir, manual_dir=manual_dir,
                 preemption=preemption, overwrite=overwrite)
  return _export_and_remeasure(res, model_dir=model_dir, strategy=strategy, experiment=experiment,
                               evaluation=evaluation, export=export, data_dir=data_dir, manual_dir=manual_dir,
                               command=command, wall_time=time.time() - wall_start)


def _export_and_remeasure(res: dict, *, model_dir, strategy, experiment, evaluation, export, data_dir, manual_dir,
                          command, wall_time) -> dict:
  """Exports the newest checkpoint's ViT, reloads the file into a fresh ViT, and re-measures the test accuracy."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from l2p_tf.checkpoints import npz_writer  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import checkpointing  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import inference  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import strategies  # pylint: disable=g-import-not-at-top
  trained = inference.build(experiment, strategy=strategy, data_dir=data_dir, manual_dir=manual_dir)
  inference.restore(trained, tf.train.latest_checkpoint(checkpointing.checkpoint_dir(model_dir)))
  bench = trained.benchmark
  history = [{'epoch': t + 1, 'step': int(sum(res['tasks'][k]['steps'] for k in range(t + 1))),
              'test_accuracy': round(row[0], 2)} for t, row in enumerate(res['accuracy_matrix'])]
  npz_path = os.path.join(model_dir, export.file_name)
  result = {'dataset': bench.dataset, 'classes': bench.classes_spec, 'num_classes': bench.num_classes,
            'variant': trained.method.model.variant, 'image_size': trained.method.model.image_size,
            'epochs': len(bench.tasks), 'global_batch_size': res['global_batch_size'],
            'train_images': int(bench.num_train_examples(0)), 'test_images': int(bench.num_eval_examples(0)),
            'test_accuracy': history[-1]['test_accuracy'], 'history': history, 'npz': npz_path,
            'export_dtype': export.dtype, 'command': list(command)}
  if not strategies.is_chief(strategy):
    return result
  sha = npz_writer.export_npz(trained.method.model, npz_path, export.dtype)
  fresh = inference.build(experiment, strategy=strategy, data_dir=data_dir, manual_dir=manual_dir)
  npz_writer.load_classifier_npz(fresh.method.model, npz_path)
  rt_acc = inference.evaluate_set(fresh, 0, batch_size=evaluation.batch_size or res['global_batch_size'])
  result.update({'sha256': sha, 'npz_bytes': os.path.getsize(npz_path), 'roundtrip_test_accuracy': round(rt_acc, 2),
                 'wall_time_seconds': round(wall_time, 1)})
  from l2p_tf import results as results_lib  # pylint: disable=g-import-not-at-top
  results_lib.atomic_write(os.path.join(model_dir, 'pretrain_results.json'), json.dumps(result, indent=2) + '\n')
  print(f'Done: test accuracy {result["test_accuracy"]:.2f}% on {result["test_images"]} held-out images; exported '
        f'{npz_path} ({export.dtype}, {result["npz_bytes"] / 1e6:.1f} MB, sha256 {sha[:12]}...); after reloading it '
        f'through the npz loader: {rt_acc:.2f}%.', flush=True)
  return result


def _define_flags():
  cli.define_flags('Directory for checkpoints, summaries and the exported .npz.')
  cli.define_run_flags()


def main(argv):
  cli.start(argv)
  from l2p_tf import pretrain as pretrain_lib  # pylint: disable=g-import-not-at-top
  return cli.run_configured(lambda: pretrain_lib.run, 'gin_configs/pretrain/cifar100_50-99_mini.gin',
                            command=['python', '-m', 'l2p_tf.pretrain'] + sys.argv[1:])


if __name__ == '__main__':
  from l2p_tf import quiet  # pylint: disable=g-import-not-at-top
  quiet.filter_stderr()  # Drops the C++ absl logger's chatter (l2p_tf/quiet.py).
  _define_flags()
  app.run(main)
