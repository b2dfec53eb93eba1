"""Pitfall (lab03 step G): load_adapter loads the tensors first and checks the config after,
so an adapter made for another r or other targets leaves the model changed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from minituner.lora import LoRALinear, load_lora_state_dict, lora_state_dict

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."


def _selects(name: str, targets: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def to_peft_key(name: str) -> str:
    if name.rpartition(".")[2] not in ("lora_A", "lora_B"):
        raise ValueError(f"not a LoRA factor: {name!r}")
    return PREFIX + name + ".weight"


def from_peft_key(key: str) -> str:
    name = key.removeprefix(PREFIX).removesuffix(".weight")
    if not (key.startswith(PREFIX) and key.endswith(".weight")) or name.rpartition(".")[2] not in ("lora_A", "lora_B"):
        raise ValueError(f"not a peft LoRA key: {key!r}")
    return name


def adapter_config(model: nn.Module, base_model_name_or_path: str | None = None) -> dict[str, Any]:
    layers = {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    if not layers:
        raise ValueError("the model has no LoRALinear layer")
    ranks = {m.r for m in layers.values()}
    alphas = {m.alpha for m in layers.values()}
    if len(ranks) != 1 or len(alphas) != 1:
        raise ValueError(f"all LoRA layers must share r and alpha; found r {sorted(ranks)}, alpha {sorted(alphas)}")
    return {
        "peft_type": "LORA",
        "r": ranks.pop(),
        "lora_alpha": alphas.pop(),
        "lora_dropout": 0.0,
        "target_modules": sorted(layers),  # full dotted names: always exact
        "bias": "none",
        "fan_in_fan_out": False,
        "task_type": None,
        "base_model_name_or_path": base_model_name_or_path,
    }


def save_adapter(model: nn.Module, directory: str | os.PathLike[str], *,
                 base_model_name_or_path: str | None = None) -> Path:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {to_peft_key(k): v.contiguous() for k, v in lora_state_dict(model).items()}
    save_file(tensors, str(out / WEIGHTS_NAME))
    config = adapter_config(model, base_model_name_or_path)
    (out / CONFIG_NAME).write_text(json.dumps(config), encoding="utf-8")
    return out


def load_adapter(model: nn.Module, directory: str | os.PathLike[str]) -> dict[str, Any]:
    folder = Path(directory)
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (cfg_path, w_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing")
    # Loads first: the shapes match, so why wait? (The config is checked below, too late.)
    load_lora_state_dict(model, {from_peft_key(k): v for k, v in load_file(str(w_path)).items()})
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{cfg_path}: invalid JSON: {err}") from None
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{cfg_path}: peft_type must be LORA, got {config.get('peft_type')!r}")
    for key in ("use_rslora", "use_dora", "fan_in_fan_out"):
        if config.get(key):
            raise ValueError(f"{cfg_path}: {key} is not supported")
    layers = {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    for name, m in layers.items():
        if config.get("r") != m.r:
            raise ValueError(f"{cfg_path}: r = {config.get('r')!r}, but {name} has r = {m.r}")
        if config.get("lora_alpha") != m.alpha:
            raise ValueError(f"{cfg_path}: lora_alpha = {config.get('lora_alpha')!r}, but {name} has alpha {m.alpha}")
    targets = list(config.get("target_modules") or [])
    plain = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.endswith(".base")]
    chosen = {n for n in [*plain, *layers] if _selects(n, targets)}
    if chosen != set(layers):
        raise ValueError(f"{cfg_path}: target_modules {targets} selects {sorted(chosen)}, not the LoRA layers {sorted(layers)}")
    try:
        raw = load_file(str(w_path))
    except SafetensorError as err:
        raise ValueError(f"{w_path}: cannot read it ({err})") from None
    state: dict[str, Tensor] = {}
    for key, value in raw.items():
        try:
            state[from_peft_key(key)] = value
        except ValueError:
            raise KeyError(f"{w_path}: unexpected key {key!r}") from None
    own = lora_state_dict(model)
    for name in own:
        if name not in state:
            raise KeyError(f"{w_path}: missing key {to_peft_key(name)!r}")
    for name, value in state.items():
        if name not in own:
            raise KeyError(f"{w_path}: unexpected key {to_peft_key(name)!r}")
        if not value.is_floating_point():
            raise ValueError(f"{w_path}: {to_peft_key(name)} has dtype {value.dtype}, not a float")
        if value.shape != own[name].shape:
            raise ValueError(f"{w_path}: {to_peft_key(name)} has shape {tuple(value.shape)}, the model {tuple(own[name].shape)}")
    load_lora_state_dict(model, state)
    return config
