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
    raise NotImplementedError("lab03 step C: add peft's prefix and the .weight suffix to a factor's dotted name. See labs/03-adapter-checkpoints.md")


def from_peft_key(key: str) -> str:
    """The inverse of ``to_peft_key``: the course's dotted name of the factor peft calls ``key``.

    ``"base_model.model.blocks.0.attn.q_proj.lora_A.weight"`` -> ``"blocks.0.attn.q_proj.lora_A"``.
    Raises ``ValueError`` naming ``key`` when it is not of that form (no prefix, no ``.weight``,
    or not a ``lora_A`` / ``lora_B`` factor, such as peft's ``lora_embedding_A`` or DoRA's
    ``lora_magnitude_vector``).
    """
    raise NotImplementedError("lab03 step D: strip peft's prefix and the .weight suffix, refusing any other key. See labs/03-adapter-checkpoints.md")


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
    raise NotImplementedError("lab03 step E: read r, alpha, dropout and the target names from the model's LoRA layers. See labs/03-adapter-checkpoints.md")


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
    raise NotImplementedError("lab03 step F: write the factors under peft's names, and the configuration beside them. See labs/03-adapter-checkpoints.md")


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
    raise NotImplementedError("lab03 step G: check the config, then every key, shape and dtype; only then load. See labs/03-adapter-checkpoints.md")
