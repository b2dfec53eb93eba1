"""Pitfall (lab00 step C): a hand-made dropout that forgets the 1 / (1 - p) rescale.

It does respect train / eval mode; only the kept inputs are not scaled up.
"""

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
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(
            torch.empty(base.out_features, r, device=w.device, dtype=w.dtype)
        )
        self.p = dropout
        if freeze_base:
            base.requires_grad_(False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.p > 0:
            x_branch = x * (torch.rand_like(x) >= self.p).to(x.dtype)  # zero a fraction p
        else:
            x_branch = x
        down = F.linear(x_branch, self.lora_A)  # (..., r)

        return self.base(x) + self.scaling * F.linear(down, self.lora_B)
