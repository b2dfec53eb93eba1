"""Pitfall (lab02 step B): no check that the model is already wrapped."""

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


def find_lora_targets(model: nn.Module, target_modules: Sequence[str]) -> list[str]:
    """The dotted names of the ``nn.Linear`` layers of ``model`` that ``target_modules`` selects.

    A target selects a linear layer when the layer's dotted name equals it, or ends with
    ``"." + target``: ``"q_proj"`` selects ``blocks.0.attn.q_proj``, ``"attn.q_proj"`` selects it
    too, and neither selects ``blocks.0.attn.q_proj_gate`` nor ``blocks.0.attn.xq_proj`` (never a
    substring match). Modules that are not ``nn.Linear`` are never selected, whatever their name.
    Changes nothing in ``model``.

    Returns:
        The selected names, each once, in the order of ``model.named_modules()``.

    Raises:
        ValueError: ``target_modules`` is empty, or one of its targets selects no ``nn.Linear``
            (the message names that target).
    """
    if isinstance(target_modules, str):
        raise TypeError(
            f"target_modules must be a sequence of names such as ('q_proj',), got the string "
            f"{target_modules!r}"
        )
    if len(target_modules) == 0:
        raise ValueError("target_modules is empty: name at least one layer, e.g. ('q_proj',)")
    selected: list[str] = []
    matched = {target: False for target in target_modules}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        for target in target_modules:
            if name == target or name.endswith("." + target):
                matched[target] = True
                if name not in selected:
                    selected.append(name)
    missing = [target for target, found in matched.items() if not found]
    if missing:
        raise ValueError(
            f"target(s) {missing} match no nn.Linear of the model: a target must equal a layer's "
            f"dotted name or its last part(s), e.g. 'q_proj' for 'blocks.0.attn.q_proj'"
        )
    return selected


def wrap_minigpt_with_lora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16.0,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    dropout: float = 0.05,
) -> nn.Module:
    """Put LoRA on the chosen linear layers of ``model``, in place, and freeze everything else.

    Each ``nn.Linear`` that ``find_lora_targets(model, target_modules)`` selects is replaced, on
    its parent module, by ``LoRALinear(layer, r=r, alpha=alpha, dropout=dropout)``, which keeps
    that same layer as its ``base``. Every other parameter of the model stops requiring grad: only
    the new ``lora_A`` and ``lora_B`` train. Works on any ``nn.Module``, not only a MiniGPT.

    Nothing changes when it raises: every check runs before the first replacement.

    Returns:
        ``model`` itself (wrapped in place), so calls can be chained.

    Raises:
        ValueError: a target selects no ``nn.Linear`` (named in the message), or ``model`` already
            contains a ``LoRALinear`` (its name is in the message): wrap a model once.
    """
    names = find_lora_targets(model, target_modules)  # raises before anything changes

    model.requires_grad_(False)
    for name in names:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)  # "" is the model itself
        layer = parent.get_submodule(child_name)
        assert isinstance(layer, nn.Linear)
        setattr(parent, child_name, LoRALinear(layer, r=r, alpha=alpha, dropout=dropout))
    return model

