"""Baselines without prompts, on the same model code and data as L2P.

* `Classifier(train_backbone=False)`: FT-seq-frozen, the L2P paper's lower bound: a linear head on the frozen
  backbone's [CLS] feature, trained task after task (a linear probe).
* `Classifier(train_backbone=True)`: FT-seq: the whole model (backbone and head) fine-tuned task after task.
* Joint training (the upper bound) is either of these on a benchmark with one segment holding every task
  (`benchmarks.split_cifar100(joint=True)`).
"""

from __future__ import annotations

from typing import Callable

from l2p_tf.methods import l2p
from l2p_tf.models import l2p_model


class Classifier(l2p.L2P):
  """A ViT and a zero-initialised linear head; no prompts, no pull.

  Args:
    train_backbone: fine-tune the backbone too (FT-seq) or keep it frozen (linear probe).
    head_type: 'token' (the [CLS] output) or 'gap' (mean over every token).
    model: `model(vit=..., prompt_pool=None, num_classes=..., head_type=..., train_backbone=...)` -> an `L2PModel`.
    use_label_mask: class-incremental logit mask in training.
  """

  name = 'Classifier'
  selections = (None,)
  scalar_names = ('cross_entropy', 'reduce_sim')

  def __init__(self, *, train_backbone: bool = False, head_type: str = 'token', model: Callable = l2p_model.L2PModel,
               use_label_mask: bool = True):
    if head_type not in ('token', 'gap'):
      raise ValueError(f"Classifier head_type={head_type!r}: a model without prompts needs 'token' or 'gap'.")
    super().__init__(prompt_pool=None, model=model, pull_coefficient=0.0, use_label_mask=use_label_mask)
    self.train_backbone = bool(train_backbone)
    self.head_type = head_type

  def build(self, *, backbone, num_classes, num_tasks):
    del num_tasks
    vit = backbone()
    self.model = self._model_factory(vit=vit, prompt_pool=None, num_classes=num_classes, head_type=self.head_type,
                                     train_backbone=self.train_backbone)
    self.backbone = vit
    return self.model
