"""Results files of a run, each written atomically (temporary file, then rename): a reader or a crash never sees
half a file. `results.json`, `accuracy_matrix.csv`, `accuracy_matrix.png` (heatmap)."""

from __future__ import annotations

import io
import json
import math
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from l2p_tf import faults


def atomic_write(path: str, data, binary: bool = False) -> None:
  """Writes `data` to `path` via a temporary file in the same directory and a rename (gfile paths too)."""
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    with tf.io.gfile.GFile(tmp, 'wb' if binary else 'w') as f:
      f.write(data)
  except BaseException:  # A full disk: the target keeps its old content, and no half-written copy stays behind.
    try:
      tf.io.gfile.remove(tmp)
    except (tf.errors.OpError, OSError):
      pass
    raise
  faults.point('results_write')
  tf.io.gfile.rename(tmp, path, overwrite=True)


def matrix_to_lists(acc: np.ndarray) -> list[list[Optional[float]]]:
  """NaN -> None (JSON null), rounded to 4 decimals."""
  return [[None if math.isnan(v) else round(float(v), 4) for v in row] for row in acc]


def matrix_csv(acc: np.ndarray, names: Sequence[str]) -> str:
  lines = ['after_task,' + ','.join(names)]
  for t, row in enumerate(acc):
    lines.append(f'{names[t] if t < len(names) else t},' + ','.join('' if math.isnan(v) else f'{v:.4f}' for v in row))
  return '\n'.join(lines) + '\n'


def heatmap_png(acc: np.ndarray, names: Sequence[str], title: str = 'accuracy (%)') -> bytes:
  """A labelled heatmap of the accuracy matrix as PNG bytes (rows: after task t; columns: task i)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  rows, cols = acc.shape
  fig, ax = plt.subplots(figsize=(1.0 + 0.7 * cols, 1.0 + 0.6 * rows), dpi=100)
  masked = np.ma.masked_invalid(acc)
  im = ax.imshow(masked, vmin=0, vmax=100, cmap='viridis')
  ax.set_xticks(range(cols), labels=[n[:10] for n in names[:cols]], rotation=45, ha='right')
  ax.set_yticks(range(rows), labels=[n[:10] for n in names[:rows]])
  ax.set_xlabel('evaluated on task')
  ax.set_ylabel('after training task')
  for t in range(rows):
    for i in range(cols):
      if not math.isnan(acc[t, i]):
        ax.text(i, t, f'{acc[t, i]:.1f}', ha='center', va='center', fontsize=7,
                color='white' if acc[t, i] < 60 else 'black')
  ax.set_title(title)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  plt.close(fig)
  return buf.getvalue()


def write_all(model_dir: str, results: dict, acc: np.ndarray, names: Sequence[str]) -> bytes:
  """Writes the three results files; returns the PNG bytes (for TensorBoard)."""
  png = heatmap_png(acc, names)
  atomic_write(os.path.join(model_dir, 'accuracy_matrix.csv'), matrix_csv(acc, names))
  atomic_write(os.path.join(model_dir, 'accuracy_matrix.png'), png, binary=True)
  atomic_write(os.path.join(model_dir, 'results.json'), json.dumps(results, indent=2, sort_keys=False) + '\n')
  return png
