"""Pitfall (lab03 step B): load_lora_state_dict matches keys by substring, so keys of another
model (a shorter prefix) load silently."""

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
        down = F.linear(self.lora_dropout(x), self.lora_A)
        return self.base(x) + self.scaling * F.linear(down, self.lora_B)


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    return {
        name: p.detach()
        for name, p in model.named_parameters()
        if name.rpartition(".")[2] in ("lora_A", "lora_B")
    }


def load_lora_state_dict(model: nn.Module, state: dict[str, Tensor]) -> None:
    own = lora_state_dict(model)
    params = dict(model.named_parameters())

    def find(key: str) -> list[str]:
        return [name for name in own if key in name]

    for key, value in state.items():
        hits = find(key)
        if not hits:
            raise KeyError(f"unexpected key {key!r}")
        for name in hits:
            if own[name].shape != value.shape:
                raise ValueError(f"{key}: shape {tuple(value.shape)} does not fit {tuple(own[name].shape)}")
    missing = [name for name in own if not any(key in name for key in state)]
    if missing:
        raise KeyError(f"missing keys: {missing}")
    with torch.no_grad():
        for key, value in state.items():
            for name in find(key):
                params[name].copy_(value)
