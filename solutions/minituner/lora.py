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
        # >>> lab00 step A: check the arguments, create the factors and freeze the base
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ValueError(f"r must be a positive int, got {r!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")

        self.base = base
        self.r = r
        self.alpha = float(alpha)
        # alpha / r, not alpha: changing r then leaves the size of the update roughly unchanged
        self.scaling = self.alpha / r

        weight = base.weight  # (out_features, in_features)
        factory = {"device": weight.device, "dtype": weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, r, **factory))
        self.lora_dropout = nn.Dropout(p=dropout) if dropout > 0.0 else nn.Identity()

        if freeze_base:
            base.requires_grad_(False)
        self.reset_parameters()
        # <<< lab00 step A

    def reset_parameters(self) -> None:
        """Initialise A like ``nn.Linear`` initialises its weight, and B to zeros."""
        # >>> lab00 step B: random A, zero B, so the layer starts exactly at the base
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        # B = 0, so B @ A = 0 and the layer starts exactly at the pretrained model
        nn.init.zeros_(self.lora_B)
        # <<< lab00 step B

    def forward(self, x: Tensor) -> Tensor:
        """Return ``base(x) + scaling * B (A dropout(x))``.

        Shapes: x: (..., in_features) -> (..., out_features).
        """
        # >>> lab00 step C: add the scaled low-rank branch, computed down to r first
        down = F.linear(self.lora_dropout(x), self.lora_A)  # (..., r)
        up = F.linear(down, self.lora_B)  # (..., out_features)
        return self.base(x) + self.scaling * up
        # <<< lab00 step C

    @torch.no_grad()
    def merge_(self) -> None:
        """Fold ``scaling * B @ A`` into ``base.weight`` in place, then zero both factors.

        Afterwards the output is unchanged (within float rounding) and the branch adds exactly
        zero, so calling ``merge_`` again changes nothing. The base keeps its ``requires_grad``.
        """
        # >>> lab04 step A: fold the update into the base weight once, then zero the factors
        weight = self.base.weight  # (out_features, in_features)
        # Form the product in float32 at least, so a bfloat16 base rounds once, not twice.
        work = torch.promote_types(weight.dtype, torch.float32)
        delta = self.scaling * (self.lora_B.to(work) @ self.lora_A.to(work))  # (out, in)
        weight.copy_((weight.to(work) + delta).to(weight.dtype))
        # Zeroed factors make the branch add nothing: merging twice adds the update once.
        self.lora_A.zero_()
        self.lora_B.zero_()
        # <<< lab04 step A

    def extra_repr(self) -> str:
        return (
            f"in_features={self.base.in_features}, out_features={self.base.out_features}, "
            f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}"
        )
