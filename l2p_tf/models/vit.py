"""Vision Transformer in tf_keras, numerically matching google-research/vision_transformer.

The variables have exactly the shapes of the original flax parameters (for example the attention query kernel is
`(hidden, heads, head_dim)`), so loading an original `.npz` is a name-to-variable copy with no reshaping; see
`VisionTransformer.npz_variables` and `l2p_tf/checkpoints/npz_loader.py`.

The forward pass is split in two public halves so that extra tokens (L2P's prompts) can be inserted between them:

    tokens = vit.embed(images)          # [CLS, patches] + position embedding, shape (B, 1 + N, D)
    tokens = concat([prompts, tokens])  # any insertion the caller wants
    normed = vit.encode(tokens)         # every encoder block, then the final LayerNorm, shape (B, L, D)

`encode` has two per-layer extension points for methods that prompt inside the encoder (DualPrompt, CODA-Prompt):

    vit.encode(tokens, prefixes={layer: (key_prefix, value_prefix)},   # prefix tuning: (B, Lp, D) each, per sample
               inserts={layer: prompt_tokens})                         # prompt tuning: (B, Lt, D) prepended to the
                                                                       # sequence before that layer's block

A prefix is a per-sample key and value prepended to that layer's projected attention keys and values (split into
heads head-major, as `(B, Lp, H, Dh)`); queries come from the tokens only, so the sequence keeps its length.

`vit(images)` runs both halves and returns the [CLS] representation (or logits when `num_classes` is set).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional

import tensorflow as tf
import tf_keras

LAYER_NORM_EPSILON = 1e-6


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """Shape of a ViT variant.

  Attributes:
    hidden_size: token width D.
    mlp_dim: hidden width of each block's MLP.
    num_heads: attention heads (D must be divisible by it).
    num_layers: encoder blocks.
    patch_size: square patch side in pixels.
  """
  hidden_size: int
  mlp_dim: int
  num_heads: int
  num_layers: int
  patch_size: int


# The variants of google-research/vision_transformer (configs/models.py), plus two small models for 32x32 inputs:
# `tiny` (2 layers, 64 wide) for tests (a training step takes milliseconds on a CPU) and `mini` (4 layers, 128 wide),
# the backbone that `l2p_tf.pretrain` makes on CIFAR-100 classes 50-99 and the quickstart ships (pretrained/).
VARIANTS = {
    'tiny': ViTConfig(hidden_size=64, mlp_dim=128, num_heads=2, num_layers=2, patch_size=4),
    'mini': ViTConfig(hidden_size=128, mlp_dim=512, num_heads=4, num_layers=4, patch_size=4),
    'Ti/16': ViTConfig(hidden_size=192, mlp_dim=768, num_heads=3, num_layers=12, patch_size=16),
    'S/16': ViTConfig(hidden_size=384, mlp_dim=1536, num_heads=6, num_layers=12, patch_size=16),
    'B/16': ViTConfig(hidden_size=768, mlp_dim=3072, num_heads=12, num_layers=12, patch_size=16),
    'B/32': ViTConfig(hidden_size=768, mlp_dim=3072, num_heads=12, num_layers=12, patch_size=32),
    'L/16': ViTConfig(hidden_size=1024, mlp_dim=4096, num_heads=16, num_layers=24, patch_size=16),
}


def get_config(variant: str) -> ViTConfig:
  """Returns the `ViTConfig` of a named variant.

  Raises:
    ValueError: `variant` is not one of `VARIANTS`.
  """
  try:
    return VARIANTS[variant]
  except KeyError:
    raise ValueError(f'Unknown ViT variant {variant!r}; known variants: {sorted(VARIANTS)}.') from None


class MultiHeadDotProductAttention(tf_keras.layers.Layer):
  """Self-attention with flax's parameter layout: q/k/v kernels (D, H, K), out kernel (H, K, D)."""

  def __init__(self, *, num_heads: int, hidden_size: int, dropout_rate: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    if hidden_size % num_heads:
      raise ValueError(f'hidden_size={hidden_size} is not divisible by num_heads={num_heads}.')
    self.num_heads = num_heads
    self.head_dim = hidden_size // num_heads
    # One initializer instance per layer: a shared unseeded instance would give q, k and v identical values.
    proj = dict(output_shape=(None, num_heads, self.head_dim), bias_axes='hk', kernel_initializer='glorot_uniform')
    self.query = tf_keras.layers.EinsumDense('btd,dhk->bthk', name='query', **proj)
    self.key = tf_keras.layers.EinsumDense('btd,dhk->bthk', name='key', **proj)
    self.value = tf_keras.layers.EinsumDense('btd,dhk->bthk', name='value', **proj)
    self.out = tf_keras.layers.EinsumDense(
        'bthk,hkd->btd', output_shape=(None, hidden_size), bias_axes='d', kernel_initializer='glorot_uniform',
        name='out')
    self.dropout = tf_keras.layers.Dropout(dropout_rate)

  def _project(self, x2, proj, b, t):
    """`proj`'s projection of the flattened tokens x2 (b * t, D) -> (b, H, t, K), as one 2-D matmul."""
    kernel = tf.reshape(tf.cast(proj.kernel, x2.dtype), [x2.shape[-1], self.num_heads * self.head_dim])
    y = tf.matmul(x2, kernel) + tf.reshape(tf.cast(proj.bias, x2.dtype), [-1])
    return tf.transpose(tf.reshape(y, [b, t, self.num_heads, self.head_dim]), [0, 2, 1, 3])

  def _prefix_heads(self, p, dtype):
    """A prefix (B, Lp, D) or (B, Lp, H, Dh) -> (B, H, Lp, Dh), head-major, per sample."""
    p = tf.cast(p, dtype)
    if p.shape.rank != 4:
      p = tf.reshape(p, [tf.shape(p)[0], tf.shape(p)[1], self.num_heads, self.head_dim])
    return tf.transpose(p, [0, 2, 1, 3])

  def call(self, x, training=False, prefix=None):
    """Self-attention over `x` (B, T, D); `prefix` = (key, value), each (B, Lp, D) or (B, Lp, H, Dh), is
    prepended per sample to the projected keys and values (prefix tuning; no projection applied to it)."""
    # The layers hold the variables (flax's layout); the arithmetic is 2-D and batched matmuls in the (B, H, L, K)
    # layout, not einsums: oneDNN's einsum (TensorFlow's CPU kernel) transposes its operands on every call, which
    # made the attention, forward and backward, about half of a ViT-mini step on CPU (benchmarks/step_profile.py).
    # Forward values are the einsums'; XLA compiles either form to the same dots.
    for proj in (self.query, self.key, self.value):
      if not proj.built:
        proj.build(x.shape)
    if not self.out.built:
      self.out.build((None, None, self.num_heads, self.head_dim))
    b, t, d = tf.shape(x)[0], tf.shape(x)[1], x.shape[-1]
    x2 = tf.reshape(x, [-1, d])
    # flax scales the query by 1/sqrt(head_dim) before the dot product.
    q = self._project(x2, self.query, b, t) * tf.cast(1.0 / math.sqrt(self.head_dim), x.dtype)
    k = self._project(x2, self.key, b, t)
    v = self._project(x2, self.value, b, t)
    if prefix is not None:
      k = tf.concat([self._prefix_heads(prefix[0], x.dtype), k], axis=2)
      v = tf.concat([self._prefix_heads(prefix[1], x.dtype), v], axis=2)
    scores = tf.matmul(q, k, transpose_b=True)  # (B, H, Lq, Lt)
    # Softmax in float32 whatever the compute dtype (mixed precision keeps it exact enough).
    weights = tf.cast(tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1), x.dtype)
    weights = self.dropout(weights, training=training)
    heads = tf.reshape(tf.transpose(tf.matmul(weights, v), [0, 2, 1, 3]), [-1, self.num_heads * self.head_dim])
    out = tf.matmul(heads, tf.reshape(tf.cast(self.out.kernel, x.dtype), [self.num_heads * self.head_dim, d]))
    return tf.reshape(out + tf.cast(self.out.bias, x.dtype), [b, t, d])


def gelu(x, approximate: bool = True):
  """`tf.nn.gelu` with a hand-written gradient that keeps only `x` for the backward pass.

  The forward value is exactly `tf.nn.gelu`'s. Autodiff through the tanh approximation would keep several
  intermediates of the MLP's widest tensor (B, L, mlp_dim) alive until the backward pass; this keeps one, which cuts
  the peak memory of an L2P step on ViT-B/16 at batch 16 by about 1.5 GB (docs/benchmarks.md). The derivative is the
  analytical one, evaluated in float32:

      tanh:  0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2),  t = tanh(c (x + a x^3)), c = sqrt(2 / pi), a = 0.044715
      erf:   Phi(x) + x phi(x)
  """

  @tf.custom_gradient
  def _gelu(x):
    def grad(dy):
      xf = tf.cast(x, tf.float32)
      if approximate:
        c = math.sqrt(2.0 / math.pi)
        t = tf.tanh(c * (xf + 0.044715 * xf * xf * xf))
        d = 0.5 * (1.0 + t) + 0.5 * xf * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * xf * xf)
      else:
        d = 0.5 * (1.0 + tf.math.erf(xf * (1.0 / math.sqrt(2.0)))) + xf * tf.exp(-0.5 * xf * xf) / math.sqrt(
            2.0 * math.pi)
      return dy * tf.cast(d, dy.dtype)
    return tf.nn.gelu(x, approximate=approximate), grad

  return _gelu(x)


class MlpBlock(tf_keras.layers.Layer):
  """Dense -> GELU -> dropout -> Dense -> dropout (flax `MlpBlock`)."""

  def __init__(self, *, mlp_dim: int, hidden_size: int, dropout_rate: float = 0.0,
               gelu_approximate: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.gelu_approximate = gelu_approximate
    self.dense_0 = tf_keras.layers.Dense(
        mlp_dim, kernel_initializer='glorot_uniform',
        bias_initializer=tf_keras.initializers.RandomNormal(stddev=1e-6), name='Dense_0')
    self.dense_1 = tf_keras.layers.Dense(
        hidden_size, kernel_initializer='glorot_uniform',
        bias_initializer=tf_keras.initializers.RandomNormal(stddev=1e-6), name='Dense_1')
    self.dropout = tf_keras.layers.Dropout(dropout_rate)

  def call(self, x, training=False):
    # flax's nn.gelu defaults to the tanh approximation; exact erf GELU (timm, PyTorch) is the alternative.
    x = gelu(self.dense_0(x), approximate=self.gelu_approximate)
    x = self.dropout(x, training=training)
    return self.dropout(self.dense_1(x), training=training)


class Encoder1DBlock(tf_keras.layers.Layer):
  """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

  def __init__(self, *, config: ViTConfig, dropout_rate: float, attention_dropout_rate: float,
               gelu_approximate: bool, **kwargs):
    super().__init__(**kwargs)
    self.layer_norm_0 = tf_keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name='LayerNorm_0')
    self.attention = MultiHeadDotProductAttention(
        num_heads=config.num_heads, hidden_size=config.hidden_size, dropout_rate=attention_dropout_rate,
        name='MultiHeadDotProductAttention_1')
    self.layer_norm_2 = tf_keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name='LayerNorm_2')
    self.mlp = MlpBlock(mlp_dim=config.mlp_dim, hidden_size=config.hidden_size, dropout_rate=dropout_rate,
                        gelu_approximate=gelu_approximate, name='MlpBlock_3')
    self.dropout = tf_keras.layers.Dropout(dropout_rate)

  def call(self, x, training=False, prefix=None):
    y = self.attention(self.layer_norm_0(x), training=training, prefix=prefix)
    x = x + self.dropout(y, training=training)
    return x + self.mlp(self.layer_norm_2(x), training=training)


class VisionTransformer(tf_keras.Model):
  """ViT with a prompt insertion point between the embedding and the first encoder block.

  Args:
    variant: a key of `VARIANTS` ('tiny', 'Ti/16', 'S/16', 'B/16', 'B/32', 'L/16').
    image_size: square input side in pixels; must be divisible by the patch size.
    num_classes: if > 0, a `head` dense layer on the classifier token gives logits; 0 returns the representation.
    representation_size: if set, a `pre_logits` dense + tanh layer of this width (the IN-21k checkpoints have one).
    dropout_rate: dropout after the position embedding, in every MLP and after attention.
    attention_dropout_rate: dropout on the attention weights.
    gelu_approximate: True (default) is flax's tanh-approximated GELU; False is exact erf GELU.

  Raises:
    ValueError: unknown variant, or an image size not divisible by the patch size.
  """

  def __init__(self, *, variant: str = 'B/16', image_size: int = 224, num_classes: int = 0,
               representation_size: Optional[int] = None, dropout_rate: float = 0.0,
               attention_dropout_rate: float = 0.0, gelu_approximate: bool = True, name: str = 'vit', dtype=None):
    # Explicit name/dtype instead of **kwargs: gin then rejects a misspelt parameter when it parses the binding.
    super().__init__(name=name, dtype=dtype)
    self.variant = variant
    self.config = get_config(variant)
    if image_size <= 0 or image_size % self.config.patch_size:
      raise ValueError(
          f'image_size={image_size} is not a positive multiple of the patch size {self.config.patch_size} of '
          f'ViT-{variant}; use e.g. {self.config.patch_size * max(1, round(image_size / self.config.patch_size))}.')
    self.image_size = image_size
    self.num_classes = num_classes
    self.representation_size = representation_size
    self.gelu_approximate = gelu_approximate
    d = self.config.hidden_size
    self.grid_size = image_size // self.config.patch_size
    self.num_patches = self.grid_size ** 2

    self.embedding = tf_keras.layers.Conv2D(
        d, self.config.patch_size, strides=self.config.patch_size, padding='valid', name='embedding')
    self.cls = self.add_weight(name='cls', shape=(1, 1, d), initializer='zeros')
    self.pos_embedding = self.add_weight(
        name='pos_embedding', shape=(1, self.num_patches + 1, d),
        initializer=tf_keras.initializers.RandomNormal(stddev=0.02))
    self.embed_dropout = tf_keras.layers.Dropout(dropout_rate)
    self.blocks = [
        Encoder1DBlock(config=self.config, dropout_rate=dropout_rate, attention_dropout_rate=attention_dropout_rate,
                       gelu_approximate=gelu_approximate, name=f'encoderblock_{i}')
        for i in range(self.config.num_layers)]
    self.encoder_norm = tf_keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name='encoder_norm')
    self.pre_logits = (tf_keras.layers.Dense(representation_size, name='pre_logits')
                       if representation_size else None)
    self.head = (tf_keras.layers.Dense(num_classes, kernel_initializer='zeros', name='head')
                 if num_classes else None)
    self.build_variables()

  @property
  def hidden_size(self) -> int:
    return self.config.hidden_size

  def build_variables(self):
    """Creates every variable now (layers are otherwise built lazily on the first call)."""
    d = self.config.hidden_size
    self.embedding.build((None, self.image_size, self.image_size, 3))
    for block in self.blocks:
      block.layer_norm_0.build((None, None, d))
      for proj in (block.attention.query, block.attention.key, block.attention.value):
        proj.build((None, None, d))
      block.attention.out.build((None, None, self.config.num_heads, d // self.config.num_heads))
      block.layer_norm_2.build((None, None, d))
      block.mlp.dense_0.build((None, None, d))
      block.mlp.dense_1.build((None, None, self.config.mlp_dim))
    self.encoder_norm.build((None, None, d))
    width = d
    if self.pre_logits is not None:
      self.pre_logits.build((None, width))
      width = self.representation_size
    if self.head is not None:
      self.head.build((None, width))

  def embed(self, images, training=False):
    """Patch-embeds `images` (B, H, W, 3), prepends [CLS] and adds the position embedding: (B, 1 + N, D)."""
    x = self.embedding(images)
    b = tf.shape(x)[0]
    x = tf.reshape(x, [b, -1, self.config.hidden_size])
    cls = tf.cast(tf.tile(self.cls, [b, 1, 1]), x.dtype)
    x = tf.concat([cls, x], axis=1)
    return x + tf.cast(self.pos_embedding, x.dtype)

  def encode(self, tokens, training=False, prefixes: Optional[Mapping[int, tuple]] = None,
             inserts: Optional[Mapping[int, tf.Tensor]] = None):
    """Runs dropout, every encoder block and the final LayerNorm over `tokens` (B, L, D).

    Args:
      tokens: (B, L, D), e.g. `embed`'s output.
      training: dropout.
      prefixes: {layer index: (key prefix, value prefix)}, each (B, Lp, D) (or (B, Lp, H, Dh)): prepended per sample
        to that block's attention keys and values (prefix tuning).
      inserts: {layer index: (B, Lt, D) tokens}: prepended to the sequence before that block (prompt tuning at
        that layer; the sequence then keeps them to the end).

    Returns:
      (B, L + inserted tokens, D) after the final LayerNorm.

    Raises:
      ValueError: a layer index outside [0, num_layers).
    """
    for name, extra in (('prefixes', prefixes), ('inserts', inserts)):
      bad = sorted(i for i in (extra or {}) if not 0 <= i < self.config.num_layers)
      if bad:
        raise ValueError(f'{name} for layers {bad}: ViT-{self.variant} has layers 0..{self.config.num_layers - 1}.')
    x = self.embed_dropout(tokens, training=training)
    for i, block in enumerate(self.blocks):
      if inserts and i in inserts:
        x = tf.concat([tf.cast(inserts[i], x.dtype), x], axis=1)
      prefix = prefixes.get(i) if prefixes else None
      x = block(x, training=training, **({'prefix': prefix} if prefix is not None else {}))
    return self.encoder_norm(x)

  def represent(self, images, training=False):
    """The [CLS] output after the final LayerNorm (and `pre_logits` if present): (B, D)."""
    x = self.encode(self.embed(images, training=training), training=training)[:, 0]
    if self.pre_logits is not None:
      x = tf.nn.tanh(self.pre_logits(x))
    return x

  def call(self, images, training=False):
    x = self.represent(images, training=training)
    return self.head(x) if self.head is not None else x

  def npz_variables(self) -> dict[str, tf.Variable]:
    """Maps every original-checkpoint key this model has to its variable (same shape, same meaning)."""
    out = {
        'cls': self.cls,
        'embedding/kernel': self.embedding.kernel,
        'embedding/bias': self.embedding.bias,
        'Transformer/posembed_input/pos_embedding': self.pos_embedding,
        'Transformer/encoder_norm/scale': self.encoder_norm.gamma,
        'Transformer/encoder_norm/bias': self.encoder_norm.beta,
    }
    for i, block in enumerate(self.blocks):
      prefix = f'Transformer/encoderblock_{i}'
      out[f'{prefix}/LayerNorm_0/scale'] = block.layer_norm_0.gamma
      out[f'{prefix}/LayerNorm_0/bias'] = block.layer_norm_0.beta
      out[f'{prefix}/LayerNorm_2/scale'] = block.layer_norm_2.gamma
      out[f'{prefix}/LayerNorm_2/bias'] = block.layer_norm_2.beta
      for name in ('query', 'key', 'value', 'out'):
        proj = getattr(block.attention, name)
        out[f'{prefix}/MultiHeadDotProductAttention_1/{name}/kernel'] = proj.kernel
        out[f'{prefix}/MultiHeadDotProductAttention_1/{name}/bias'] = proj.bias
      for j, dense in enumerate((block.mlp.dense_0, block.mlp.dense_1)):
        out[f'{prefix}/MlpBlock_3/Dense_{j}/kernel'] = dense.kernel
        out[f'{prefix}/MlpBlock_3/Dense_{j}/bias'] = dense.bias
    if self.pre_logits is not None:
      out['pre_logits/kernel'] = self.pre_logits.kernel
      out['pre_logits/bias'] = self.pre_logits.bias
    if self.head is not None:
      out['head/kernel'] = self.head.kernel
      out['head/bias'] = self.head.bias
    return out

  def backbone_variables(self) -> list[tf.Variable]:
    """Every variable except `pre_logits` and `head`: what L2P freezes."""
    return [v for k, v in self.npz_variables().items() if not k.startswith(('head/', 'pre_logits/'))]


def count_params(variables) -> int:
  """Total number of scalars in `variables`."""
  return int(sum(math.prod(v.shape) for v in variables))
