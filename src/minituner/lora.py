"""LoRA for PyTorch linear layers: the module every lab of minituner builds on.

A LoRA layer keeps a pretrained ``nn.Linear`` frozen and learns a low-rank update beside it:

    y = base(x) + (alpha / r) * B (A x),    A: (r, in_features),  B: (out_features, r)

Lab 00 writes ``LoRALinear`` (steps A-C); lab 04 writes ``merge_``. The functions after the
class belong to labs 02-04. See ``labs/`` for the briefs and ``src/minituner/BLUEPRINT.md``
for the map of the package.
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
        raise NotImplementedError("lab00 step A: check the arguments, create the factors and freeze the base. See labs/00-lora-by-hand.md")

    def reset_parameters(self) -> None:
        """Initialise A like ``nn.Linear`` initialises its weight, and B to zeros."""
        raise NotImplementedError("lab00 step B: random A, zero B, so the layer starts exactly at the base. See labs/00-lora-by-hand.md")

    def forward(self, x: Tensor) -> Tensor:
        """Return ``base(x) + scaling * B (A dropout(x))``.

        Shapes: x: (..., in_features) -> (..., out_features).
        """
        raise NotImplementedError("lab00 step C: add the scaled low-rank branch, computed down to r first. See labs/00-lora-by-hand.md")

    @torch.no_grad()
    def merge_(self) -> None:
        """Fold ``scaling * B @ A`` into ``base.weight`` in place, then zero both factors.

        Afterwards the output is unchanged (within float rounding) and the branch adds exactly
        zero, so calling ``merge_`` again changes nothing. The base keeps its ``requires_grad``.
        """
        raise NotImplementedError("lab04 step A: fold the update into the base weight once, then zero the factors. See labs/04-merge-for-inference.md")

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
    raise NotImplementedError("lab02 step A: select nn.Linear layers by whole dotted name or dotted suffix, never by substring. See labs/02-wrapping-minigpt.md")


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
    raise NotImplementedError("lab02 step B: check everything first, then freeze the model and swap in LoRALinear. See labs/02-wrapping-minigpt.md")


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
    raise NotImplementedError("lab03 step A: collect the lora_A and lora_B of every LoRALinear under its dotted name. See labs/03-adapter-checkpoints.md")


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
    raise NotImplementedError("lab03 step B: check every key and shape first; only then copy the values in. See labs/03-adapter-checkpoints.md")


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge every ``LoRALinear`` of ``model`` and put a plain ``nn.Linear`` in its place.

    Each ``LoRALinear`` is merged (``merge_``) and replaced, under the same name, by an
    ``nn.Linear`` whose weight is ``W0 + scaling * B @ A`` and whose bias is the base's bias.
    The result computes the same outputs as before (within float rounding), has exactly the
    parameters of the base model, and holds no LoRA factor and no ``LoRALinear``.

    The model is changed in place and returned. When ``model`` is itself a ``LoRALinear``, the
    merged ``nn.Linear`` is returned (a module cannot replace itself).
    """
    raise NotImplementedError("lab04 step B: merge each LoRALinear, then put its merged nn.Linear in its place. See labs/04-merge-for-inference.md")
