"""ViT: shapes of every variant, parameter count, and numerics against an independent numpy forward pass."""

import numpy as np
import pytest
import tensorflow as tf

from l2p_tf.checkpoints import npz_loader
from l2p_tf.models import vit as vit_lib
from tests import test_util


def numpy_vit_cls(a, images, cfg, *, gelu_approximate=True):
  """Reference forward pass of the original flax ViT, in float64 numpy, returning the normed [CLS] output."""
  a = {k: v.astype(np.float64) for k, v in a.items()}
  p, d, h = cfg.patch_size, cfg.hidden_size, cfg.num_heads
  b, hh, ww, c = images.shape
  patches = images.reshape(b, hh // p, p, ww // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, p * p * c)
  x = patches @ a['embedding/kernel'].reshape(p * p * c, d) + a['embedding/bias']
  x = np.concatenate([np.tile(a['cls'], (b, 1, 1)), x], axis=1) + a['Transformer/posembed_input/pos_embedding']

  def ln(x, prefix):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-6) * a[f'{prefix}/scale'] + a[f'{prefix}/bias']

  def gelu(x):
    if gelu_approximate:
      return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    from math import erf  # pylint: disable=g-import-not-at-top
    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))

  for i in range(cfg.num_layers):
    blk = f'Transformer/encoderblock_{i}'
    att = f'{blk}/MultiHeadDotProductAttention_1'
    y = ln(x, f'{blk}/LayerNorm_0')
    q, k, v = (np.einsum('btd,dhk->bthk', y, a[f'{att}/{n}/kernel']) + a[f'{att}/{n}/bias']
               for n in ('query', 'key', 'value'))
    s = np.einsum('bqhk,bthk->bhqt', q / np.sqrt(d // h), k)
    s = np.exp(s - s.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    o = np.einsum('bhqt,bthk->bqhk', s, v)
    x = x + np.einsum('bqhk,hkd->bqd', o, a[f'{att}/out/kernel']) + a[f'{att}/out/bias']
    y = ln(x, f'{blk}/LayerNorm_2')
    y = gelu(y @ a[f'{blk}/MlpBlock_3/Dense_0/kernel'] + a[f'{blk}/MlpBlock_3/Dense_0/bias'])
    x = x + y @ a[f'{blk}/MlpBlock_3/Dense_1/kernel'] + a[f'{blk}/MlpBlock_3/Dense_1/bias']
  return ln(x, 'Transformer/encoder_norm')[:, 0]


@pytest.mark.parametrize('variant', sorted(vit_lib.VARIANTS))
def test_shapes_of_every_variant(variant):
  cfg = vit_lib.get_config(variant)
  size = cfg.patch_size * 2  # 4 patches: every variable but the position embedding is size-independent.
  model = vit_lib.VisionTransformer(variant=variant, image_size=size, num_classes=7)
  images = tf.zeros([3, size, size, 3])
  tokens = model.embed(images)
  assert tokens.shape == (3, 5, cfg.hidden_size)
  assert model.encode(tokens).shape == (3, 5, cfg.hidden_size)
  assert model.represent(images).shape == (3, cfg.hidden_size)
  assert model(images).shape == (3, 7)
  shapes = test_util.vit_array_shapes(variant, size, num_classes=7)
  assert {k: tuple(v.shape) for k, v in model.npz_variables().items()} == shapes


def test_b16_parameter_count_matches_checkpoint_arrays():
  model = vit_lib.VisionTransformer(variant='B/16', image_size=224)
  expected = sum(int(np.prod(s)) for s in test_util.vit_array_shapes('B/16', 224).values())
  assert vit_lib.count_params(model.variables) == expected == 85_798_656
  assert vit_lib.count_params(model.backbone_variables()) == expected


@pytest.mark.parametrize('gelu_approximate', [True, False])
def test_forward_matches_numpy_reference(tmp_path, gelu_approximate):
  path = str(tmp_path / 'tiny.npz')
  arrays = test_util.write_fake_npz(path, variant='tiny', image_size=32, representation_size=16, num_classes=5)
  model = vit_lib.VisionTransformer(variant='tiny', image_size=32, gelu_approximate=gelu_approximate)
  report = npz_loader.load_vit_npz(model, path)
  assert set(report.skipped) == {'head/kernel', 'head/bias', 'pre_logits/kernel', 'pre_logits/bias'}
  images = np.random.default_rng(1).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
  got = model(images).numpy()
  want = numpy_vit_cls(arrays, images.astype(np.float64), model.config, gelu_approximate=gelu_approximate)
  assert np.max(np.abs(got - want)) < 1e-4


def test_gelu_choice_changes_features(tmp_path):
  path = str(tmp_path / 'tiny.npz')
  test_util.write_fake_npz(path, variant='tiny', image_size=32)
  images = np.random.default_rng(2).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
  outs = []
  for approximate in (True, False):
    model = vit_lib.VisionTransformer(variant='tiny', image_size=32, gelu_approximate=approximate)
    npz_loader.load_vit_npz(model, path)
    outs.append(model(images).numpy())
  assert np.max(np.abs(outs[0] - outs[1])) > 1e-6


def test_image_size_must_be_multiple_of_patch():
  with pytest.raises(ValueError, match=r'image_size=30 .*patch size 4'):
    vit_lib.VisionTransformer(variant='tiny', image_size=30)


def test_unknown_variant():
  with pytest.raises(ValueError, match=r"Unknown ViT variant 'X/9'"):
    vit_lib.VisionTransformer(variant='X/9')
