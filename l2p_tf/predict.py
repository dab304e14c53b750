r"""Classifies image files with a SavedModel written by `l2p_tf.export`; prints the top classes of each.

  python -m l2p_tf.predict --export_dir=OUT IMAGE [IMAGE ...] [--top_k=5] [--signature=serving_default|batchwise]

Each file (PNG, JPEG, GIF's first frame, BMP) is decoded to uint8 RGB at its own size and sent as a batch of one;
the SavedModel resizes and centre-crops it as in evaluation. Output, per image:

  cat.png
    1. leopard                         0.7312
    2. tiger                           0.1024
    ...

A file that cannot be read or decoded is reported on stderr (`error: ...`) and the others are still classified; the
exit code is 0 when every file was classified, 1 when some were not, 2 when none was (or the flags are wrong).

Only TensorFlow is needed (the model's code is inside the SavedModel); nothing from `l2p_tf` is imported but this
file's own package marker.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from absl import app
from absl import flags

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top,g-bad-import-order
import tensorflow as tf  # pylint: disable=g-import-not-at-top,g-bad-import-order


def load_image(path: str) -> np.ndarray:
  """Decodes an image file to uint8 (H, W, 3).

  Raises:
    ValueError: the file cannot be read or decoded.
  """
  try:
    data = tf.io.gfile.GFile(path, 'rb').read()
    return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
  except (tf.errors.OpError, OSError) as e:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ''
    raise ValueError(f'{path}: cannot decode as an image ({type(e).__name__}: {text})') from e


def predict(export_dir: str, paths: Sequence[str], *, top_k: int = 5, signature: str = 'serving_default',
            loaded=None, skip_unreadable: bool = False) -> list[dict]:
  """Top classes of each image file.

  Args:
    export_dir: the SavedModel directory.
    paths: image files.
    top_k: classes per image (at most the number of classes).
    signature: 'serving_default' (instance-wise prompt selection) or 'batchwise' (a batch of one votes alone, so
      both give the same prompts here).
    loaded: an already loaded SavedModel (skips loading `export_dir`).
    skip_unreadable: a file that cannot be read or decoded gets {'path', 'error': message} instead of raising, and
      the other files are still classified.

  Returns:
    One dict per image: {'path', 'classes': [int], 'names': [str], 'probabilities': [float],
    'selected_prompts': [int]} (or {'path', 'error'}, see `skip_unreadable`).

  Raises:
    ValueError: `export_dir` is not a SavedModel of l2p_tf.export, or (without `skip_unreadable`) an image cannot be
      decoded.
  """
  if loaded is None:
    try:
      loaded = tf.saved_model.load(export_dir)
    except (OSError, tf.errors.OpError, ValueError) as e:
      raise ValueError(f'--export_dir {export_dir} is not a readable SavedModel ({type(e).__name__}: '
                       f'{str(e).strip().splitlines()[0][:200] if str(e).strip() else ""}); pass a directory '
                       'written by python -m l2p_tf.export.') from e
    if 'metadata' not in loaded.signatures:
      raise ValueError(f'--export_dir {export_dir} is a SavedModel without the metadata signature of l2p_tf.export.')
  if signature not in loaded.signatures:
    raise ValueError(f'{export_dir} has no signature {signature!r}; it has {sorted(loaded.signatures)}.')
  fn = loaded.signatures[signature]
  names = [n.decode('utf-8') for n in loaded.signatures['metadata']()['class_names'].numpy()]
  k = max(1, min(top_k, len(names)))
  results = []
  for path in paths:
    try:
      image = load_image(path)
    except ValueError as e:
      if not skip_unreadable:
        raise
      results.append({'path': path, 'error': str(e)})
      continue
    out = fn(images=tf.constant(image[np.newaxis]))
    probs = out['probabilities'].numpy()[0]
    order = np.argsort(-probs, kind='stable')[:k]
    results.append({'path': path, 'classes': [int(i) for i in order], 'names': [names[i] for i in order],
                    'probabilities': [float(probs[i]) for i in order],
                    'selected_prompts': [int(p) for p in out['selected_prompts'].numpy()[0]]})
  return results


def format_results(results: Sequence[dict]) -> str:
  """The text `main` prints."""
  lines = []
  for r in results:
    if 'error' in r:
      continue
    lines.append(r['path'])
    width = max(len(n) for n in r['names'])
    for rank, (name, p) in enumerate(zip(r['names'], r['probabilities']), 1):
      lines.append(f'  {rank}. {name:<{width}}  {p:.4f}')
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """Defines the command-line flags in `fv` (called by `__main__` only, so importing this module defines none)."""
  flags.DEFINE_string('export_dir', None, 'SavedModel directory written by python -m l2p_tf.export.', flag_values=fv)
  flags.DEFINE_integer('top_k', 5, 'Classes printed per image.', flag_values=fv)
  flags.DEFINE_enum('signature', 'serving_default', ['serving_default', 'batchwise'], 'Signature to call.',
                    flag_values=fv)


def run_cli(fv: flags.FlagValues, argv: Sequence[str]) -> int:
  """The command with parsed flags `fv` and positional arguments `argv[1:]` (image files); returns the exit code."""
  paths = list(argv[1:])
  if not fv.export_dir:
    raise app.UsageError('--export_dir is required.')
  if not paths:
    raise app.UsageError('Give at least one image file: python -m l2p_tf.predict --export_dir=OUT IMAGE...')
  try:
    results = predict(fv.export_dir, paths, top_k=fv.top_k, signature=fv.signature, skip_unreadable=True)
  except (ValueError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  failed = [r for r in results if 'error' in r]
  if len(failed) < len(results):
    print(format_results(results), flush=True)
  for r in failed:
    print(f'error: {r["error"]}', file=sys.stderr)
  if failed:
    print(f'{len(failed)} of {len(results)} file(s) could not be classified (listed above); the others were.',
          file=sys.stderr)
    return 2 if len(failed) == len(results) else 1
  return 0


def main(argv):
  return run_cli(FLAGS, argv)


if __name__ == '__main__':
  from l2p_tf import cli  # pylint: disable=g-import-not-at-top
  cli.run_tool(define_flags, main)
