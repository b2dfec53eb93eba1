"""Adapter checkpoints on disk, in the layout Hugging Face peft uses (lab 03).

An adapter folder holds two files, and nothing of the base model:

    adapter_config.json          {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": [...], ...}
    adapter_model.safetensors    base_model.model.<dotted name>.lora_A.weight   (r, in_features)
                                 base_model.model.<dotted name>.lora_B.weight   (out_features, r)

peft's ``PeftModel.save_pretrained`` writes this layout, and ``PeftModel.from_pretrained`` reads
it; so an adapter saved here loads in peft onto the same model, and a peft LoRA adapter for the
same module names loads here. The steps: C and D turn this course's factor names into peft's
and back, E builds the configuration from the model's LoRA layers, F saves, G loads. Loading
checks everything (the configuration against the model, every key, shape and dtype) before it
changes anything, and every error names the file and the key at fault.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from minituner.lora import LoRALinear, load_lora_state_dict, lora_state_dict

#: The two files of an adapter folder, named as peft names them.
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
#: peft wraps the model twice (PeftModel, then LoraModel), so its keys start with this.
PEFT_PREFIX = "base_model.model."
#: The configuration keys ``load_adapter`` checks against the model.
REQUIRED_CONFIG_KEYS = ("peft_type", "r", "lora_alpha", "target_modules")


def target_matches(name: str, target: str) -> bool:
    """Whether the module named ``name`` is selected by ``target``, by peft's rule for a list of
    targets: the whole dotted name, or its last parts after a dot. ``"q_proj"`` selects
    ``"blocks.0.attn.q_proj"``; it does not select ``"blocks.0.attn.q_proj2"`` nor ``"xq_proj"``.
    (Given code: lab 02 asks you to write the same rule.)"""
    return name == target or name.endswith("." + target)


def to_peft_key(name: str) -> str:
    """The key peft uses on disk for the factor this course names ``name``.

    ``"blocks.0.attn.q_proj.lora_A"`` -> ``"base_model.model.blocks.0.attn.q_proj.lora_A.weight"``.
    peft adds the prefix because it wraps the model twice, and the ``.weight`` suffix because it
    keeps each factor in an ``nn.Linear``; this course keeps them as ``nn.Parameter`` directly.
    Raises ``ValueError`` naming ``name`` when it does not end in ``lora_A`` or ``lora_B``.
    """
    # >>> lab03 step C: add peft's prefix and the .weight suffix to a factor's dotted name
    last = name.rpartition(".")[2]
    if last not in ("lora_A", "lora_B"):
        raise ValueError(f"{name!r} is not the name of a LoRA factor (it must end in lora_A or lora_B)")
    return f"{PEFT_PREFIX}{name}.weight"
    # <<< lab03 step C


def from_peft_key(key: str) -> str:
    """The inverse of ``to_peft_key``: the course's dotted name of the factor peft calls ``key``.

    ``"base_model.model.blocks.0.attn.q_proj.lora_A.weight"`` -> ``"blocks.0.attn.q_proj.lora_A"``.
    Raises ``ValueError`` naming ``key`` when it is not of that form (no prefix, no ``.weight``,
    or not a ``lora_A`` / ``lora_B`` factor, such as peft's ``lora_embedding_A`` or DoRA's
    ``lora_magnitude_vector``).
    """
    # >>> lab03 step D: strip peft's prefix and the .weight suffix, refusing any other key
    suffix = ".weight"
    if not (key.startswith(PEFT_PREFIX) and key.endswith(suffix)):
        raise ValueError(
            f"{key!r} is not a peft LoRA key: it must look like "
            f"'{PEFT_PREFIX}<module>.lora_A{suffix}' or '...lora_B{suffix}'"
        )
    name = key[len(PEFT_PREFIX) : -len(suffix)]
    if name.rpartition(".")[2] not in ("lora_A", "lora_B"):
        raise ValueError(f"{key!r} is not a LoRA factor: its name must end in lora_A.weight or lora_B.weight")
    return name
    # <<< lab03 step D


def adapter_config(model: nn.Module, base_model_name_or_path: str | None = None) -> dict[str, Any]:
    """The ``adapter_config.json`` content that describes the LoRA layers of ``model``.

    Read from the layers themselves, so it can never disagree with the factors it goes with:
    ``r``, ``lora_alpha`` and ``lora_dropout`` (every ``LoRALinear`` must share them, as one peft
    configuration does), and ``target_modules``, a list of names that selects exactly the LoRA
    layers by ``target_matches``: the short names (``["q_proj", "v_proj"]``) when they select
    nothing else, the full dotted names otherwise. Also the peft fields that state this course's
    conventions: ``"peft_type": "LORA"``, ``"bias": "none"``, ``"fan_in_fan_out": false``
    (factors stored as (r, in) and (out, r)), ``"use_rslora": false`` (scaling alpha / r),
    ``"use_dora": false``, and ``base_model_name_or_path`` (None when the base has no name).

    Raises ``ValueError`` when ``model`` has no ``LoRALinear``, or when its layers differ in
    ``r``, ``alpha`` or dropout.
    """
    # >>> lab03 step E: read r, alpha, dropout and the target names from the model's LoRA layers
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not layers:
        raise ValueError("the model has no LoRALinear layer: wrap it first (lab 02), then save")
    ranks = sorted({layer.r for _, layer in layers})
    alphas = sorted({layer.alpha for _, layer in layers})
    dropouts = sorted({float(getattr(layer.lora_dropout, "p", 0.0)) for _, layer in layers})
    for what, values in (("r", ranks), ("alpha", alphas), ("dropout", dropouts)):
        if len(values) > 1:
            raise ValueError(
                f"the LoRA layers of the model differ in {what} ({values}); one adapter "
                "configuration describes layers that share r, alpha and dropout"
            )

    wrapped = [name for name, _ in layers]
    inside = tuple(f"{name}." for name in wrapped)  # the base layers inside each LoRALinear
    candidates = [n for n, _ in model.named_modules() if n and not n.startswith(inside)]
    short = sorted({name.rpartition(".")[2] for name in wrapped})
    selected = [n for n in candidates if any(target_matches(n, t) for t in short)]
    # Short names are easier to read, but they must select the LoRA layers and nothing else.
    targets = short if sorted(selected) == sorted(wrapped) else sorted(wrapped)

    alpha = alphas[0]
    return {
        "peft_type": "LORA",
        "base_model_name_or_path": base_model_name_or_path,
        "r": ranks[0],
        "lora_alpha": int(alpha) if alpha.is_integer() else alpha,
        "lora_dropout": dropouts[0],
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "task_type": None,
        "revision": None,
    }
    # <<< lab03 step E


def save_adapter(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    base_model_name_or_path: str | None = None,
) -> Path:
    """Write the LoRA adapter of ``model`` to ``directory`` (created if needed), as peft does.

    Two files: ``adapter_model.safetensors`` with the factors only, under peft's key names
    (``to_peft_key``), each in the dtype the model holds it in; and ``adapter_config.json``
    with ``adapter_config(model, base_model_name_or_path)``. Returns the folder.
    """
    # >>> lab03 step F: write the factors under peft's names, and the configuration beside them
    config = adapter_config(model, base_model_name_or_path)
    tensors = {
        to_peft_key(name): value.detach().to("cpu").contiguous()
        for name, value in lora_state_dict(model).items()
    }
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / WEIGHTS_NAME, metadata={"format": "pt"})
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder
    # <<< lab03 step F


def load_adapter(model: nn.Module, directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Load the adapter in ``directory`` into the LoRA layers of ``model``; return its config.

    ``model`` must already be wrapped the way the adapter was trained (the same base, the same
    targets, the same ``r`` and ``alpha``). Everything is checked before anything changes:

    - both files exist (``FileNotFoundError`` naming the missing one);
    - ``adapter_config.json`` is JSON with ``peft_type`` ``"LORA"``, ``r``, ``lora_alpha`` and
      ``target_modules`` that match the model's LoRA layers, and no option this course does not
      implement (``use_rslora``, ``use_dora``, ``fan_in_fan_out``, a ``bias`` other than
      ``"none"``, per-layer ``rank_pattern`` / ``alpha_pattern``);
    - ``adapter_model.safetensors`` is a readable safetensors file (not truncated, not corrupt)
      whose keys are exactly peft's names for the model's factors, each a floating-point tensor
      of the factor's shape.

    Each failure is a ``ValueError`` (or ``FileNotFoundError``) whose message names the file
    and the key at fault, and leaves every parameter of ``model`` as it was. Then the values are
    copied in with ``load_lora_state_dict``, cast to the model's dtype and device.
    """
    # >>> lab03 step G: check the config, then every key, shape and dtype; only then load
    folder = Path(directory)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no such file; an adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME}"
            )

    # The configuration, against the model.
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{config_path}: not valid JSON ({err}); save the adapter again") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: must hold a JSON object, got {type(config).__name__}")
    for key in REQUIRED_CONFIG_KEYS:
        if key not in config:
            raise ValueError(f"{config_path}: key {key!r} is missing")
    if config["peft_type"] != "LORA":
        raise ValueError(f"{config_path}: key 'peft_type' is {config['peft_type']!r}, expected 'LORA'")
    unsupported = {"use_rslora": False, "use_dora": False, "fan_in_fan_out": False}
    for key, supported in unsupported.items():
        if config.get(key, supported) != supported:
            raise ValueError(f"{config_path}: key {key!r} is {config[key]!r}; this course supports {supported!r} only")
    if config.get("bias", "none") != "none":
        raise ValueError(f"{config_path}: key 'bias' is {config['bias']!r}; only 'none' is supported")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise ValueError(f"{config_path}: key {key!r} gives per-layer values; not supported")

    layers = {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    if not layers:
        raise ValueError(f"{config_path}: the model has no LoRALinear layer: wrap it before loading")
    for key, attribute in (("r", "r"), ("lora_alpha", "alpha")):
        wanted = config[key]
        for name, layer in layers.items():
            have = getattr(layer, attribute)
            if isinstance(wanted, bool) or not isinstance(wanted, (int, float)) or wanted != have:
                raise ValueError(
                    f"{config_path}: key {key!r} is {wanted!r}, but the model's LoRA layer "
                    f"{name} has {attribute} = {have!r}; wrap the model as the adapter was trained"
                )
    targets = config["target_modules"]
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ValueError(
            f"{config_path}: key 'target_modules' must be a list of module names, got {targets!r}"
        )
    inside = tuple(f"{name}." for name in layers)
    candidates = [n for n, _ in model.named_modules() if n and not n.startswith(inside)]
    selected = {n for n in candidates if any(target_matches(n, t) for t in targets)}
    if selected != set(layers):
        raise ValueError(
            f"{config_path}: key 'target_modules' ({targets}) selects {sorted(selected)}, but "
            f"the model's LoRA layers are {sorted(layers)}: the adapter was made for other layers"
        )

    # The tensors, against the model's factors.
    try:
        tensors = load_file(weights_path)
    except SafetensorError as err:
        raise ValueError(
            f"{weights_path}: not a readable safetensors file ({err}); it is truncated or "
            "corrupt: save the adapter again"
        ) from None
    expected = lora_state_dict(model)
    state: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, value in tensors.items():
        try:
            name = from_peft_key(key)
        except ValueError:
            unexpected.append(key)
            continue
        if name not in expected:
            unexpected.append(key)
            continue
        state[name] = value
    missing = [to_peft_key(name) for name in expected if name not in state]
    if missing or unexpected:
        raise ValueError(
            f"{weights_path}: keys do not match the model: missing {missing}, unexpected "
            f"{sorted(unexpected)}; was the adapter saved for another model?"
        )
    for name, value in state.items():
        key = to_peft_key(name)
        if not torch.is_floating_point(value):
            raise ValueError(f"{weights_path}: key {key!r} has dtype {value.dtype}; LoRA factors are floating point")
        if value.shape != expected[name].shape:
            raise ValueError(
                f"{weights_path}: key {key!r} has shape {tuple(value.shape)}, but the model's "
                f"factor has shape {tuple(expected[name].shape)}; another r, or another base model?"
            )

    load_lora_state_dict(model, state)
    return config
    # <<< lab03 step G
