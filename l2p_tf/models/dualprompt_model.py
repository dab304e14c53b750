"""DualPrompt (Wang et al., ECCV 2022): a shared G-prompt in the first layers and a task-specific E-prompt pool.

Follows google-research/l2p (`models/vit.py`, `models/prompt.py`; the JAX original, not the PyTorch port):

    query  = final-LayerNorm [CLS] of the frozen, prompt-free ViT pass (no gradient)
    ids    = the E-pool's selection by the query (L2P's `PromptPool`: cosine to the keys, top-N, batchwise vote, task
             mask in training, the shared-pool copy per task; ONE selection for every E-layer)
    layer l in g_layers: prefix-tune with the G-prompt (shared by every sample and task)
    layer e_layers[c]:   prefix-tune with the selected E-prompts' slice c: for sample b, keys = concat_j
                         E[ids[b, j], c, key half] and values = concat_j E[ids[b, j], c, value half]
    a layer in both lists gets [G ; E]
    logits = head(final-LayerNorm [CLS] of the prompted pass)       ('token', the official DualPrompt head)

Prefixes are raw parameters in the projected key / value space (they do not pass through W_k, W_v) and add no
tokens, so [CLS] stays at index 0. With `prefix_tune=False` (prompt tuning) the G / E prompt tokens are instead
prepended to the sequence before their layers (no position embedding) and the sequence grows layer by layer.

Layout of the pool: `PromptPool.prompts` is (M, n_e * halves * Le, D), one row per pool entry holding every E-layer's
key and value halves, so the pool's selection, vote, mask and copy apply unchanged. `split_e_prompts` takes the
selected rows apart per sample; it never mixes the batch axis with the key/value axis (the PyTorch port's reshape
hands one sample's prompts to another: the first half of the batch attends to key halves only, the second half to
value halves only).

Parameter layout difference from the original: the official G-prompt `prefix` is allocated for all 12 layers (only
the G-layers used); here only the G-layers have one, so the trainable count is smaller by the unused slices.
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf
import tf_keras

from l2p_tf.models import prompt_pool as prompt_pool_lib
from l2p_tf.models import vit as vit_lib


def split_e_prompts(prompts, *, top_k: int, num_layers: int, halves: int, length: int):
  """The pool's selected rows, per E-layer and half.

  Args:
    prompts: (B, N * num_layers * halves * length, D), `PromptPool`'s output (rows in selection order).
    top_k: N.
    num_layers: E-layers.
    halves: 2 (key, value) for prefix tuning, 1 for prompt tuning.
    length: Le, tokens per half.

  Returns:
    (num_layers, halves, B, N * length, D): [c, h, b] is sample b's own prompts (its N selections concatenated).
  """
  b, d = tf.shape(prompts)[0], prompts.shape[-1]
  x = tf.reshape(prompts, [b, top_k, num_layers, halves, length, d])
  x = tf.transpose(x, [2, 3, 0, 1, 4, 5])  # (layers, halves, B, N, Le, D): the batch axis stays whole
  return tf.reshape(x, [num_layers, halves, b, top_k * length, d])


class DualPromptModel(tf_keras.Model):
  """ViT + G-prompt + E-prompt pool + zero-initialised head on the prompted [CLS].

  Args:
    vit: a `vit_lib.VisionTransformer` (frozen here: `trainable` is set False).
    num_classes: width of the head.
    prompt_pool: `prompt_pool(prompt_length=...)` -> the E-pool (`PromptPool`; embed_dim and num_tasks already
      given); the model passes the row length n_e * halves * Le.
    g_layers: layers with the G-prompt (official: (0, 1)); () for none.
    g_length: G tokens per half (official: 5).
    e_layers: layers with the E-prompt (official: (2, 3, 4)).
    e_length: E tokens per half per selected prompt (official: 5 for CIFAR-100, 20 for ImageNet-R).
    prefix_tune: prefix tuning (official) or prompt tuning (tokens prepended before the layer).
    g_init: initializer of the G-prompt (`prompt_pool.INITIALIZERS`; official 'uniform' = U[0, 0.01)).
    name: model name.

  Raises:
    ValueError: no E-layers, a layer outside the ViT, a non-positive length or class count.
  """

  def __init__(self, *, vit: vit_lib.VisionTransformer, num_classes: int, prompt_pool: Callable,
               g_layers: Sequence[int] = (0, 1), g_length: int = 5, e_layers: Sequence[int] = (2, 3, 4),
               e_length: int = 5, prefix_tune: bool = True, g_init: str = 'uniform', name: str = 'dualprompt'):
    super().__init__(name=name)
    depth = vit.config.num_layers
    self.g_layers, self.e_layers = tuple(int(i) for i in g_layers), tuple(int(i) for i in e_layers)
    if not self.e_layers:
      raise ValueError('DualPrompt needs at least one E-layer.')
    for layer in self.g_layers + self.e_layers:
      if not 0 <= layer < depth:
        raise ValueError(f'Prompt layer {layer} is outside ViT-{vit.variant} (layers 0..{depth - 1}).')
    for arg, value in (('num_classes', num_classes), ('g_length', g_length), ('e_length', e_length)):
      if not isinstance(value, int) or value < 1:
        raise ValueError(f'{arg} must be a positive integer, got {value!r}.')
    self.vit = vit
    self.vit.trainable = False
    self.num_classes = num_classes
    self.g_length, self.e_length = g_length, e_length
    self.prefix_tune = bool(prefix_tune)
    self.halves = 2 if self.prefix_tune else 1
    d = vit.hidden_size
    self.prompt_pool = prompt_pool(prompt_length=len(self.e_layers) * self.halves * e_length)
    if self.prompt_pool.embed_dim != d:
      raise ValueError(f'prompt_pool.embed_dim={self.prompt_pool.embed_dim} differs from the ViT width {d}.')
    self.g_prompt = (self.add_weight(name='g_prompt', shape=(len(self.g_layers), self.halves, g_length, d),
                                     dtype=tf.float32, initializer=prompt_pool_lib.make_initializer(g_init),
                                     trainable=True)
                     if self.g_layers else None)
    self.head = tf_keras.layers.Dense(num_classes, kernel_initializer='zeros', bias_initializer='zeros',
                                      dtype='float32', name='head')
    self.head.build((None, d))
    expected = {v.ref() for v in self.head.trainable_weights + self.prompt_pool.trainable_weights}
    expected |= {self.g_prompt.ref()} if self.g_prompt is not None else set()
    if {v.ref() for v in self.trainable_variables} != expected:
      raise AssertionError('DualPromptModel: the trainable variables are not exactly the prompts, keys and head.')

  def query_pass(self, images) -> dict:
    """The frozen, prompt-free pass: {'tokens': embedded (B, 1 + P, D), 'query': final-LayerNorm [CLS] (B, D)}."""
    x = self.vit.embed(tf.cast(images, self.compute_dtype))
    query = tf.cast(self.vit.encode(x, training=False)[:, 0], tf.float32)
    return {'tokens': tf.stop_gradient(x), 'query': tf.stop_gradient(query)}

  def layer_prompts(self, pool_prompts, batch) -> dict[int, list]:
    """{layer: [half tensors (B, L, D)]}: G then E where a layer has both."""
    out = {}
    for i, layer in enumerate(self.g_layers):
      out[layer] = [tf.tile(self.g_prompt[i, h][tf.newaxis], [batch, 1, 1]) for h in range(self.halves)]
    e = split_e_prompts(pool_prompts, top_k=self.prompt_pool.top_k, num_layers=len(self.e_layers),
                        halves=self.halves, length=self.e_length)
    for c, layer in enumerate(self.e_layers):
      g = out.get(layer)
      out[layer] = [tf.concat([g[h], e[c, h]], axis=1) if g else e[c, h] for h in range(self.halves)]
    return out

  def call(self, images, *, task_index=None, training=False, selection=None, valid=None,
           query_pass=None) -> dict:
    """Classifies `images`; arguments and result as `L2PModel.call` ('logits', 'reduce_sim', 'prompt_ids',
    'query')."""
    training = bool(training)
    if query_pass is None:
      query_pass = self.query_pass(images)
    x = query_pass['tokens'] if 'tokens' in query_pass else self.vit.embed(images, training=training)
    pool = self.prompt_pool(query_pass['query'], task_index=task_index, training=training, selection=selection,
                            valid=valid)
    prompts = self.layer_prompts(pool['prompts'], tf.shape(x)[0])
    if self.prefix_tune:
      encoded = self.vit.encode(x, training=training, prefixes={k: tuple(v) for k, v in prompts.items()})
      cls_index = 0
    else:
      encoded = self.vit.encode(x, training=training, inserts={k: v[0] for k, v in prompts.items()})
      cls_index = sum(int(v[0].shape[1]) for v in prompts.values())
    logits = self.head(tf.cast(encoded[:, cls_index], tf.float32))
    return {'logits': logits, 'reduce_sim': pool['reduce_sim'], 'prompt_ids': pool['prompt_ids'],
            'query': query_pass['query']}

  def param_counts(self) -> dict[str, int]:
    """Scalar counts: 'g_prompt', 'e_prompts', 'keys', 'head', 'backbone', 'trainable', 'total'."""
    pool = self.prompt_pool
    counts = {
        'g_prompt': vit_lib.count_params([self.g_prompt]) if self.g_prompt is not None else 0,
        'e_prompts': vit_lib.count_params([pool.prompts]),
        'keys': vit_lib.count_params([pool.keys]) if pool.keys is not None else 0,
        'head': vit_lib.count_params(self.head.weights),
        'backbone': vit_lib.count_params(self.vit.weights),
        'trainable': vit_lib.count_params(self.trainable_variables),
    }
    counts['total'] = sum(counts[k] for k in ('g_prompt', 'e_prompts', 'keys', 'head', 'backbone'))
    return counts

  def summary_line(self) -> str:
    c = self.param_counts()
    return (f'DualPrompt: trainable {c["trainable"]:,} (G-prompt {c["g_prompt"]:,}, E-prompts {c["e_prompts"]:,}, '
            f'keys {c["keys"]:,}, head {c["head"]:,}) of {c["total"]:,} total')
