"""Pitfall (lab00 step A): alpha defaults to r, so the default scaling is 1 instead of 16 / r."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LoRALinear(nn.Module):
    def __init__(
        self,
        base: nn.Linear,
        r: int = 8,
        alpha: Optional[float] = None,
        dropout: float = 0.0,
        freeze_base: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ValueError(f"r must be a positive int, got {r!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if alpha is None:
            alpha = r  # "scaling 1 by default is the safe choice"
        self.base = base
        self.r = r
        self.alpha = float(alpha)
        self.scaling = self.alpha / r
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.p = dropout
        if freeze_base:
            base.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        z = F.dropout(x, self.p, training=self.training)
        return self.base(x) + self.scaling * F.linear(F.linear(z, self.lora_A), self.lora_B)
