"""Lab 04: merge for inference (labs/04-merge-for-inference.md).

Step A: ``LoRALinear.merge_`` folds ``scaling * B @ A`` into the base weight, once, and zeros
both factors. Step B: ``merge_and_unload(model)`` merges every LoRALinear of a model and puts a
plain ``nn.Linear`` in its place.

Both merge styles are right and both pass: adding the update to ``base.weight`` in place, or
building a fresh frozen ``nn.Linear`` with the merged weight and the base's bias and making it
``self.base``. So the tests read ``layer.base`` again after every merge, and judge what the layer
computes, never how it got there. Expected values come from an independent float64
computation, never from the code under test.
"""

from __future__ import annotations

import math
from types import ModuleType

import pytest
import torch
from torch import Tensor, nn

pytestmark = pytest.mark.lab04

STEP_A = "lab04 step A (LoRALinear.merge_)"
STEP_B = "lab04 step B (merge_and_unload)"

TOL = 1e-5  # DESIGN.md: merged against unmerged, float32, max abs diff
# bfloat16 keeps 8 significant bits: numbers near y are 2^-7 * |y| apart at worst, and merged
# and unmerged outputs round differently. benchmarks/merge_latency.py measures the gap at 0.006
# to 0.008 of the largest output (about 2^-7); the tolerance allows 2^-5, four times the coarsest
# spacing (theory/07-merging.md derives it).
BF16_REL_TOL = 2.0**-5

R, ALPHA = 4, 12.0  # scaling 3: distinct from 1 (no scaling), 2 * 3 (twice) and 12 (alpha)
SCALING = ALPHA / R
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "lm_head")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def make_layer(
    lora: ModuleType,
    in_f: int,
    out_f: int,
    *,
    bias: bool = True,
    dropout: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[nn.Module, dict[str, Tensor]]:
    """A LoRALinear with known non-zero factors, and float64 copies of W0, b, A and B."""
    base = nn.Linear(in_f, out_f, bias=bias, dtype=dtype)
    layer = lora.LoRALinear(base, r=R, alpha=ALPHA, dropout=dropout)
    A = torch.randn(R, in_f) / math.sqrt(in_f)
    B = torch.randn(out_f, R) / math.sqrt(R)
    with torch.no_grad():
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
    ref = {
        "W0": base.weight.detach().double().clone(),
        "b": (base.bias.detach().double().clone() if base.bias is not None else torch.zeros(out_f, dtype=torch.float64)),
        "A": layer.lora_A.detach().double().clone(),
        "B": layer.lora_B.detach().double().clone(),
    }
    return layer, ref


def expected64(ref: dict[str, Tensor], x: Tensor) -> Tensor:
    """``x W0^T + b + scaling * x A^T B^T`` in float64."""
    x64 = x.double()
    return x64 @ ref["W0"].T + ref["b"] + SCALING * (x64 @ ref["A"].T) @ ref["B"].T


def effective_update(layer: nn.Module, ref: dict[str, Tensor]) -> Tensor:
    """What the layer adds to the original base, as an (out, in) matrix, measured on its output."""
    in_f = ref["W0"].shape[1]
    eye = torch.eye(in_f, dtype=layer.base.weight.dtype)
    with torch.no_grad():
        y = layer(eye).double()  # (in, out): row j is the layer's response to basis vector j
    return (y - ref["b"] - ref["W0"].T).T  # (out, in)


def merge_hint(layer: nn.Module, ref: dict[str, Tensor], merges: int = 1) -> str:
    """Name the likely mistake behind a wrong output after ``merges`` calls of merge_."""
    got = effective_update(layer, ref)
    BA = ref["B"] @ ref["A"]  # (out, in)
    scale = max(BA.abs().max().item(), 1e-12)

    def near(candidate: Tensor) -> bool:
        return candidate.shape == got.shape and (got - candidate).abs().max().item() < 1e-3 * scale

    if near(SCALING * BA):
        return "the update is right, so look at the base: its weight and bias must stay W0 and b."
    if near(2 * SCALING * BA):
        if merges == 1:
            return (
                "the update counts twice after one merge: the factors are still live after merge_ "
                "(the weight holds the update and the branch adds it again); zero lora_A and "
                "lora_B after folding the update into the weight."
            )
        return (
            "merging twice must add the update once: the second merge_ added it again. Zero both "
            "factors after folding, so that a second merge_ adds scaling * 0 @ 0 = nothing."
        )
    if merges > 1 and near((merges + 1) * SCALING * BA):
        return "each merge_ adds the update again, and the factors are still live too."
    if near(BA):
        return "the merge forgot the scaling: fold scaling * B @ A (scaling = alpha / r), not B @ A."
    if near(ALPHA * BA):
        return "the merge scales by alpha instead of alpha / r."
    if BA.shape[0] == BA.shape[1] and near(SCALING * BA.T):
        return (
            "you merged the transpose of the update: B @ A has the shape (out, in) of "
            "base.weight; A.T @ B.T (or (B @ A).T) is its transpose, which fits only square layers."
        )
    if near(torch.zeros_like(BA)):
        return (
            "the merged layer adds nothing: the update never reached the weight (or the factors "
            "were zeroed before it was folded in)."
        )
    return "merge_ must fold scaling * B @ A into base.weight, then zero lora_A and lora_B."


def merge_or_fail(layer: nn.Module, shape: str) -> None:
    """Call merge_, turning a shape error into a message that names the likely mistake."""
    try:
        layer.merge_()
    except NotImplementedError:
        raise
    except RuntimeError as exc:
        pytest.fail(
            f"{STEP_A}: merge_ raised RuntimeError on {shape}: {exc}. On a layer that is not "
            f"square, a shape error in merge_ usually means you merged the transpose: B @ A has "
            f"the shape (out_features, in_features) of base.weight; A.T @ B.T does not.",
            pytrace=False,
        )


def wrap_by_hand(lora: ModuleType, model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """Put a LoRALinear (r=4, alpha=12, non-zero B) in place of each targeted nn.Linear.

    The tests wrap by hand, so that lab 04 depends on your LoRALinear (lab 00) only, not on
    wrap_minigpt_with_lora (lab 02). Returns the wrapped names.
    """
    names = [
        n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rpartition(".")[2] in targets
    ]
    for name in names:
        parent, _, child = name.rpartition(".")
        layer = lora.LoRALinear(model.get_submodule(name), r=R, alpha=ALPHA)
        with torch.no_grad():
            layer.lora_B.copy_(torch.randn_like(layer.lora_B) * 0.02)
        setattr(model.get_submodule(parent), child, layer)
    return names


def merged_reference64(minigpt: ModuleType, wrapped: nn.Module, names: list[str]) -> nn.Module:
    """A plain MiniGPT in float64 whose adapted weights are W0 + scaling * B @ A, computed here."""
    plain = minigpt.MiniGPT(wrapped.config).double()
    state: dict[str, Tensor] = {}
    for key, value in wrapped.state_dict().items():
        state[key] = value.double()
    merged: dict[str, Tensor] = {}
    for key in plain.state_dict():
        module, _, leaf = key.rpartition(".")
        if module in names:
            if leaf == "weight":
                W0 = state[f"{module}.base.weight"]
                A, B = state[f"{module}.lora_A"], state[f"{module}.lora_B"]
                merged[key] = W0 + SCALING * B @ A
            else:
                merged[key] = state[f"{module}.base.{leaf}"]
        else:
            merged[key] = state[key]
    plain.load_state_dict(merged)
    return plain.eval()


def base_param_names(minigpt: ModuleType) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in minigpt.MiniGPT().named_parameters()}


# --------------------------------------------------------------------------------------------
# step A: merge_ keeps the output, once
# --------------------------------------------------------------------------------------------

SHAPES = [
    pytest.param(16, 16, True, id="square-16"),
    pytest.param(12, 20, True, id="12-to-20"),
    pytest.param(20, 12, True, id="20-to-12"),
    pytest.param(24, 10, False, id="no-bias"),
]


@pytest.mark.parametrize(("in_f", "out_f", "bias"), SHAPES)
def test_merge_keeps_the_output(
    lora_after_lab00: ModuleType, in_f: int, out_f: int, bias: bool
) -> None:
    layer, ref = make_layer(lora_after_lab00, in_f, out_f, bias=bias)
    layer.eval()
    x = torch.randn(32, in_f)
    merge_or_fail(layer, f"nn.Linear({in_f}, {out_f})")
    with torch.no_grad():
        out = layer(x)
    diff = (out.double() - expected64(ref, x)).abs().max().item()
    assert diff < TOL, (
        f"{STEP_A}: after merge_ on nn.Linear({in_f}, {out_f}) (r={R}, alpha={ALPHA:g}), the "
        f"output must stay base(x) + scaling * B(A x) within {TOL:g}; max abs diff {diff:.3g}. "
        + merge_hint(layer, ref)
    )


@pytest.mark.parametrize(("in_f", "out_f", "bias"), SHAPES[:2])
def test_merge_folds_the_update_into_the_base_weight(
    lora_after_lab00: ModuleType, in_f: int, out_f: int, bias: bool
) -> None:
    layer, ref = make_layer(lora_after_lab00, in_f, out_f, bias=bias)
    merge_or_fail(layer, f"nn.Linear({in_f}, {out_f})")
    base = layer.base  # read again: a fresh nn.Linear is as right as an in-place merge
    want = ref["W0"] + SCALING * ref["B"] @ ref["A"]
    got = base.weight.detach().double()
    assert got.shape == want.shape, (
        f"{STEP_A}: after merge_, layer.base.weight must keep the shape (out, in) = "
        f"{tuple(want.shape)}; got {tuple(got.shape)}. Did you merge the transpose?"
    )
    diff = (got - want).abs().max().item()
    assert diff < TOL, (
        f"{STEP_A}: after merge_, layer.base.weight must be W0 + scaling * B @ A within {TOL:g}; "
        f"max abs diff {diff:.3g}. "
        + ("The weight did not change: fold the update into base.weight (merge_and_unload "
           "keeps only the base)." if torch.equal(got, ref["W0"]) else merge_hint(layer, ref))
    )
    if bias:
        assert base.bias is not None and torch.equal(base.bias.detach().double(), ref["b"]), (
            f"{STEP_A}: merge_ must keep the base's bias unchanged (the update touches the "
            f"weight only). If you build a fresh nn.Linear, copy the bias into it."
        )


def test_merge_zeros_both_factors(lora_after_lab00: ModuleType) -> None:
    layer, _ = make_layer(lora_after_lab00, 12, 20)
    merge_or_fail(layer, "nn.Linear(12, 20)")
    for name in ("lora_A", "lora_B"):
        value = getattr(layer, name).detach()
        nonzero = int(torch.count_nonzero(value))
        assert nonzero == 0, (
            f"{STEP_A}: after merge_, {name} must be all zeros ({nonzero} of its {value.numel()} "
            f"entries are not). The update now lives in the weight; zeroed factors make the "
            f"branch add exactly nothing, so the update counts once and a second merge_ adds "
            f"nothing. If the factors are still live, the output counts the update twice."
        )


@pytest.mark.parametrize("merges", [2, 3])
def test_merge_twice_adds_the_update_once(lora_after_lab00: ModuleType, merges: int) -> None:
    layer, ref = make_layer(lora_after_lab00, 12, 20)
    layer.eval()
    x = torch.randn(16, 12)
    for _ in range(merges):
        merge_or_fail(layer, "nn.Linear(12, 20)")
    with torch.no_grad():
        out = layer(x)
    diff = (out.double() - expected64(ref, x)).abs().max().item()
    assert diff < TOL, (
        f"{STEP_A}: merging twice must add the update once: after {merges} calls of merge_ the "
        f"output must still be base(x) + scaling * B(A x) within {TOL:g}; max abs diff "
        f"{diff:.3g}. " + merge_hint(layer, ref, merges=merges)
    )


def test_merge_leaves_the_base_frozen(lora_after_lab00: ModuleType) -> None:
    layer, _ = make_layer(lora_after_lab00, 12, 20)
    merge_or_fail(layer, "nn.Linear(12, 20)")
    for name, p in layer.base.named_parameters():
        assert not p.requires_grad, (
            f"{STEP_A}: merge_ must leave the base frozen: after merge_, base.{name}.requires_grad "
            f"is True. Fold the update into the existing weight under torch.no_grad() "
            f"(weight.add_(...) or weight.copy_(...)); a new nn.Parameter or a fresh nn.Linear "
            f"requires grad by default, so freeze it (requires_grad_(False))."
        )
    assert isinstance(layer.base, nn.Linear), (
        f"{STEP_A}: after merge_, layer.base must still be an nn.Linear; got {type(layer.base).__name__}."
    )


@pytest.mark.parametrize("p", [0.5, 0.9])
def test_merge_ignores_dropout_in_train_mode(lora_after_lab00: ModuleType, p: float) -> None:
    layer, ref = make_layer(lora_after_lab00, 12, 20, dropout=p)
    layer.train()  # dropout is active now: a merge computed through forward would see it
    merge_or_fail(layer, "nn.Linear(12, 20)")
    layer.eval()
    x = torch.randn(16, 12)
    with torch.no_grad():
        out = layer(x)
    diff = (out.double() - expected64(ref, x)).abs().max().item()
    assert diff < TOL, (
        f"{STEP_A}: dropout must never leak into the merge: a layer with dropout={p}, merged in "
        f"train mode, must then compute base(x) + scaling * B(A x) within {TOL:g} (in eval "
        f"mode); max abs diff {diff:.3g}. Compute the update from the factors "
        f"(scaling * lora_B @ lora_A), never from a forward pass, which drops inputs in train "
        f"mode. " + merge_hint(layer, ref)
    )


@pytest.mark.parametrize(("in_f", "out_f"), [(64, 256), (256, 64), (128, 128)], ids=str)
def test_merge_in_bfloat16_stays_within_rounding(
    lora_after_lab00: ModuleType, in_f: int, out_f: int
) -> None:
    layer, ref = make_layer(lora_after_lab00, in_f, out_f, dtype=torch.bfloat16)
    layer.eval()
    x = torch.randn(64, in_f, dtype=torch.bfloat16)
    want = expected64(ref, x)
    merge_or_fail(layer, f"nn.Linear({in_f}, {out_f}) in bfloat16")
    weight = layer.base.weight
    assert weight.dtype == torch.bfloat16, (
        f"{STEP_A}: merge_ must keep the base weight's dtype (bfloat16); it is now "
        f"{weight.dtype}. Compute the update in float32 if you like, then cast the sum back "
        f"with .to(weight.dtype) before you store it."
    )
    with torch.no_grad():
        out = layer(x)
    assert out.dtype == torch.bfloat16, (
        f"{STEP_A}: a merged bfloat16 layer must still compute in bfloat16; got {out.dtype}."
    )
    diff = (out.double() - want).abs().max().item()
    allowed = BF16_REL_TOL * want.abs().max().item()
    assert diff <= allowed, (
        f"{STEP_A}: in bfloat16, after merge_ on nn.Linear({in_f}, {out_f}), the output must "
        f"stay within 2^-5 of the largest output ({allowed:.3g}) of the exact unmerged value; "
        f"max abs diff {diff:.3g}. Rounding alone stays far below this. "
        + merge_hint(layer.float(), ref)
    )


# --------------------------------------------------------------------------------------------
# step B: merge_and_unload on a whole MiniGPT
# --------------------------------------------------------------------------------------------


@pytest.fixture
def wrapped(lora_after_lab00: ModuleType, minigpt: ModuleType) -> tuple[nn.Module, list[str]]:
    """A default MiniGPT with every linear layer wrapped by hand and non-zero B, in eval mode."""
    model = minigpt.MiniGPT()
    names = wrap_by_hand(lora_after_lab00, model, TARGETS)
    return model.eval(), names


def unload(lora: ModuleType, model: nn.Module) -> nn.Module:
    result = lora.merge_and_unload(model)
    assert isinstance(result, nn.Module), (
        f"{STEP_B}: merge_and_unload(model) must return the merged model; it returned "
        f"{type(result).__name__}. End with `return model`."
    )
    return result


def test_merge_and_unload_keeps_the_logits(
    lora_after_lab00: ModuleType, minigpt: ModuleType, wrapped: tuple[nn.Module, list[str]]
) -> None:
    model, names = wrapped
    reference = merged_reference64(minigpt, model, names)
    idx = torch.randint(0, model.config.vocab_size, (2, 16))
    merged = unload(lora_after_lab00, model).eval()
    with torch.no_grad():
        got = merged(idx).double()
        want = reference(idx)
    diff = (got - want).abs().max().item()
    assert diff < TOL, (
        f"{STEP_B}: after merge_and_unload, the MiniGPT's logits must equal those of the "
        f"unmerged LoRA model within {TOL:g} (float32); max abs diff {diff:.3g}. Each replaced "
        f"layer must be an nn.Linear with weight W0 + scaling * B @ A and the base's bias "
        f"(merge_and_unload must keep the base's bias)."
    )


def test_merge_and_unload_leaves_no_lora_layer(
    lora_after_lab00: ModuleType, wrapped: tuple[nn.Module, list[str]]
) -> None:
    model, names = wrapped
    merged = unload(lora_after_lab00, model)
    left = [n for n, m in merged.named_modules() if isinstance(m, lora_after_lab00.LoRALinear)]
    assert not left, (
        f"{STEP_B}: after merge_and_unload no LoRALinear may be left; found {left[:3]} "
        f"({len(left)} in all). Replace each one, in its parent, by its merged nn.Linear "
        f"(setattr(parent, child_name, layer.base))."
    )
    factors = [n for n, _ in merged.named_parameters() if "lora_" in n]
    assert not factors, f"{STEP_B}: no LoRA parameter may be left; found {factors[:3]}."
    for name in names:
        module = merged.get_submodule(name)
        assert type(module) is nn.Linear, (
            f"{STEP_B}: {name} must be a plain nn.Linear after merge_and_unload; it is a "
            f"{type(module).__name__}."
        )


def test_merge_and_unload_gives_the_base_model_parameters(
    lora_after_lab00: ModuleType, minigpt: ModuleType, wrapped: tuple[nn.Module, list[str]]
) -> None:
    model, _ = wrapped
    merged = unload(lora_after_lab00, model)
    want = base_param_names(minigpt)
    got = {n: tuple(p.shape) for n, p in merged.named_parameters()}
    count_want, count_got = sum(math.prod(s) for s in want.values()), sum(p.numel() for p in merged.parameters())
    lost_bias = sorted(n for n in set(want) - set(got) if n.endswith(".bias"))
    assert not lost_bias, (
        f"{STEP_B}: merge_and_unload must keep the base's bias: {len(lost_bias)} biases are gone "
        f"(first: {lost_bias[0]}). Return the merged base layer itself (layer.base), or copy "
        f"its bias into the fresh nn.Linear you build."
    )
    assert got == want, (
        f"{STEP_B}: the merged model must have exactly the parameters of a plain MiniGPT "
        f"({count_want:,} numbers, under the same names and shapes); it has {count_got:,}. "
        f"Missing: {sorted(set(want) - set(got))[:3]}; extra: {sorted(set(got) - set(want))[:3]}."
    )


def test_merge_and_unload_keeps_every_bias(
    lora_after_lab00: ModuleType, wrapped: tuple[nn.Module, list[str]]
) -> None:
    model, names = wrapped
    biases = {
        n: model.get_submodule(n).base.bias.detach().clone()
        for n in names
        if model.get_submodule(n).base.bias is not None
    }
    with torch.no_grad():  # make the biases non-zero, so a lost bias shows
        for n in biases:
            model.get_submodule(n).base.bias.normal_()
            biases[n] = model.get_submodule(n).base.bias.detach().clone()
    merged = unload(lora_after_lab00, model)
    for name, bias in biases.items():
        got = merged.get_submodule(name).bias
        assert got is not None and torch.equal(got.detach(), bias), (
            f"{STEP_B}: merge_and_unload must keep the base's bias: {name}.bias is "
            f"{'gone' if got is None else 'changed'}. Return the merged base layer itself "
            f"(layer.base), or build nn.Linear(in, out, bias=base.bias is not None) and copy "
            f"the bias in."
        )


def test_merged_model_is_a_plain_minigpt_again(
    lora_after_lab00: ModuleType, minigpt: ModuleType, wrapped: tuple[nn.Module, list[str]]
) -> None:
    model, _ = wrapped
    idx = torch.randint(0, model.config.vocab_size, (2, 12))
    merged = unload(lora_after_lab00, model).eval()
    plain = minigpt.MiniGPT()
    try:
        plain.load_state_dict(merged.state_dict())
    except RuntimeError as exc:
        pytest.fail(
            f"{STEP_B}: the merged model's state_dict must load into a plain MiniGPT (same keys "
            f"and shapes); load_state_dict said: {str(exc)[:300]}",
            pytrace=False,
        )
    with torch.no_grad():
        diff = (plain.eval()(idx) - merged(idx)).abs().max().item()
    assert diff == 0.0, (
        f"{STEP_B}: a plain MiniGPT loaded with the merged weights must compute the merged "
        f"model's logits exactly; max abs diff {diff:.3g}."
    )


def test_merge_and_unload_of_a_single_layer_returns_a_linear(lora_after_lab00: ModuleType) -> None:
    layer, ref = make_layer(lora_after_lab00, 12, 20)
    x = torch.randn(8, 12)
    result = lora_after_lab00.merge_and_unload(layer)
    assert type(result) is nn.Linear, (
        f"{STEP_B}: merge_and_unload(layer) on a LoRALinear itself must return its merged "
        f"nn.Linear (a module cannot replace itself in a parent it does not have); got "
        f"{type(result).__name__}."
    )
    with torch.no_grad():
        diff = (result(x).double() - expected64(ref, x)).abs().max().item()
    assert diff < TOL, (
        f"{STEP_B}: the returned nn.Linear must compute base(x) + scaling * B(A x) within "
        f"{TOL:g}; max abs diff {diff:.3g}."
    )


def test_merge_and_unload_works_in_train_mode_with_dropout(
    lora_after_lab00: ModuleType, minigpt: ModuleType
) -> None:
    model = minigpt.MiniGPT()
    names = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.endswith(("q_proj", "fc1")):
            layer = lora_after_lab00.LoRALinear(module, r=R, alpha=ALPHA, dropout=0.5)
            with torch.no_grad():
                layer.lora_B.copy_(torch.randn_like(layer.lora_B) * 0.02)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer)
            names.append(name)
    reference = merged_reference64(minigpt, model, names)
    model.train()
    merged = unload(lora_after_lab00, model).eval()
    idx = torch.randint(0, model.config.vocab_size, (2, 10))
    with torch.no_grad():
        diff = (merged(idx).double() - reference(idx)).abs().max().item()
    assert diff < TOL, (
        f"{STEP_B}: merge_and_unload of a model in train mode, with dropout=0.5 on the LoRA "
        f"branches, must give the same logits as the exact merge within {TOL:g}; max abs diff "
        f"{diff:.3g}. Dropout must never leak into the merge: merge from the factors."
    )

