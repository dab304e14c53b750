"""The L2P classifier: frozen query pass -> prompt pool -> prompted pass -> head.

One ViT serves both passes (no second copy of the backbone, as the original's `original_vit_params` were the same
pretrained weights):

    x      = vit.embed(images)                                   # [CLS, patches] + position embedding
    query  = stop_gradient(vit.encode(x, training=False)[:, 0])  # final-LayerNorm [CLS], prompt-free, no dropout
    pool   = prompt_pool(query)                                  # N prompts of Lp tokens per example
    tokens = [prompts, CLS, patches]                              # 'prompts_first' (official HEAD): no position emb.
           | [CLS, prompts + pos_emb[CLS], patches]               # 'cls_first' (v1 / PyTorch port)
    logits = head(mean of the encoded prompt positions)          # 'prompt'; or 'token' ([CLS]) / 'gap' (all tokens)

Without a prompt pool the model is a plain fine-tuning / linear-probe baseline: head on the [CLS] output ('token') or
on the mean of all tokens ('gap'), backbone frozen or trainable.

Difference from the original worth knowing: `vit.encode` applies the embedding dropout to the whole sequence,
prompts included, where the original dropped out only [CLS] and patches before prepending the prompts. ViT-B/16 is
configured with dropout 0, where the two are identical.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tf_keras

from l2p_tf.models import prompt_pool as prompt_pool_lib
from l2p_tf.models import vit as vit_lib

HEAD_TYPES = ('prompt', 'token', 'gap')
TOKEN_ORDERS = ('prompts_first', 'cls_first')
TUNINGS = ('prompt', 'prefix')


class L2PModel(tf_keras.Model):
  """ViT + prompt pool + zero-initialised linear head.

  Trainable variables are exactly the prompts, the keys and the head (plus every ViT variable when
  `train_backbone=True`); the constructor checks this and `param_counts` / `summary_line` report it.

  Args:
    vit: a `vit_lib.VisionTransformer` (its own `pre_logits` / `head`, if any, are not used; build it with
      `num_classes=0`). Its `trainable` flag is set to `train_backbone`.
    num_classes: width of the head (all classes of the benchmark).
    prompt_pool: a `PromptPool` whose `embed_dim` is the ViT width, or None for plain fine-tuning (no prompts).
    head_type: 'prompt' (mean of the final-LayerNorm outputs at the prompt positions; needs a pool), 'token' (the
      [CLS] output) or 'gap' (mean over every token).
    token_order: 'prompts_first' ([prompts, CLS, patches], prompts without position embedding) or 'cls_first'
      ([CLS, prompts, patches], each prompt token plus a copy of [CLS]'s position embedding).
    train_backbone: train the ViT too (fine-tuning baselines); the query stays a stop-gradient feature.
    tuning: 'prompt' (the selected prompts are tokens in the sequence, L2P) or 'prefix' (L2P++ of CODA-Prompt: each
      sample's selected prompts, each split into a first half of key and a second half of value tokens, prefix
      the attention keys and values of layer 0; no tokens are added, so the 'token' head reads [CLS] at 0).
    name: model name.

  Raises:
    ValueError: unknown head type or token order, 'prompt' head without a pool, a pool whose width differs from the
      ViT's, a non-positive `num_classes`, or prefix tuning without a pool, with the 'prompt' head or with an odd
      prompt length.
  """

  def __init__(self, *, vit: vit_lib.VisionTransformer, num_classes: int,
               prompt_pool: Optional[prompt_pool_lib.PromptPool] = None, head_type: str = 'prompt',
               token_order: str = 'prompts_first', train_backbone: bool = False, tuning: str = 'prompt',
               name: str = 'l2p'):
    # No **kwargs: gin then rejects a misspelt parameter when it parses the binding.
    super().__init__(name=name)
    if head_type not in HEAD_TYPES:
      raise ValueError(f'Unknown head_type {head_type!r}; choose one of {HEAD_TYPES}.')
    if token_order not in TOKEN_ORDERS:
      raise ValueError(f'Unknown token_order {token_order!r}; choose one of {TOKEN_ORDERS}.')
    if head_type == 'prompt' and prompt_pool is None:
      raise ValueError(f"head_type={head_type!r} needs a prompt pool; use 'token' or 'gap' without one.")
    if not isinstance(num_classes, int) or num_classes < 1:
      raise ValueError(f'num_classes must be a positive integer, got {num_classes!r}.')
    if tuning not in TUNINGS:
      raise ValueError(f'Unknown tuning {tuning!r}; choose one of {TUNINGS}.')
    if tuning == 'prefix' and (prompt_pool is None or head_type == 'prompt' or prompt_pool.prompt_length % 2):
      raise ValueError("tuning='prefix' needs a prompt pool with an even prompt_length (key and value halves) and "
                       f"head_type 'token' or 'gap', got head_type={head_type!r}.")
    if prompt_pool is not None and prompt_pool.embed_dim != vit.hidden_size:
      raise ValueError(f'prompt_pool.embed_dim={prompt_pool.embed_dim} differs from the ViT width '
                       f'{vit.hidden_size}.')
    self.vit = vit
    self.vit.trainable = bool(train_backbone)
    self.prompt_pool = prompt_pool
    self.num_classes = num_classes
    self.head_type = head_type
    self.token_order = token_order
    self.train_backbone = bool(train_backbone)
    self.tuning = tuning
    # float32 whatever the mixed-precision policy: logits, softmax and loss stay in float32.
    self.head = tf_keras.layers.Dense(num_classes, kernel_initializer='zeros', bias_initializer='zeros',
                                      dtype='float32', name='head')
    self.head.build((None, vit.hidden_size))
    self._check_trainable()

  @property
  def num_prompt_tokens(self) -> int:
    """N * Lp prompt tokens inserted into the sequence (0 without a pool or with prefix tuning)."""
    return 0 if self.prompt_pool is None or self.tuning == 'prefix' else self.prompt_pool.num_prompt_tokens

  def _expected_trainable(self) -> list[tf.Variable]:
    expected = list(self.head.trainable_weights)
    if self.prompt_pool is not None:
      expected += self.prompt_pool.trainable_weights
    if self.train_backbone:
      expected += self.vit.trainable_weights
    return expected

  def _check_trainable(self):
    actual = {v.ref() for v in self.trainable_variables}
    expected = {v.ref() for v in self._expected_trainable()}
    if actual != expected:
      extra = sorted(v.deref().name for v in actual - expected)
      missing = sorted(v.deref().name for v in expected - actual)
      raise AssertionError(f'Unexpected trainable variables: extra {extra}, missing {missing}.')

  def prompted_tokens(self, embedded, prompts):
    """Inserts prompt tokens into an embedded sequence according to `token_order`.

    Args:
      embedded: (B, 1 + P, D) output of `vit.embed` ([CLS, patches] with position embedding).
      prompts: (B, N * Lp, D) selected prompt tokens.

    Returns:
      (B, N * Lp + 1 + P, D) in `embedded`'s dtype.
    """
    prompts = tf.cast(prompts, embedded.dtype)
    if self.token_order == 'prompts_first':
      return tf.concat([prompts, embedded], axis=1)
    cls_pos = tf.cast(self.vit.pos_embedding[:, :1], embedded.dtype)
    return tf.concat([embedded[:, :1], prompts + cls_pos, embedded[:, 1:]], axis=1)

  def prefix_halves(self, prompts):
    """(B, N * Lp, D) selected prompts -> per-sample (key, value) prefixes, each (B, N * Lp / 2, D)."""
    n, lp = self.prompt_pool.top_k, self.prompt_pool.prompt_length
    per_prompt = tf.reshape(prompts, [tf.shape(prompts)[0], n, lp, self.vit.hidden_size])
    return tuple(tf.reshape(half, [tf.shape(prompts)[0], n * (lp // 2), self.vit.hidden_size])
                 for half in (per_prompt[:, :, :lp // 2], per_prompt[:, :, lp // 2:]))

  def _features(self, encoded):
    """Head input from the encoded sequence (B, L, D)."""
    if self.head_type == 'gap':
      return tf.reduce_mean(encoded, axis=1)
    p = self.num_prompt_tokens
    cls_index = p if self.token_order == 'prompts_first' else 0
    if self.head_type == 'token':
      return encoded[:, cls_index]
    start = 0 if self.token_order == 'prompts_first' else 1
    return tf.reduce_mean(encoded[:, start:start + p], axis=1)

  def query_pass(self, images) -> dict:
    """The frozen, prompt-free pass that gives each image its query (no dropout, no gradient).

    A trainer runs it outside its gradient tape and hands the result to `call(..., query_pass=...)`, so the tape
    records only the prompted pass.

    Args:
      images: (B, H, W, 3) at the ViT's resolution.

    Returns:
      {'tokens': (B, 1 + P, D) the embedded [CLS, patches] (compute dtype), 'query': (B, D) float32}.
    """
    x = self.vit.embed(tf.cast(images, self.compute_dtype))
    query = tf.cast(self.vit.encode(x, training=False)[:, 0], tf.float32)
    return {'tokens': tf.stop_gradient(x), 'query': tf.stop_gradient(query)}

  def call(self, images, *, task_index=None, training=False, selection: Optional[str] = None, valid=None,
           query_pass: Optional[dict] = None) -> dict:
    """Classifies `images`.

    Args:
      images: (B, H, W, 3) at the ViT's resolution.
      task_index: scalar int tensor or variable: the current training task (task mask, frequency penalty, usage
        record); None at evaluation.
      training: training mode (dropout, diversity rule, usage record).
      selection: overrides the pool's selection ('batchwise' / 'instancewise') for this call.
      valid: optional (B,) bool, False for padding examples (a padded evaluation batch): they take no part in the
        batchwise vote, the usage record or `reduce_sim`; their logits are computed as usual.
      query_pass: `self.query_pass(images)`, computed beforehand (by a trainer, outside its gradient tape); None
        runs the query pass here. Its embedded tokens are reused when the backbone is frozen (no gradient needed);
        pass only its 'query' to embed again (when the embedding's gradients are wanted).

    Returns:
      {'logits': (B, num_classes) float32, 'reduce_sim': scalar float32 (0 without a pool),
       'prompt_ids': (B, N) int32 ((B, 0) without a pool), 'query': (B, D) float32 (stop-gradient)}.
    """
    training = bool(training)
    if (query_pass is not None and 'tokens' in query_pass and self.prompt_pool is not None
        and not self.train_backbone):
      x = query_pass['tokens']
    else:
      x = self.vit.embed(images, training=training)
    batch = tf.shape(x)[0]
    if self.prompt_pool is None:
      encoded = self.vit.encode(x, training=training)
      query = tf.stop_gradient(tf.cast(encoded[:, 0], tf.float32))
      reduce_sim = tf.constant(0.0, tf.float32)
      prompt_ids = tf.zeros([batch, 0], tf.int32)
    else:
      # The query pass: same weights, no prompts, no dropout, no gradient (also when the backbone is trained).
      if query_pass is None:
        query = tf.stop_gradient(tf.cast(self.vit.encode(x, training=False)[:, 0], tf.float32))
      else:
        query = query_pass['query']
      pool = self.prompt_pool(query, task_index=task_index, training=training, selection=selection, valid=valid)
      if self.tuning == 'prefix':
        encoded = self.vit.encode(x, training=training, prefixes={0: self.prefix_halves(pool['prompts'])})
      else:
        encoded = self.vit.encode(self.prompted_tokens(x, pool['prompts']), training=training)
      reduce_sim = pool['reduce_sim']
      prompt_ids = pool['prompt_ids']
    logits = self.head(tf.cast(self._features(encoded), tf.float32))
    return {'logits': logits, 'reduce_sim': reduce_sim, 'prompt_ids': prompt_ids, 'query': query}

  def param_counts(self) -> dict[str, int]:
    """Scalar counts: 'prompts', 'keys', 'head', 'backbone' (every ViT variable), 'trainable' and 'total'.

    'total' counts the model's parameters (ViT, pool, head), not the usage record.
    """
    pool = self.prompt_pool
    counts = {
        'prompts': vit_lib.count_params([pool.prompts]) if pool is not None else 0,
        'keys': vit_lib.count_params([pool.keys]) if pool is not None and pool.keys is not None else 0,
        'head': vit_lib.count_params(self.head.weights),
        'backbone': vit_lib.count_params(self.vit.weights),
        'trainable': vit_lib.count_params(self.trainable_variables),
    }
    counts['total'] = counts['backbone'] + counts['prompts'] + counts['keys'] + counts['head']
    return counts

  def summary_line(self) -> str:
    """One line for logs, e.g. 'L2P: trainable 161,380 (prompts 76,800, keys 7,680, head 76,900) of 85,960,036
    total'."""
    c = self.param_counts()
    if self.prompt_pool is None:
      mode = 'Fine-tuning' if self.train_backbone else 'Linear probe'
      parts = f'backbone {c["backbone"] if self.train_backbone else 0:,}, head {c["head"]:,}'
    else:
      mode = 'L2P' if self.tuning == 'prompt' else 'L2P (prefix tuning)'
      mode += ' (backbone trainable)' if self.train_backbone else ''
      parts = f'prompts {c["prompts"]:,}, keys {c["keys"]:,}, head {c["head"]:,}'
      if self.train_backbone:
        parts += f', backbone {c["backbone"]:,}'
    return f'{mode}: trainable {c["trainable"]:,} ({parts}) of {c["total"]:,} total'
