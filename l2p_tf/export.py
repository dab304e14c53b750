r"""Exports a trained L2P run as a TensorFlow SavedModel that serves uint8 images of any size.

  python -m l2p_tf.export --model_dir=DIR --export_dir=OUT [--checkpoint=PATH] \
      [--tfds_data_dir=DIR] [--tfds_manual_dir=DIR] [--class_names=''|index|FILE] [--overwrite]

The model is rebuilt from `DIR/config.gin` (the run's operative gin config, which the run writes) by the engine's
build recipe (`l2p_tf/engine/experiment.py`), exactly as the run built it, and its weights (backbone, prompt pool, keys, head) are restored from the newest
checkpoint in `DIR/checkpoints/` or from `--checkpoint`. Everything is exported in float32.

Signatures (input `images`: uint8 [batch, height, width, 3]; every image of one request has the same size):

* `serving_default`: instance-wise prompt selection (each image picks its own top-N prompts);
* `batchwise`: the original batch-level majority vote over the request (what training-time evaluation does);

  both return `logits` (B, C) float32, `probabilities` (B, C), `top_k_classes` (B, K) int32,
  `top_k_probabilities` (B, K), `top_k_class_names` (B, K) string and `selected_prompts` (B, N) int32;
* `preprocess`: the in-graph evaluation preprocessing alone -> `images` float32 (B, S, S, 3) in [0, 1];
* `metadata` (no inputs): `class_names` (C,) string, `image_size`, `num_classes`, `top_k`, `pool_size`,
  `prompts_per_image` (int32 scalars).

The preprocessing inside the graph is `preprocessing.preprocess_eval` with the run's geometry applied to each image
('resized': resize the shorter side to round(S * 256 / 224), centre-crop S, scale to [0, 1]; 'pad', the official
32 px path: zero-pad or centre-crop to S without resizing, scale to [0, 1]): the very function the evaluation
pipeline maps over its datasets, so served and evaluated numerics are the same. The class names are also written as
the asset `assets/class_names.txt` (one per line) and a description of the export as `assets/export_info.json`.

The SavedModel needs only TensorFlow to load and run (`tf.saved_model.load(OUT).signatures['serving_default']`);
`python -m l2p_tf.predict --export_dir=OUT IMAGE...` classifies image files with it. See docs/serving.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging

import l2p_tf  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from l2p_tf import cli  # pylint: disable=g-import-not-at-top

import gin  # pylint: disable=g-import-not-at-top,g-bad-import-order
import numpy as np  # pylint: disable=g-import-not-at-top,g-bad-import-order
import tensorflow as tf  # pylint: disable=g-import-not-at-top,g-bad-import-order

from l2p_tf.engine import checkpoint_recovery  # pylint: disable=g-import-not-at-top
from l2p_tf import gin_utils  # pylint: disable=g-import-not-at-top
from l2p_tf.data import preprocessing  # pylint: disable=g-import-not-at-top
from l2p_tf.engine import run_dir as model_dir_lib  # pylint: disable=g-import-not-at-top

SIGNATURES = ('serving_default', 'batchwise', 'preprocess', 'metadata')
# Prompt selection of each classifying signature.
SELECTIONS = {'serving_default': 'instancewise', 'batchwise': 'batchwise'}
CLASS_NAMES_ASSET = 'class_names.txt'
EXPORT_INFO_ASSET = 'export_info.json'


class ExportError(ValueError):
  """The run cannot be exported as asked (no config, no checkpoint, export directory in the way, ...)."""


@dataclasses.dataclass
class LoadedRun:
  """A trained model rebuilt from a run directory.

  Attributes:
    model: the method's model with the checkpoint's weights.
    method: the `methods.base.Method` that owns it (its `predict` is what the signatures serve).
    benchmark: the run's benchmark (constructing it reads no data; its class names load on first use).
    checkpoint: path of the restored checkpoint.
    image_size: the ViT's input side S.
    eval_batch_size: the run's evaluation batch (`eval_batch_size` or `global_batch_size`).
    pool_size: M (0 without a prompt pool).
    top_k: N, prompts per image (0 without a prompt pool).
  """
  model: object  # a tf_keras model
  method: object
  benchmark: object
  checkpoint: str
  image_size: int
  eval_batch_size: int
  pool_size: int
  top_k: int
  global_step: Optional[int] = None
  tasks_done: Optional[int] = None
  num_tasks: Optional[int] = None

  @property
  def complete(self) -> Optional[bool]:
    """Whether the checkpoint has finished every task (None when the checkpoint does not say)."""
    if self.tasks_done is None or self.num_tasks is None:
      return None
    return self.tasks_done >= self.num_tasks


def checkpoint_candidates(model_dir: str, checkpoint: Optional[str] = None) -> list[str]:
  """The checkpoints that may be exported, oldest first: `checkpoint` alone (a prefix), or those of a directory.

  A directory's candidates are the ones its state file names plus every complete `ckpt-N` on disk (so a lost or
  damaged state file does not hide them); `load_run` tries them newest first.

  Raises:
    ExportError: none found.
  """
  if checkpoint and not tf.io.gfile.isdir(checkpoint):
    return [find_checkpoint(model_dir, checkpoint)]
  ckpt_dir = checkpoint or os.path.join(model_dir, 'checkpoints')
  state = model_dir_lib.read_checkpoint_state(ckpt_dir)
  named = {}
  if state is not None:
    for p in list(state.all_model_checkpoint_paths) + [state.model_checkpoint_path]:
      p = os.path.join(ckpt_dir, os.path.basename(p))
      if p and tf.io.gfile.exists(p + '.index'):
        named[os.path.basename(p)] = p
  for p in model_dir_lib.complete_checkpoints(ckpt_dir).values():
    named.setdefault(os.path.basename(p), p)
  if not named:
    find_checkpoint(model_dir, checkpoint)  # Raises with the message for this case.
  return sorted(named.values(), key=lambda p: (int(p.rsplit('-', 1)[-1]) if p.rsplit('-', 1)[-1].isdigit() else -1))


def find_checkpoint(model_dir: str, checkpoint: Optional[str] = None) -> str:
  """The checkpoint to export: `checkpoint` (a prefix such as ckpt-8, or a directory) or the newest in the run.

  Raises:
    ExportError: no checkpoint found.
  """
  if checkpoint:
    if tf.io.gfile.isdir(checkpoint):
      found = tf.train.latest_checkpoint(checkpoint)
      if not found:
        raise ExportError(f'--checkpoint={checkpoint} is a directory without checkpoints.')
      return found
    if not tf.io.gfile.exists(checkpoint + '.index'):
      raise ExportError(f'--checkpoint={checkpoint}: no such checkpoint ({checkpoint}.index does not exist); give a '
                        'prefix such as MODEL_DIR/checkpoints/ckpt-8.')
    return checkpoint
  ckpt_dir = os.path.join(model_dir, 'checkpoints')
  found = tf.train.latest_checkpoint(ckpt_dir)
  if not found:
    raise ExportError(f'{ckpt_dir} has no checkpoint; train first (python -m l2p_tf.main --model_dir={model_dir} '
                      '...) or pass --checkpoint.')
  return found


def load_run(model_dir: str, checkpoint: Optional[str] = None, *, data_dir: Optional[str] = None,
             manual_dir: Optional[str] = None, gin_bindings: Sequence[str] = ()) -> LoadedRun:
  """Rebuilds a run's method from `model_dir/config.gin` by the engine's build recipe and restores its weights.

  Only the model is restored from the checkpoint (optimizer slots, step and accuracy matrix are not needed). The gin
  config is cleared afterwards.

  Args:
    model_dir: the run's directory (with config.gin and checkpoints/).
    checkpoint: a checkpoint prefix or directory; default the newest in `model_dir/checkpoints`.
    data_dir, manual_dir: tfds directories for the benchmark (class names; nothing else is read here).
    gin_bindings: extra bindings applied after config.gin.

  Returns:
    The `LoadedRun`.

  Raises:
    ExportError: no config.gin or no checkpoint, or the checkpoint does not fit the rebuilt model.
  """
  from l2p_tf.engine import config as config_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import inference  # pylint: disable=g-import-not-at-top
  config = os.path.join(model_dir, 'config.gin')
  if not tf.io.gfile.exists(config):
    raise ExportError(f'{config} not found: --model_dir must be a directory written by python -m l2p_tf.main.')
  candidates = checkpoint_candidates(model_dir, checkpoint)
  local_config = config
  tmp = None
  if not os.path.exists(config):  # gin reads local files only; copy a gs:// config.
    tmp = tempfile.NamedTemporaryFile('w', suffix='.gin', delete=False)
    tmp.write(tf.io.gfile.GFile(config).read())
    tmp.close()
    local_config = tmp.name
  try:
    gin_utils.parse([local_config], list(gin_bindings))
    spec = gin.get_configurable(experiment_lib.Experiment)()
    eval_batch_size = (gin.get_configurable(config_lib.Evaluation)().batch_size
                       or gin.get_configurable(config_lib.Training)().global_batch_size)
    try:
      built = inference.build(spec, data_dir=data_dir, manual_dir=manual_dir)
    except ValueError as e:
      raise ExportError(f'{config} does not build a model ({e}); is it a config.gin of a run?') from e
  finally:
    gin.clear_config()
    if tmp is not None:
      os.unlink(tmp.name)
  method = built.method

  def restore(path):
    try:
      inference.restore(built, path)
    except inference.RestoreError as e:
      raise ValueError(f'the checkpoint does not fit the model rebuilt from {config}: {e}') from e

  try:
    path, _ = checkpoint_recovery.restore_newest_readable(
        restore, candidates, os.path.dirname(candidates[-1]), say=lambda line: print(line, flush=True),
        config_hint=config)
  except RuntimeError as e:
    raise ExportError(str(e).replace('Move the directory aside and start afresh (--overwrite does that).',
                                     'Nothing can be exported from it.')) from e
  step, tasks_done = read_progress(path)
  return LoadedRun(model=method.model, method=method, benchmark=built.benchmark, checkpoint=path,
                   image_size=int(method.backbone.image_size), eval_batch_size=int(eval_batch_size),
                   pool_size=int(method.pool_size), top_k=int(getattr(method, 'prompts_per_image', 0)),
                   global_step=step, tasks_done=tasks_done, num_tasks=len(built.benchmark.tasks))


def read_progress(path: str) -> tuple[Optional[int], Optional[int]]:
  """(global step, finished tasks) stored in a training checkpoint; None for what it does not hold."""
  try:
    reader = tf.train.load_checkpoint(path)
  except (tf.errors.OpError, ValueError):
    return None, None
  out = []
  for key in ('global_step/.ATTRIBUTES/VARIABLE_VALUE', 'tasks_done/.ATTRIBUTES/VARIABLE_VALUE'):
    try:
      out.append(int(reader.get_tensor(key)))
    except (tf.errors.OpError, ValueError, KeyError):
      out.append(None)
  return out[0], out[1]


RUN_CLASS_NAMES_FILE = 'class_names.txt'  # MODEL_DIR/class_names.txt, if the run wrote one.


def _read_names(path: str, n: int, what: str) -> list[str]:
  with tf.io.gfile.GFile(path) as f:
    names = [line.rstrip('\r\n') for line in f if line.strip()]
  if len(names) != n:
    raise ExportError(f'{what} {path} has {len(names)} names; the benchmark has {n} classes.')
  return names


def resolve_class_names(bench, how: str = '', *, model_dir: Optional[str] = None) -> list[str]:
  """Class names for the export.

  Args:
    bench: the benchmark.
    how: 'index' ('class_<i>', reads no data), the path of a text file with one name per line, or '' (default):
      `model_dir/class_names.txt` when the run has one, else the benchmark's dataset names (tfds; this prepares the
      dataset if it is not prepared, which downloads unless `--tfds_manual_dir` has the files), else 'class_<i>'.
    model_dir: the run's directory.

  Raises:
    ExportError: a names file with the wrong number of lines.
  """
  n = int(bench.num_classes)
  if how == 'index':
    return [f'class_{i}' for i in range(n)]
  if how:
    return _read_names(how, n, '--class_names')
  if model_dir and tf.io.gfile.exists(os.path.join(model_dir, RUN_CLASS_NAMES_FILE)):
    return _read_names(os.path.join(model_dir, RUN_CLASS_NAMES_FILE), n, 'The run\'s class names file')
  try:
    names = [str(c) for c in bench.class_names]
  except Exception as e:  # pylint: disable=broad-except  # Names are a convenience; the model works without them.
    logging.warning('Could not read the class names of %s (%s: %s); exporting class_<i>. Pass --tfds_manual_dir / '
                    '--tfds_data_dir, or --class_names=FILE.', getattr(bench, 'name', bench), type(e).__name__, e)
    return [f'class_{i}' for i in range(n)]
  if len(names) != n:
    raise ExportError(f'The benchmark has {n} classes but {len(names)} class names.')
  return names


def check_export_dir(export_dir: str, overwrite: bool = False) -> None:
  """Raises ExportError if `export_dir` is a file, or exists, is not empty and `overwrite` is False."""
  if tf.io.gfile.exists(export_dir) and not tf.io.gfile.isdir(export_dir):
    raise ExportError(f'--export_dir {export_dir} is a file, not a directory: pass the path of a directory for the '
                      'SavedModel (it is created), or move that file away.')
  if tf.io.gfile.exists(export_dir) and tf.io.gfile.listdir(export_dir) and not overwrite:
    raise ExportError(f'{export_dir} exists and is not empty; pass --overwrite to replace it.')
  parent = os.path.dirname(os.path.abspath(export_dir)) if model_dir_lib.is_local(export_dir) else None
  if parent and os.path.exists(parent) and not os.path.isdir(parent):
    raise ExportError(f'--export_dir {export_dir}: {parent} is a file, not a directory.')


def preprocess_batch(images: tf.Tensor, image_size: int, crop: str = 'resized') -> tf.Tensor:
  """Evaluation preprocessing of a uint8 batch [B, H, W, 3] -> float32 [B, S, S, 3], bit for bit as in evaluation.

  `preprocessing.preprocess_eval` (geometry `crop`, the run's `PreprocessConfig.crop`) is mapped over the batch
  with tf.data, as the evaluation pipeline maps it, rather than with `tf.map_fn`: in a tf.function graph, grappler's
  constant folding turns the `/ 255.0` into a multiply by the reciprocal (results differ in the last bit), while
  tf.data map functions keep the division, as eager does.
  """
  n = tf.shape(images, out_type=tf.int64)[0]

  def nonempty():
    ds = tf.data.Dataset.from_tensor_slices(images).map(
        lambda im: preprocessing.preprocess_eval(im, image_size=image_size, crop=crop),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    return ds.batch(n).get_single_element()

  out = tf.cond(n > 0, nonempty, lambda: tf.zeros([0, image_size, image_size, 3], tf.float32))
  out.set_shape([None, image_size, image_size, 3])
  return out


def run_crop(run: LoadedRun) -> str:
  """The evaluation geometry ('pad' or 'resized') of a loaded run's benchmark."""
  config = getattr(run.benchmark, 'preprocess', None)
  if config is None:
    return 'resized'
  return preprocessing.resolve_crop(config.crop, config.image_size)


class ServingModule(tf.Module):
  """What goes into the SavedModel: the model's variables, the class names and the signature functions.

  The Keras model itself is not tracked (that would make `tf.saved_model.save` serialise Keras layer metadata
  and trace every layer); its variables are, and the functions close over the model.
  """

  def __init__(self, method, *, class_names: Sequence[str], image_size: int, pool_size: int, prompts_per_image: int,
               top_k: int = 5, assets: Sequence[str] = (), crop: str = 'resized'):
    super().__init__(name='l2p_serving')
    num_classes = len(class_names)
    if top_k < 1:
      raise ExportError(f'top_k must be >= 1, got {top_k}.')
    k = min(int(top_k), num_classes)
    self.model_variables = list(method.model.variables)
    self.assets = [tf.saved_model.Asset(a) for a in assets]
    names = tf.constant(list(class_names), tf.string)
    meta = {'image_size': image_size, 'num_classes': num_classes, 'top_k': k, 'pool_size': pool_size,
            'prompts_per_image': prompts_per_image}
    image_spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name='images')

    def classify(images, selection):
      def full():
        x = preprocess_batch(images, image_size, crop)
        out = method.predict(x, selection=selection if pool_size else None)
        logits = tf.cast(out['logits'], tf.float32)
        probs = tf.nn.softmax(logits, axis=-1)
        top_p, top_i = tf.math.top_k(probs, k=k)
        top_i = tf.cast(top_i, tf.int32)
        return {'logits': logits, 'probabilities': probs, 'top_k_classes': top_i, 'top_k_probabilities': top_p,
                'top_k_class_names': tf.gather(names, top_i),
                'selected_prompts': tf.cast(out.get('prompt_ids', tf.zeros([tf.shape(x)[0], 0], tf.int32)),
                                            tf.int32)}

      def empty():  # A request without images gets empty outputs (the model itself needs at least one).
        return {'logits': tf.zeros([0, num_classes]), 'probabilities': tf.zeros([0, num_classes]),
                'top_k_classes': tf.zeros([0, k], tf.int32), 'top_k_probabilities': tf.zeros([0, k]),
                'top_k_class_names': tf.zeros([0, k], tf.string),
                'selected_prompts': tf.zeros([0, prompts_per_image], tf.int32)}

      out = tf.cond(tf.shape(images)[0] > 0, full, empty)
      for key, width in (('logits', num_classes), ('probabilities', num_classes), ('top_k_classes', k),
                         ('top_k_probabilities', k), ('top_k_class_names', k),
                         ('selected_prompts', prompts_per_image)):
        out[key].set_shape([None, width])
      return out

    self.serving_default = tf.function(lambda images: classify(images, 'instancewise'), input_signature=[image_spec])
    self.batchwise = tf.function(lambda images: classify(images, 'batchwise'), input_signature=[image_spec])
    self.preprocess = tf.function(lambda images: {'images': preprocess_batch(images, image_size, crop)},
                                  input_signature=[image_spec])
    self.metadata = tf.function(
        lambda: {'class_names': names, **{k_: tf.constant(v, tf.int32) for k_, v in meta.items()}},
        input_signature=[])

  def signatures(self) -> dict:
    return {name: getattr(self, name).get_concrete_function() for name in SIGNATURES}


def export(run: LoadedRun, export_dir: str, *, class_names: Sequence[str], top_k: int = 5,
           overwrite: bool = False, extra_info: Optional[dict] = None, verify_tolerance: Optional[float] = None,
           diffs_out: Optional[dict] = None) -> str:
  """Writes the SavedModel of `run` to `export_dir`; returns `export_dir`.

  The SavedModel is written to a temporary sibling `<export_dir>.tmp-<pid>`, reloaded and checked there (with
  `verify_tolerance`), and only then swapped in: an existing export is renamed aside, the new one renamed into
  place, the old one deleted. A failure at any point before the swap leaves the existing export as it was.

  Args:
    verify_tolerance: reload the temporary export and refuse it when its logits differ from the in-process model's
      by more than this (None: no check).
    diffs_out: filled with the verification's {signature: max |diff|}.

  Raises:
    ExportError: `export_dir` is a file, or exists, is not empty and `overwrite` is False; the reloaded export
      differs from the model.
  """
  check_export_dir(export_dir, overwrite)
  num_classes = run.benchmark.num_classes
  if len(class_names) != num_classes:
    raise ExportError(f'{len(class_names)} class names for a head of {num_classes} classes.')
  if any('\n' in c for c in class_names):
    raise ExportError('class names must not contain newlines.')
  info = {
      'format': 'l2p_tf SavedModel v1',
      'benchmark': getattr(run.benchmark, 'name', ''),
      'checkpoint': run.checkpoint,
      'image_size': run.image_size,
      'num_classes': len(class_names),
      'pool_size': run.pool_size,
      'prompts_per_image': run.top_k,
      'signatures': {'serving_default': 'instancewise prompt selection', 'batchwise': 'batch majority vote',
                     'preprocess': 'uint8 -> float32 [0, 1] evaluation preprocessing', 'metadata': 'no inputs'},
      'input': 'images: uint8 [batch, height, width, 3], one size per request',
      'preprocessing': (f'resize shorter side to {preprocessing.resize_size(run.image_size)} (bilinear), centre '
                        f'crop {run.image_size}, scale to [0, 1]' if run_crop(run) == 'resized' else
                        f'zero-pad or centre-crop to {run.image_size} (no resize), scale to [0, 1]'),
      'exported_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
      'global_step': run.global_step,
      'tasks_done': run.tasks_done,
      'num_tasks': run.num_tasks,
      'complete': run.complete,
      **(extra_info or {}),
  }
  staging = f'{export_dir.rstrip("/")}.tmp-{os.getpid()}'
  if tf.io.gfile.exists(staging):
    tf.io.gfile.rmtree(staging)
  try:
    _write_saved_model(run, staging, info, class_names, top_k)
    if verify_tolerance is not None:
      diffs = verify(run, staging)
      if diffs_out is not None:
        diffs_out.update(diffs)
      worst = max(diffs.values())
      if not worst <= verify_tolerance:
        raise ExportError(f'the reloaded SavedModel differs from the model by {worst:.3g} (more than '
                          f'{verify_tolerance:g}); nothing was replaced.')
    swap_into_place(staging, export_dir)
  finally:
    if tf.io.gfile.exists(staging):
      tf.io.gfile.rmtree(staging)
  return export_dir


def swap_into_place(staging: str, export_dir: str) -> None:
  """Replaces `export_dir` (if any) by the complete directory `staging`; the old one survives any failure before the
  new one is in place. Local paths swap by rename; object stores (no directory rename) copy file by file."""
  if not model_dir_lib.is_local(export_dir):
    if tf.io.gfile.exists(export_dir):
      tf.io.gfile.rmtree(export_dir)
    for root, _, files in tf.io.gfile.walk(staging):
      rel = os.path.relpath(root, staging)
      tf.io.gfile.makedirs(os.path.join(export_dir, rel))
      for f in files:
        tf.io.gfile.copy(os.path.join(root, f), os.path.join(export_dir, rel, f), overwrite=True)
    return
  old = None
  if os.path.lexists(export_dir):
    old = f'{export_dir.rstrip("/")}.old-{os.getpid()}'
    os.rename(export_dir, old)
  try:
    os.rename(staging, export_dir)
  except OSError:
    if old is not None:
      os.rename(old, export_dir)
    raise
  if old is not None:
    tf.io.gfile.rmtree(old)


def _write_saved_model(run: LoadedRun, export_dir: str, info: dict, class_names: Sequence[str], top_k: int) -> None:
  with tempfile.TemporaryDirectory() as tmp:
    names_path = os.path.join(tmp, CLASS_NAMES_ASSET)
    with open(names_path, 'w', encoding='utf-8') as f:
      f.write('\n'.join(class_names) + '\n')
    info_path = os.path.join(tmp, EXPORT_INFO_ASSET)
    with open(info_path, 'w', encoding='utf-8') as f:
      f.write(json.dumps(info, indent=2) + '\n')
    module = ServingModule(run.method, class_names=class_names, image_size=run.image_size, pool_size=run.pool_size,
                           crop=run_crop(run),
                           prompts_per_image=run.top_k, top_k=top_k, assets=[names_path, info_path])
    tf.saved_model.save(module, export_dir, signatures=module.signatures())


def verify(run: LoadedRun, export_dir: str, *, batch: int = 4, seed: int = 0) -> dict[str, float]:
  """Reloads the SavedModel and compares its logits with the in-process model's on random images.

  Returns:
    {signature: max absolute logit difference}.
  """
  loaded = tf.saved_model.load(export_dir)
  rng = np.random.default_rng(seed)
  size = run.image_size
  images = rng.integers(0, 256, size=(batch, size + size // 3, size + size // 2, 3), dtype=np.uint8)
  x = preprocess_batch(tf.constant(images), size, run_crop(run))
  diffs = {}
  for name, selection in SELECTIONS.items():
    expected = run.method.predict(x, selection=selection if run.pool_size else None)['logits'].numpy()
    got = loaded.signatures[name](images=tf.constant(images))['logits'].numpy()
    diffs[name] = float(np.max(np.abs(expected - got)))
  return diffs


FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """Defines the command-line flags in `fv` (called by `__main__` only, so importing this module defines none)."""
  flags.DEFINE_string('model_dir', None, 'Run directory (config.gin, checkpoints/) written by l2p_tf.main.',
                      flag_values=fv)
  flags.DEFINE_string('export_dir', None, 'Where to write the SavedModel.', flag_values=fv)
  flags.DEFINE_string('checkpoint', None, 'Checkpoint prefix (e.g. MODEL_DIR/checkpoints/ckpt-8) or directory; '
                      'default: the newest in MODEL_DIR/checkpoints.', flag_values=fv)
  flags.DEFINE_string('tfds_data_dir', None, 'tensorflow-datasets data directory (for the class names).',
                      flag_values=fv)
  flags.DEFINE_string('tfds_manual_dir', None, 'Directory with manually downloaded dataset files (as l2p_tf.main).',
                      flag_values=fv)
  flags.DEFINE_string('class_names', '', "'' (from the benchmark's dataset), 'index' (class_<i>, reads no data) or "
                      'a text file with one name per line.', flag_values=fv)
  flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings applied after MODEL_DIR/config.gin.',
                            flag_values=fv)
  flags.DEFINE_integer('top_k', 5, 'Classes in the top_k_* outputs.', flag_values=fv)
  flags.DEFINE_bool('overwrite', False, 'Replace a non-empty --export_dir.', flag_values=fv)
  flags.DEFINE_bool('verify', True, 'Reload the export and check its logits against the in-process model.',
                    flag_values=fv)


def run_cli(fv: flags.FlagValues, argv: Sequence[str]) -> int:
  """The command with parsed flags `fv`; returns the exit code."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {list(argv[1:])}')
  if not fv.model_dir or not fv.export_dir:
    raise app.UsageError('--model_dir and --export_dir are required.')
  if 'verbosity' in fv and not fv['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  diffs = {}
  try:
    check_export_dir(fv.export_dir, fv.overwrite)
    run = load_run(fv.model_dir, fv.checkpoint, data_dir=fv.tfds_data_dir, manual_dir=fv.tfds_manual_dir,
                   gin_bindings=fv.gin_bindings)
    names = resolve_class_names(run.benchmark, fv.class_names, model_dir=fv.model_dir)
    print(f'Restored {run.checkpoint} ({run.model.summary_line() if hasattr(run.model, "summary_line") else ""}).')
    if run.complete is False:
      print(f'warning: the run is unfinished: {run.checkpoint} has {run.tasks_done} of {run.num_tasks} tasks done '
            f'(step {run.global_step}); exporting that state (export_info.json records it).', file=sys.stderr)
    export(run, fv.export_dir, class_names=names, top_k=fv.top_k, overwrite=fv.overwrite,
           verify_tolerance=1e-4 if fv.verify else None, diffs_out=diffs)
  except (ExportError, gin_utils.GinConfigError, RuntimeError, TypeError, OSError, tf.errors.OpError) as e:
    print(f'error: {_error_text(e)}', file=sys.stderr)
    return 2
  print(f'SavedModel written to {fv.export_dir}: {len(names)} classes, {run.image_size}px, signatures '
        f'{", ".join(SIGNATURES)}.')
  if diffs:
    print('Verified: reloaded logits match the model (max |diff| ' +
          ', '.join(f'{k} {v:.2g}' for k, v in diffs.items()) + ').')
  return 0


def _error_text(e: BaseException) -> str:
  lines = [l for l in str(e).splitlines() if not l.strip().startswith('In call to configurable')]
  text = '\n'.join(lines).strip()
  return text if isinstance(e, (ValueError, RuntimeError)) else f'{type(e).__name__}: {text}'


def main(argv):
  return run_cli(FLAGS, argv)


if __name__ == '__main__':
  cli.run_tool(define_flags, main)
