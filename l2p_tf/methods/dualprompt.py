"""DualPrompt (Wang et al., ECCV 2022) on the method contract.

The model is `models.dualprompt_model.DualPromptModel` (frozen query pass -> E-pool selection -> G- and E-prompted
pass -> head on [CLS]). Training, evaluation, the per-task hook and the usage record are L2P's: cross-entropy with
each example's label mask minus `pull_coefficient * reduce_sim`, the query pass outside the gradient tape, the
E-pool's shared-prompt copy at the start of each task. Only the G-prompt, the E-prompts, their keys and the head
train.
"""

from __future__ import annotations

import functools
from typing import Callable

from l2p_tf.methods import l2p
from l2p_tf.models import dualprompt_model
from l2p_tf.models import prompt_pool as prompt_pool_lib


class DualPrompt(l2p.L2P):
  """DualPrompt.

  Args:
    prompt_pool: `prompt_pool(embed_dim=..., num_tasks=..., prompt_length=...)` -> the E-pool (gin:
      `@prompt_pool.PromptPool` with pool size, top-N, selection, task mask and shared-pool copy bound there; the
      model sets `prompt_length`).
    model: `model(vit=..., prompt_pool=..., num_classes=...)` -> a `DualPromptModel` (gin: its layers, lengths and
      prefix / prompt tuning bound there).
    pull_coefficient: weight of the key-query pull constraint (official 1.0).
    use_label_mask: class-incremental logit mask in training.
  """

  name = 'DualPrompt'

  @property
  def frozen_features_are_fixed(self) -> bool:
    return False  # Its evaluation recomputes the query (the evaluator's reuse is wired for L2PModel's call).

  def __init__(self, *, prompt_pool: Callable = prompt_pool_lib.PromptPool,
               model: Callable = dualprompt_model.DualPromptModel, pull_coefficient: float = 1.0,
               use_label_mask: bool = True):
    if prompt_pool is None:
      raise ValueError('DualPrompt needs an E-prompt pool.')
    super().__init__(prompt_pool=prompt_pool, model=model, pull_coefficient=pull_coefficient,
                     use_label_mask=use_label_mask)

  def build(self, *, backbone: Callable, num_classes: int, num_tasks: int) -> dualprompt_model.DualPromptModel:
    vit = backbone()
    pool = functools.partial(self._pool_factory, embed_dim=vit.hidden_size, num_tasks=num_tasks)
    self.model = self._model_factory(vit=vit, prompt_pool=pool, num_classes=num_classes)
    self.backbone = vit
    return self.model
