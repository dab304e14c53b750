"""Loads an original google-research/vision_transformer `.npz` checkpoint into `VisionTransformer`.

The model's variables have the flax shapes, so loading is a strict key-to-variable copy:

* every key the model needs must be in the file, with the same shape, and every key in the file must be used;
  otherwise one `CheckpointMismatchError` lists every missing, unexpected and mis-shaped key with both shapes;
* `head/*` (the pretraining classifier) is always skipped, and `pre_logits/*` when the model has no
  representation layer; both are said in the log;
* the position embedding is resampled (bilinear on the patch grid, [CLS] row kept) when the file's grid differs
  from the model's, e.g. a 224-pixel checkpoint into a 384-pixel model;
* float16 / bfloat16 files load, cast to each variable's dtype.

Paths may be local or anything `tf.io.gfile` reads (gs://...).
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
import zipfile
from typing import Mapping, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from l2p_tf import resources
from l2p_tf.models import vit as vit_lib

POSEMB_KEY = 'Transformer/posembed_input/pos_embedding'
SKIPPED_ALWAYS = ('head/',)
SKIPPED_WITHOUT_REPRESENTATION = ('pre_logits/',)


class CheckpointError(ValueError):
  """The checkpoint file cannot be read (missing, not an .npz, corrupt)."""


class CheckpointMismatchError(ValueError):
  """The checkpoint's keys or shapes do not fit the model; the message lists every offending key."""

  def __init__(self, path: str, missing, unexpected, mismatched, hint: str = ''):
    self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)
    lines = [f'Checkpoint {path} does not fit the model:'] + ([hint] if hint else [])  # The way out first.
    if self.missing:
      lines.append(f'  {len(self.missing)} missing key(s) (the model needs them, the file lacks them):')
      lines += [f'    {k}' for k in self.missing]
    if self.unexpected:
      lines.append(f'  {len(self.unexpected)} unexpected key(s) (in the file, not in the model):')
      lines += [f'    {k}' for k in self.unexpected]
    if self.mismatched:
      lines.append(f'  {len(self.mismatched)} mis-shaped key(s):')
      lines += [f'    {k}: file {tuple(fs)} vs model {tuple(ms)}' for k, fs, ms in self.mismatched]
    super().__init__('\n'.join(lines))


@dataclasses.dataclass
class LoadReport:
  """What `load_vit_npz` did."""
  path: str
  loaded: list = dataclasses.field(default_factory=list)
  skipped: list = dataclasses.field(default_factory=list)
  resampled: Optional[tuple] = None  # (old grid, new grid) if the position embedding was resampled.
  seconds: float = 0.0


def _as_float_array(key: str, arr: np.ndarray) -> np.ndarray:
  # numpy writes bfloat16 (an ml_dtypes type) as a 2-byte void; view it back.
  if arr.dtype.kind == 'V' and arr.dtype.itemsize == 2:
    import ml_dtypes  # pylint: disable=g-import-not-at-top  (ships with TensorFlow)
    arr = arr.view(ml_dtypes.bfloat16)
  if arr.dtype.kind not in 'fV':  # float16/32/64, or ml_dtypes' bfloat16 (kind 'V').
    raise CheckpointError(f'Key {key!r} has dtype {arr.dtype}; expected a floating-point array.')
  return arr


def read_npz(path: str) -> dict[str, np.ndarray]:
  """Reads every array of an `.npz` file (local or `tf.io.gfile` path) into memory.

  Raises:
    CheckpointError: the file does not exist, or is not a readable `.npz` archive.

  A relative path that does not exist in the working directory is looked up among the files that ship with l2p-tf
  (`pretrained/...`, see `l2p_tf.resources`), so the shipped backbone is found from any directory.
  """
  path = resources.find(path) or path
  if not tf.io.gfile.exists(path):
    raise CheckpointError(
        f'Checkpoint file {path} does not exist. Set INIT_CHECKPOINT to the path of an original ViT .npz '
        '(e.g. ViT-B_16.npz from the vision_transformer imagenet21k bucket), or to "" for a random backbone.')
  if tf.io.gfile.isdir(path):
    raise CheckpointError(
        f'Checkpoint file {path} is a directory. Set INIT_CHECKPOINT to the .npz file itself (e.g. '
        f'{path.rstrip("/")}/ViT-B_16.npz), or to "" for a random backbone.')
  try:
    if '://' in path:
      with tf.io.gfile.GFile(path, 'rb') as f:
        source = io.BytesIO(f.read())
    else:
      source = path
    if not zipfile.is_zipfile(source):  # np.load would try to unpickle it and say so, which misleads.
      with tf.io.gfile.GFile(path, 'rb') as f:
        head = f.read(40)
      what = ('a truncated or damaged zip file' if head.startswith(b'PK') else
              f'not a zip file; it starts with {head!r}')
      raise CheckpointError(
          f'Checkpoint file {path} is not {"a readable" if head.startswith(b"PK") else "an"} .npz archive ({what}). '
          'It must be a numpy .npz with the original vision_transformer key names; re-download it or check the path.')
    with np.load(source, allow_pickle=False) as data:
      return {k: _as_float_array(k, data[k]) for k in data.files}
  except (zipfile.BadZipFile, ValueError, OSError, EOFError, tf.errors.OpError) as e:
    if isinstance(e, CheckpointError):
      raise
    raise CheckpointError(
        f'Checkpoint file {path} is not a readable .npz archive ({type(e).__name__}: {e}). It must be a numpy .npz '
        'with the original vision_transformer key names; re-download it or check the path.') from e


def check_finite(path: str, arrays: Mapping[str, np.ndarray], max_keys: int = 8) -> None:
  """Refuses arrays holding NaN or Inf: a damaged or badly converted file would otherwise train into NaN losses that
  look like a learning-rate problem.

  Raises:
    CheckpointError: naming every offending key (up to `max_keys`) with its count of non-finite values.
  """
  bad = []
  for key in sorted(arrays):
    arr = np.asarray(arrays[key], np.float32)
    n = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if n:
      bad.append(f'{key} ({n} of {arr.size})')
  if bad:
    shown = ', '.join(bad[:max_keys]) + (f', ... ({len(bad)} keys)' if len(bad) > max_keys else '')
    raise CheckpointError(
        f'Checkpoint file {path} holds NaN or Inf values in {shown}: the file is damaged or was converted wrongly. '
        'Re-download or re-convert it (python -m l2p_tf.checkpoints.inspect_npz shows its arrays); training from it '
        'would give NaN losses whatever the learning rate.')


def resample_posemb(posemb: np.ndarray, new_grid: int) -> np.ndarray:
  """Resizes a (1, 1 + g*g, D) position embedding to (1, 1 + new_grid**2, D); bilinear on the grid, [CLS] kept."""
  n = posemb.shape[1] - 1
  old_grid = math.isqrt(n)
  if old_grid * old_grid != n:
    raise ValueError(f'Position embedding with {n} patch tokens is not a square grid; cannot resample it.')
  cls, grid = posemb[:, :1], posemb[0, 1:].reshape(old_grid, old_grid, -1)
  resized = tf.image.resize(grid[None].astype(np.float32), (new_grid, new_grid), method='bilinear').numpy()
  resized = resized.reshape(1, new_grid * new_grid, -1).astype(posemb.dtype)
  return np.concatenate([cls, resized], axis=1)


def match_arrays(model: vit_lib.VisionTransformer, arrays: Mapping[str, np.ndarray], *, path: str = '<arrays>',
                 resample: bool = True):
  """Pairs the file's arrays with the model's variables.

  Returns:
    (assignments: dict key -> (variable, array), skipped keys, resampled grids or None, missing, unexpected,
    mismatched) -- nothing is assigned here.
  """
  targets = model.npz_variables()
  skip_prefixes = SKIPPED_ALWAYS + (() if model.pre_logits is not None else SKIPPED_WITHOUT_REPRESENTATION)
  assignments, skipped, missing, unexpected, mismatched = {}, [], [], [], []
  resampled = None
  for key in sorted(arrays):
    if key.startswith(skip_prefixes):
      skipped.append(key)
      continue
    if key not in targets:
      unexpected.append(key)
      continue
    arr, var = arrays[key], targets[key]
    want = tuple(var.shape)
    if key == POSEMB_KEY and arr.shape != want and resample and arr.ndim == 3 and arr.shape[2] == want[2]:
      new_grid = math.isqrt(want[1] - 1)
      try:
        arr = resample_posemb(arr, new_grid)
        resampled = (math.isqrt(arrays[key].shape[1] - 1), new_grid)
      except ValueError:
        pass
    if tuple(arr.shape) != want:
      mismatched.append((key, arr.shape, want))
      continue
    assignments[key] = (var, arr)
  for key in sorted(targets):
    if key not in arrays and not key.startswith(SKIPPED_ALWAYS):
      missing.append(key)
  return assignments, skipped, resampled, missing, unexpected, mismatched


def _variant_hint(arrays: Mapping[str, np.ndarray], model: vit_lib.VisionTransformer) -> str:
  detected = detect_variant(arrays)
  if detected and detected != model.variant:
    return (f'The file looks like ViT-{detected} but the model is ViT-{model.variant}: point INIT_CHECKPOINT at a '
            f'ViT-{model.variant} file or set the model variant to {detected!r}.')
  return ''


def load_vit_npz(model: vit_lib.VisionTransformer, path: str, *, strict: bool = True,
                 resample: bool = True) -> LoadReport:
  """Loads an original `.npz` into `model`'s variables.

  Args:
    model: the ViT to fill.
    path: local or `tf.io.gfile` path of the `.npz`.
    strict: if True (default), any missing, unexpected or mis-shaped key raises before anything is assigned. If
      False, matching keys are loaded and the rest is logged.
    resample: resample the position embedding when the grids differ.

  Returns:
    A `LoadReport`.

  Raises:
    CheckpointError: unreadable file.
    CheckpointMismatchError: (strict) the keys or shapes do not fit; lists every offending key.
  """
  start = time.perf_counter()
  arrays = read_npz(path)
  assignments, skipped, resampled, missing, unexpected, mismatched = match_arrays(
      model, arrays, path=path, resample=resample)
  if strict and (missing or unexpected or mismatched):
    raise CheckpointMismatchError(path, missing, unexpected, mismatched, _variant_hint(arrays, model))
  check_finite(path, {key: arr for key, (_, arr) in assignments.items()})
  for var, arr in assignments.values():
    var.assign(arr.astype(var.dtype.as_numpy_dtype))
  report = LoadReport(path=path, loaded=sorted(assignments), skipped=skipped, resampled=resampled,
                      seconds=time.perf_counter() - start)
  logging.info('Loaded %d arrays from %s into ViT-%s in %.1fs.', len(report.loaded), path, model.variant,
               report.seconds)
  if skipped:
    logging.info('Skipped on purpose (not part of the backbone): %s', ', '.join(skipped))
  if resampled:
    logging.info('Resampled the position embedding from a %dx%d to a %dx%d grid.', resampled[0], resampled[0],
                 resampled[1], resampled[1])
  if not strict and (missing or unexpected or mismatched):
    logging.warning('%s', CheckpointMismatchError(path, missing, unexpected, mismatched))
  return report


def detect_variant(arrays: Mapping[str, np.ndarray]) -> Optional[str]:
  """Names the `VARIANTS` entry whose shapes match the file, or None."""
  shape = describe(arrays)
  if shape is None:
    return None
  for name, cfg in vit_lib.VARIANTS.items():
    if cfg == shape:
      return name
  return None


def describe(arrays: Mapping[str, np.ndarray]) -> Optional[vit_lib.ViTConfig]:
  """Infers the `ViTConfig` from the file's shapes, or None if the layout is not a ViT's."""
  try:
    p, _, _, d = arrays['embedding/kernel'].shape
    layers = 0
    while f'Transformer/encoderblock_{layers}/LayerNorm_0/scale' in arrays:
      layers += 1
    block = 'Transformer/encoderblock_0'
    mlp = arrays[f'{block}/MlpBlock_3/Dense_0/kernel'].shape[1]
    heads = arrays[f'{block}/MultiHeadDotProductAttention_1/query/kernel'].shape[1]
  except (KeyError, ValueError, IndexError):
    return None
  return vit_lib.ViTConfig(hidden_size=d, mlp_dim=mlp, num_heads=heads, num_layers=layers, patch_size=p)
