"""LoRA for PyTorch linear layers: the module every lab of minituner builds on.

A LoRA layer keeps a pretrained ``nn.Linear`` frozen and learns a low-rank update beside it:

    y = base(x) + (alpha / r) * B (A x),    A: (r, in_features),  B: (out_features, r)

Lab 00 writes ``LoRALinear`` (steps A-C); lab 04 writes ``merge_``. The functions after the
class belong to labs 02-04. See ``labs/`` for the briefs and ``src/minituner/BLUEPRINT.md``
for the map of the package.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``scaling * B @ A``.

    Args:
        base: the pretrained layer to adapt; kept as ``self.base``.
        r: the rank of the update, a positive int.
        alpha: the scale numerator; the update is multiplied by ``alpha / r``.
        dropout: probability of dropping inputs of the LoRA branch (never of the base), in [0, 1).
        freeze_base: when True, every parameter of ``base`` stops receiving gradient.

    Shapes:
        lora_A: (r, in_features), lora_B: (out_features, r);
        x: (..., in_features) -> (..., out_features).
    """

    # Declared here so the type checker knows them whatever ``__init__`` does.
    base: nn.Linear
    r: int
    alpha: float
    scaling: float
    lora_A: nn.Parameter
    lora_B: nn.Parameter
    lora_dropout: nn.Module

    def __init__(
        self,
        base: nn.Linear,
        r: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        freeze_base: bool = True,
    ) -> None:
        super().__init__()
        raise NotImplementedError("lab00 step A: check the arguments, create the factors and freeze the base. See labs/00-lora-by-hand.md")

    def reset_parameters(self) -> None:
        """Initialise A like ``nn.Linear`` initialises its weight, and B to zeros."""
        raise NotImplementedError("lab00 step B: random A, zero B, so the layer starts exactly at the base. See labs/00-lora-by-hand.md")

    def forward(self, x: Tensor) -> Tensor:
        """Return ``base(x) + scaling * B (A dropout(x))``.

        Shapes: x: (..., in_features) -> (..., out_features).
        """
        raise NotImplementedError("lab00 step C: add the scaled low-rank branch, computed down to r first. See labs/00-lora-by-hand.md")

    @torch.no_grad()
    def merge_(self) -> None:
        """Fold ``scaling * B @ A`` into ``base.weight`` in place, then zero both factors.

        Afterwards the output is unchanged (within float rounding) and the branch adds exactly
        zero, so calling ``merge_`` again changes nothing. The base keeps its ``requires_grad``.
        """
        raise NotImplementedError("lab04 step A: fold the update into the base weight once, then zero the factors. See labs/04-merge-for-inference.md")

    def extra_repr(self) -> str:
        return (
            f"in_features={self.base.in_features}, out_features={self.base.out_features}, "
            f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}"
        )
