"""A correct LoRALinear in another style (lab00): factors registered with register_parameter,
nn.Dropout only when p > 0, the base applied through F.linear on its own weight and bias,
the branch written with @ (left to right, so down to r first), the freeze by a loop.
Every lab00 test must pass on it: the tests check behaviour, not structure.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 freeze_base: bool = True) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError("base must be torch.nn.Linear, got " + repr(base))
        if isinstance(r, bool) or not isinstance(r, int):
            raise ValueError(f"r must be an int, got {r!r} ({type(r).__name__})")
        if r <= 0:
            raise ValueError(f"r must be positive, got r={r}")
        if dropout < 0 or dropout >= 1:
            raise ValueError(f"dropout must satisfy 0 <= dropout < 1, got {dropout}")
        self.base = base
        self.r, self.alpha = r, float(alpha)
        self.scaling = self.alpha / self.r
        self.register_parameter("lora_A", nn.Parameter(base.weight.new_empty(r, base.in_features)))
        self.register_parameter("lora_B", nn.Parameter(base.weight.new_empty(base.out_features, r)))
        self.drop: Optional[nn.Dropout] = nn.Dropout(dropout) if dropout > 0 else None
        if freeze_base:
            for p in self.base.parameters():
                p.requires_grad = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        with torch.no_grad():
            self.lora_B.fill_(0.0)

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.base.weight, self.base.bias)
        h = x if self.drop is None else self.drop(x)
        return y + (h @ self.lora_A.T @ self.lora_B.T) * self.scaling
