"""A correct LoRALinear in another style (lab00): F.dropout with training=self.training,
einsum for the branch, A drawn with uniform_ over +-1/sqrt(in_features) (what
kaiming_uniform_(a=sqrt(5)) draws), no reset_parameters and no dropout module at all.
Every lab00 test must pass on it: the tests check behaviour, not structure.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LoRALinear(nn.Module):
    def __init__(
        self,
        base: nn.Linear,
        r: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        freeze_base: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear; base is a {type(base).__name__}")
        if type(r) is not int or r < 1:
            raise ValueError(f"rank r={r!r} is invalid: use an int >= 1")
        if not (0.0 <= float(dropout) < 1.0):
            raise ValueError(f"dropout={dropout!r} is not a probability in [0, 1)")
        out_features, in_features = base.weight.shape
        self.base = base
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / r
        self.p = float(dropout)
        bound = 1.0 / math.sqrt(in_features)
        self.lora_A = nn.Parameter(
            torch.zeros(r, in_features, dtype=base.weight.dtype, device=base.weight.device)
        )
        with torch.no_grad():
            self.lora_A.uniform_(-bound, bound)
        self.lora_B = nn.Parameter(
            torch.zeros(out_features, r, dtype=base.weight.dtype, device=base.weight.device)
        )
        if freeze_base:
            for parameter in base.parameters():
                parameter.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        z = F.dropout(x, self.p, training=self.training)
        down = torch.einsum("...i,ri->...r", z, self.lora_A)  # (..., r)
        up = torch.einsum("...r,or->...o", down, self.lora_B)  # (..., out)
        return self.base(x) + self.scaling * up
