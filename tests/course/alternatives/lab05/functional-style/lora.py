"""Lab 05 needs a working lora.py (labs 00-04): the reference, unchanged."""

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
        # >>> lab00 step A: check the arguments, create the factors and freeze the base
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
        device, dtype = weight.device, weight.dtype
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, r, device=device, dtype=dtype))
        self.lora_dropout = nn.Dropout(p=dropout) if dropout > 0.0 else nn.Identity()

        if freeze_base:
            base.requires_grad_(False)
        self.reset_parameters()
        # <<< lab00 step A

    def reset_parameters(self) -> None:
        """Initialise A like ``nn.Linear`` initialises its weight, and B to zeros."""
        # >>> lab00 step B: random A, zero B, so the layer starts exactly at the base
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        # B = 0, so B @ A = 0 and the layer starts exactly at the pretrained model
        nn.init.zeros_(self.lora_B)
        # <<< lab00 step B

    def forward(self, x: Tensor) -> Tensor:
        """Return ``base(x) + scaling * B (A dropout(x))``.

        Shapes: x: (..., in_features) -> (..., out_features).
        """
        # >>> lab00 step C: add the scaled low-rank branch, computed down to r first
        down = F.linear(self.lora_dropout(x), self.lora_A)  # (..., r)
        up = F.linear(down, self.lora_B)  # (..., out_features)
        result: Tensor = self.base(x) + self.scaling * up
        return result
        # <<< lab00 step C

    @torch.no_grad()
    def merge_(self) -> None:
        """Fold ``scaling * B @ A`` into ``base.weight`` in place, then zero both factors.

        Afterwards the output is unchanged (within float rounding) and the branch adds exactly
        zero, so calling ``merge_`` again changes nothing. The base keeps its ``requires_grad``.
        """
        # >>> lab04 step A: fold the update into the base weight once, then zero the factors
        weight = self.base.weight  # (out_features, in_features)
        # Form the product in float32 at least, so a bfloat16 base rounds once, not twice.
        work = torch.promote_types(weight.dtype, torch.float32)
        delta = self.scaling * (self.lora_B.to(work) @ self.lora_A.to(work))  # (out, in)
        weight.copy_((weight.to(work) + delta).to(weight.dtype))
        # Zeroed factors make the branch add nothing: merging twice adds the update once.
        self.lora_A.zero_()
        self.lora_B.zero_()
        # <<< lab04 step A

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
    # >>> lab02 step A: select nn.Linear layers by whole dotted name or dotted suffix, never by substring
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
            # Whole-name or "."-suffix match: "q_proj" must not select "q_proj_gate".
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
    # <<< lab02 step A


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
    # >>> lab02 step B: check everything first, then freeze the model and swap in LoRALinear
    wrapped = [name for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    if wrapped:
        raise ValueError(
            f"the model is already wrapped: {wrapped[0]!r} is a LoRALinear. Wrap a model once; "
            f"to change r or the targets, start again from the unwrapped model"
        )
    names = find_lora_targets(model, target_modules)  # raises before anything changes

    # Freeze first: the factors created below are new parameters, so they alone stay trainable.
    model.requires_grad_(False)
    for name in names:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)  # "" is the model itself
        layer = parent.get_submodule(child_name)
        assert isinstance(layer, nn.Linear)
        # Replace the layer on its parent: setattr(model, "a.b.c", ...) would add a new,
        # unused attribute instead.
        setattr(parent, child_name, LoRALinear(layer, r=r, alpha=alpha, dropout=dropout))
    return model
    # <<< lab02 step B


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The LoRA factors of ``model``, and nothing else, by full dotted name.

    One entry per factor of every ``LoRALinear`` inside ``model``, named as
    ``model.named_parameters()`` names it: ``"blocks.0.attn.q_proj.lora_A"``,
    ``"blocks.0.attn.q_proj.lora_B"``, ... (just ``"lora_A"`` and ``"lora_B"`` when ``model`` is
    itself a ``LoRALinear``). No base weight, bias, embedding or LayerNorm is included.

    The values are detached tensors that share memory with the parameters, as
    ``nn.Module.state_dict`` returns them: clone them to keep a snapshot.

    Shapes: ``<name>.lora_A``: (r, in_features), ``<name>.lora_B``: (out_features, r).
    """
    # >>> lab03 step A: collect the lora_A and lora_B of every LoRALinear under its dotted name
    state: dict[str, Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            prefix = f"{name}." if name else ""  # the model itself has the empty name
            state[prefix + "lora_A"] = module.lora_A.detach()
            state[prefix + "lora_B"] = module.lora_B.detach()
    return state
    # <<< lab03 step A


def load_lora_state_dict(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy the factors in ``state`` into the LoRA layers of ``model``: the inverse of
    ``lora_state_dict``.

    Everything is checked before anything changes, so a call that raises leaves ``model``
    exactly as it was:

    - ``state`` must hold exactly the keys ``lora_state_dict(model)`` has: a key missing, or one
      the model does not have, raises ``ValueError`` naming every such key. Keys are compared
      whole, never by substring or suffix;
    - every value must be a tensor of the shape of the factor it goes into, else ``ValueError``
      naming the key and both shapes.

    Then each value is copied into the existing parameter (the same ``nn.Parameter`` objects, so
    an optimizer that holds them sees the new values), cast to that parameter's dtype and device
    as ``nn.Module.load_state_dict`` does.
    """
    # >>> lab03 step B: check every key and shape first; only then copy the values in
    params: dict[str, nn.Parameter] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            prefix = f"{name}." if name else ""
            params[prefix + "lora_A"] = module.lora_A
            params[prefix + "lora_B"] = module.lora_B

    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(
            "the LoRA state does not fit this model: "
            f"missing keys {missing}, unexpected keys {unexpected}. Keys must equal those of "
            "lora_state_dict(model): the full dotted names of the factors"
        )
    for name, param in params.items():
        value = state[name]
        if not isinstance(value, Tensor):
            raise ValueError(f"{name}: expected a tensor, got {type(value).__name__}")
        if value.shape != param.shape:
            raise ValueError(
                f"{name}: shape {tuple(value.shape)} in the state, but the model's parameter has "
                f"shape {tuple(param.shape)}; was the adapter saved with another r, or for "
                "another model?"
            )

    # Nothing can fail from here on: copy_ casts to the parameter's dtype and device.
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name])
    # <<< lab03 step B


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge every ``LoRALinear`` of ``model`` and put a plain ``nn.Linear`` in its place.

    Each ``LoRALinear`` is merged (``merge_``) and replaced, under the same name, by an
    ``nn.Linear`` whose weight is ``W0 + scaling * B @ A`` and whose bias is the base's bias.
    The result computes the same outputs as before (within float rounding), has exactly the
    parameters of the base model, and holds no LoRA factor and no ``LoRALinear``.

    The model is changed in place and returned. When ``model`` is itself a ``LoRALinear``, the
    merged ``nn.Linear`` is returned (a module cannot replace itself).
    """
    # >>> lab04 step B: merge each LoRALinear, then put its merged nn.Linear in its place
    if isinstance(model, LoRALinear):
        model.merge_()
        return model.base
    # A list first: the loop replaces modules, which must not happen while iterating over them.
    wrapped: list[tuple[str, LoRALinear]] = []
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, LoRALinear):
            wrapped.append((name, module))
    for name, layer in wrapped:
        layer.merge_()  # a second merge of a shared layer adds nothing: its factors are zero
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.base)
    return model
    # <<< lab04 step B
