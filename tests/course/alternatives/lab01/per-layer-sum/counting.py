"""A correct alternative for lab01: parameters deduplicated by id, the MiniGPT closed form built
from step B's closed form layer by layer, element sizes from an empty tensor."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from minituner.minigpt import LINEAR_NAMES, MiniGPTConfig


@dataclass(frozen=True)
class ParameterCount:
    trainable: int
    total: int

    @property
    def frozen(self) -> int:
        return self.total - self.trainable

    @property
    def trainable_share(self) -> float:
        return self.trainable / self.total if self.total else 0.0


@dataclass(frozen=True)
class TrainingBytes:
    optimizer_states: int
    gradients: int

    @property
    def total(self) -> int:
        return self.optimizer_states + self.gradients


def count_parameters(module: nn.Module) -> ParameterCount:
    unique = {id(p): p for _, p in module.named_parameters(remove_duplicate=False)}
    total = sum(p.numel() for p in unique.values())
    trainable = sum(p.numel() for p in unique.values() if p.requires_grad)
    return ParameterCount(trainable, total)


def _positive(name: str, value: object) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def lora_linear_count(in_features: int, out_features: int, r: int, bias: bool = True) -> ParameterCount:
    d_in, d_out, rank = (_positive("in_features", in_features),
                         _positive("out_features", out_features), _positive("r", r))
    factors = rank * d_in + d_out * rank
    return ParameterCount(factors, d_out * d_in + (d_out if bias else 0) + factors)


def minigpt_lora_count(
    config: MiniGPTConfig, r: int, target_modules: tuple[str, ...] = ("q_proj", "v_proj")
) -> ParameterCount:
    _positive("r", r)
    if not target_modules or any(t not in LINEAR_NAMES for t in target_modules):
        bad = [t for t in target_modules if t not in LINEAR_NAMES]
        raise ValueError(f"target_modules must name layers among {LINEAR_NAMES}; bad: {bad}")
    C, n = config.n_embd, config.n_layer
    shapes = {"q_proj": (C, C), "k_proj": (C, C), "v_proj": (C, C), "o_proj": (C, C),
              "fc1": (C, 4 * C), "fc2": (4 * C, C)}
    trainable = 0
    total = config.vocab_size * C + config.block_size * C
    norm = C * (2 if config.bias else 1)
    total += (2 * n + 1) * norm
    for name, (d_in, d_out) in shapes.items():
        wrapped = name in target_modules
        layer = lora_linear_count(d_in, d_out, r, bias=config.bias)
        total += n * (layer.total if wrapped else layer.frozen)
        trainable += n * (layer.trainable if wrapped else 0)
    head = lora_linear_count(C, config.vocab_size, r, bias=False)
    total += head.total if "lm_head" in target_modules else head.frozen
    trainable += head.trainable if "lm_head" in target_modules else 0
    return ParameterCount(trainable, total)


def adapter_checkpoint_bytes(n_params: int, dtype: torch.dtype = torch.float32) -> int:
    if type(n_params) is not int or n_params < 0:
        raise ValueError(f"n_params must be >= 0, got {n_params!r}")
    return n_params * torch.empty((), dtype=dtype).element_size()


def adamw_training_bytes(n_trainable: int, param_dtype: torch.dtype = torch.float32) -> TrainingBytes:
    if type(n_trainable) is not int or n_trainable < 0:
        raise ValueError(f"n_trainable must be >= 0, got {n_trainable!r}")
    float32 = torch.empty((), dtype=torch.float32).element_size()
    grad = torch.empty((), dtype=param_dtype).element_size()
    return TrainingBytes(2 * float32 * n_trainable, grad * n_trainable)
