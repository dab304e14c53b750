"""Helpers for tests: virtual CPUs (so MirroredStrategy runs real multi-replica code), tiny factories, fake npz."""

from __future__ import annotations

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


def mirrored_strategy() -> tf.distribute.MirroredStrategy:
  """A MirroredStrategy over the virtual CPUs (2 replicas)."""
  devices = cpu_devices()
  assert len(devices) >= 2, f'need >= 2 virtual CPUs, have {devices}'
  return tf.distribute.MirroredStrategy(devices[:2])


def random_vit_arrays(variant: str = 'tiny', image_size: int = 32, *, seed: int = 0, representation_size=None,
                      num_classes: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
  """Random arrays under the original vision_transformer key names and shapes, for a given variant.

  Written independently of the model code (from the flax layout), so a test that loads them checks the model's
  variable map too.
  """
  from l2p_tf.models import vit as vit_lib  # pylint: disable=g-import-not-at-top
  cfg = vit_lib.get_config(variant)
  rng = np.random.default_rng(seed)
  d, h, p, m = cfg.hidden_size, cfg.num_heads, cfg.patch_size, cfg.mlp_dim
  k = d // h
  n = (image_size // p) ** 2 + 1

  def r(*shape, scale=0.05):
    return (rng.standard_normal(shape) * scale).astype(dtype)

  out = {
      'cls': r(1, 1, d),
      'embedding/kernel': r(p, p, 3, d),
      'embedding/bias': r(d),
      'Transformer/posembed_input/pos_embedding': r(1, n, d, scale=0.02),
      'Transformer/encoder_norm/scale': (1 + r(d)).astype(dtype),
      'Transformer/encoder_norm/bias': r(d),
  }
  for i in range(cfg.num_layers):
    b = f'Transformer/encoderblock_{i}'
    for ln in ('LayerNorm_0', 'LayerNorm_2'):
      out[f'{b}/{ln}/scale'] = (1 + r(d)).astype(dtype)
      out[f'{b}/{ln}/bias'] = r(d)
    for name in ('query', 'key', 'value'):
      out[f'{b}/MultiHeadDotProductAttention_1/{name}/kernel'] = r(d, h, k, scale=d ** -0.5)
      out[f'{b}/MultiHeadDotProductAttention_1/{name}/bias'] = r(h, k)
    out[f'{b}/MultiHeadDotProductAttention_1/out/kernel'] = r(h, k, d, scale=d ** -0.5)
    out[f'{b}/MultiHeadDotProductAttention_1/out/bias'] = r(d)
    out[f'{b}/MlpBlock_3/Dense_0/kernel'] = r(d, m, scale=d ** -0.5)
    out[f'{b}/MlpBlock_3/Dense_0/bias'] = r(m)
    out[f'{b}/MlpBlock_3/Dense_1/kernel'] = r(m, d, scale=m ** -0.5)
    out[f'{b}/MlpBlock_3/Dense_1/bias'] = r(d)
  if representation_size:
    out['pre_logits/kernel'] = r(d, representation_size)
    out['pre_logits/bias'] = r(representation_size)
  if num_classes:
    out['head/kernel'] = r(representation_size or d, num_classes)
    out['head/bias'] = r(num_classes)
  return out


def write_fake_npz(path: str, **kwargs) -> dict[str, np.ndarray]:
  """Writes `random_vit_arrays(**kwargs)` to `path` (an uncompressed .npz, like the originals) and returns them."""
  arrays = random_vit_arrays(**kwargs)
  with open(path, 'wb') as f:
    np.savez(f, **arrays)
  return arrays
