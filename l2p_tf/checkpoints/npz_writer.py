"""Writes a ViT in the `.npz` layout of google-research/vision_transformer (what `npz_loader` reads), and reads such a
file back into a ViT that has a head (the loader skips heads on purpose)."""

from __future__ import annotations

import hashlib
import io

import numpy as np

from l2p_tf import results as results_lib
from l2p_tf.checkpoints import npz_loader

EXPORT_DTYPES = ('float16', 'float32')


def check_dtype(dtype: str) -> None:
  if dtype not in EXPORT_DTYPES:
    raise ValueError(f'export dtype {dtype!r} is not supported; use one of {EXPORT_DTYPES}.')


def export_npz(vit, path: str, dtype: str = 'float16') -> str:
  """Writes every variable of `vit` under its original-checkpoint key (atomically); returns the file's sha256."""
  check_dtype(dtype)
  buf = io.BytesIO()
  np.savez(buf, **{k: v.numpy().astype(dtype) for k, v in sorted(vit.npz_variables().items())})
  data = buf.getvalue()
  results_lib.atomic_write(path, data, binary=True)
  return hashlib.sha256(data).hexdigest()


def load_classifier_npz(vit, path: str) -> npz_loader.LoadReport:
  """Loads an exported file into a ViT built with a head: the backbone through the strict npz loader (which skips
  the head on purpose), then the head arrays themselves.

  Raises:
    npz_loader.CheckpointError: the file's head is missing or has another shape.
  """
  report = npz_loader.load_vit_npz(vit, path)
  arrays = npz_loader.read_npz(path)
  for key in ('head/kernel', 'head/bias'):
    var = vit.npz_variables()[key]
    if key not in arrays or tuple(arrays[key].shape) != tuple(var.shape):
      raise npz_loader.CheckpointError(f'{path}: {key} is missing or has the wrong shape for a {var.shape} head.')
    var.assign(arrays[key].astype(var.dtype.as_numpy_dtype))
  return report
