"""Lab 00: LoRALinear by hand (labs/00-lora-by-hand.md).

Step A: ``LoRALinear.__init__`` checks its arguments, creates ``lora_A`` and ``lora_B`` and
freezes the base. Step B: ``reset_parameters`` draws A like ``nn.Linear`` draws its weight and
sets B to zero. Step C: ``forward`` returns ``base(x) + scaling * B (A dropout(x))``.

These tests check behaviour only: any correct implementation passes, whatever its style.
Expected values come from an independent float64 computation, never from the code under test.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

pytestmark = pytest.mark.lab00

STEP_A = "lab00 step A (LoRALinear.__init__)"
STEP_B = "lab00 step B (reset_parameters)"
STEP_C = "lab00 step C (forward)"

TOL = 1e-5  # DESIGN.md: float32 comparisons against a float64 reference

FREEZE_HOW = (
    "The base must be frozen on its parameters: call base.requires_grad_(False) once in "
    "__init__ (weight and bias), when freeze_base is True."
)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def factor(layer: nn.Module, name: str) -> Tensor:
    """``layer.lora_A`` or ``layer.lora_B``, or a failure that says how to create it."""
    value = getattr(layer, name, None)
    if not isinstance(value, Tensor):
        pytest.fail(
            f"{STEP_A}: LoRALinear has no tensor attribute `{name}` "
            f"(found {type(value).__name__}). "
            f"Create it in __init__ as `self.{name} = nn.Parameter(torch.empty(...))`.",
            pytrace=False,
        )
    return value


def set_factors(layer: nn.Module, A: Tensor, B: Tensor) -> None:
    """Overwrite both factors in place with known values (the check needs B non-zero)."""
    for name, value in (("lora_A", A), ("lora_B", B)):
        current = factor(layer, name)
        if tuple(current.shape) != tuple(value.shape):
            pytest.fail(
                f"{STEP_A}: `{name}` has shape {tuple(current.shape)}, expected "
                f"{tuple(value.shape)} (lora_A: (r, in_features), lora_B: (out_features, r)).",
                pytrace=False,
            )
        with torch.no_grad():
            current.copy_(value)


def known_factors(r: int, in_f: int, out_f: int) -> tuple[Tensor, Tensor]:
    """Non-zero factors of a moderate size, so the branch output is O(1)."""
    A = torch.randn(r, in_f) / math.sqrt(in_f)
    B = torch.randn(out_f, r) / math.sqrt(r)
    return A, B


def base64(base: nn.Linear, x: Tensor) -> Tensor:
    """``base(x)`` computed independently in float64."""
    y = x.double() @ base.weight.detach().double().T
    if base.bias is not None:
        y = y + base.bias.detach().double()
    return y


def branch64(A: Tensor, B: Tensor, x: Tensor) -> Tensor:
    """The unscaled branch ``B (A x)`` in float64."""
    return (x.double() @ A.double().T) @ B.double().T


def expected64(base: nn.Linear, A: Tensor, B: Tensor, x: Tensor, scaling: float) -> Tensor:
    return base64(base, x) + scaling * branch64(A, B, x)


def fit_scale(
    out: Tensor, base: nn.Linear, A: Tensor, B: Tensor, x: Tensor
) -> tuple[float, float]:
    """Fit ``out = base(x) + s * B (A x)`` by least squares: return ``s`` and the max residual."""
    delta = out.detach().double() - base64(base, x)
    unscaled = branch64(A, B, x)
    s = float((delta * unscaled).sum() / (unscaled * unscaled).sum())
    return s, (delta - s * unscaled).abs().max().item()


def measured_scale(out: Tensor, base: nn.Linear, A: Tensor, B: Tensor, x: Tensor) -> float:
    """The factor the layer applied to ``B (A x)``, by least squares on its output."""
    return fit_scale(out, base, A, B, x)[0]


def scale_hint(measured: float, r: int, alpha: float) -> str:
    """Name the likely mistake behind a wrong scale of the update."""

    def near(value: float) -> bool:
        return math.isclose(measured, value, rel_tol=1e-3, abs_tol=1e-6)

    if near(alpha / r):
        return "the scale is right, so look elsewhere in forward (the base path, A before B)."
    if near(alpha):
        return "the update is r times too large: did you scale by alpha instead of alpha / r?"
    if near(0.0):
        return "the branch adds nothing: forward must add scaling * B(A x) to base(x)."
    if near(1.0):
        return "the update is not scaled: multiply the branch by scaling = alpha / r."
    if near(r / alpha):
        return "the scale is inverted: scaling = alpha / r, not r / alpha."
    if near(1.0 / r):
        return "alpha is missing: scaling = alpha / r, not 1 / r."
    return "forward must return base(x) + scaling * B(A x) with scaling = alpha / r."


def trainable_names(module: nn.Module) -> list[str]:
    return sorted(name for name, p in module.named_parameters() if p.requires_grad)


def trainable_hint(names: list[str]) -> str:
    """What to fix when the trainable parameters are not exactly the two factors."""
    hints = []
    for factor_name in ("lora_A", "lora_B"):
        if not any(n == factor_name or n.endswith("." + factor_name) for n in names):
            hints.append(
                f"{factor_name} is missing: it must be an nn.Parameter assigned to "
                f"self.{factor_name} (a plain tensor or a buffer is not a parameter and never "
                f"trains)."
            )
    if any("lora_" not in n for n in names):
        hints.append(FREEZE_HOW)
    return " ".join(hints)


_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def mentions_value(message: str, value: object) -> bool:
    """True when ``message`` shows ``value`` (as written, or as a number equal to it)."""
    if str(value) in message or repr(value) in message:
        return True
    if isinstance(value, (int, float)):
        return any(float(m) == float(value) for m in _NUMBER.findall(message))
    return False


def expect_error(
    build: Callable[[], Any],
    exc_type: type[Exception],
    call: str,
    argument: str,
    argument_pattern: str,
    value_text: str,
    value_ok: Callable[[str], bool],
    why: str,
) -> None:
    """Run ``build`` and check that it raises ``exc_type`` naming the argument and the value."""
    raised: Exception | None = None
    try:
        build()
    except NotImplementedError:
        raise  # a stub: let it fail as itself, naming the step to do
    except Exception as exc:
        raised = exc
    # Judged outside the except block, so the report shows our message, not a chained traceback.
    if raised is None:
        pytest.fail(
            f"{STEP_A}: {call} must raise {exc_type.__name__} ({argument} must be {why}); it "
            f"raised nothing and built a layer. Check the argument at the top of __init__.",
            pytrace=False,
        )
    if not isinstance(raised, exc_type):
        pytest.fail(
            f"{STEP_A}: {call} must raise {exc_type.__name__} naming `{argument}` and the value; "
            f"it raised {type(raised).__name__}: {raised}. Check the argument yourself at the top "
            f"of __init__ and raise {exc_type.__name__}(\"{argument} must be {why}, got ...\").",
            pytrace=False,
        )
    message = str(raised)
    assert re.search(argument_pattern, message), (
        f"{STEP_A}: {call} raised {exc_type.__name__} as it should, but its message must name the "
        f"argument `{argument}`; the message was: {message!r}. "
        f"Write for example: \"{argument} must be {why}, got {value_text}\"."
    )
    assert value_ok(message), (
        f"{STEP_A}: {call} raised {exc_type.__name__} as it should, but its message must show "
        f"the value it got ({value_text}); the message was: {message!r}."
    )


# --------------------------------------------------------------------------------------------
# step B: the layer starts exactly at the base
# --------------------------------------------------------------------------------------------

SHAPES = [
    pytest.param(1, 1, (5, 1), True, id="1-in-1-out"),
    pytest.param(4, 3, (2, 3, 4), True, id="batch-2x3"),
    pytest.param(16, 8, (6, 16), False, id="no-bias"),
    pytest.param(7, 5, (7,), True, id="unbatched"),
    pytest.param(32, 64, (2, 5, 32), True, id="32-to-64"),
]
DTYPES = [
    pytest.param(torch.float32, id="float32"),
    pytest.param(torch.float64, id="float64"),
    pytest.param(torch.bfloat16, id="bfloat16"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("in_f", "out_f", "x_shape", "bias"), SHAPES)
def test_output_equals_base_at_init(
    lora: ModuleType,
    in_f: int,
    out_f: int,
    x_shape: tuple[int, ...],
    bias: bool,
    dtype: torch.dtype,
) -> None:
    base = nn.Linear(in_f, out_f, bias=bias, dtype=dtype)
    layer = lora.LoRALinear(base)
    x = torch.randn(x_shape, dtype=dtype)
    with torch.no_grad():
        out = layer(x)
        ref = base(x)
    assert out.shape == ref.shape, (
        f"{STEP_C}: for x of shape {tuple(x.shape)} and base nn.Linear({in_f}, {out_f}) the "
        f"output must have shape {tuple(ref.shape)} "
        f"(x: (..., in_features) -> (..., out_features)); got {tuple(out.shape)}. Did you "
        f"transpose a factor or flatten the batch dimensions?"
    )
    assert out.dtype == dtype, (
        f"{STEP_C}: a {dtype} base and a {dtype} input must give a {dtype} output, got "
        f"{out.dtype}. Create the factors on the base's dtype and do not cast x in forward."
    )
    diff = (out - ref).abs().max().item()
    if diff != 0.0 and torch.count_nonzero(factor(layer, "lora_B")) == 0:
        pytest.fail(
            f"{STEP_C}: B is zero, so the branch adds nothing, yet the output differs from "
            f"base(x) by {diff:.3g} ({dtype}, nn.Linear({in_f}, {out_f})). forward must return "
            f"base(x) + scaling * B(A x) with base(x) computed on the original x: no dropout, cast "
            f"or copy on the base path.",
            pytrace=False,
        )
    assert diff == 0.0, (
        f"{STEP_B}: at init the output must equal base(x) exactly "
        f"(max |lora(x) - base(x)| == 0.0); got {diff:.3g} ({dtype}, nn.Linear({in_f}, {out_f})). "
        f"B must start at zero, so that B @ A = 0 and the layer starts exactly at the pretrained "
        f"model: initialise lora_B with zeros and lora_A randomly, not the other way round."
    )


def test_lora_B_is_zero_at_init(lora: ModuleType) -> None:
    layer = lora.LoRALinear(nn.Linear(12, 10), r=4)
    B = factor(layer, "lora_B").detach()
    nonzero = int(torch.count_nonzero(B))
    assert nonzero == 0, (
        f"{STEP_B}: B must start at zero (nn.init.zeros_(self.lora_B)); {nonzero} of its "
        f"{B.numel()} entries are non-zero (max |B| = {B.abs().max().item():.3g}). With a random "
        f"B the layer no longer starts at the pretrained model. Did you initialise B randomly, or "
        f"swap A and B?"
    )


def test_lora_A_is_kaiming_uniform_at_init(lora: ModuleType) -> None:
    in_f, r = 512, 64  # 32768 samples: the spread is measured to about 0.25 %
    layer = lora.LoRALinear(nn.Linear(in_f, 8), r=r)
    A = factor(layer, "lora_A").detach().double().flatten()
    n = A.numel()
    bound = 1.0 / math.sqrt(in_f)  # kaiming_uniform_(a=sqrt(5)) on fan_in = in_features
    want_std = bound / math.sqrt(3.0)  # the std of U(-bound, bound)
    mean, std = A.mean().item(), A.std().item()
    how = (
        "Draw A like nn.Linear draws its weight: nn.init.kaiming_uniform_(self.lora_A, "
        "a=math.sqrt(5)), which is uniform in [-1/sqrt(in_features), 1/sqrt(in_features)]."
    )
    assert torch.count_nonzero(A) > n // 2, (
        f"{STEP_B}: A must be random, not zero: {n - int(torch.count_nonzero(A))} of its {n} "
        f"entries are 0. With A = 0 and B = 0 no gradient ever reaches either factor. {how}"
    )
    distinct = A.unique().numel()
    assert distinct > n // 2, (
        f"{STEP_B}: A must be random: its {n} entries take only {distinct} distinct values. {how}"
    )
    biggest = A.abs().max().item()
    assert biggest <= bound * (1 + 1e-6), (
        f"{STEP_B}: for in_features = {in_f}, A must lie within +-1/sqrt(in_features) = "
        f"+-{bound:.5f}; found |A| up to {biggest:.5f}. Did you use kaiming_uniform_ without "
        f"a=math.sqrt(5), a normal init, or the rank r as fan-in? {how}"
    )
    assert abs(std / want_std - 1.0) < 0.03, (
        f"{STEP_B}: A must be spread uniformly over +-{bound:.5f}, so its std must be "
        f"bound / sqrt(3) = {want_std:.5f} (within 3 %; {n} samples); got {std:.5f}. {how}"
    )
    assert abs(mean) < 6 * want_std / math.sqrt(n), (
        f"{STEP_B}: A must be centred on zero; its mean over {n} entries is {mean:.3g} "
        f"(allowed: |mean| < {6 * want_std / math.sqrt(n):.2g}). {how}"
    )


# --------------------------------------------------------------------------------------------
# step A: factors, their shapes, dtypes and devices
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("in_f", "out_f", "r"), [(12, 10, 4), (3, 7, 1), (5, 5, 16), (20, 6, 8)])
def test_factors_have_shapes_r_by_in_and_out_by_r(
    lora: ModuleType, in_f: int, out_f: int, r: int
) -> None:
    layer = lora.LoRALinear(nn.Linear(in_f, out_f), r=r)
    A, B = factor(layer, "lora_A"), factor(layer, "lora_B")
    assert tuple(A.shape) == (r, in_f), (
        f"{STEP_A}: for nn.Linear({in_f}, {out_f}) and r={r}, lora_A must have shape "
        f"(r, in_features) = {(r, in_f)}; got {tuple(A.shape)}. A takes x down from in_features "
        f"to r."
    )
    assert tuple(B.shape) == (out_f, r), (
        f"{STEP_A}: for nn.Linear({in_f}, {out_f}) and r={r}, lora_B must have shape "
        f"(out_features, r) = {(out_f, r)}; got {tuple(B.shape)}. B takes the rank-r code up to "
        f"out_features."
    )


def test_factors_are_parameters_registered_on_the_module(lora: ModuleType) -> None:
    layer = lora.LoRALinear(nn.Linear(6, 5), r=3)
    params = dict(layer.named_parameters())
    for name in ("lora_A", "lora_B"):
        value = factor(layer, name)
        assert isinstance(value, nn.Parameter), (
            f"{STEP_A}: `{name}` must be an nn.Parameter, created as "
            f"`self.{name} = nn.Parameter(torch.empty(...))`; it is a {type(value).__name__}. "
            f"A plain tensor or a buffer is invisible to the optimizer and never trains."
        )
        assert params.get(name) is value, (
            f"{STEP_A}: `{name}` must be registered on the module, so that named_parameters() "
            f"lists it as '{name}' (later labs save adapters by these names); it lists "
            f"{sorted(params)}. Assign the nn.Parameter to self.{name} directly."
        )


def test_keeps_the_given_base_layer(lora: ModuleType) -> None:
    base = nn.Linear(6, 5)
    layer = lora.LoRALinear(base, r=2)
    assert getattr(layer, "base", None) is base, (
        f"{STEP_A}: keep the layer you were given as `self.base` (the same object, not a copy): "
        f"the pretrained weights must stay shared with the model. Found self.base = "
        f"{type(getattr(layer, 'base', None)).__name__}."
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_factors_follow_the_base_dtype(lora: ModuleType, dtype: torch.dtype) -> None:
    layer = lora.LoRALinear(nn.Linear(6, 5, dtype=dtype), r=2)
    for name in ("lora_A", "lora_B"):
        got = factor(layer, name).dtype
        assert got == dtype, (
            f"{STEP_A}: `{name}` must be created on the base's dtype ({dtype}); got {got}. "
            f"Pass dtype=base.weight.dtype (and device=base.weight.device) when you create it."
        )


def test_factors_follow_the_base_device_meta(lora: ModuleType) -> None:
    # The meta device has no data: it checks device placement without a GPU.
    layer = lora.LoRALinear(nn.Linear(4, 3, device="meta"), r=2)
    for name in ("lora_A", "lora_B"):
        got = factor(layer, name).device
        assert got.type == "meta", (
            f"{STEP_A}: `{name}` must be created on the base's device (here meta); got {got}. "
            f"Pass device=base.weight.device (and dtype=base.weight.dtype) when you create it."
        )
    # No forward on meta: its first elementwise op imports torch._dynamo, which alone costs
    # about as much as `import torch` on every lab00 run (benchmarks/feedback.py). The CUDA
    # test below runs the forward on a real second device.


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_factors_follow_the_base_device_cuda(lora: ModuleType) -> None:
    base = nn.Linear(6, 5, device="cuda")
    layer = lora.LoRALinear(base, r=2)
    for name in ("lora_A", "lora_B"):
        got = factor(layer, name).device
        assert got.type == "cuda", (
            f"{STEP_A}: `{name}` must be created on the base's device (cuda); got {got}. "
            f"Pass device=base.weight.device when you create it."
        )
    x = torch.randn(3, 6, device="cuda")
    diff = (layer(x) - base(x)).abs().max().item()
    assert diff == 0.0, (
        f"{STEP_B}: at init on cuda the output must equal base(x) exactly; got {diff:.3g}."
    )


# --------------------------------------------------------------------------------------------
# step C: the scale of the update, measured on the output
# --------------------------------------------------------------------------------------------

SCALES = [
    pytest.param(8, 16.0, torch.float32, id="r8-alpha16"),
    pytest.param(4, 16.0, torch.float32, id="r4-alpha16"),
    pytest.param(2, 1.0, torch.float32, id="r2-alpha1"),
    pytest.param(16, 32.0, torch.float32, id="r16-alpha32"),
    pytest.param(4, 2.0, torch.float32, id="r4-alpha2"),
    pytest.param(8, 16.0, torch.float64, id="r8-alpha16-float64"),
]


@pytest.mark.parametrize(("r", "alpha", "dtype"), SCALES)
def test_output_is_base_plus_alpha_over_r_times_BAx(
    lora: ModuleType, r: int, alpha: float, dtype: torch.dtype
) -> None:
    in_f, out_f = 12, 10
    base = nn.Linear(in_f, out_f, dtype=dtype)
    layer = lora.LoRALinear(base, r=r, alpha=alpha)
    A, B = known_factors(r, in_f, out_f)
    set_factors(layer, A, B)
    x = torch.randn(3, 5, in_f, dtype=dtype)
    with torch.no_grad():
        out = layer(x)
    want = expected64(base, A.to(dtype), B.to(dtype), x, alpha / r)
    assert tuple(out.shape) == tuple(want.shape), (
        f"{STEP_C}: output shape must be {tuple(want.shape)}, got {tuple(out.shape)}."
    )
    diff = (out.double() - want).abs().max().item()
    if diff >= TOL:
        scale = measured_scale(out, base, A.to(dtype), B.to(dtype), x)
        pytest.fail(
            f"{STEP_C}: with lora_A and lora_B set to known non-zero values, "
            f"LoRALinear(base, r={r}, alpha={alpha:g}) must return base(x) + (alpha / r) * B(A x) "
            f"within {TOL:g} of a float64 computation; max abs diff {diff:.3g}. The update came "
            f"out scaled by {scale:.4g} instead of alpha / r = {alpha / r:g}: "
            f"{scale_hint(scale, r, alpha)}",
            pytrace=False,
        )


@pytest.mark.parametrize(("r", "alpha"), [(8, 16.0), (4, 16.0), (2, 1.0), (16, 32.0), (4, 2.0)])
def test_scaling_attribute_is_alpha_over_r(lora: ModuleType, r: int, alpha: float) -> None:
    layer = lora.LoRALinear(nn.Linear(6, 5), r=r, alpha=alpha)
    assert getattr(layer, "r", None) == r and getattr(layer, "alpha", None) == alpha, (
        f"{STEP_A}: keep the arguments as attributes: self.r = {r}, self.alpha = {alpha:g}; "
        f"found r = {getattr(layer, 'r', None)!r}, alpha = {getattr(layer, 'alpha', None)!r}."
    )
    scaling = getattr(layer, "scaling", None)
    hint = (
        "the update is r times too large: did you scale by alpha instead of alpha / r?"
        if scaling == alpha
        else "set self.scaling = alpha / r."
    )
    assert scaling == pytest.approx(alpha / r, rel=1e-12), (
        f"{STEP_A}: LoRALinear(base, r={r}, alpha={alpha:g}).scaling must be alpha / r = "
        f"{alpha / r:g}; got {scaling!r}: {hint}"
    )


@pytest.mark.parametrize("r", [4, 8, 32])
def test_alpha_defaults_to_16_whatever_r(lora: ModuleType, r: int) -> None:
    in_f, out_f = 12, 10
    base = nn.Linear(in_f, out_f)
    layer = lora.LoRALinear(base, r=r)
    alpha = getattr(layer, "alpha", None)
    assert alpha == 16.0, (
        f"{STEP_A}: alpha must default to 16.0, not to r: LoRALinear(base, r={r}).alpha "
        f"should be 16.0, got {alpha!r}."
    )
    A, B = known_factors(r, in_f, out_f)
    set_factors(layer, A, B)
    x = torch.randn(4, in_f)
    with torch.no_grad():
        scale = measured_scale(layer(x), base, A, B, x)
    hint = (
        "alpha must default to 16.0, not to r (or the branch is not scaled at all)."
        if math.isclose(scale, 1.0, rel_tol=1e-3)
        else scale_hint(scale, r, 16.0)
    )
    assert math.isclose(scale, 16.0 / r, rel_tol=1e-4), (
        f"{STEP_C}: LoRALinear(base, r={r}) must scale the update by 16 / r = {16.0 / r:g} "
        f"(alpha defaults to 16.0); measured {scale:.4g}: {hint}"
    )


def test_defaults_are_rank_8_and_scaling_2(lora: ModuleType) -> None:
    in_f, out_f = 12, 10
    base = nn.Linear(in_f, out_f)
    layer = lora.LoRALinear(base)
    A = factor(layer, "lora_A")
    assert A.shape[0] == 8 and getattr(layer, "r", None) == 8, (
        f"{STEP_A}: r must default to 8: LoRALinear(base) must have r = 8 and lora_A of shape "
        f"(8, {in_f}); got r = {getattr(layer, 'r', None)!r} and lora_A {tuple(A.shape)}."
    )
    scaling = getattr(layer, "scaling", None)
    if scaling == 1.0:
        hint = "alpha must default to 16.0, not to r."
    elif scaling == 16.0:
        hint = "the update is r times too large: did you scale by alpha instead of alpha / r?"
    else:
        hint = "set self.scaling = alpha / r, with alpha = 16.0 and r = 8 by default."
    assert scaling == pytest.approx(2.0), (
        f"{STEP_A}: LoRALinear(base).scaling must be 16.0 / 8 = 2.0; got {scaling!r}: {hint}"
    )
    A, B = known_factors(8, in_f, out_f)
    set_factors(layer, A, B)
    x = torch.randn(4, in_f)
    with torch.no_grad():
        scale = measured_scale(layer(x), base, A, B, x)
    assert math.isclose(scale, 2.0, rel_tol=1e-4), (
        f"{STEP_C}: LoRALinear(base) must scale the update by 16 / 8 = 2.0; measured {scale:.4g}: "
        f"{scale_hint(scale, 8, 16.0)}"
    )


# --------------------------------------------------------------------------------------------
# step A: the freeze
# --------------------------------------------------------------------------------------------

def test_gradients_reach_the_factors_and_nothing_else(lora: ModuleType) -> None:
    in_f, out_f, r = 6, 5, 3
    base = nn.Linear(in_f, out_f)
    layer = lora.LoRALinear(base, r=r)
    A, B = known_factors(r, in_f, out_f)  # B non-zero, so A gets a gradient too
    set_factors(layer, A, B)
    x = torch.randn(4, in_f)
    (layer(x) * torch.randn(4, out_f)).sum().backward()
    for name in ("weight", "bias"):
        grad = getattr(base, name).grad
        assert grad is None, (
            f"{STEP_A}: base.{name} received a gradient after backward (|grad| max "
            f"{grad.abs().max().item():.3g}): with freeze_base=True the base must be frozen. "
            f"{FREEZE_HOW}"
        )
    for name in ("lora_A", "lora_B"):
        grad = factor(layer, name).grad
        assert grad is not None and torch.count_nonzero(grad) > 0, (
            f"{STEP_C}: {name} received no gradient after backward (grad = "
            f"{'None' if grad is None else 'all zeros'}). It must be an nn.Parameter "
            f"(requires_grad=True) and forward must use it directly, not a detached copy."
        )


def test_base_parameters_do_not_require_grad(lora: ModuleType) -> None:
    base = nn.Linear(6, 5)
    lora.LoRALinear(base, r=2)
    for name, p in base.named_parameters():
        assert not p.requires_grad, (
            f"{STEP_A}: base.{name}.requires_grad is still True: with freeze_base=True the base "
            f"must be frozen. {FREEZE_HOW}"
        )


def test_exactly_the_two_factors_are_trainable(lora: ModuleType) -> None:
    in_f, out_f, r = 6, 5, 3
    layer = lora.LoRALinear(nn.Linear(in_f, out_f), r=r)
    names = trainable_names(layer)
    assert names == ["lora_A", "lora_B"], (
        f"{STEP_A}: exactly two parameters must require grad, lora_A and lora_B; found {names}. "
        f"{trainable_hint(names)}"
    )
    count = sum(p.numel() for p in layer.parameters() if p.requires_grad)
    assert count == r * (in_f + out_f), (
        f"{STEP_A}: LoRALinear(nn.Linear({in_f}, {out_f}), r={r}) must train r * (in + out) = "
        f"{r * (in_f + out_f)} numbers; it trains {count}."
    )


FREEZE_OPS: list[Any] = [
    pytest.param(lambda m: m.train(), id="train()"),
    pytest.param(lambda m: m.eval(), id="eval()"),
    pytest.param(lambda m: m.eval().train(), id="eval().train()"),
    pytest.param(lambda m: m.train(True), id="train(True)"),
    pytest.param(lambda m: m.to(torch.float64), id="to(float64)"),
    pytest.param(lambda m: m.to("cpu"), id="to(cpu)"),
    pytest.param(lambda m: m.double().float(), id="double().float()"),
    pytest.param(
        lambda m: m.to(torch.bfloat16).to(torch.float32).train(),
        id="to(bfloat16).to(float32).train()",
    ),
]


@pytest.mark.parametrize("op", FREEZE_OPS)
def test_freeze_survives_module_calls(
    lora: ModuleType, op: Callable[[nn.Module], nn.Module], request: pytest.FixtureRequest
) -> None:
    base = nn.Linear(6, 5)
    layer = lora.LoRALinear(base, r=2)
    call = request.node.callspec.id
    before = trainable_names(layer)
    assert before == ["lora_A", "lora_B"], (
        f"{STEP_A}: right after LoRALinear(base) the trainable parameters must be exactly lora_A "
        f"and lora_B (before any layer.{call}); found {before}. {trainable_hint(before)}"
    )
    result = op(layer)
    layer = result if isinstance(result, nn.Module) else layer
    names = trainable_names(layer)
    assert names == ["lora_A", "lora_B"], (
        f"{STEP_A}: after layer.{call} the trainable parameters must still be exactly lora_A "
        f"and lora_B, with the base frozen; found {names}. Freeze the base once, on its "
        f"parameters (base.requires_grad_(False)) in __init__; do not override train() / eval() "
        f"or switch requires_grad back on anywhere else."
    )
    layer(torch.randn(3, 6, dtype=base.weight.dtype)).sum().backward()
    for name, p in base.named_parameters():
        assert p.grad is None, (
            f"{STEP_A}: after layer.{call} base.{name} received a gradient: the base must stay "
            f"frozen. {FREEZE_HOW}"
        )


def test_freeze_base_false_leaves_the_base_trainable(lora: ModuleType) -> None:
    base = nn.Linear(6, 5)
    layer = lora.LoRALinear(base, r=2, freeze_base=False)
    names = trainable_names(layer)
    assert names == ["base.bias", "base.weight", "lora_A", "lora_B"], (
        f"{STEP_A}: with freeze_base=False the base must stay trainable next to the factors; the "
        f"trainable parameters are {names}. "
        + (
            "Freeze the base only when freeze_base is True."
            if "base.weight" not in names
            else trainable_hint(names).replace(FREEZE_HOW, "").strip()
        )
    )
    layer(torch.randn(3, 6)).sum().backward()
    assert base.weight.grad is not None and base.bias.grad is not None, (
        f"{STEP_C}: with freeze_base=False gradients must reach base.weight and base.bias; they "
        f"did not. Call self.base(x) on the original x, without torch.no_grad() or .detach()."
    )


def test_training_step_changes_only_the_factors(lora: ModuleType) -> None:
    # The freeze must live on the base's parameters: an optimizer built, as usual, from every
    # parameter that requires grad must hold the factors only (with weight decay, it would
    # otherwise shrink the pretrained weights even when no gradient reaches them).
    model = nn.Sequential(
        lora.LoRALinear(nn.Linear(8, 8), r=2), nn.Tanh(), lora.LoRALinear(nn.Linear(8, 3), r=2)
    )
    names = trainable_names(model)
    assert names == ["0.lora_A", "0.lora_B", "2.lora_A", "2.lora_B"], (
        f"{STEP_A}: an optimizer over the parameters of a model that require grad must get only "
        f"the LoRA factors; it gets {names}. "
        + (
            "The base must be frozen on its parameters (requires_grad_(False)), not by "
            "torch.no_grad() or .detach() in forward. "
            if any("base" in n for n in names)
            else ""
        )
        + trainable_hint(names)
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "base" in n}
    factors = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    x, target = torch.randn(16, 8), torch.randn(16, 3)
    lr, weight_decay = 1e-2, 0.1
    for _ in range(3):
        model.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), target).backward()
        # AdamW's update written out: decoupled weight decay, then a step of size lr against
        # the gradient's sign (Adam's step while its moment estimates are young). Not
        # torch.optim.AdamW: its first use imports torch._dynamo, which about doubles the time
        # of every lab00 run (benchmarks/feedback.py).
        with torch.no_grad():
            for p in trainable:
                p.mul_(1.0 - lr * weight_decay)
                if p.grad is not None:
                    p.sub_(lr * torch.sign(p.grad))
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p.detach(), frozen[n]), (
                f"{STEP_A}: three AdamW steps changed the frozen base parameter {n}. {FREEZE_HOW}"
            )
        elif n in factors:
            assert not torch.equal(p.detach(), factors[n]), (
                f"{STEP_C}: three AdamW steps left {n} unchanged: no gradient reaches it. It must "
                f"be an nn.Parameter used directly in forward, and A must start random (with "
                f"A = 0 and B = 0 both gradients are zero)."
            )


# --------------------------------------------------------------------------------------------
# step C: dropout acts on the branch input only, and only in train mode
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.5, 0.9])
def test_dropout_never_touches_the_base_path(lora: ModuleType, p: float) -> None:
    in_f, out_f, r = 16, 8, 4
    base = nn.Linear(in_f, out_f)
    layer = lora.LoRALinear(base, r=r, dropout=p)
    layer.train()
    A, _ = known_factors(r, in_f, out_f)
    set_factors(layer, A, torch.zeros(out_f, r))  # B = 0: the branch adds exactly nothing
    x = torch.randn(32, in_f)
    with torch.no_grad():
        ref = base(x)
        for _ in range(2):
            diff = (layer(x) - ref).abs().max().item()
            assert diff == 0.0, (
                f"{STEP_C}: in train mode with dropout={p} and B = 0 the output must equal "
                f"base(x) exactly; it differs by {diff:.3g}. Dropout acts on the LoRA branch only, "
                f"never on the base path: call self.base(x) on the original x and "
                f"dropout(x) only where it feeds lora_A."
            )


def test_dropout_drops_branch_inputs_and_rescales_the_kept_ones(lora: ModuleType) -> None:
    # Each row of x has a single non-zero feature, so dropout on the branch input either
    # removes that row's update entirely or keeps it, rescaled by 1 / (1 - p) as nn.Dropout does.
    # p = 0.25, not 0.5, so that passing the keep probability (1 - p) instead shows too.
    in_f, out_f, r, p, rows = 6, 5, 3, 0.25, 800
    base = nn.Linear(in_f, out_f)
    layer = lora.LoRALinear(base, r=r, alpha=3.0, dropout=p)  # scaling 1
    layer.train()
    A, B = known_factors(r, in_f, out_f)
    set_factors(layer, A, B)
    x = torch.zeros(rows, in_f)
    x[torch.arange(rows), torch.arange(rows) % in_f] = 1.0 + torch.rand(rows)
    with torch.no_grad():
        delta = layer(x).double() - base64(base, x)  # (rows, out)
    branch = branch64(A, B, x)  # (rows, out), unscaled
    # Each row's update should be c * branch for c = 0 (dropped) or c = scaling / (1 - p) (kept).
    c = (delta * branch).sum(dim=1) / (branch * branch).sum(dim=1)
    residual = (delta - c[:, None] * branch).abs().amax(dim=1)
    is_dropped = delta.abs().amax(dim=1) < TOL
    odd = ((residual >= TOL) & ~is_dropped).nonzero().flatten().tolist()
    assert not odd, (
        f"{STEP_C}: with dropout={p}, for an input row with a single non-zero feature the "
        f"branch must add either 0 (that feature dropped) or scaling * B(A x) / (1 - p) (kept, "
        f"rescaled as nn.Dropout does); {len(odd)} of {rows} rows gave neither (first: row "
        f"{odd[0]}). Apply dropout to the branch input x before lora_A (nn.Dropout(p) or "
        f"F.dropout(x, p, training=self.training)), never on the base path nor on the branch "
        f"output."
    )
    rate = is_dropped.double().mean().item()
    assert abs(rate - p) < 0.1, (  # the std of the rate is about 0.015 here
        f"{STEP_C}: with dropout={p} in train mode about {p:.0%} of the branch inputs must be "
        f"dropped; {rate:.1%} of {rows} were. The dropout argument is the probability of "
        f"dropping (nn.Dropout(p=dropout)), and it must be active in train mode."
    )
    want = 1.0 / (1.0 - p)  # scaling is 1 here
    kept_c = c[~is_dropped]
    if kept_c.numel() and not torch.allclose(kept_c, torch.full_like(kept_c, want), rtol=1e-4):
        got = kept_c.median().item()
        hint = (
            "the kept inputs are not rescaled: divide them by 1 - p, as nn.Dropout does."
            if math.isclose(got, 1.0, rel_tol=1e-3)
            else f"the update itself is scaled by {got * (1 - p):.4g} instead of alpha / r = 1: "
            f"{scale_hint(got * (1 - p), r, 3.0)}"
        )
        pytest.fail(
            f"{STEP_C}: with dropout={p} and alpha / r = 1 the kept rows must add "
            f"B(A x) / (1 - p) = {want:.4g} * B(A x); they add {got:.4g} * B(A x): {hint}",
            pytrace=False,
        )


def test_dropout_is_active_in_train_mode(lora: ModuleType) -> None:
    in_f, out_f, r = 16, 8, 4
    layer = lora.LoRALinear(nn.Linear(in_f, out_f), r=r, dropout=0.5)
    layer.train()
    set_factors(layer, *known_factors(r, in_f, out_f))
    x = torch.randn(32, in_f)
    with torch.no_grad():
        first, second = layer(x), layer(x)
    assert not torch.equal(first, second), (
        f"{STEP_C}: in train mode with dropout=0.5 (and B non-zero) two calls on the same x must "
        f"differ, because dropout draws a new mask each time; they were identical. The dropout "
        f"argument has no effect: apply it to the branch input (nn.Dropout(p=dropout), or "
        f"F.dropout(x, dropout, training=self.training))."
    )


@pytest.mark.parametrize("p", [0.5, 0.9])
def test_dropout_is_off_in_eval_mode(lora: ModuleType, p: float) -> None:
    in_f, out_f, r = 16, 8, 4
    base = nn.Linear(in_f, out_f)
    layer = lora.LoRALinear(base, r=r, alpha=8.0, dropout=p)
    layer.eval()
    A, B = known_factors(r, in_f, out_f)
    set_factors(layer, A, B)
    x = torch.randn(32, in_f)
    with torch.no_grad():
        first, second = layer(x), layer(x)
    diff = (first.double() - expected64(base, A, B, x, 8.0 / r)).abs().max().item()
    scale, residual = fit_scale(first, base, A, B, x)
    if torch.equal(first, second) and residual < TOL and diff >= TOL:
        pytest.fail(
            f"{STEP_C}: dropout is off in eval mode, as it should be, but the update is scaled by "
            f"{scale:.4g} instead of alpha / r = {8.0 / r:g}: {scale_hint(scale, r, 8.0)}",
            pytrace=False,
        )
    assert diff < TOL and torch.equal(first, second), (
        f"{STEP_C}: in eval mode dropout must be off: with dropout={p} after layer.eval() the "
        f"output must equal base(x) + scaling * B(A x) within {TOL:g} (max abs diff: {diff:.3g}) "
        f"and two calls must agree (they {'agree' if torch.equal(first, second) else 'differ'}). "
        f"A hand-written dropout, or F.dropout(x, p) without training=self.training, keeps "
        f"dropping in eval mode; use nn.Dropout or F.dropout(x, p, training=self.training)."
    )


# --------------------------------------------------------------------------------------------
# step C: the branch goes down to r first
# --------------------------------------------------------------------------------------------


class LargestTensor(TorchFunctionMode):
    """Inside the block, records the largest tensor a torch function returns (views of the
    ``exclude`` tensors aside: ``weight.T`` is no new tensor).

    A TorchFunctionMode, not ``torch.utils.flop_counter.FlopCounterMode``: that one imports
    torch._dynamo on first use, which takes about as long as ``import torch`` itself and would
    do so on every lab00 run (benchmarks/feedback.py).
    """

    def __init__(self, exclude: list[Tensor]) -> None:
        super().__init__()
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.numel, self.shape, self.made_by = 0, (), ""

    def __torch_function__(
        self, func: Any, types: Any, args: Any = (), kwargs: Any = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))  # this mode is off while its handler runs
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if (
                isinstance(t, Tensor)
                and t.numel() > self.numel
                and t.untyped_storage().data_ptr() not in self.exclude
            ):
                self.numel, self.shape = t.numel(), tuple(t.shape)
                self.made_by = getattr(func, "__name__", str(func))
        return out


def test_branch_goes_down_to_r_before_going_up(lora: ModuleType) -> None:
    in_f = out_f = 256
    r, tokens = 4, 8
    layer = lora.LoRALinear(nn.Linear(in_f, out_f), r=r)
    x = torch.randn(tokens, in_f)
    with torch.no_grad(), LargestTensor([x, *layer.parameters()]) as seen:
        layer(x)
    # Down to r first, the largest tensor a forward makes is (tokens, out); forming B @ A
    # makes an (out, in) one, as large as the weight, and costs 2 r in out FLOPs on its own.
    assert seen.numel < in_f * out_f, (
        f"{STEP_C}: a forward of LoRALinear(nn.Linear({in_f}, {out_f}), r={r}) on {tokens} tokens "
        f"made a tensor of shape {seen.shape} (by {seen.made_by}), as large as the "
        f"({out_f}, {in_f}) weight, where ({tokens}, {out_f}) is the largest it needs. The branch "
        f"forms the full (out, in) product B @ A ({2 * r * in_f * out_f} FLOPs on its own, beyond "
        f"the {2 * tokens * r * (in_f + out_f)} of the branch): multiply x by A first (down to r), "
        f"then by B, as in F.linear(F.linear(x, lora_A), lora_B)."
    )


# --------------------------------------------------------------------------------------------
# step A: bad arguments are refused with a message that names them
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [0, -1, 2.0], ids=repr)
def test_rejects_a_rank_that_is_not_a_positive_int(lora: ModuleType, r: object) -> None:
    expect_error(
        lambda: lora.LoRALinear(nn.Linear(6, 5), r=r),
        ValueError,
        call=f"LoRALinear(base, r={r!r})",
        argument="r",
        argument_pattern=r"(?<![A-Za-z0-9_])r(?![A-Za-z0-9_])",
        value_text=repr(r),
        value_ok=lambda message: mentions_value(message, r),
        why="a positive int",
    )


@pytest.mark.parametrize("dropout", [1.0, -0.1, 1.5], ids=repr)
def test_rejects_a_dropout_outside_0_to_1(lora: ModuleType, dropout: float) -> None:
    expect_error(
        lambda: lora.LoRALinear(nn.Linear(6, 5), r=2, dropout=dropout),
        ValueError,
        call=f"LoRALinear(base, dropout={dropout!r})",
        argument="dropout",
        argument_pattern=r"(?i)dropout",
        value_text=repr(dropout),
        value_ok=lambda message: mentions_value(message, dropout),
        why="a probability in [0, 1)",
    )


NOT_LINEAR: list[Any] = [
    pytest.param(lambda: nn.Conv1d(6, 5, kernel_size=1), id="Conv1d"),
    pytest.param(lambda: nn.Module(), id="Module"),
    pytest.param(lambda: nn.Sequential(nn.Linear(6, 5)), id="Sequential"),
]


@pytest.mark.parametrize("make_base", NOT_LINEAR)
def test_rejects_a_base_that_is_not_linear(
    lora: ModuleType, make_base: Callable[[], nn.Module]
) -> None:
    base = make_base()
    kind = type(base).__name__
    expect_error(
        lambda: lora.LoRALinear(base),
        TypeError,
        call=f"LoRALinear({kind}(...))",
        argument="base",
        argument_pattern=r"base",
        value_text=kind,
        value_ok=lambda message: kind in message,
        why="an nn.Linear",
    )


class _MyLinear(nn.Linear):
    """A subclass of nn.Linear is an nn.Linear (nn.MultiheadAttention's out_proj is one)."""


def test_accepts_a_subclass_of_linear(lora: ModuleType) -> None:
    base = _MyLinear(6, 5)
    try:
        layer = lora.LoRALinear(base, r=2)
    except TypeError as exc:
        pytest.fail(
            f"{STEP_A}: a subclass of nn.Linear is an nn.Linear and must be accepted; got "
            f"TypeError: {exc}. Check isinstance(base, nn.Linear), not type(base) is nn.Linear.",
            pytrace=False,
        )
    x = torch.randn(3, 6)
    with torch.no_grad():
        diff = (layer(x) - base(x)).abs().max().item()
    assert diff == 0.0, f"{STEP_B}: at init the output must equal base(x) exactly; got {diff:.3g}."
