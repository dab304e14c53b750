"""L2P (Wang et al., CVPR 2022): a frozen ViT steered by prompts chosen per input from a pool of learnable prompts.

The model is `models.l2p_model.L2PModel` (frozen query pass -> prompt pool -> prompted pass -> head). Training loss:
cross-entropy on the logits with each example's label mask (classes outside the current task at -inf, in
class-incremental training) minus `pull_coefficient * reduce_sim` (the key-query pull constraint). The query pass
runs on frozen weights, outside the gradient tape (`frozen_features`), so the tape records only the prompted pass.
Only prompts, keys and the head train (the model checks this).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from l2p_tf import gin_utils
from l2p_tf import losses
from l2p_tf.methods import base
from l2p_tf.models import l2p_model
from l2p_tf.models import prompt_pool as prompt_pool_lib


class L2P(base.Method):
  """Learning to Prompt.

  Args:
    prompt_pool: `prompt_pool(embed_dim=..., num_tasks=...)` -> a `PromptPool` (gin: `@prompt_pool.PromptPool`).
    model: `model(vit=..., prompt_pool=..., num_classes=...)` -> an `L2PModel` (gin: `@l2p_model.L2PModel`, with
      its head type and token order bound there).
    pull_coefficient: weight of the key-query pull constraint.
    use_label_mask: class-incremental logit mask in training (off for domain-incremental benchmarks).
  """

  name = 'L2P'
  selections = ('batchwise', 'instancewise')
  scalar_names = ('cross_entropy', 'reduce_sim')

  def __init__(self, *, prompt_pool: Optional[Callable] = prompt_pool_lib.PromptPool,
               model: Callable = l2p_model.L2PModel, pull_coefficient: float = 1.0, use_label_mask: bool = True):
    super().__init__()
    gin_utils.check_argument_types(L2P, {'pull_coefficient': pull_coefficient, 'use_label_mask': use_label_mask})
    self._pool_factory = prompt_pool
    self._model_factory = model
    self.pull_coefficient = pull_coefficient
    self.use_label_mask = use_label_mask

  def build(self, *, backbone: Callable, num_classes: int, num_tasks: int) -> l2p_model.L2PModel:
    vit = backbone()
    pool = self._pool_factory(embed_dim=vit.hidden_size, num_tasks=num_tasks) if self._pool_factory else None
    self.model = self._model_factory(vit=vit, prompt_pool=pool, num_classes=num_classes)
    self.backbone = vit
    return self.model

  @property
  def _pool(self) -> Optional[prompt_pool_lib.PromptPool]:
    return self.model.prompt_pool

  def frozen_features(self, images, *, backbone_gradients: bool = False) -> Optional[dict]:
    if self._pool is None:
      return None
    query_pass = self.model.query_pass(images)
    # With backbone gradients wanted, the prompted pass embeds the images again inside the tape.
    return {'query': query_pass['query']} if backbone_gradients else query_pass

  def loss(self, batch, *, frozen, task_index, global_batch_size, num_replicas) -> base.LossOutput:
    out = self.model(batch['image'], task_index=task_index, training=True,
                     **({'query_pass': frozen} if frozen is not None else {}))
    logits = out['logits']
    mask = batch['label_mask'] if self.use_label_mask else None
    ce_loss = tf.reduce_sum(losses.cross_entropy(logits, batch['label'], mask)) / global_batch_size
    pull = losses.pull_loss(out['reduce_sim'], self.pull_coefficient) / num_replicas
    masked_logits = losses.mask_logits(logits, mask) if mask is not None else logits
    return base.LossOutput(loss=ce_loss + pull, logits=masked_logits,
                           scalars={'cross_entropy': ce_loss * num_replicas, 'reduce_sim': out['reduce_sim']})

  @property
  def frozen_features_are_fixed(self) -> bool:
    # The query comes from the frozen backbone's prompt-free pass: fixed while the backbone does not train.
    return self._pool is not None and not getattr(self.model, 'train_backbone', False)

  def fixed_features(self, images) -> Optional[dict]:
    if self._pool is None:
      return None
    return {'query': self.model.query_pass(images)['query']}  # (B, D) float32; the embedded tokens are not kept.

  def predict(self, images, *, valid=None, selection=None, fixed=None) -> dict:
    out = self.model(images, training=False, valid=valid, **({'selection': selection} if selection else {}),
                     **({'query_pass': fixed} if fixed is not None else {}))
    result = {'logits': out['logits']}
    if self._pool is not None:
      result['prompt_ids'] = out['prompt_ids']
    return result

  def begin_task(self, t: int) -> None:
    if self._pool is not None:
      self._pool.start_task(t)  # The official shared_prompt_pool copy, when configured.

  def check_batch_size(self, per_replica: int, what: str) -> None:
    if self._pool is not None:
      prompt_pool_lib.check_vote_batch(self._pool.vote_size, per_replica, what)

  @property
  def pool_size(self) -> int:
    return self._pool.pool_size if self._pool is not None else 0

  @property
  def prompts_per_image(self) -> int:
    """N: prompts each image selects (0 without a pool)."""
    return self._pool.top_k if self._pool is not None else 0

  def prompt_usage(self) -> Optional[np.ndarray]:
    # An ON_READ (SUM) variable: reading it is a collective all-reduce under MultiWorkerMirrored.
    return self._pool.usage.numpy() if self._pool is not None else None

  def describe(self) -> str:
    return self.model.summary_line()
