r"""Inspects an original ViT `.npz`: detected variant, parameter count, and what would not load into a model.

  python -m l2p_tf.checkpoints.inspect_npz /path/ViT-B_16.npz
  python -m l2p_tf.checkpoints.inspect_npz gs://bucket/ViT-B_16.npz --variant=B/16 --image_size=384

Checked at the file's own resolution unless --image_size names another (the position embedding is then resampled,
as the loader does).

Exit code 0 when the file would load into the given variant (default: the detected one), 1 otherwise.
"""

import collections
import math
import sys
from typing import Optional

from absl import app
from absl import flags

from l2p_tf.checkpoints import npz_loader

_VARIANT = flags.DEFINE_string('variant', None, 'ViT variant to check against (default: the detected one).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', None, "Model input size; the position embedding is resampled to it "
                                   "(default: the file's own resolution, from its position grid).")
_REPRESENTATION = flags.DEFINE_integer('representation_size', None, 'pre_logits width of the model, if any.')


def inspect(path: str, variant=None, image_size: Optional[int] = None, representation_size=None) -> tuple[str, bool]:
  """Returns (report text, loads cleanly); `image_size` None checks at the file's own resolution (224 without one)."""
  from l2p_tf.models import vit as vit_lib  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  arrays = npz_loader.read_npz(path)
  lines = [f'file: {path}']
  cfg = npz_loader.describe(arrays)
  detected = npz_loader.detect_variant(arrays)
  total = sum(math.prod(a.shape) for a in arrays.values())
  groups = collections.Counter(k.split('/')[0] for k in arrays)
  dtypes = collections.Counter(str(a.dtype) for a in arrays.values())
  lines.append(f'arrays: {len(arrays)} ({", ".join(f"{k}: {n}" for k, n in sorted(groups.items()))}); '
               f'dtypes: {dict(dtypes)}')
  lines.append(f'parameters: {total:,}')
  if cfg is None:
    lines.append('layout: not a vision_transformer ViT (no embedding/kernel or encoder blocks)')
    return '\n'.join(lines), False
  lines.append(f'shape: hidden {cfg.hidden_size}, mlp {cfg.mlp_dim}, heads {cfg.num_heads}, layers '
               f'{cfg.num_layers}, patch {cfg.patch_size} -> variant {detected or "custom (no named variant)"}')
  posemb = arrays.get(npz_loader.POSEMB_KEY)
  own_size = None
  if posemb is not None:
    grid = math.isqrt(posemb.shape[1] - 1)
    own_size = grid * cfg.patch_size
    lines.append(f'position grid: {grid}x{grid} ({own_size} pixels)')
  if image_size is None:
    image_size = own_size or 224
  if 'head/kernel' in arrays:
    lines.append(f'head: {arrays["head/kernel"].shape[-1]} classes (skipped when loading)')
  if 'pre_logits/kernel' in arrays:
    lines.append(f'pre_logits: {arrays["pre_logits/kernel"].shape[-1]} wide')
  target = variant or detected
  if target is None:
    lines.append('No named variant matches; pass --variant to check one.')
    return '\n'.join(lines), False
  model = vit_lib.VisionTransformer(variant=target, image_size=image_size, representation_size=representation_size)
  _, skipped, resampled, missing, unexpected, mismatched = npz_loader.match_arrays(model, arrays, path=path)
  lines.append(f'against ViT-{target} at {image_size}px:')
  if skipped:
    lines.append(f'  skipped on purpose: {", ".join(skipped)}')
  if resampled:
    lines.append(f'  position embedding resampled {resampled[0]}x{resampled[0]} -> {resampled[1]}x{resampled[1]}')
  ok = not (missing or unexpected or mismatched)
  if ok:
    lines.append('  loads cleanly: no missing, unexpected or mis-shaped keys')
  else:
    lines.append('  ' + str(npz_loader.CheckpointMismatchError(path, missing, unexpected, mismatched))
                 .replace('\n', '\n  '))
  return '\n'.join(lines), ok


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('Usage: python -m l2p_tf.checkpoints.inspect_npz PATH.npz [--variant=B/16]')
  try:
    text, ok = inspect(argv[1], _VARIANT.value, _IMAGE_SIZE.value, _REPRESENTATION.value)
  except (npz_loader.CheckpointError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(text)
  return 0 if ok else 1


if __name__ == '__main__':
  from l2p_tf import quiet  # pylint: disable=g-import-not-at-top
  quiet.filter_stderr()  # Drops the C++ absl logger's chatter (l2p_tf/quiet.py).
  app.run(main)
