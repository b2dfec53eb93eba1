"""Pitfall (lab00 step A): the factors are plain tensors, invisible to parameters() and .to()."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 freeze_base: bool = True) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ValueError(f"r must be a positive int, got {r!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.base = base
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / r
        w = base.weight
        A = torch.empty(r, base.in_features, device=w.device, dtype=w.dtype)
        nn.init.kaiming_uniform_(A, a=math.sqrt(5))
        self.lora_A = A.requires_grad_()  # "requires_grad makes it trainable"
        self.lora_B = torch.zeros(
            base.out_features, r, device=w.device, dtype=w.dtype, requires_grad=True
        )
        self.lora_dropout = nn.Dropout(dropout)
        if freeze_base:
            base.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        down = F.linear(self.lora_dropout(x), self.lora_A)
        return self.base(x) + self.scaling * F.linear(down, self.lora_B)
