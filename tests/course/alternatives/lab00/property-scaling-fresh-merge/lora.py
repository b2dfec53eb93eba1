"""A correct LoRALinear in another style (lab00): scaling as a read-only property, the
factors made from a dict of the base's dtype and device, nn.Dropout(0.0) kept even when
p = 0, the freeze as base.requires_grad_(not freeze_base), the branch with torch.matmul,
and a merge_ that folds the update into a fresh frozen nn.Linear (lab04 allows both).
Every lab00 test must pass on it: the tests check behaviour, not structure.
"""

from __future__ import annotations

import math

import torch
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
            raise TypeError(f"expected base: nn.Linear, got base of type {type(base).__name__}")
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise ValueError(f"r must be a positive integer (got r={r!r})")
        if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1) (got dropout={dropout!r})")
        self.base = base
        self.r = r
        self.alpha = alpha
        like = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.lora_A = nn.Parameter(torch.empty((r, base.in_features), **like))
        self.lora_B = nn.Parameter(torch.empty((base.out_features, r), **like))
        self.lora_dropout = nn.Dropout(p=dropout)
        base.requires_grad_(not freeze_base)
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def forward(self, x: Tensor) -> Tensor:
        down = torch.matmul(self.lora_dropout(x), self.lora_A.t())  # (..., r)
        return self.base(x) + self.scaling * torch.matmul(down, self.lora_B.t())

    @torch.no_grad()
    def merge_(self) -> None:
        old = self.base
        work = torch.promote_types(old.weight.dtype, torch.float32)
        delta = self.scaling * (self.lora_B.to(work) @ self.lora_A.to(work))
        merged = nn.Linear(
            old.in_features, old.out_features, bias=old.bias is not None,
            device=old.weight.device, dtype=old.weight.dtype,
        )
        merged.weight.copy_((old.weight.to(work) + delta).to(old.weight.dtype))
        if old.bias is not None and merged.bias is not None:
            merged.bias.copy_(old.bias)
        merged.requires_grad_(old.weight.requires_grad)
        self.base = merged
        self.lora_A.zero_()
        self.lora_B.zero_()
