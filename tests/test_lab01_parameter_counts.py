"""Lab 01: parameter counts (labs/01-parameter-counts.md).

Step A: ``count_parameters`` counts any module. Step B: ``lora_linear_count``, the closed form for
one LoRA-wrapped ``nn.Linear``. Step C: ``minigpt_lora_count``, the closed form for a wrapped
MiniGPT. Step D: ``adapter_checkpoint_bytes``. Step E: ``adamw_training_bytes``.

Every closed form is checked against modules counted for real, built here from plain ``torch.nn``
and the given MiniGPT: none of these tests needs your LoRALinear from lab00.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.lab01

STEP_A = "lab01 step A (count_parameters)"
STEP_B = "lab01 step B (lora_linear_count)"
STEP_C = "lab01 step C (minigpt_lora_count)"
STEP_D = "lab01 step D (adapter_checkpoint_bytes)"
STEP_E = "lab01 step E (adamw_training_bytes)"


# --------------------------------------------------------------------------------------------
# helpers: independent counts
# --------------------------------------------------------------------------------------------


def numel(params: Any) -> int:
    return sum(p.numel() for p in params)


def as_pair(result: object, step: str, call: str) -> tuple[int, int]:
    """``(trainable, total)`` of a returned ParameterCount, or a failure saying what to return."""
    trainable = getattr(result, "trainable", None)
    total = getattr(result, "total", None)
    if not (isinstance(trainable, int) and isinstance(total, int)):
        pytest.fail(
            f"{step}: {call} must return ParameterCount(trainable=..., total=...) with two ints; "
            f"it returned {result!r}.",
            pytrace=False,
        )
    return trainable, total


class LoRAShaped(nn.Module):
    """What a LoRA-wrapped linear holds, built by the test: a frozen base and two factors."""

    def __init__(self, d_in: int, d_out: int, r: int, bias: bool) -> None:
        super().__init__()
        self.base = nn.Linear(d_in, d_out, bias=bias).requires_grad_(False)
        self.lora_A = nn.Parameter(torch.zeros(r, d_in))
        self.lora_B = nn.Parameter(torch.zeros(d_out, r))


def linear_hint(got: tuple[int, int], d_in: int, d_out: int, r: int, bias: bool) -> str:
    """The likely mistake behind a wrong closed form for one wrapped linear."""
    trainable, total = got
    lora = r * (d_in + d_out)
    weight = d_in * d_out
    if trainable == weight and d_in * d_out != lora:
        return (
            "the trainable count is in * out: you counted the (out, in) product B @ A, which is "
            "never stored; LoRA trains A (r, in) and B (out, r), r * (in + out) numbers."
        )
    if trainable == r * d_in * d_out:
        return "the trainable count is r * in * out: LoRA trains r * (in + out) numbers, A and B."
    if trainable != lora:
        return "trainable = r * (in_features + out_features): lora_A is (r, in), lora_B is (out, r)."
    if bias and total == weight + lora:
        return "the total is short by out_features: you forgot the bias of the nn.Linear."
    if not bias and total == weight + d_out + lora:
        return "with bias=False the layer has no bias: do not count out_features for it."
    if total == weight + (d_out if bias else 0):
        return "the total must include the trainable factors too (total = frozen + trainable)."
    return "total = in * out (weight) + out (bias, when bias=True) + r * (in + out) (factors)."


# --------------------------------------------------------------------------------------------
# step A: count_parameters
# --------------------------------------------------------------------------------------------

MODULES: list[Any] = [
    pytest.param(lambda: nn.Linear(7, 5), 7 * 5 + 5, id="Linear(7,5)"),
    pytest.param(lambda: nn.Linear(7, 5, bias=False), 35, id="Linear-no-bias"),
    pytest.param(lambda: nn.Conv2d(3, 4, kernel_size=3), 3 * 4 * 9 + 4, id="Conv2d"),
    pytest.param(lambda: nn.Embedding(11, 6), 66, id="Embedding"),
    pytest.param(lambda: nn.LayerNorm(9), 18, id="LayerNorm"),
    pytest.param(
        lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 2))),
        4 * 8 + 8 + 8 * 2 + 2,
        id="nested-Sequential",
    ),
    pytest.param(lambda: nn.BatchNorm1d(6), 12, id="BatchNorm1d-buffers"),
]


@pytest.mark.parametrize(("make", "expected"), MODULES)
def test_counts_every_parameter_once(
    counting: ModuleType, make: Callable[[], nn.Module], expected: int
) -> None:
    module = make()
    trainable, total = as_pair(counting.count_parameters(module), STEP_A, "count_parameters")
    hint = "count numbers with p.numel(), once per parameter of module.parameters()."
    if total == len(list(module.parameters())):
        hint = "you counted tensors: count the numbers in each one, p.numel()."
    elif total > expected and any(True for _ in module.buffers()):
        hint = "buffers (here BatchNorm's running statistics) are not parameters: leave them out."
    elif total > expected:
        hint = (
            "a nested parameter was counted more than once: module.parameters() already "
            "walks every submodule; do not also loop over module.modules()."
        )
    assert total == expected, (
        f"{STEP_A}: {module.__class__.__name__} has {expected} parameters (numbers), got total = "
        f"{total}. {hint}"
    )
    assert trainable == expected, (
        f"{STEP_A}: every parameter of a fresh {module.__class__.__name__} requires grad, so "
        f"trainable must equal total = {expected}; got trainable = {trainable}."
    )


def test_frozen_parameters_are_not_trainable(counting: ModuleType) -> None:
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    model[0].requires_grad_(False)
    model[2].requires_grad_(False)
    model[3].bias.requires_grad_(False)
    want_total = 80 + 72 + 16 + 27
    want_trainable = 72 + 24
    trainable, total = as_pair(counting.count_parameters(model), STEP_A, "count_parameters")
    assert total == want_total, (
        f"{STEP_A}: total counts every parameter, frozen or not: expected {want_total}, got {total}."
    )
    hint = (
        "frozen parameters counted as trainable: count p.numel() in trainable only when "
        "p.requires_grad is True."
        if trainable == want_total
        else "trainable = the numbers of the parameters whose requires_grad is True."
    )
    assert trainable == want_trainable, (
        f"{STEP_A}: with the embedding, the LayerNorm and one bias frozen, {want_trainable} "
        f"parameters train; got trainable = {trainable}. {hint}"
    )


class Tied(nn.Module):
    """A tiny language model whose head shares the embedding's weight (weight tying)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 5)
        self.head = nn.Linear(5, 12, bias=False)
        self.head.weight = self.emb.weight  # one (12, 5) tensor, two modules


def test_a_shared_parameter_counts_once(counting: ModuleType) -> None:
    trainable, total = as_pair(counting.count_parameters(Tied()), STEP_A, "count_parameters")
    assert (trainable, total) == (60, 60), (
        f"{STEP_A}: a parameter shared by two modules (tied weights, as in GPT-2) counts once: "
        f"this model holds one (12, 5) tensor, 60 numbers; got trainable = {trainable}, "
        f"total = {total}. module.parameters() yields each parameter once; "
        f"named_parameters(remove_duplicate=False), or a loop over modules(), counts it twice."
    )


def test_counts_a_minigpt(counting: ModuleType, minigpt: ModuleType) -> None:
    model = minigpt.MiniGPT(minigpt.MiniGPTConfig())
    model.tok_emb.requires_grad_(False)
    want_total = numel(model.parameters())
    want_trainable = want_total - model.tok_emb.weight.numel()
    got = as_pair(counting.count_parameters(model), STEP_A, "count_parameters")
    assert got == (want_trainable, want_total), (
        f"{STEP_A}: the default MiniGPT with tok_emb frozen has (trainable, total) = "
        f"{(want_trainable, want_total)}; got {got}."
    )


# --------------------------------------------------------------------------------------------
# step B: lora_linear_count
# --------------------------------------------------------------------------------------------

LINEAR_SHAPES = [(1, 1), (3, 7), (7, 3), (16, 16), (64, 10), (10, 64), (96, 384), (768, 768)]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("r", [1, 4, 8])
def test_closed_form_matches_a_real_wrapped_linear(
    counting: ModuleType, r: int, bias: bool
) -> None:
    for d_in, d_out in LINEAR_SHAPES:
        real = LoRAShaped(d_in, d_out, r, bias)
        want = (numel(p for p in real.parameters() if p.requires_grad), numel(real.parameters()))
        call = f"lora_linear_count({d_in}, {d_out}, r={r}, bias={bias})"
        got = as_pair(counting.lora_linear_count(d_in, d_out, r, bias=bias), STEP_B, call)
        assert got == want, (
            f"{STEP_B}: {call} must be (trainable, total) = {want}, as counted on a real "
            f"nn.Linear({d_in}, {d_out}, bias={bias}) with factors (r, in) and (out, r); got "
            f"{got}. {linear_hint(got, d_in, d_out, r, bias)}"
        )


def test_the_4096_example(counting: ModuleType) -> None:
    call = "lora_linear_count(4096, 4096, r=8)"
    got = as_pair(counting.lora_linear_count(4096, 4096, 8), STEP_B, call)
    assert got[0] == 65_536, (
        f"{STEP_B}: {call} trains 8 * (4096 + 4096) = 65,536 numbers; got {got[0]:,}. "
        f"{linear_hint(got, 4096, 4096, 8, True)}"
    )
    assert got[1] == 16_846_848, (
        f"{STEP_B}: {call}: the total is 4096 * 4096 + 4096 + 65,536 = 16,846,848 (the often "
        f"quoted 16,842,752 forgets the bias); got {got[1]:,}. {linear_hint(got, 4096, 4096, 8, True)}"
    )
    no_bias = as_pair(counting.lora_linear_count(4096, 4096, 8, bias=False), STEP_B, call)
    assert no_bias == (65_536, 16_842_752), (
        f"{STEP_B}: lora_linear_count(4096, 4096, r=8, bias=False) is (65,536, 16,842,752); "
        f"got {no_bias}. {linear_hint(no_bias, 4096, 4096, 8, False)}"
    )
    share = got[0] / got[1]
    assert abs(share * 100 - 0.389) < 0.0005, f"{STEP_B}: share {share:.5%}, expected 0.389%."


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"in_features": 8, "out_features": 8, "r": 0}, "r"),
        ({"in_features": 8, "out_features": 8, "r": -2}, "r"),
        ({"in_features": 8, "out_features": 8, "r": 2.0}, "r"),
        ({"in_features": 0, "out_features": 8, "r": 2}, "in_features"),
        ({"in_features": 8, "out_features": -1, "r": 2}, "out_features"),
    ],
    ids=["r=0", "r=-2", "r=2.0", "in=0", "out=-1"],
)
def test_lora_linear_count_rejects_bad_sizes(
    counting: ModuleType, kwargs: dict[str, Any], argument: str
) -> None:
    call = f"lora_linear_count({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    try:
        counting.lora_linear_count(**kwargs)
    except NotImplementedError:
        raise
    except ValueError as exc:
        assert argument in str(exc), (
            f"{STEP_B}: {call} raised ValueError as it should, but the message must name "
            f"`{argument}`; it was {str(exc)!r}."
        )
        return
    except Exception as exc:
        pytest.fail(
            f"{STEP_B}: {call} must raise ValueError naming `{argument}`; it raised "
            f"{type(exc).__name__}: {exc}.",
            pytrace=False,
        )
    pytest.fail(
        f"{STEP_B}: {call} must raise ValueError (`{argument}` must be a positive int); it "
        f"returned a count.",
        pytrace=False,
    )


# --------------------------------------------------------------------------------------------
# step C: minigpt_lora_count
# --------------------------------------------------------------------------------------------

CONFIGS: list[dict[str, Any]] = [
    {},  # the defaults
    {"bias": False},
    {"vocab_size": 50, "block_size": 10, "n_layer": 3, "n_head": 2, "n_embd": 12},
    {"vocab_size": 33, "block_size": 7, "n_layer": 1, "n_head": 1, "n_embd": 8, "bias": False},
]
TARGETS: list[tuple[str, ...]] = [
    ("q_proj", "v_proj"),
    ("q_proj",),
    ("q_proj", "k_proj", "v_proj", "o_proj"),
    ("fc1", "fc2"),
    ("lm_head",),
    ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "lm_head"),
    ("v_proj", "q_proj", "q_proj"),
]


def real_minigpt_count(minigpt: ModuleType, config: Any, r: int, targets: tuple[str, ...]) -> tuple[int, int]:
    """Count a real MiniGPT, and add r * (in + out) for each linear layer a target selects."""
    model = minigpt.MiniGPT(config)
    base = numel(model.parameters())
    trainable = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(
            name == t or name.endswith("." + t) for t in targets
        ):
            trainable += r * (module.in_features + module.out_features)
    return trainable, base + trainable


def minigpt_hint(got: tuple[int, int], want: tuple[int, int], config: Any, r: int) -> str:
    """Name the part of MiniGPT a wrong closed form most likely left out or added."""
    C, V, L = config.n_embd, config.vocab_size, config.n_layer
    if got[0] != want[0]:
        if L > 1 and got[0] * L == want[0]:
            return (
                "the trainable count is one block's: a target such as q_proj is wrapped in "
                f"every block, so multiply by n_layer = {L}."
            )
        return "trainable = sum over the selected layers of r * (in + out), in every block."
    missing = want[1] - got[1]
    ln = (2 * L + 1) * C  # ln_1 and ln_2 per block, ln_f once: C numbers per weight or bias
    linear_biases = L * (4 * C + 4 * C + C)  # q/k/v/o, fc1 (4C), fc2 (C), per block
    known: list[tuple[int, str]] = [
        (config.block_size * C, "you left out the position embeddings, pos_emb (block_size, C)."),
        (V * C, "a (vocab_size, C) matrix is missing: lm_head is not tied to tok_emb, so count "
                "both tok_emb (V, C) and lm_head (V, C)."),
        (-V * C, "a (vocab_size, C) matrix is extra: count tok_emb and lm_head once each."),
        (ln * (2 if config.bias else 1), "you left out the LayerNorms (ln_1, ln_2 in every block, ln_f)."),
        (ln, "a LayerNorm part is missing: each has a weight (C,) and, with bias, a bias (C,)."),
        (-ln, "LayerNorm biases are extra: with bias=False a LayerNorm has its weight only."),
        (linear_biases, "you left out the biases of the linear layers (config.bias is True)."),
        (-linear_biases, "with bias=False the linear layers have no bias: do not count them."),
        (-V, "lm_head has no bias: do not count vocab_size for it."),
    ]
    for size, words in known:
        if missing == size:
            return words
    return (
        f"the total is off by {missing:+,}: count tok_emb, pos_emb, per block ln_1, q/k/v/o, "
        f"ln_2, fc1 (C -> 4C), fc2 (4C -> C), then ln_f and lm_head, plus the factors."
    )


@pytest.mark.parametrize("targets", TARGETS, ids=["+".join(t) for t in TARGETS])
@pytest.mark.parametrize(
    "overrides", CONFIGS, ids=["default", "no-bias", "odd-sizes", "one-layer-no-bias"]
)
def test_closed_form_matches_a_real_minigpt(
    counting: ModuleType, minigpt: ModuleType, overrides: dict[str, Any], targets: tuple[str, ...]
) -> None:
    config = minigpt.MiniGPTConfig(**overrides)
    for r in (1, 8):
        want = real_minigpt_count(minigpt, config, r, targets)
        call = f"minigpt_lora_count(MiniGPTConfig(**{overrides}), r={r}, target_modules={targets})"
        got = as_pair(
            counting.minigpt_lora_count(config, r, target_modules=targets), STEP_C, call
        )
        dup = " A name given twice counts once." if len(set(targets)) < len(targets) else ""
        assert got == want, (
            f"{STEP_C}: {call} must be (trainable, total) = {want}, as counted on a real MiniGPT; "
            f"got {got}. {minigpt_hint(got, want, config, r)}{dup}"
        )


def test_default_minigpt_numbers(counting: ModuleType, minigpt: ModuleType) -> None:
    config = minigpt.MiniGPTConfig()
    for r, want in [(1, 1_024), (4, 4_096), (8, 8_192), (16, 16_384)]:
        got = as_pair(counting.minigpt_lora_count(config, r), STEP_C, "minigpt_lora_count")
        assert got == (want, 220_544 + want), (
            f"{STEP_C}: the default MiniGPT (220,544 parameters) with LoRA r={r} on q_proj and "
            f"v_proj of its 4 blocks trains 4 * 2 * {r} * (64 + 64) = {want:,} and holds "
            f"{220_544 + want:,} in all; got {got}. Did you use the default targets "
            f"('q_proj', 'v_proj')?"
        )


def test_gpt3_sized_config(counting: ModuleType, minigpt: ModuleType) -> None:
    # GPT-3 175B's sizes (GPT-3 paper, arXiv 2005.14165, Table 2.1 and section 2.1), as a MiniGPT.
    config = minigpt.MiniGPTConfig(
        vocab_size=50257, block_size=2048, n_layer=96, n_head=96, n_embd=12288
    )
    C, V, L = 12288, 50257, 96
    per_block = 4 * (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C) + 2 * 2 * C
    base = V * C + 2048 * C + L * per_block + 2 * C + V * C
    got = as_pair(counting.minigpt_lora_count(config, 4), STEP_C, "minigpt_lora_count")
    assert got == (18_874_368, base + 18_874_368), (
        f"{STEP_C}: a GPT-3-sized MiniGPT with LoRA r=4 on q_proj and v_proj trains "
        f"2 * 96 * 4 * (12288 + 12288) = 18,874,368 numbers (the paper's 18M) and holds "
        f"{base + 18_874_368:,} in all; got {got}. A closed form never builds the model: "
        f"compute it from the config's sizes."
    )


@pytest.mark.parametrize(
    "targets", [("q_proj", "query"), ("attn",), ("q",)], ids=["query", "attn", "q"]
)
def test_unknown_target_is_refused_by_name(
    counting: ModuleType, minigpt: ModuleType, targets: tuple[str, ...]
) -> None:
    bad = [t for t in targets if t != "q_proj"][0]
    call = f"minigpt_lora_count(config, r=8, target_modules={targets})"
    try:
        counting.minigpt_lora_count(minigpt.MiniGPTConfig(), 8, target_modules=targets)
    except NotImplementedError:
        raise
    except ValueError as exc:
        assert repr(bad) in str(exc) or f" {bad}" in str(exc), (
            f"{STEP_C}: {call} raised ValueError as it should, but the "
            f"message must name the target {bad!r}; it was {str(exc)!r}."
        )
        return
    except Exception as exc:
        pytest.fail(
            f"{STEP_C}: {call} must raise ValueError naming {bad!r} (not one of MiniGPT's linear "
            f"layers); it raised {type(exc).__name__}: {exc}.",
            pytrace=False,
        )
    pytest.fail(
        f"{STEP_C}: {call} must raise ValueError: {bad!r} is not the name of a MiniGPT linear "
        f"layer (q_proj, k_proj, v_proj, o_proj, fc1, fc2, lm_head), so it wraps nothing.",
        pytrace=False,
    )


# --------------------------------------------------------------------------------------------
# step D: adapter_checkpoint_bytes
# --------------------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8]
if hasattr(torch, "float8_e4m3fn"):
    DTYPES.append(torch.float8_e4m3fn)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_checkpoint_bytes_match_real_tensors(counting: ModuleType, dtype: torch.dtype) -> None:
    for n in (0, 1, 1_000, 8_192, 65_536):
        want = torch.empty(n, dtype=dtype).untyped_storage().nbytes()
        got = counting.adapter_checkpoint_bytes(n, dtype)
        hint = (
            " You assumed 4 bytes per element: use the element size of the dtype "
            "(dtype.itemsize)."
            if n and got == 4 * n
            else " Multiply by the element size of the dtype (dtype.itemsize)."
        )
        assert got == want, (
            f"{STEP_D}: {n} numbers in {dtype} take {want} bytes ({want // max(n, 1)} each); "
            f"got {got}.{hint}"
        )


def test_checkpoint_bytes_are_the_payload_of_a_safetensors_file(
    counting: ModuleType, tmp_path: Path
) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    tensors = {
        "blocks.0.attn.q_proj.lora_A": torch.zeros(8, 64, dtype=torch.bfloat16),
        "blocks.0.attn.q_proj.lora_B": torch.zeros(64, 8, dtype=torch.bfloat16),
    }
    path = tmp_path / "adapter.safetensors"
    safetensors_torch.save_file(tensors, str(path))
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    json.loads(raw[8 : 8 + header_len])
    payload = len(raw) - 8 - header_len
    got = counting.adapter_checkpoint_bytes(1_024, torch.bfloat16)
    assert got == payload, (
        f"{STEP_D}: two (8, 64) bfloat16 factors are 1,024 numbers; a safetensors file of them "
        f"holds {payload} bytes of tensor data (plus an 8-byte length and a {header_len}-byte "
        f"header); got {got}. Count the payload only: numbers times bytes per element."
    )


def test_paper_checkpoint_sizes(counting: ModuleType) -> None:
    full = counting.adapter_checkpoint_bytes(175_000_000_000, torch.float16)
    adapter = counting.adapter_checkpoint_bytes(18_874_368, torch.float16)
    assert (full, adapter) == (350_000_000_000, 37_748_736), (
        f"{STEP_D}: 175e9 numbers in float16 take 350e9 bytes (350 GB, section 4.2 of the LoRA "
        f"paper) and GPT-3's r=4 q/v adapter, 18,874,368 numbers, takes 37,748,736 bytes "
        f"(~35 MB in the paper); got {full:,} and {adapter:,}."
    )


# --------------------------------------------------------------------------------------------
# step E: adamw_training_bytes
# --------------------------------------------------------------------------------------------


def parts(result: object, call: str) -> tuple[int, int]:
    states = getattr(result, "optimizer_states", None)
    grads = getattr(result, "gradients", None)
    if not (isinstance(states, int) and isinstance(grads, int)):
        pytest.fail(
            f"{STEP_E}: {call} must return TrainingBytes(optimizer_states=..., gradients=...) "
            f"with two ints; it returned {result!r}.",
            pytrace=False,
        )
    return states, grads


def test_matches_what_training_allocates_in_float32(counting: ModuleType) -> None:
    # What torch.optim.AdamW allocates for each trainable parameter p on its first step:
    # exp_avg and exp_avg_sq, two tensors made by torch.zeros_like(p) (torch.optim.Adam). The
    # gradients are the real ones of a backward pass. (The lab's notebook runs a real AdamW step;
    # the test does not, because the first optimizer of a process takes seconds to set up.)
    model = nn.Sequential(nn.Embedding(20, 16), nn.Linear(16, 16), nn.LayerNorm(16), nn.Linear(16, 5))
    model[0].requires_grad_(False)  # frozen: no gradient, no optimizer state
    model[2].requires_grad_(False)
    model(torch.randint(0, 20, (3, 4))).sum().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    state_bytes = sum(
        2 * torch.zeros_like(p, dtype=torch.float32).untyped_storage().nbytes() for p in trainable
    )
    grad_bytes = sum(
        p.grad.untyped_storage().nbytes() for p in model.parameters() if p.grad is not None
    )
    n = numel(trainable)
    call = f"adamw_training_bytes({n})"
    got = parts(counting.adamw_training_bytes(n), call)
    hint = ""
    if got[0] == 4 * n:
        hint = " AdamW keeps two states per trainable parameter (exp_avg and exp_avg_sq): 8 bytes."
    elif got[0] == 8 * numel(model.parameters()):
        hint = " Frozen parameters have no optimizer state: count the trainable ones only."
    assert got == (state_bytes, grad_bytes), (
        f"{STEP_E}: for these {n:,} trainable float32 parameters AdamW keeps {state_bytes:,} bytes "
        f"of state (exp_avg and exp_avg_sq, 4 bytes each) and a backward pass leaves "
        f"{grad_bytes:,} bytes of gradients; {call} gave (optimizer_states, gradients) = "
        f"{got}.{hint}"
    )


@pytest.mark.parametrize(
    ("dtype", "grad_size"),
    [(torch.bfloat16, 2), (torch.float16, 2), (torch.float64, 8)],
    ids=str,
)
def test_states_stay_float32_gradients_follow_the_dtype(
    counting: ModuleType, dtype: torch.dtype, grad_size: int
) -> None:
    n = 65_536
    call = f"adamw_training_bytes({n}, {dtype})"
    got = parts(counting.adamw_training_bytes(n, dtype), call)
    assert got[0] == 8 * n, (
        f"{STEP_E}: {call}: the optimizer states are counted in float32 whatever the parameters' "
        f"dtype, 2 states * 4 bytes = 8 bytes per trainable parameter: {8 * n:,}; got {got[0]:,}."
    )
    assert got[1] == grad_size * n, (
        f"{STEP_E}: {call}: gradients have the parameters' dtype, {grad_size} bytes each: "
        f"{grad_size * n:,}; got {got[1]:,}."
    )


def test_full_fine_tuning_against_lora_on_the_default_minigpt(counting: ModuleType) -> None:
    full = parts(counting.adamw_training_bytes(220_544), "adamw_training_bytes(220544)")
    lora = parts(counting.adamw_training_bytes(8_192), "adamw_training_bytes(8192)")
    assert full == (1_764_352, 882_176) and lora == (65_536, 32_768), (
        f"{STEP_E}: full fine-tuning of the default MiniGPT (220,544 trainable, float32) needs "
        f"(1,764,352, 882,176) bytes of (states, gradients); LoRA r=8 on q/v (8,192 trainable) "
        f"needs (65,536, 32,768); got {full} and {lora}."
    )


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("n_params", lambda c: c.adapter_checkpoint_bytes(-1)),
        ("n_trainable", lambda c: c.adamw_training_bytes(-5)),
    ],
    ids=["checkpoint", "adamw"],
)
def test_negative_counts_are_refused(
    counting: ModuleType, name: str, call: Callable[[ModuleType], object]
) -> None:
    step = STEP_D if name == "n_params" else STEP_E
    try:
        call(counting)
    except NotImplementedError:
        raise
    except ValueError as exc:
        assert name in str(exc), (
            f"{step}: a negative count raised ValueError as it should, but the message must "
            f"name `{name}`; it was {str(exc)!r}."
        )
        return
    except Exception as exc:
        pytest.fail(
            f"{step}: a negative `{name}` must raise ValueError naming it; it raised "
            f"{type(exc).__name__}: {exc}.",
            pytrace=False,
        )
    pytest.fail(
        f"{step}: a negative `{name}` must raise ValueError ({name} must be an int >= 0).",
        pytrace=False,
    )
