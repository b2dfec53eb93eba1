"""Lab 03 lora.py as a learner writes it (correct here; the pitfall is in checkpoint.py)."""

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
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing:
        raise KeyError(f"missing keys: {missing}")
    if unexpected:
        raise KeyError(f"unexpected keys: {unexpected}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{key}: not a tensor but {type(value).__name__}")
        if value.shape != own[key].shape:
            raise ValueError(f"{key}: shape {tuple(value.shape)} does not fit {tuple(own[key].shape)}")
    # Everything checked: load_state_dict copies (and casts) into the existing parameters.
    model.load_state_dict(state, strict=False)
