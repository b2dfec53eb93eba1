"""A correct alternative for lab02: targets checked target by target up front, then the model
walked recursively with named_children(), replacing each selected child with add_module().

LoRALinear is the reference's (lab00), so only the lab02 functions differ.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``scaling * B @ A``.

    Args:
        base: the pretrained layer to adapt; kept as ``self.base``.
        r: the rank of the update, a positive int.
        alpha: the scale numerator; the update is multiplied by ``alpha / r``.
        dropout: probability of dropping inputs of the LoRA branch (never of the base), in [0, 1).
        freeze_base: when True, every parameter of ``base`` stops receiving gradient.

    Shapes:
        lora_A: (r, in_features), lora_B: (out_features, r);
        x: (..., in_features) -> (..., out_features).
    """

    # Declared here so the type checker knows them whatever ``__init__`` does.
    base: nn.Linear
    r: int
    alpha: float
    scaling: float
    lora_A: nn.Parameter
    lora_B: nn.Parameter
    lora_dropout: nn.Module

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
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ValueError(f"r must be a positive int, got {r!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")

        self.base = base
        self.r = r
        self.alpha = float(alpha)
        # alpha / r, not alpha: changing r then leaves the size of the update roughly unchanged
        self.scaling = self.alpha / r

        weight = base.weight  # (out_features, in_features)
        factory = {"device": weight.device, "dtype": weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, r, **factory))
        self.lora_dropout = nn.Dropout(p=dropout) if dropout > 0.0 else nn.Identity()

        if freeze_base:
            base.requires_grad_(False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise A like ``nn.Linear`` initialises its weight, and B to zeros."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        # B = 0, so B @ A = 0 and the layer starts exactly at the pretrained model
        nn.init.zeros_(self.lora_B)

    def forward(self, x: Tensor) -> Tensor:
        """Return ``base(x) + scaling * B (A dropout(x))``.

        Shapes: x: (..., in_features) -> (..., out_features).
        """
        down = F.linear(self.lora_dropout(x), self.lora_A)  # (..., r)
        up = F.linear(down, self.lora_B)  # (..., out_features)
        return self.base(x) + self.scaling * up

    @torch.no_grad()
    def merge_(self) -> None:
        """Fold ``scaling * B @ A`` into ``base.weight`` in place, then zero both factors.

        Afterwards the output is unchanged (within float rounding) and the branch adds exactly
        zero, so calling ``merge_`` again changes nothing. The base keeps its ``requires_grad``.
        """
        weight = self.base.weight  # (out_features, in_features)
        # Form the product in float32 at least, so a bfloat16 base rounds once, not twice.
        work = torch.promote_types(weight.dtype, torch.float32)
        delta = self.scaling * (self.lora_B.to(work) @ self.lora_A.to(work))  # (out, in)
        weight.copy_((weight.to(work) + delta).to(weight.dtype))
        # Zeroed factors make the branch add nothing: merging twice adds the update once.
        self.lora_A.zero_()
        self.lora_B.zero_()

    def extra_repr(self) -> str:
        return (
            f"in_features={self.base.in_features}, out_features={self.base.out_features}, "
            f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}"
        )


def _selects(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def find_lora_targets(model: nn.Module, target_modules: Sequence[str]) -> list[str]:
    targets = list(target_modules)
    if not targets:
        raise ValueError("target_modules must name at least one layer")
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for target in targets:
        if not any(_selects(name, target) for name in linears):
            raise ValueError(f"target {target!r} selects no nn.Linear")
    return [name for name in linears if any(_selects(name, t) for t in targets)]


def wrap_minigpt_with_lora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16.0,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    dropout: float = 0.05,
) -> nn.Module:
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            raise ValueError(f"{name} is already a LoRALinear: this model is wrapped")
    chosen = set(find_lora_targets(model, target_modules))
    for p in model.parameters():
        p.requires_grad = False

    def visit(module: nn.Module, prefix: str) -> None:
        for child_name, child in list(module.named_children()):
            full = f"{prefix}.{child_name}" if prefix else child_name
            if full in chosen and isinstance(child, nn.Linear):
                module.add_module(child_name, LoRALinear(child, r, alpha, dropout))
            else:
                visit(child, full)

    visit(model, "")
    return model
