"""Results files of a run, each written atomically (temporary file, then rename): a reader or a crash never sees
half a file. `results.json`, `accuracy_matrix.csv`, `accuracy_matrix.png` (heatmap)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf


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
  commit(tmp, path)


def commit(tmp: str, path: str) -> None:
  """The rename that makes a complete temporary file visible under its final name."""
  tf.io.gfile.rename(tmp, path, overwrite=True)


def matrix_to_lists(acc: np.ndarray) -> list[list[Optional[float]]]:
  """NaN -> None (JSON null), rounded to 4 decimals."""
  return [[None if math.isnan(v) else round(float(v), 4) for v in row] for row in acc]


def matrix_csv(acc: np.ndarray, row_names: Sequence[str], col_names: Optional[Sequence[str]] = None,
               corner: str = 'after_task') -> str:
  """CSV of the accuracy matrix: one row per training task (`after_task`), one column per evaluation set; `corner`
  is the header's first cell (it names the evaluation protocol when there is one)."""
  col_names = list(row_names if col_names is None else col_names)
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow([corner] + [col_names[i] if i < len(col_names) else str(i) for i in range(acc.shape[1])])
  for t, row in enumerate(acc):
    writer.writerow([row_names[t] if t < len(row_names) else str(t)] +
                    ['' if math.isnan(v) else f'{v:.4f}' for v in row])
  return out.getvalue()


def _wrap(name: str, width: int = 14) -> str:
  """A tick label: the whole name, broken over lines of about `width` characters (never cut)."""
  if len(name) <= width:
    return name
  parts, line = [], ''
  for piece in name.replace('_', '_ ').replace('-', '- ').split(' '):
    if line and len(line) + len(piece) > width:
      parts.append(line)
      line = ''
    line += piece
  parts.append(line)
  return '\n'.join(parts)


def heatmap_png(acc: np.ndarray, row_names: Sequence[str], col_names: Optional[Sequence[str]] = None,
                title: str = 'accuracy (%)') -> bytes:
  """A labelled heatmap of the accuracy matrix as PNG bytes (rows: after training task t; columns: evaluation sets).

  `col_names` defaults to `row_names` (one evaluation set per task); task-agnostic and joint runs evaluate on other
  sets (e.g. one `all`) and pass their names.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  col_names = list(row_names if col_names is None else col_names)
  rows, cols = acc.shape
  if rows == 0 or cols == 0:  # Stopped before the first evaluation: a labelled empty figure, no degenerate axes.
    fig, ax = plt.subplots(figsize=(4, 1.5), dpi=100)
    ax.axis('off')
    ax.text(0.5, 0.5, 'no task evaluated yet', ha='center', va='center')
    ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    plt.close(fig)
    return buf.getvalue()
  row_labels = [_wrap(n) for n in list(row_names)[:rows]] + [str(t) for t in range(len(row_names), rows)]
  col_labels = [_wrap(n) for n in col_names[:cols]] + [str(i) for i in range(len(col_names), cols)]
  # Sized from the labels, laid out by savefig's tight bounding box (tight_layout warns on narrow matrices).
  label_w = 0.09 * max(len(l) for l in ''.join(f'{x}\n' for x in row_labels).splitlines() or [''])
  fig, ax = plt.subplots(figsize=(2.0 + label_w + 0.8 * cols, 1.5 + 0.6 * rows), dpi=100)
  masked = np.ma.masked_invalid(acc)
  im = ax.imshow(masked, vmin=0, vmax=100, cmap='viridis', aspect='auto')
  ax.set_xticks(range(cols), labels=col_labels, rotation=45 if cols > 1 else 0, ha='right' if cols > 1 else 'center',
                fontsize=8)
  ax.set_yticks(range(rows), labels=row_labels, fontsize=8)
  ax.set_xlabel('evaluated on')
  ax.set_ylabel('after training task')
  for t in range(rows):
    for i in range(cols):
      if not math.isnan(acc[t, i]):
        ax.text(i, t, f'{acc[t, i]:.1f}', ha='center', va='center', fontsize=7,
                color='white' if acc[t, i] < 60 else 'black')
  ax.set_title(title)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  buf = io.BytesIO()
  fig.savefig(buf, format='png', bbox_inches='tight')
  plt.close(fig)
  return buf.getvalue()


def write_all(model_dir: str, results: dict, acc: np.ndarray, names: Sequence[str]) -> bytes:
  """Writes the three results files; returns the PNG bytes (for TensorBoard).

  Rows are labelled with the training tasks' names (`results['tasks']`, else `names`), columns with the evaluation
  sets' names (`results['eval_names']`, else `names`). The CSV header and the PNG title name the evaluation protocol
  of the matrix (`results['primary_protocol']`) when there is one.
  """
  protocol = results.get('primary_protocol')
  row_names = [t['name'] for t in results.get('tasks') or []] or list(names)
  col_names = list(results.get('eval_names') or names)
  if len(col_names) < acc.shape[1]:
    col_names = list(names)
  png = heatmap_png(acc, row_names, col_names,
                    title=f'accuracy (%), {protocol} protocol' if protocol else 'accuracy (%)')
  atomic_write(os.path.join(model_dir, 'accuracy_matrix.csv'),
               matrix_csv(acc, row_names, col_names,
                          corner=f'after_task ({protocol} protocol)' if protocol else 'after_task'))
  atomic_write(os.path.join(model_dir, 'accuracy_matrix.png'), png, binary=True)
  atomic_write(os.path.join(model_dir, 'results.json'), json.dumps(results, indent=2, sort_keys=False) + '\n')
  return png
