"""Pitfall (lab00 step C): a hand-written dropout that also drops in eval mode."""

from __future__ import annotations

import math

import torch
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
        self.p = dropout
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(
            torch.zeros(base.out_features, r, device=w.device, dtype=w.dtype)
        )
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        if freeze_base:
            base.requires_grad_(False)

    def _dropout(self, x: Tensor) -> Tensor:
        if self.p == 0.0:
            return x
        keep = (torch.rand_like(x) >= self.p).to(x.dtype)  # drops whatever the mode
        return x * keep / (1.0 - self.p)

    def forward(self, x: Tensor) -> Tensor:
        h = self._dropout(x) @ self.lora_A.t()
        return self.base(x) + self.scaling * (h @ self.lora_B.t())
