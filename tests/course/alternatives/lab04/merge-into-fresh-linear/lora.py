"""Correct alternative (lab04): merge_ builds a fresh frozen nn.Linear holding the merged weight
and the base's bias; merge_and_unload walks the children recursively. Must pass every test."""

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
        self.alpha = float(alpha)
        self.scaling = self.alpha / r
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, r, device=w.device, dtype=w.dtype))
        self.lora_dropout = nn.Dropout(dropout)
        if freeze_base:
            base.requires_grad_(False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def forward(self, x: Tensor) -> Tensor:
        h = self.lora_dropout(x) @ self.lora_A.T  # (..., r)
        return self.base(x) + (h @ self.lora_B.T) * self.scaling

    @torch.no_grad()
    def merge_(self) -> None:
        old = self.base
        w = old.weight
        fresh = nn.Linear(old.in_features, old.out_features, bias=old.bias is not None,
                          device=w.device, dtype=w.dtype)
        delta = torch.mm(self.lora_B.float(), self.lora_A.float()) * self.scaling
        fresh.weight.copy_((w.float() + delta).to(w.dtype))
        if old.bias is not None:
            fresh.bias.copy_(old.bias)
        fresh.requires_grad_(False)
        self.base = fresh
        self.lora_A.zero_()
        self.lora_B.zero_()


def merge_and_unload(model: nn.Module) -> nn.Module:
    if isinstance(model, LoRALinear):
        model.merge_()
        return model.base
    for name, child in model.named_children():
        if isinstance(child, LoRALinear):
            child.merge_()
            setattr(model, name, child.base)
        else:
            merge_and_unload(child)
    return model

