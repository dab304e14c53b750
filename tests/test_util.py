"""Helpers for tests: virtual CPUs (so MirroredStrategy runs real multi-replica code), tiny factories, fake npz."""

from __future__ import annotations

import functools
import os

import numpy as np

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
import tensorflow as tf  # pylint: disable=g-import-not-at-top

NUM_VIRTUAL_CPUS = 2
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), 'shared', 'data')


def configure_virtual_cpus(n: int = NUM_VIRTUAL_CPUS) -> None:
  """Splits the physical CPU into `n` logical devices; must run before TensorFlow initialises its runtime."""
  cpus = tf.config.list_physical_devices('CPU')
  try:
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
  except RuntimeError:
    pass  # Already initialised (e.g. configured earlier in this process); keep what is there.


def cpu_devices() -> list[str]:
  return [d.name for d in tf.config.list_logical_devices('CPU')]


@functools.lru_cache(maxsize=None)
def mirrored_strategy() -> tf.distribute.MirroredStrategy:
  """The process's one MirroredStrategy over the virtual CPUs (2 replicas).

  Shared on purpose: every MirroredStrategy numbers its collective ops from the same base, and the runtime caches
  collective parameters by those numbers, so a second instance in the same process can collide with the first
  ("Shape mismatch in the collective instance ...").
  """
  devices = cpu_devices()
  assert len(devices) >= 2, f'need >= 2 virtual CPUs, have {devices}'
  return tf.distribute.MirroredStrategy(devices[:2])


def vit_array_shapes(variant: str = 'tiny', image_size: int = 32, *, representation_size=None,
                     num_classes: int = 0) -> dict[str, tuple]:
  """The original vision_transformer key names and shapes for a variant, written from the flax layout.

  Written independently of the model code, so a test that loads arrays of these shapes checks the model's variable
  map too.
  """
  from l2p_tf.models import vit as vit_lib  # pylint: disable=g-import-not-at-top
  cfg = vit_lib.get_config(variant)
  d, h, p, m = cfg.hidden_size, cfg.num_heads, cfg.patch_size, cfg.mlp_dim
  k = d // h
  out = {
      'cls': (1, 1, d),
      'embedding/kernel': (p, p, 3, d),
      'embedding/bias': (d,),
      'Transformer/posembed_input/pos_embedding': (1, (image_size // p) ** 2 + 1, d),
      'Transformer/encoder_norm/scale': (d,),
      'Transformer/encoder_norm/bias': (d,),
  }
  for i in range(cfg.num_layers):
    b = f'Transformer/encoderblock_{i}'
    for ln in ('LayerNorm_0', 'LayerNorm_2'):
      out[f'{b}/{ln}/scale'] = (d,)
      out[f'{b}/{ln}/bias'] = (d,)
    for name in ('query', 'key', 'value'):
      out[f'{b}/MultiHeadDotProductAttention_1/{name}/kernel'] = (d, h, k)
      out[f'{b}/MultiHeadDotProductAttention_1/{name}/bias'] = (h, k)
    out[f'{b}/MultiHeadDotProductAttention_1/out/kernel'] = (h, k, d)
    out[f'{b}/MultiHeadDotProductAttention_1/out/bias'] = (d,)
    out[f'{b}/MlpBlock_3/Dense_0/kernel'] = (d, m)
    out[f'{b}/MlpBlock_3/Dense_0/bias'] = (m,)
    out[f'{b}/MlpBlock_3/Dense_1/kernel'] = (m, d)
    out[f'{b}/MlpBlock_3/Dense_1/bias'] = (d,)
  if representation_size:
    out['pre_logits/kernel'] = (d, representation_size)
    out['pre_logits/bias'] = (representation_size,)
  if num_classes:
    out['head/kernel'] = (representation_size or d, num_classes)
    out['head/bias'] = (num_classes,)
  return out


def random_vit_arrays(variant: str = 'tiny', image_size: int = 32, *, seed: int = 0, representation_size=None,
                      num_classes: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
  """Random arrays under the original key names and shapes (`vit_array_shapes`), scaled like trained weights."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in vit_array_shapes(variant, image_size, representation_size=representation_size,
                                     num_classes=num_classes).items():
    fan_in = shape[0] if key.endswith('kernel') and len(shape) > 1 else 1
    scale = 0.02 if 'pos_embedding' in key else (fan_in ** -0.5 if fan_in > 1 else 0.05)
    if key.endswith('embedding/kernel'):
      scale = (shape[0] * shape[1] * shape[2]) ** -0.5
    arr = rng.standard_normal(shape, dtype=np.float32) * scale
    if key.endswith('/scale'):
      arr += 1.0
    out[key] = arr.astype(dtype)
  return out


def write_fake_npz(path: str, **kwargs) -> dict[str, np.ndarray]:
  """Writes `random_vit_arrays(**kwargs)` to `path` (an uncompressed .npz, like the originals) and returns them."""
  arrays = random_vit_arrays(**kwargs)
  with open(path, 'wb') as f:
    np.savez(f, **arrays)
  return arrays
