"""Lab 03: adapter checkpoint round-trip (labs/03-adapter-checkpoints.md).

In ``lora.py``, step A: ``lora_state_dict(model)`` returns the LoRA factors and nothing else, by
full dotted name; step B: ``load_lora_state_dict(model, state)`` checks every key and shape,
then copies the values in. In ``checkpoint.py``, steps C and D turn the course's names into
peft's on-disk keys and back, step E builds ``adapter_config.json``, step F saves an adapter
folder and step G loads one, checking everything before it changes anything.

The models here are wrapped by hand (``wrap_by_hand``), so lab 03 needs your LoRALinear (lab 00)
but not your ``wrap_minigpt_with_lora`` (lab 02). Every failed load is checked parameter by
parameter, bit for bit: a load that raises must leave the model exactly as it was.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

pytestmark = pytest.mark.lab03

STEP_A = "lab03 step A (lora_state_dict)"
STEP_B = "lab03 step B (load_lora_state_dict)"
STEP_C = "lab03 step C (to_peft_key)"
STEP_D = "lab03 step D (from_peft_key)"
STEP_E = "lab03 step E (adapter_config)"
STEP_F = "lab03 step F (save_adapter)"
STEP_G = "lab03 step G (load_adapter)"

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
R, ALPHA = 4, 12.0
TARGETS = ("q_proj", "v_proj")  # the LoRA paper's choice (section 7.1, Table 5: Wq and Wv)


# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(lora_after_lab00: ModuleType) -> ModuleType:
    """The module ``minituner.checkpoint`` under test, once LoRALinear works."""
    try:
        return importlib.import_module("minituner.checkpoint")
    except (Exception, SystemExit) as exc:
        error = f"{type(exc).__name__}: {exc}"
    pytest.fail(
        f"could not import minituner.checkpoint (src/minituner/checkpoint.py): {error}. "
        f"Fix that error first: every lab03 test of steps C to G needs it.",
        pytrace=False,
    )


def small_config(minigpt: ModuleType, **changes: Any) -> Any:
    """A MiniGPT config small enough for many tests: 2 blocks, width 32."""
    sizes = {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 64, "block_size": 16}
    sizes.update(changes)
    return minigpt.MiniGPTConfig(**sizes)


def wrap_by_hand(
    lora: ModuleType,
    model: nn.Module,
    targets: tuple[str, ...] = TARGETS,
    r: int = R,
    alpha: float = ALPHA,
    dtype: torch.dtype | None = None,
) -> list[str]:
    """Put a LoRALinear in place of each nn.Linear whose last name part is a target.

    Not your wrap_minigpt_with_lora: lab 03 depends on lab 00 only. Returns the wrapped names.
    """
    if dtype is not None:
        model.to(dtype)
    names = [
        n for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and n.rpartition(".")[2] in targets
    ]
    for name in names:
        parent, _, child = name.rpartition(".")
        layer = lora.LoRALinear(model.get_submodule(name), r=r, alpha=alpha)
        setattr(model.get_submodule(parent), child, layer)
    return names


def train_by_hand(model: nn.Module, names: list[str], scale: float = 0.05) -> None:
    """Give every factor random values, as a trained adapter has (B is no longer zero)."""
    with torch.no_grad():
        for name in names:
            layer = model.get_submodule(name)
            layer.lora_A.normal_(0.0, scale)
            layer.lora_B.normal_(0.0, scale)


def pair(
    lora: ModuleType, minigpt: ModuleType, config: Any = None, **wrap: Any
) -> tuple[nn.Module, nn.Module, list[str]]:
    """Two MiniGPTs on the same base weights, wrapped alike: the first trained, the second fresh."""
    config = small_config(minigpt) if config is None else config
    trained = minigpt.build_minigpt(config, seed=0)
    names = wrap_by_hand(lora, trained, **wrap)
    train_by_hand(trained, names)
    fresh = minigpt.build_minigpt(config, seed=0)
    wrap_by_hand(lora, fresh, **wrap)
    return trained.eval(), fresh.eval(), names


def factor_names(names: list[str]) -> list[str]:
    return [f"{n}.{f}" for n in names for f in ("lora_A", "lora_B")]


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """Every parameter and buffer, copied (not viewed), with its dtype."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(model: nn.Module, before: dict[str, Tensor]) -> list[str]:
    """The names whose value or dtype differs from ``before``, bit for bit."""
    now = model.state_dict()
    out = [k for k in before if k not in now]
    for k, v in now.items():
        old = before.get(k)
        if old is None or old.dtype != v.dtype or old.shape != v.shape or not torch.equal(old, v):
            out.append(k)
    return out


def logits(model: nn.Module, seed: int = 1) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, model.config.vocab_size, (2, 8), generator=gen)
    with torch.no_grad():
        out: Tensor = model(idx)
    return out


def expect_refusal(
    step: str,
    call: Callable[[], object],
    model: nn.Module,
    what: str,
    must_name: list[str | tuple[str, ...]],
    exc_types: tuple[type[BaseException], ...] = (ValueError, KeyError),
    why: str = "",
) -> str:
    """``call`` must raise one of ``exc_types`` naming each of ``must_name``, and change nothing.

    An entry of ``must_name`` that is a tuple is satisfied by any one of its strings (a state
    with foreign keys may be reported by its unexpected keys or by the model's missing ones).
    """
    before = snapshot(model)
    expected = " or ".join(e.__name__ for e in exc_types)
    shown = ", ".join(repr(n) if isinstance(n, str) else " or ".join(map(repr, n)) for n in must_name)
    try:
        call()
    except NotImplementedError:
        raise
    except exc_types as exc:
        message = str(exc)
    except Exception as exc:
        hint = f" {why}" if why else ""
        pytest.fail(
            f"{step}: {what} must raise {expected} with a message naming "
            f"{shown}; it raised {type(exc).__name__}: {str(exc)[:300]}.{hint}",
            pytrace=False,
        )
    else:
        hint = f" {why}" if why else ""
        pytest.fail(
            f"{step}: {what} must raise {expected}; it raised nothing"
            + (f" and changed {len(changed(model, before))} tensors of the model" if changed(model, before) else "")
            + f".{hint}",
            pytrace=False,
        )
    for name in must_name:
        options = (name,) if isinstance(name, str) else name
        assert any(option in message for option in options), (
            f"{step}: {what} raised as it should, but the message must name "
            f"{' or '.join(map(repr, options))} so the "
            f"user can find what is wrong; the message was: {message[:400]!r}"
        )
    touched = changed(model, before)
    assert not touched, (
        f"{step}: {what} raised, but a failed load must change nothing: check every key, "
        f"shape and dtype first, then copy. These tensors changed before the error: "
        f"{touched[:4]}{' ...' if len(touched) > 4 else ''} ({len(touched)} in all)."
    )
    return message


# --------------------------------------------------------------------------------------------
# step A: lora_state_dict
# --------------------------------------------------------------------------------------------


def test_lora_state_dict_holds_only_the_factors(
    lora_after_lab00: ModuleType, minigpt: ModuleType
) -> None:
    model, _, names = pair(lora_after_lab00, minigpt)
    state = lora_after_lab00.lora_state_dict(model)
    assert isinstance(state, dict), (
        f"{STEP_A}: lora_state_dict must return a dict of tensors; got {type(state).__name__}."
    )
    want = set(factor_names(names))
    extra = sorted(set(state) - want)
    assert not extra, (
        f"{STEP_A}: lora_state_dict must hold only the LoRA factors ({len(want)} tensors: "
        f"lora_A and lora_B of each wrapped layer); it also holds {len(extra)} others, such as "
        f"{extra[:3]}. Saving the whole model instead of only the factors makes an adapter as "
        f"large as the model and overwrites the base on load."
    )
    missing = sorted(want - set(state))
    assert not missing, (
        f"{STEP_A}: lora_state_dict must hold lora_A and lora_B of every LoRALinear under its "
        f"full dotted name (as model.named_parameters() names it, e.g. {sorted(want)[0]!r}); "
        f"missing: {missing[:4]}. Found: {sorted(state)[:4]}."
    )


def test_lora_state_dict_values_are_the_factors(
    lora_after_lab00: ModuleType, minigpt: ModuleType
) -> None:
    model, _, names = pair(lora_after_lab00, minigpt)
    state = lora_after_lab00.lora_state_dict(model)
    params = dict(model.named_parameters())
    for key in factor_names(names):
        value = state[key]
        assert isinstance(value, Tensor) and torch.equal(value, params[key].detach()), (
            f"{STEP_A}: lora_state_dict(model)[{key!r}] must hold the values of that parameter "
            f"(shape {tuple(params[key].shape)}); it does not."
        )
        assert value.grad_fn is None, (
            f"{STEP_A}: the tensors of lora_state_dict must carry no autograd history "
            f"(use .detach(), as state_dict does); {key} has grad_fn {value.grad_fn}."
        )


def test_lora_state_dict_of_a_single_layer(lora_after_lab00: ModuleType) -> None:
    layer = lora_after_lab00.LoRALinear(nn.Linear(6, 5), r=2)
    state = lora_after_lab00.lora_state_dict(layer)
    assert sorted(state) == ["lora_A", "lora_B"], (
        f"{STEP_A}: for a LoRALinear on its own, lora_state_dict must return the keys "
        f"['lora_A', 'lora_B'] (its names in named_parameters()); got {sorted(state)}. The "
        f"model itself has the empty name: do not add a leading dot."
    )


# --------------------------------------------------------------------------------------------
# step B: load_lora_state_dict
# --------------------------------------------------------------------------------------------


def test_load_lora_state_dict_restores_the_outputs(
    lora_after_lab00: ModuleType, minigpt: ModuleType
) -> None:
    trained, fresh, _ = pair(lora_after_lab00, minigpt)
    state = {k: v.clone() for k, v in lora_after_lab00.lora_state_dict(trained).items()}
    lora_after_lab00.load_lora_state_dict(fresh, state)
    diff = (logits(fresh) - logits(trained)).abs().max().item()
    assert diff == 0.0, (
        f"{STEP_B}: after loading the trained factors into a model on the same base, its logits "
        f"must equal the trained model's exactly; max abs diff {diff:.3g}. Copy every value "
        f"into the parameter of the same name."
    )


def test_load_lora_state_dict_copies_into_the_existing_parameters(
    lora_after_lab00: ModuleType, minigpt: ModuleType
) -> None:
    trained, fresh, _ = pair(lora_after_lab00, minigpt)
    state = {k: v.clone() for k, v in lora_after_lab00.lora_state_dict(trained).items()}
    # An optimizer built before the load, as when a training run resumes from an adapter.
    held = {n: p for n, p in fresh.named_parameters() if n in state}
    lora_after_lab00.load_lora_state_dict(fresh, state)
    for name, param in held.items():
        assert torch.equal(param.detach(), state[name]), (
            f"{STEP_B}: the values must be copied into the existing parameters "
            f"(param.copy_(value) under torch.no_grad()): the parameter {name} that an "
            f"optimizer built before the load holds did not get the loaded values. Replacing a "
            f"parameter (setattr, a new nn.Parameter) leaves the optimizer training the old one."
        )
        assert param.requires_grad, (
            f"{STEP_B}: after the load, {name} must still require grad; it does not."
        )


@pytest.mark.parametrize("state_dtype", [torch.float64, torch.bfloat16], ids=str)
def test_load_lora_state_dict_casts_to_the_parameter_dtype(
    lora_after_lab00: ModuleType, minigpt: ModuleType, state_dtype: torch.dtype
) -> None:
    trained, fresh, _ = pair(lora_after_lab00, minigpt)
    state = {k: v.to(state_dtype) for k, v in lora_after_lab00.lora_state_dict(trained).items()}
    lora_after_lab00.load_lora_state_dict(fresh, state)
    params = dict(fresh.named_parameters())
    for name, value in state.items():
        param = params[name]
        assert param.dtype == torch.float32, (
            f"{STEP_B}: loading a {state_dtype} state into a float32 model must cast to the "
            f"parameter's dtype, as nn.Module.load_state_dict does: {name} became {param.dtype}. "
            f"Use param.copy_(value), which casts; `param.data = value` does not."
        )
        assert torch.equal(param.detach(), value.to(torch.float32)), (
            f"{STEP_B}: {name} must hold the loaded values cast to float32; it does not."
        )


def test_load_lora_state_dict_refuses_a_missing_key(
    lora_after_lab00: ModuleType, minigpt: ModuleType
) -> None:
    trained, fresh, names = pair(lora_after_lab00, minigpt)
    state = dict(lora_after_lab00.lora_state_dict(trained))
    gone = factor_names(names)[-1]
    del state[gone]
    expect_refusal(
        STEP_B, lambda: lora_after_lab00.load_lora_state_dict(fresh, state), fresh,
        f"a state without {gone!r}", [gone],
    )


@pytest.mark.parametrize("extra", ["blocks.0.attn.k_proj.lora_A", "tok_emb.weight"])
def test_load_lora_state_dict_refuses_an_unexpected_key(
    lora_after_lab00: ModuleType, minigpt: ModuleType, extra: str
) -> None:
    trained, fresh, _ = pair(lora_after_lab00, minigpt)
    state = dict(lora_after_lab00.lora_state_dict(trained))
    state[extra] = torch.zeros(R, 32) if "lora_A" in extra else trained.tok_emb.weight.detach()
    expect_refusal(
        STEP_B, lambda: lora_after_lab00.load_lora_state_dict(fresh, state), fresh,
        f"a state with the unexpected key {extra!r}", [extra],
    )


@pytest.mark.parametrize(
    "rename",
    [
        pytest.param(lambda k: k.removeprefix("blocks."), id="prefix-stripped"),
        pytest.param(lambda k: k.replace("attn.", ""), id="level-removed"),
        pytest.param(lambda k: "model." + k, id="prefix-added"),
    ],
)
def test_load_lora_state_dict_compares_keys_whole(
    lora_after_lab00: ModuleType, minigpt: ModuleType, rename: Callable[[str], str]
) -> None:
    trained, fresh, _ = pair(lora_after_lab00, minigpt)
    state = {rename(k): v for k, v in lora_after_lab00.lora_state_dict(trained).items()}
    first, real = sorted(state)[0], sorted(lora_after_lab00.lora_state_dict(fresh))[0]
    expect_refusal(
        STEP_B, lambda: lora_after_lab00.load_lora_state_dict(fresh, state), fresh,
        f"a state whose keys belong to another model (such as {first!r})", [(first, real)],
        why=(
            "Keys are compared whole, never by substring or suffix: a key that is only part "
            "of a parameter's name (or contains it) belongs to another model."
        ),
    )


def test_load_lora_state_dict_refuses_a_wrong_shape(
    lora_after_lab00: ModuleType, minigpt: ModuleType
) -> None:
    # r = 1 factors broadcast into r = 4 parameters: a copy without a shape check succeeds
    # silently and loads garbage. The check must come first.
    config = small_config(minigpt)
    trained, _, names = pair(lora_after_lab00, minigpt, config, r=1)
    _, fresh, _ = pair(lora_after_lab00, minigpt, config, r=R)
    state = lora_after_lab00.lora_state_dict(trained)
    key = factor_names(names)[0]
    message = expect_refusal(
        STEP_B, lambda: lora_after_lab00.load_lora_state_dict(fresh, state), fresh,
        "an r = 1 state loaded into an r = 4 model", [key],
        why=(
            "Check every shape before copying: copy_ broadcasts a (1, 32) tensor into a "
            "(4, 32) parameter without complaint."
        ),
    )
    for shape in ((1, 32), (R, 32)):
        assert str(shape) in message or str(list(shape)) in message or f"{shape[0]}, {shape[1]}" in message, (
            f"{STEP_B}: the error for a wrong shape must show both shapes, the state's (1, 32) "
            f"and the model's ({R}, 32); the message was: {message[:400]!r}"
        )


@pytest.mark.parametrize("fault", ["shape", "missing", "unexpected", "not-a-tensor"])
def test_failed_load_lora_state_dict_changes_nothing(
    lora_after_lab00: ModuleType, minigpt: ModuleType, fault: str
) -> None:
    trained, fresh, names = pair(lora_after_lab00, minigpt)
    keys = factor_names(names)
    good = {k: v.clone() for k, v in lora_after_lab00.lora_state_dict(trained).items()}
    # Every key is right except the last one, in insertion order and in module order: a load
    # that copies as it goes has changed every other factor by the time it finds the fault.
    state: dict[str, Any] = {k: good[k] for k in keys}
    last = keys[-1]
    if fault == "shape":
        state[last] = torch.zeros(3, 3)
    elif fault == "missing":
        del state[last]
    elif fault == "unexpected":
        state["blocks.1.mlp.fc1.lora_A"] = torch.zeros(R, 32)
    else:
        state[last] = [[0.0] * R] * 32
    named = "blocks.1.mlp.fc1.lora_A" if fault == "unexpected" else last
    expect_refusal(
        STEP_B, lambda: lora_after_lab00.load_lora_state_dict(fresh, state), fresh,
        f"a state whose only fault ({fault}) is at {named!r}", [named],
        exc_types=(ValueError, KeyError, TypeError),
        why="Check every key and shape first; a failed load changes nothing.",
    )


# --------------------------------------------------------------------------------------------
# steps C and D: peft's key names
# --------------------------------------------------------------------------------------------

KEYS = [
    ("blocks.0.attn.q_proj.lora_A", "base_model.model.blocks.0.attn.q_proj.lora_A.weight"),
    ("blocks.3.mlp.fc2.lora_B", "base_model.model.blocks.3.mlp.fc2.lora_B.weight"),
    ("lm_head.lora_A", "base_model.model.lm_head.lora_A.weight"),
]


@pytest.mark.parametrize(("name", "key"), KEYS)
def test_to_peft_key_adds_the_prefix_and_the_weight_suffix(
    checkpoint: ModuleType, name: str, key: str
) -> None:
    got = checkpoint.to_peft_key(name)
    assert got == key, (
        f"{STEP_C}: peft's key for the factor {name!r} is {key!r}; got {got!r}. peft's key "
        f"names start with 'base_model.model.' (peft wraps the model twice) and end with "
        f"'.weight' (peft keeps each factor in an nn.Linear)."
    )


@pytest.mark.parametrize(("name", "key"), KEYS)
def test_from_peft_key_inverts_to_peft_key(checkpoint: ModuleType, name: str, key: str) -> None:
    got = checkpoint.from_peft_key(key)
    assert got == name, (
        f"{STEP_D}: from_peft_key({key!r}) must return {name!r} (peft's key without "
        f"'base_model.model.' and '.weight'); got {got!r}."
    )


@pytest.mark.parametrize(
    "key",
    [
        "blocks.0.attn.q_proj.lora_A.weight",
        "base_model.model.blocks.0.attn.q_proj.lora_A",
        "base_model.model.blocks.0.attn.q_proj.base_layer.weight",
        "base_model.model.tok_emb.lora_embedding_A",
        "base_model.model.blocks.0.attn.q_proj.lora_magnitude_vector",
        "base_model.model.blocks.0.attn.q_proj.lora_B.bias",
    ],
)
def test_from_peft_key_refuses_other_keys(checkpoint: ModuleType, key: str) -> None:
    try:
        got = checkpoint.from_peft_key(key)
    except NotImplementedError:
        raise
    except ValueError as exc:
        assert key in str(exc), (
            f"{STEP_D}: from_peft_key raised ValueError for {key!r} as it should, but the "
            f"message must show the key; it was {str(exc)!r}."
        )
        return
    pytest.fail(
        f"{STEP_D}: {key!r} is not peft's key for a LoRA factor (those look like "
        f"'base_model.model.<module>.lora_A.weight'); from_peft_key must raise ValueError "
        f"naming it, and returned {got!r}.",
        pytrace=False,
    )


# --------------------------------------------------------------------------------------------
# step E: adapter_config
# --------------------------------------------------------------------------------------------


def selected_by(model: nn.Module, targets: list[str], lora: ModuleType) -> list[str]:
    """The modules ``targets`` select by peft's rule, leaving out the insides of LoRA layers."""
    wrapped = [n for n, m in model.named_modules() if isinstance(m, lora.LoRALinear)]
    inside = tuple(f"{n}." for n in wrapped)
    return sorted(
        n for n, _ in model.named_modules()
        if n and not n.startswith(inside) and any(n == t or n.endswith("." + t) for t in targets)
    )


@pytest.mark.parametrize(
    "targets", [("q_proj", "v_proj"), ("fc1", "fc2", "o_proj")], ids=lambda t: "-".join(t)
)
def test_adapter_config_describes_the_lora_layers(
    lora_after_lab00: ModuleType, checkpoint: ModuleType, minigpt: ModuleType,
    targets: tuple[str, ...],
) -> None:
    model, _, names = pair(lora_after_lab00, minigpt, targets=targets)
    config = checkpoint.adapter_config(model)
    try:
        json.dumps(config)
    except TypeError as exc:
        pytest.fail(f"{STEP_E}: the config must be JSON-serialisable: {exc}", pytrace=False)
    want = {"peft_type": "LORA", "r": R, "lora_alpha": ALPHA, "bias": "none", "fan_in_fan_out": False}
    for key, value in want.items():
        assert key in config and config[key] == value, (
            f"{STEP_E}: adapter_config must hold {key!r}: {value!r} for this model "
            f"(r={R}, alpha={ALPHA:g}); got {config.get(key, '(missing)')!r}. peft reads these "
            f"names from adapter_config.json."
        )
    for key in ("lora_dropout", "task_type", "base_model_name_or_path", "target_modules"):
        assert key in config, f"{STEP_E}: adapter_config must have the key {key!r} (peft's field)."
    assert config.get("use_rslora", False) is False and config.get("use_dora", False) is False, (
        f"{STEP_E}: this course scales by alpha / r without DoRA: use_rslora and use_dora must "
        f"be false (or absent)."
    )
    target_list = config["target_modules"]
    assert isinstance(target_list, list) and all(isinstance(t, str) for t in target_list), (
        f"{STEP_E}: target_modules must be a list of module names; got {target_list!r}."
    )
    got = selected_by(model, target_list, lora_after_lab00)
    assert got == sorted(names), (
        f"{STEP_E}: target_modules {target_list} must select exactly the LoRA layers by peft's "
        f"rule (a whole dotted name, or its last parts after a dot); it selects {got[:4]}, the "
        f"LoRA layers are {sorted(names)[:4]}."
    )


def test_adapter_config_targets_stay_exact_when_short_names_overreach(
    lora_after_lab00: ModuleType, checkpoint: ModuleType, minigpt: ModuleType
) -> None:
    model = minigpt.build_minigpt(small_config(minigpt), seed=0)
    # Only block 0's q_proj is wrapped: "q_proj" alone would also select block 1's.
    parent = model.get_submodule("blocks.0.attn")
    parent.q_proj = lora_after_lab00.LoRALinear(parent.q_proj, r=R, alpha=ALPHA)
    config = checkpoint.adapter_config(model)
    got = selected_by(model, list(config["target_modules"]), lora_after_lab00)
    assert got == ["blocks.0.attn.q_proj"], (
        f"{STEP_E}: only blocks.0.attn.q_proj is a LoRA layer, so target_modules must select "
        f"it alone; {config['target_modules']} selects {got}. When the short names select "
        f"more than the LoRA layers, write the full dotted names."
    )


def test_adapter_config_refuses_a_model_without_lora(
    lora_after_lab00: ModuleType, checkpoint: ModuleType, minigpt: ModuleType
) -> None:
    model = minigpt.build_minigpt(small_config(minigpt), seed=0)
    expect_refusal(
        STEP_E, lambda: checkpoint.adapter_config(model), model,
        "adapter_config on a model with no LoRALinear", [], exc_types=(ValueError,),
    )


def test_adapter_config_refuses_layers_with_different_ranks(
    lora_after_lab00: ModuleType, checkpoint: ModuleType, minigpt: ModuleType
) -> None:
    model = minigpt.build_minigpt(small_config(minigpt), seed=0)
    wrap_by_hand(lora_after_lab00, model, ("q_proj",), r=4)
    wrap_by_hand(lora_after_lab00, model, ("v_proj",), r=8)
    expect_refusal(
        STEP_E, lambda: checkpoint.adapter_config(model), model,
        "adapter_config on layers of ranks 4 and 8 (one config has one r)", ["r"],
        exc_types=(ValueError,),
    )


# --------------------------------------------------------------------------------------------
# step F: save_adapter
# --------------------------------------------------------------------------------------------


def test_save_adapter_writes_peft_files(
    lora_after_lab00: ModuleType, checkpoint: ModuleType, minigpt: ModuleType, tmp_path: Path
) -> None:
    model, _, names = pair(lora_after_lab00, minigpt)
    folder = tmp_path / "adapter"
    checkpoint.save_adapter(model, folder)
    for name in (CONFIG, WEIGHTS):
        assert (folder / name).is_file(), (
            f"{STEP_F}: save_adapter(model, folder) must write {name} in the folder (creating "
            f"the folder if needed); found {sorted(p.name for p in folder.glob('*')) if folder.is_dir() else 'no folder'}."
        )
    tensors = load_file(folder / WEIGHTS)
    want = {PREFIX + n + ".weight": n for n in factor_names(names)}
    extra = sorted(set(tensors) - set(want))
    assert not extra, (
        f"{STEP_F}: {WEIGHTS} must hold only the LoRA factors, under peft's key names "
        f"(base_model.model.<name>.lora_A.weight); it also holds {extra[:3]} ({len(extra)} "
        f"unexpected keys). Saving the whole model instead of only the factors, or keys "
        f"without peft's prefix and '.weight' suffix, and peft cannot load it."
    )
    missing = sorted(set(want) - set(tensors))
    assert not missing, f"{STEP_F}: {WEIGHTS} lacks the keys {missing[:3]} (peft's names)."
    params = dict(model.named_parameters())
    for key, name in want.items():
        assert torch.equal(tensors[key], params[name].detach()), (
            f"{STEP_F}: {WEIGHTS}[{key!r}] must hold the values of {name}; it does not."
        )
    config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    assert config.get("peft_type") == "LORA" and config.get("r") == R and config.get("lora_alpha") == ALPHA, (
        f"{STEP_F}: {CONFIG} must hold adapter_config(model): peft_type 'LORA', r {R}, "
        f"lora_alpha {ALPHA:g}; got {config}."
    )


def test_save_adapter_keeps_the_factor_dtype(
    lora_after_lab00: ModuleType, checkpoint: ModuleType, minigpt: ModuleType, tmp_path: Path
) -> None:
    model = minigpt.build_minigpt(small_config(minigpt), seed=0)
    names = wrap_by_hand(lora_after_lab00, model, dtype=torch.bfloat16)
    train_by_hand(model, names)
    checkpoint.save_adapter(model, tmp_path)
    dtypes = {k: v.dtype for k, v in load_file(tmp_path / WEIGHTS).items()}
    assert dtypes and set(dtypes.values()) == {torch.bfloat16}, (
        f"{STEP_F}: a bfloat16 adapter must be saved in bfloat16 (half the bytes of float32), "
        f"as peft does; the file holds {sorted(set(map(str, dtypes.values())))}."
    )


def test_adapter_file_is_a_small_fraction_of_the_model(
    lora_after_lab00: ModuleType, checkpoint: ModuleType, minigpt: ModuleType, tmp_path: Path
) -> None:
    model = minigpt.build_minigpt(seed=0)  # the default MiniGPT, as in the notes
    wrap_by_hand(lora_after_lab00, model, TARGETS, r=8, alpha=16.0)
    checkpoint.save_adapter(model, tmp_path / "adapter")
    size = (tmp_path / "adapter" / WEIGHTS).stat().st_size
    data = 4 * 8 * 2 * (64 + 64) * 4  # float32 bytes of lora_A and lora_B: 2 targets x 4 blocks
    assert data <= size <= data + 4096, (
        f"{STEP_F}: for the default MiniGPT with r=8 on q_proj and v_proj, {WEIGHTS} must hold "
        f"{data:,} bytes of factors plus a header of at most a few KB; it is {size:,} bytes. "
        f"Save only the factors, in the model's dtype."
    )


# --------------------------------------------------------------------------------------------
# step G: load_adapter
# --------------------------------------------------------------------------------------------


def test_round_trip_gives_identical_outputs(
    lora_after_lab00: ModuleType, checkpoint: ModuleType, minigpt: ModuleType, tmp_path: Path
) -> None:
    trained, fresh, _ = pair(lora_after_lab00, minigpt)
    checkpoint.save_adapter(trained, tmp_path)
    config = checkpoint.load_adapter(fresh, tmp_path)
    diff = (logits(fresh) - logits(trained)).abs().max().item()
    assert diff == 0.0, (
        f"{STEP_G}: save_adapter then load_adapter into a model on the same base must give "
        f"identical logits; max abs diff {diff:.3g}."
    )
    assert isinstance(config, dict) and config.get("r") == R, (
        f"{STEP_G}: load_adapter must return the adapter's configuration (a dict with 'r' = "
        f"{R}); got {config!r}."
    )


# What peft 0.21 writes for LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "v_proj"],
# lora_dropout=0.05) on a MiniGPT, keys sorted as peft sorts them. Written here by the test, not
# by the code under test, so the load is checked against peft's layout.
PEFT_CONFIG: dict[str, Any] = {
    "alpha_pattern": {},
    "auto_mapping": {"base_model_class": "MiniGPT", "parent_library": "minituner.minigpt"},
    "base_model_name_or_path": None,
    "bias": "none",
    "exclude_modules": None,
    "fan_in_fan_out": False,
    "inference_mode": True,
    "init_lora_weights": True,
    "layer_replication": None,
    "layers_pattern": None,
    "layers_to_transform": None,
    "loftq_config": {},
    "lora_alpha": 12,
    "lora_bias": False,
    "lora_dropout": 0.05,
    "megatron_config": None,
    "megatron_core": "megatron.core",
    "modules_to_save": None,
    "peft_type": "LORA",
    "peft_version": "0.21.2",
    "r": 4,
    "rank_pattern": {},
    "revision": None,
    "target_modules": ["v_proj", "q_proj"],
    "target_parameters": None,
    "task_type": None,
    "use_dora": False,
    "use_rslora": False,
}


def write_peft_adapter(folder: Path, tensors: dict[str, Tensor], config: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / WEIGHTS, metadata={"format": "pt"})
    (folder / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def test_load_adapter_reads_a_peft_adapter(
    lora_after_lab00: ModuleType, checkpoint: ModuleType, minigpt: ModuleType, tmp_path: Path
) -> None:
    config = small_config(minigpt)
    base = minigpt.build_minigpt(config, seed=0)
    model = minigpt.build_minigpt(config, seed=0)
    names = wrap_by_hand(lora_after_lab00, model)
    factors = {
        name: (torch.randn(R, 32) / math.sqrt(32), torch.randn(32, R) * 0.05) for name in names
    }
    tensors: dict[str, Tensor] = {}
    with torch.no_grad():  # the same update, computed here in float64 on the plain model
        for name, (A, B) in factors.items():
            tensors[f"{PREFIX}{name}.lora_A.weight"] = A
            tensors[f"{PREFIX}{name}.lora_B.weight"] = B
            linear = base.get_submodule(name)
            merged = linear.weight.double() + (ALPHA / R) * B.double() @ A.double()
            linear.weight.copy_(merged.float())
    write_peft_adapter(tmp_path, tensors, PEFT_CONFIG)
    checkpoint.load_adapter(model, tmp_path)
    diff = (logits(model.eval()) - logits(base.eval())).abs().max().item()
    assert diff < 1e-5, (
        f"{STEP_G}: an adapter in peft's layout ({sorted(tensors)[0]!r}, ..., with peft's full "
        f"adapter_config.json) must load: the model's logits must then match the base with "
        f"W + (alpha / r) B @ A within 1e-5; max abs diff {diff:.3g}. Map peft's key to the "
        f"factor name by removing 'base_model.model.' and '.weight'; ignore config keys you do "
        f"not use."
    )


def test_load_adapter_casts_to_the_model_dtype(
    lora_after_lab00: ModuleType, checkpoint: ModuleType, minigpt: ModuleType, tmp_path: Path
) -> None:
    config = small_config(minigpt)
    source = minigpt.build_minigpt(config, seed=0)
    names = wrap_by_hand(lora_after_lab00, source, dtype=torch.bfloat16)
    train_by_hand(source, names)
    checkpoint.save_adapter(source, tmp_path)
    _, fresh, _ = pair(lora_after_lab00, minigpt, config)
    checkpoint.load_adapter(fresh, tmp_path)
    params = dict(fresh.named_parameters())
    saved = dict(source.named_parameters())
    for name in factor_names(names):
        assert params[name].dtype == torch.float32 and torch.equal(
            params[name].detach(), saved[name].detach().float()
        ), (
            f"{STEP_G}: a bfloat16 adapter loaded into a float32 model must be cast to the "
            f"parameter's dtype, as load_state_dict does: {name} is {params[name].dtype} and "
            f"{'holds' if torch.equal(params[name].detach().float(), saved[name].detach().float()) else 'does not hold'} "
            f"the saved values."
        )


def _mutate_config(**changes: Any) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / CONFIG
        config = json.loads(path.read_text(encoding="utf-8"))
        config.update(changes)
        path.write_text(json.dumps(config), encoding="utf-8")

    return apply


def _mutate_tensors(edit: Callable[[dict[str, Tensor]], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        tensors = dict(load_file(folder / WEIGHTS))
        edit(tensors)
        save_file(tensors, folder / WEIGHTS, metadata={"format": "pt"})

    return apply


def _drop_last(tensors: dict[str, Tensor]) -> None:
    del tensors[sorted(tensors)[-1]]


def _add_k_proj(tensors: dict[str, Tensor]) -> None:
    tensors[f"{PREFIX}blocks.1.attn.k_proj.lora_A.weight"] = torch.zeros(R, 32)


def _nest_keys(tensors: dict[str, Tensor]) -> None:
    for key in list(tensors):
        tensors[key.replace(PREFIX, PREFIX + "model.")] = tensors.pop(key)


def _strip_prefix(tensors: dict[str, Tensor]) -> None:
    for key in list(tensors):
        tensors[key.removeprefix(PREFIX)] = tensors.pop(key)


def _int_last(tensors: dict[str, Tensor]) -> None:
    key = sorted(tensors)[-1]
    tensors[key] = torch.ones(tensors[key].shape, dtype=torch.int64)


def _wrong_shape_last(tensors: dict[str, Tensor]) -> None:
    key = sorted(tensors)[-1]
    tensors[key] = torch.zeros(tensors[key].shape[0], 2 * tensors[key].shape[1])


def _truncate(folder: Path) -> None:
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])


def _garbage_header(folder: Path) -> None:
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(b"\xff" * 16 + data[16:])


def _truncate_config(folder: Path) -> None:
    text = (folder / CONFIG).read_text(encoding="utf-8")
    (folder / CONFIG).write_text(text[: len(text) // 2], encoding="utf-8")


LAST = f"{PREFIX}blocks.1.attn.v_proj.lora_B.weight"  # sorted last: where a fault hides longest

FAULTS = [
    pytest.param(lambda f: (f / CONFIG).unlink(), [CONFIG], id="config-missing"),
    pytest.param(lambda f: (f / WEIGHTS).unlink(), [WEIGHTS], id="weights-missing"),
    pytest.param(_truncate, [WEIGHTS], id="weights-truncated"),
    pytest.param(_garbage_header, [WEIGHTS], id="weights-corrupt"),
    pytest.param(_truncate_config, [CONFIG], id="config-truncated"),
    pytest.param(_mutate_config(r=8), [CONFIG, "r"], id="config-r"),
    pytest.param(_mutate_config(lora_alpha=16), [CONFIG, "lora_alpha"], id="config-alpha"),
    pytest.param(_mutate_config(target_modules=["k_proj"]), [CONFIG, "target_modules"], id="config-targets"),
    pytest.param(_mutate_config(peft_type="IA3"), [CONFIG, "peft_type"], id="config-peft-type"),
    pytest.param(_mutate_config(use_rslora=True), [CONFIG, "use_rslora"], id="config-rslora"),
    pytest.param(_mutate_tensors(_drop_last), [WEIGHTS, LAST], id="key-missing"),
    pytest.param(_mutate_tensors(_add_k_proj), [WEIGHTS, f"{PREFIX}blocks.1.attn.k_proj.lora_A.weight"], id="key-unexpected"),
    pytest.param(_mutate_tensors(_nest_keys), [WEIGHTS, ("base_model.model.model.blocks.0", "base_model.model.blocks.0")], id="keys-another-model"),
    pytest.param(_mutate_tensors(_strip_prefix), [WEIGHTS, "blocks.0.attn.q_proj.lora_A"], id="keys-no-prefix"),
    pytest.param(_mutate_tensors(_int_last), [WEIGHTS, LAST, "int64"], id="dtype-int"),
    pytest.param(_mutate_tensors(_wrong_shape_last), [WEIGHTS, LAST], id="shape"),
]


@pytest.mark.parametrize(("fault", "must_name"), FAULTS)
def test_failed_load_adapter_names_the_fault_and_changes_nothing(
    lora_after_lab00: ModuleType,
    checkpoint: ModuleType,
    minigpt: ModuleType,
    tmp_path: Path,
    fault: Callable[[Path], None],
    must_name: list[str | tuple[str, ...]],
    request: pytest.FixtureRequest,
) -> None:
    trained, fresh, _ = pair(lora_after_lab00, minigpt)
    checkpoint.save_adapter(trained, tmp_path)
    fault(tmp_path)
    case = request.node.callspec.id
    expect_refusal(
        STEP_G, lambda: checkpoint.load_adapter(fresh, tmp_path), fresh,
        f"load_adapter on an adapter folder with a fault ({case})", must_name,
        exc_types=(ValueError, KeyError, OSError),
        why=(
            "Check the files, the config against the model, and every key, shape and dtype "
            "before you load anything; raise ValueError (FileNotFoundError for a missing file) "
            "naming the file and the key."
        ),
    )


def test_load_adapter_refuses_an_adapter_for_another_base(
    lora_after_lab00: ModuleType, checkpoint: ModuleType, minigpt: ModuleType, tmp_path: Path
) -> None:
    # The same layer names, another width: an adapter trained on another base model.
    wide, _, _ = pair(lora_after_lab00, minigpt, small_config(minigpt, n_embd=64))
    checkpoint.save_adapter(wide, tmp_path)
    _, fresh, _ = pair(lora_after_lab00, minigpt)
    message = expect_refusal(
        STEP_G, lambda: checkpoint.load_adapter(fresh, tmp_path), fresh,
        "an adapter saved on a MiniGPT of width 64, loaded into one of width 32",
        [WEIGHTS], exc_types=(ValueError,),
        why="Compare every tensor's shape with the factor it goes into before loading.",
    )
    assert "(4, 64)" in message or "[4, 64]" in message or "4, 64" in message, (
        f"{STEP_G}: the error must show the saved shape (4, 64) next to the model's (4, 32); "
        f"the message was: {message[:400]!r}"
    )
