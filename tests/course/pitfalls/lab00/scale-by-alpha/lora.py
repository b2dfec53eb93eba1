"""Pitfall (lab00 steps A and C): the update is scaled by alpha, not alpha / r."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 freeze_base: bool = True) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be nn.Linear, not {type(base).__name__}")
        if type(r) is not int or r < 1:
            raise ValueError(f"r must be a positive int, got {r}")
        if dropout < 0 or dropout >= 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.base = base
        self.r = r
        self.alpha = alpha
        self.scaling = alpha  # the paper's "scale by alpha"
        self.lora_A = nn.Parameter(base.weight.new_empty(r, base.in_features))
        self.lora_B = nn.Parameter(base.weight.new_zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        if freeze_base:
            for p in base.parameters():
                p.requires_grad = False

    def forward(self, x: Tensor) -> Tensor:
        h = self.drop(x) @ self.lora_A.T  # (..., r)
        return self.base(x) + self.scaling * (h @ self.lora_B.T)
