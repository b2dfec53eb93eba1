"""Pitfall (lab01 step B): counts the (out, in) product B @ A as the trainable parameters."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from minituner.minigpt import LINEAR_NAMES, MiniGPTConfig

#: AdamW keeps two states per trainable parameter (the running mean of the gradient and of its
#: square), each in float32: 2 * 4 = 8 bytes per trainable parameter.
ADAMW_STATE_BYTES_PER_PARAM = 8


@dataclass(frozen=True)
class ParameterCount:
    """How many parameters a model has (``total``) and how many of them train (``trainable``).

    Both count numbers (scalars), not tensors: a (4096, 4096) weight counts 16,777,216.
    """

    trainable: int
    total: int

    @property
    def frozen(self) -> int:
        """The parameters that do not train: ``total - trainable``."""
        return self.total - self.trainable

    @property
    def trainable_share(self) -> float:
        """``trainable / total``, a fraction in [0, 1] (multiply by 100 for a percentage)."""
        return self.trainable / self.total if self.total else 0.0


@dataclass(frozen=True)
class TrainingBytes:
    """Memory, in bytes, that training adds for the trainable parameters.

    The model's own weights, frozen or not, and the activations are not included: they are
    there whatever you train.
    """

    optimizer_states: int
    gradients: int

    @property
    def total(self) -> int:
        return self.optimizer_states + self.gradients


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def count_parameters(module: nn.Module) -> ParameterCount:
    """Count the parameters of ``module``: all of them, and those that require grad.

    Every parameter counts once, by its number of elements (``numel``), even when two
    submodules share it (tied weights). Buffers (running statistics, masks) are not parameters.

    Args:
        module: any ``nn.Module``.

    Returns:
        ``ParameterCount(trainable, total)``, in numbers of scalars.
    """
    trainable = 0
    total = 0
    # parameters() yields each parameter once, even when two modules share it
    for p in module.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return ParameterCount(trainable=trainable, total=total)


def lora_linear_count(
    in_features: int, out_features: int, r: int, bias: bool = True
) -> ParameterCount:
    """The closed form for ``LoRALinear(nn.Linear(in_features, out_features, bias=bias), r)``.

    The factors train: ``lora_A`` is (r, in_features) and ``lora_B`` is (out_features, r), so
    ``trainable = r * (in_features + out_features)``. The frozen base holds its weight,
    (out_features, in_features), and its bias, (out_features,) when ``bias`` is True.

    Raises:
        ValueError: ``in_features``, ``out_features`` or ``r`` is not a positive int; the
            message names the argument and the value.
    """
    _check_positive_int("in_features", in_features)
    _check_positive_int("out_features", out_features)
    _check_positive_int("r", r)
    trainable = in_features * out_features  # the update B @ A has the weight's shape
    frozen = in_features * out_features  # base.weight (out, in)
    if bias:
        frozen += out_features  # base.bias (out,): an nn.Linear has one unless bias=False
    return ParameterCount(trainable=trainable, total=frozen + trainable)


def minigpt_lora_count(
    config: MiniGPTConfig, r: int, target_modules: tuple[str, ...] = ("q_proj", "v_proj")
) -> ParameterCount:
    """The closed form for a MiniGPT built from ``config`` with LoRA of rank ``r`` on the
    ``nn.Linear`` layers named in ``target_modules``, everything else frozen.

    ``target_modules`` holds last names of MiniGPT's linear layers (``minigpt.LINEAR_NAMES``:
    ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``fc1``, ``fc2``, ``lm_head``). A name
    selects that layer in every block (``lm_head`` exists once); a name given twice counts once.
    The table of shapes is in the docstring of ``minigpt.MiniGPT``; with C = ``n_embd``:
    q/k/v/o are (C -> C), fc1 is (C -> 4C), fc2 is (4C -> C), lm_head is (C -> vocab_size)
    without a bias and untied; LayerNorms have a weight (C,) and, with ``config.bias``, a bias.

    Returns:
        ``ParameterCount``: ``trainable`` = the LoRA factors; ``total`` = the whole MiniGPT plus
        the factors.

    Raises:
        ValueError: ``r`` is not a positive int, ``target_modules`` is empty, or a target is not
            one of ``LINEAR_NAMES`` (the message names it).
    """
    _check_positive_int("r", r)
    if not target_modules:
        raise ValueError("target_modules is empty: name at least one layer, e.g. ('q_proj',)")
    unknown = [t for t in target_modules if t not in LINEAR_NAMES]
    if unknown:
        raise ValueError(
            f"unknown target(s) {unknown}: MiniGPT's linear layers are {list(LINEAR_NAMES)}"
        )
    C, V, L = config.n_embd, config.vocab_size, config.n_layer
    # Each linear layer by last name: (in_features, out_features, has a bias, how many).
    linears = {
        "q_proj": (C, C, config.bias, L),
        "k_proj": (C, C, config.bias, L),
        "v_proj": (C, C, config.bias, L),
        "o_proj": (C, C, config.bias, L),
        "fc1": (C, 4 * C, config.bias, L),
        "fc2": (4 * C, C, config.bias, L),
        "lm_head": (C, V, False, 1),  # untied from tok_emb, and never a bias
    }
    layer_norm = C + (C if config.bias else 0)  # weight (C,) and maybe bias (C,)

    base = V * C + config.block_size * C  # tok_emb (V, C) and pos_emb (block_size, C)
    base += 2 * L * layer_norm + layer_norm  # ln_1 and ln_2 in each block, ln_f once
    for d_in, d_out, has_bias, count in linears.values():
        base += count * (d_in * d_out + (d_out if has_bias else 0))

    trainable = 0
    for name in dict.fromkeys(target_modules):  # each name once, in order
        d_in, d_out, _, count = linears[name]
        trainable += count * r * (d_in + d_out)
    return ParameterCount(trainable=trainable, total=base + trainable)


def adapter_checkpoint_bytes(n_params: int, dtype: torch.dtype = torch.float32) -> int:
    """The bytes of tensor data in a checkpoint that stores ``n_params`` numbers in ``dtype``.

    Only the payload: ``n_params`` times the size of one element of ``dtype`` (4 for float32,
    2 for float16 and bfloat16, 8 for float64, 1 for an 8-bit type). A real file adds a little
    on top: safetensors writes an 8-byte length and a JSON header with every key, dtype and
    shape; ``torch.save`` adds pickle and zip records.

    Raises:
        ValueError: ``n_params`` is not an int >= 0.
    """
    if isinstance(n_params, bool) or not isinstance(n_params, int) or n_params < 0:
        raise ValueError(f"n_params must be an int >= 0, got {n_params!r}")
    return n_params * dtype.itemsize  # bytes per element: 4 for float32, 2 for bfloat16


def adamw_training_bytes(
    n_trainable: int, param_dtype: torch.dtype = torch.float32
) -> TrainingBytes:
    """The memory that AdamW and the gradients take for ``n_trainable`` trainable parameters.

    - optimizer states: two float32 numbers per trainable parameter (AdamW's running means of
      the gradient and of its square), ``ADAMW_STATE_BYTES_PER_PARAM = 8`` bytes each. This is
      what ``torch.optim.AdamW`` keeps for float32 parameters, and what mixed-precision training
      keeps for 16-bit ones (which also keep a float32 master copy, not counted here).
    - gradients: one per trainable parameter, in the parameters' dtype.

    Frozen parameters get neither: that is where LoRA's memory saving comes from. Call it with
    the total of a model for full fine-tuning and with the LoRA factors' count for LoRA.

    Raises:
        ValueError: ``n_trainable`` is not an int >= 0.
    """
    if isinstance(n_trainable, bool) or not isinstance(n_trainable, int) or n_trainable < 0:
        raise ValueError(f"n_trainable must be an int >= 0, got {n_trainable!r}")
    return TrainingBytes(
        optimizer_states=n_trainable * ADAMW_STATE_BYTES_PER_PARAM,
        gradients=n_trainable * param_dtype.itemsize,
    )
