"""Matrix-multiply FLOPs of a ViT forward pass and of an L2P training step, counted from the model's shapes.

Only matrix multiplications are counted (2 * m * n * k each): they are more than 99% of a ViT's arithmetic at 224px.
Per image, for a sequence of L tokens of width D, MLP width F and `num_layers` blocks:

    patch embedding                     2 * P * (p * p * 3) * D          (P patches of p x p pixels)
    per block: q, k, v and out proj.    4 * 2 * L * D * D
               scores and weighted sum  2 * 2 * L * L * D               (summed over heads: H * K = D)
               MLP                      2 * 2 * L * D * F

An L2P step (frozen backbone; prompts, keys and head trained) is

    query pass     patch embedding + blocks over 1 + P tokens
    prompted pass  blocks over N * Lp + 1 + P tokens                    (the embedded tokens are reused)
    backward       input gradients of the prompted pass's blocks, down to the prompt tokens: dx = dy W^T costs what
                   the forward matmul did; attention's two activation-activation products need both operands'
                   gradients (2x). No weight gradients: the backbone is frozen.

The head (D x classes) and the prompt matching (B x M x D) are under 0.1% and are left out.
"""

from __future__ import annotations

import dataclasses

from l2p_tf.models import vit as vit_lib


def block_flops(config: vit_lib.ViTConfig, tokens: int) -> dict[str, int]:
  """Forward matmul FLOPs of one encoder block for one image: {'dense': projections + MLP, 'attention': ...}."""
  d, f, n = config.hidden_size, config.mlp_dim, tokens
  return {'dense': 8 * n * d * d + 4 * n * d * f, 'attention': 4 * n * n * d}


def embedding_flops(config: vit_lib.ViTConfig, image_size: int) -> int:
  """Patch-embedding FLOPs for one image."""
  p = config.patch_size
  return 2 * (image_size // p) ** 2 * p * p * 3 * config.hidden_size


def forward_flops(config: vit_lib.ViTConfig, image_size: int, extra_tokens: int = 0) -> int:
  """A ViT forward pass for one image: embedding + blocks over 1 + P (+ `extra_tokens`) tokens."""
  tokens = 1 + (image_size // config.patch_size) ** 2 + extra_tokens
  b = block_flops(config, tokens)
  return embedding_flops(config, image_size) + config.num_layers * (b['dense'] + b['attention'])


@dataclasses.dataclass(frozen=True)
class StepFlops:
  """FLOPs per image of the parts of an L2P training step (see the module docstring)."""
  query: int
  prompted_forward: int
  prompted_backward: int

  @property
  def prompted(self) -> int:
    return self.prompted_forward + self.prompted_backward

  @property
  def total(self) -> int:
    return self.query + self.prompted


def l2p_step_flops(config: vit_lib.ViTConfig, image_size: int, num_prompt_tokens: int) -> StepFlops:
  """FLOPs per image of an L2P training step with `num_prompt_tokens` (N * Lp) prompt tokens."""
  tokens = 1 + (image_size // config.patch_size) ** 2 + num_prompt_tokens
  b = block_flops(config, tokens)
  return StepFlops(
      query=forward_flops(config, image_size),
      prompted_forward=config.num_layers * (b['dense'] + b['attention']),
      prompted_backward=config.num_layers * (b['dense'] + 2 * b['attention']))
