"""Pitfall (lab00 step A): the factors are stored transposed, in the x @ A @ B layout.

lora_A is (in, r) and lora_B is (r, out) instead of (r, in) and (out, r).
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
        self.lora_A = nn.Parameter(torch.empty(base.in_features, r, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(
            torch.empty(r, base.out_features, device=w.device, dtype=w.dtype)
        )
        self.lora_dropout = nn.Dropout(dropout)
        if freeze_base:
            base.requires_grad_(False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.lora_A.shape[0])
        nn.init.uniform_(self.lora_A, -bound, bound)
        nn.init.zeros_(self.lora_B)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scaling * (self.lora_dropout(x) @ self.lora_A @ self.lora_B)

