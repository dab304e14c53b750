"""The ViT's prefix-tuning and prompt-insertion extension points against a float64 numpy reference."""

import numpy as np
import pytest
import tensorflow as tf

from l2p_tf.models import vit as vit_lib


def _ln(x, scale, bias):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-6) * scale + bias


def numpy_attention(a, x, heads, prefix=None):
  """Flax attention in float64 with per-sample (B, Lp, D) key and value prefixes after the projections."""
  q, k, v = (np.einsum('btd,dhk->bthk', x, a[f'{n}/kernel']) + a[f'{n}/bias'] for n in ('query', 'key', 'value'))
  b, _, h, dh = q.shape
  if prefix is not None:
    pk, pv = (p.reshape(b, p.shape[1], h, dh) for p in prefix)  # head-major split of D
    k = np.concatenate([pk, k], axis=1)
    v = np.concatenate([pv, v], axis=1)
  s = np.einsum('bqhk,bthk->bhqt', q / np.sqrt(dh), k)
  s = np.exp(s - s.max(-1, keepdims=True))
  s /= s.sum(-1, keepdims=True)
  return np.einsum('bqhk,hkd->bqd', np.einsum('bhqt,bthk->bqhk', s, v), a['out/kernel']) + a['out/bias']


def numpy_encode(vit, tokens, prefixes):
  a = {k: v.numpy().astype(np.float64) for k, v in vit.npz_variables().items()}
  x = tokens.astype(np.float64)
  for i in range(vit.config.num_layers):
    blk = f'Transformer/encoderblock_{i}'
    att = {k[len(blk) + len('/MultiHeadDotProductAttention_1/'):]: v for k, v in a.items()
           if k.startswith(f'{blk}/MultiHeadDotProductAttention_1/')}
    y = _ln(x, a[f'{blk}/LayerNorm_0/scale'], a[f'{blk}/LayerNorm_0/bias'])
    x = x + numpy_attention(att, y, vit.config.num_heads, prefixes.get(i))
    y = _ln(x, a[f'{blk}/LayerNorm_2/scale'], a[f'{blk}/LayerNorm_2/bias'])
    y = y @ a[f'{blk}/MlpBlock_3/Dense_0/kernel'] + a[f'{blk}/MlpBlock_3/Dense_0/bias']
    y = 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y ** 3)))
    x = x + y @ a[f'{blk}/MlpBlock_3/Dense_1/kernel'] + a[f'{blk}/MlpBlock_3/Dense_1/bias']
  return _ln(x, a['Transformer/encoder_norm/scale'], a['Transformer/encoder_norm/bias'])


@pytest.fixture(scope='module')
def vit():
  tf.keras.utils.set_random_seed(3)
  model = vit_lib.VisionTransformer(variant='tiny', image_size=32)
  rng = np.random.default_rng(0)
  for v in model.variables:  # Non-trivial biases and norms everywhere.
    v.assign(v.numpy() + rng.normal(0, 0.05, v.shape).astype(np.float32))
  return model


def test_attention_with_per_sample_prefixes_matches_numpy(vit):
  rng = np.random.default_rng(1)
  att = vit.blocks[0].attention
  x = rng.normal(0, 1, (3, 7, 64)).astype(np.float32)
  pk, pv = (rng.normal(0, 1, (3, 4, 64)).astype(np.float32) for _ in range(2))
  got = att(x, prefix=(pk, pv)).numpy()
  weights = {f'{n}/{w}': getattr(getattr(att, n), w).numpy().astype(np.float64)
             for n in ('query', 'key', 'value', 'out') for w in ('kernel', 'bias')}
  want = numpy_attention(weights, x.astype(np.float64), 2, (pk.astype(np.float64), pv.astype(np.float64)))
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  # (B, Lp, H, Dh) prefixes are the same prefixes already split into heads.
  split = att(x, prefix=(pk.reshape(3, 4, 2, 32), pv.reshape(3, 4, 2, 32))).numpy()
  np.testing.assert_allclose(split, got, atol=1e-6)
  # Each sample sees only its own prefix: changing sample 2's prefix leaves samples 0 and 1 unchanged.
  pk2 = pk.copy()
  pk2[2] += 1.0
  other = att(x, prefix=(pk2, pv)).numpy()
  np.testing.assert_array_equal(other[:2], got[:2])
  assert np.abs(other[2] - got[2]).max() > 1e-3


def test_encode_with_prefixes_at_chosen_layers_matches_numpy(vit):
  rng = np.random.default_rng(2)
  images = rng.uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
  tokens = vit.embed(images).numpy()
  prefixes = {1: tuple(rng.normal(0, 1, (3, 5, 64)).astype(np.float32) for _ in range(2))}
  got = vit.encode(tokens, prefixes=prefixes).numpy()
  want = numpy_encode(vit, tokens, {1: tuple(p.astype(np.float64) for p in prefixes[1])})
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  assert got.shape == tokens.shape  # Prefixes add no tokens.
  # No prefixes: the plain encoder.
  np.testing.assert_allclose(vit.encode(tokens, prefixes={}).numpy(), vit.encode(tokens).numpy(), atol=0)


def test_inserts_prepend_tokens_before_the_layer(vit):
  rng = np.random.default_rng(3)
  tokens = vit.embed(rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32))
  prompts = tf.constant(rng.normal(0, 1, (2, 3, 64)).astype(np.float32))
  got = vit.encode(tokens, inserts={0: prompts})
  want = vit.encode(tf.concat([prompts, tokens], axis=1))
  np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)
  with pytest.raises(ValueError, match='layers 0..1'):
    vit.encode(tokens, prefixes={2: (prompts, prompts)})
