"""Time one LoRA layer against its FLOP bound, the frozen base, full fine-tuning and peft.

For each shape (in -> out features), number of tokens and rank r, every contestant runs side by
side (interleaved repeats) on the same input:

- the frozen base ``nn.Linear`` (the unit every ratio is given in: its forward time);
- full fine-tuning: the same ``nn.Linear`` with its weight and bias trainable;
- the reference ``LoRALinear`` (solutions/minituner/lora.py);
- the learner's ``LoRALinear`` (src/minituner/lora.py), once it passes a quick identity check;
- peft's LoRA layer (``peft.tuners.lora.Linear``), when peft is installed.

Inference is a forward under ``torch.no_grad()``. A training step is a forward and a backward with
the input requiring grad, as for a layer inside a network (the optimizer step is left out: its
cost grows with the trainable parameters, not the tokens; ``benchmarks/memory.py`` counts its
bytes). The FLOP bound beside each ratio is in units of the base forward, ``2 T d_in d_out``
FLOPs, with rho = r (d_in + d_out) / (d_in d_out):

    inference   base 1            LoRA 1 + rho
    training    frozen base 2     full fine-tuning 3     LoRA 2 + 3 rho

(the base's backward computes only the input's gradient; LoRA's branch costs rho forward and
2 rho backward: the gradients of B, of the rank-r activations, of A and of the input).

    python benchmarks/lora_layer.py [--quick] [--repeats N] [--threads N]
    python benchmarks/lora_layer.py --profile 1024x1024 --tokens 2048 --r 8
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

# MiniGPT's own shapes (n_embd 64: q/k/v/o are 64 -> 64, fc1 is 64 -> 256) and two of a
# 7B-class model's (a 1024 -> 1024 projection and a 4096 -> 1024 MLP down-projection).
SHAPES: tuple[tuple[int, int], ...] = ((64, 64), (64, 256), (1024, 1024), (4096, 1024))
RANKS: tuple[int, ...] = (1, 8, 64)
TOKENS: tuple[int, ...] = (64, 2048)


NOTE = """
The reference computes what peft computes, operator for operator (`base(x) + scaling *
B(A x)`: one addmm for the base, two rank-r GEMMs, one multiply and one add forward; the same
backward), so their ratio is 1 within the harness's resolution. What differences remain at 2048
tokens come from the CPU allocator, not the code: with glibc's default settings, the large
buffers a step frees go back to the kernel and are faulted in again on the next step (thousands
of minor page faults per step, falling on whichever layer happens to free last: the page-faults
column), which is why this benchmark runs with fixed malloc thresholds (header). Both layers stay
above the FLOP bound where the bound counts FLOPs that are cheap and misses what is not: the
rank-r GEMMs read a whole (tokens, in) or (tokens, out) activation for r multiply-adds per
element, so they run memory-bound, several times slower per FLOP than the base's GEMMs; the
multiply by `scaling` and the add each make a pass over a (tokens, out) tensor that the bound
does not count; at MiniGPT's widths (64, 256) every operator's fixed cost (dispatch, autograd
bookkeeping: a few microseconds) outweighs its arithmetic, so no layer of that size gets near its
bound. The cheapest further step keeps the formula whole: multiply the rank-r activations by
`scaling` instead of the (tokens, out) output (`F.linear(scaling * F.linear(x, A), B)`, the
same product by linearity), which turns the two full-size multiplies (forward and backward) into
rank-r ones; the `scaling at r (sketch)` row measures it in this run. The reference keeps
`scaling * B(A x)`, as the lab 00 brief, DESIGN.md and peft write it.
"""


def rho(d_in: int, d_out: int, r: int) -> float:
    return r * (d_in + d_out) / (d_in * d_out)


def bound_inference(d_in: int, d_out: int, r: int) -> float:
    return 1.0 + rho(d_in, d_out, r)


def bound_training(d_in: int, d_out: int, r: int) -> float:
    return 2.0 + 3.0 * rho(d_in, d_out, r)


@dataclass
class Row:
    d_in: int
    d_out: int
    tokens: int
    r: int
    base_fwd: C.Timing
    inference: dict[str, C.Timing]
    training: dict[str, C.Timing]


def peft_layer(base: nn.Linear, r: int, alpha: float) -> nn.Module:
    """peft's LoRA layer around ``base``, made as practitioners make it (``get_peft_model``)."""
    from peft import LoraConfig, get_peft_model

    class Holder(nn.Module):
        def __init__(self, layer: nn.Linear) -> None:
            super().__init__()
            self.layer = layer

    config = LoraConfig(r=r, lora_alpha=int(alpha), target_modules=["layer"])
    return get_peft_model(Holder(base), config).get_submodule("base_model.model.layer")


def contestants(
    d_in: int, d_out: int, r: int, device: torch.device, learner: object | None, with_peft: bool
) -> dict[str, nn.Module]:
    """The layers to race, all on the same base weights and the same (non-zero) factors."""
    from minituner.lora import LoRALinear

    alpha = 2.0 * r
    torch.manual_seed(0)
    template = nn.Linear(d_in, d_out, device=device)

    def base_copy(trainable: bool) -> nn.Linear:
        layer = nn.Linear(d_in, d_out, device=device)
        layer.load_state_dict(template.state_dict())
        layer.requires_grad_(trainable)
        return layer

    reference = LoRALinear(base_copy(False), r=r, alpha=alpha)
    with torch.no_grad():
        reference.lora_B.normal_(0.0, 0.02)  # a live branch, as after some training
    layers: dict[str, nn.Module] = {
        "frozen base": base_copy(False),
        "full FT": base_copy(True),
        "reference": reference,
    }
    if learner is not None:
        mine = learner.LoRALinear(base_copy(False), r=r, alpha=alpha)  # type: ignore[attr-defined]
        with torch.no_grad():
            mine.lora_A.copy_(reference.lora_A)
            mine.lora_B.copy_(reference.lora_B)
        layers["learner"] = mine
    if with_peft:
        theirs = peft_layer(base_copy(False), r, alpha)
        with torch.no_grad():
            theirs.get_parameter("lora_A.default.weight").copy_(reference.lora_A)
            theirs.get_parameter("lora_B.default.weight").copy_(reference.lora_B)
        layers["peft"] = theirs
    return layers


def inference_fn(layer: nn.Module, x: Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return layer(x)

    return run


def training_fn(layer: nn.Module, x: Tensor, grad_out: Tensor) -> Callable[[], object]:
    params = [p for p in layer.parameters() if p.requires_grad]

    def run() -> object:
        torch.autograd.backward(layer(x), grad_out)
        x.grad = None
        for p in params:
            p.grad = None
        return None

    return run


def measure(
    d_in: int, d_out: int, tokens: int, r: int, *, device: torch.device, repeats: int,
    learner: object | None, with_peft: bool,
) -> Row:
    layers = contestants(d_in, d_out, r, device, learner, with_peft)
    x = torch.randn(1, tokens, d_in, device=device, requires_grad=True)
    grad_out = torch.randn(1, tokens, d_out, device=device)
    infer = {name: inference_fn(layer, x) for name, layer in layers.items() if name != "full FT"}
    train = {name: training_fn(layer, x, grad_out) for name, layer in layers.items()}
    both: dict[str, Callable[[], object]] = {f"i:{k}": v for k, v in infer.items()}
    both.update({f"t:{k}": v for k, v in train.items()})
    times = C.time_interleaved(both, repeats=repeats, device=device, budget_s=2.0)
    return Row(
        d_in, d_out, tokens, r, times["i:frozen base"],
        {k[2:]: v for k, v in times.items() if k.startswith("i:")},
        {k[2:]: v for k, v in times.items() if k.startswith("t:")},
    )


def _cell(t: C.Timing | None, unit: C.Timing) -> str:
    if t is None:
        return "-"
    ratio = C.paired_ratio(t, unit)
    return f"{ratio.median:.2f} ±{ratio.spread * 100:.0f}%"


def render(rows: list[Row], names: list[str], device: torch.device) -> str:
    lora_names = [n for n in ("reference", "learner", "peft") if n in names]
    headers = ["in→out", "tokens", "r", "base fwd", "inf bound"]
    headers += [f"inf {n}" for n in lora_names]
    headers += ["train bound", "train frozen (2)", "train full FT (3)"]
    headers += [f"train {n}" for n in lora_names]
    if "peft" in names:
        headers += ["ref/peft inf", "ref/peft train"]
    table: list[list[object]] = []
    for row in rows:
        unit = row.base_fwd
        cells: list[object] = [
            f"{row.d_in}→{row.d_out}", row.tokens, row.r, C.fmt_seconds(unit.median),
            f"{bound_inference(row.d_in, row.d_out, row.r):.3f}",
        ]
        cells += [_cell(row.inference.get(n), unit) for n in lora_names]
        cells += [f"{bound_training(row.d_in, row.d_out, row.r):.3f}"]
        cells += [_cell(row.training.get("frozen base"), unit), _cell(row.training.get("full FT"), unit)]
        cells += [_cell(row.training.get(n), unit) for n in lora_names]
        if "peft" in names:
            cells += [
                _cell(row.inference["reference"], row.inference["peft"]),
                _cell(row.training["reference"], row.training["peft"]),
            ]
        table.append(cells)
    return f"### {device.type.upper()}\n\n" + C.markdown_table(headers, table)


def recheck(row: Row, times: int = 3) -> list[float]:
    """The reference/peft training ratio of ``row`` measured again, ``times`` times, each with
    freshly built layers: a reading that comes from where one set of tensors happens to lie in
    memory does not come back; a real difference does."""
    medians = []
    for _ in range(times):
        layers = contestants(row.d_in, row.d_out, row.r, torch.device("cpu"), None, True)
        x = torch.randn(1, row.tokens, row.d_in, requires_grad=True)
        grad_out = torch.randn(1, row.tokens, row.d_out)
        timing = C.time_interleaved(
            {name: training_fn(layers[name], x, grad_out) for name in ("reference", "peft")},
            repeats=7, budget_s=1.0,
        )
        medians.append(C.paired_ratio(timing["reference"], timing["peft"]).median)
    return medians


def verdict(rows: list[Row], margin: float = 0.03) -> str:
    """Whether the reference's training step is slower than peft's anywhere.

    A shape is suspect when the whole 95 % confidence interval of its median ratio (order
    statistics of the per-repeat ratios) lies above ``1 + margin``, the harness's resolution
    (see :func:`null_comparison`). A suspect shape is measured again three times with fresh
    layers (:func:`recheck`); it counts as slower only when the median of those readings is
    above ``1 + margin`` too.
    """
    if not rows or "peft" not in rows[0].training:
        return "peft not measured: " + C.peft_missing_reason() + "."
    slower: list[str] = []
    cleared: list[str] = []
    medians = []
    for row in rows:
        ratio = C.paired_ratio(row.training["reference"], row.training["peft"])
        low, high = C.median_ci(ratio.samples)
        medians.append(ratio.median)
        if low <= 1.0 + margin:
            continue
        again = recheck(row)
        text = (
            f"{row.d_in}→{row.d_out}, {row.tokens} tokens, r={row.r}: first {ratio.median:.2f}x "
            f"(95% interval {low:.2f}–{high:.2f}), then with fresh layers "
            + ", ".join(f"{m:.2f}x" for m in again)
        )
        (slower if statistics.median(again) > 1.0 + margin else cleared).append(text)
    span = f"the median ratio ranges over {min(medians):.2f}–{max(medians):.2f}"
    lines = []
    if not slower:
        lines.append(
            "The reference's training step is no slower than peft's at any shape measured "
            f"(beyond {1 + margin:.2f}, the harness's resolution; {span})."
        )
    else:
        lines.append(
            f"The reference's training step is slower than peft's (beyond {1 + margin:.2f}) at: "
            + "; ".join(slower) + f" ({span})."
        )
    if cleared:
        lines.append(
            "Read as slower at first, then not when measured again with fresh layers (where "
            "the tensors lie in memory, not the code): " + "; ".join(cleared) + "."
        )
    return " ".join(lines)


class ScaledAtR(nn.Module):
    """The reference's layer with ``scaling`` applied to the rank-r activations: the same
    product, ``B (scaling * A x)``; a sketch for the note below, not the course's code."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        layer: Any = self.layer
        down = F.linear(layer.lora_dropout(x), layer.lora_A)  # (..., r)
        out: Tensor = layer.base(x) + F.linear(layer.scaling * down, layer.lora_B)
        return out


GEMMS = ("aten::mm", "aten::addmm", "aten::bmm")
ELEMENTWISE = ("aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::copy_", "aten::fill_",
               "aten::zero_", "aten::div", "aten::sub")


def breakdown(d_in: int, d_out: int, tokens: int, r: int, with_peft: bool, steps: int = 5) -> str:
    """Where a training step's time goes, by torch.profiler: the base's GEMMs, the rank-r GEMMs
    of the branch, elementwise passes, and the rest (autograd, views, dispatch), per step, as
    ratios to the base forward. Set beside each part's share of the FLOP bound."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    device = torch.device("cpu")
    layers = contestants(d_in, d_out, r, device, None, with_peft)
    x = torch.randn(1, tokens, d_in, requires_grad=True)
    grad_out = torch.randn(1, tokens, d_out)
    unit = C.time_interleaved({"base": inference_fn(layers["frozen base"], x)}, repeats=5)["base"].median
    layers["scaling at r (sketch)"] = ScaledAtR(layers["reference"])
    rows: list[list[object]] = []
    for name in ("reference", "peft", "scaling at r (sketch)"):
        if name not in layers:
            continue
        step = training_fn(layers[name], x, grad_out)
        for _ in range(2):
            step()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(steps):
            step()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(steps):
                step()
        parts = {"base GEMMs": 0.0, "rank-r GEMMs": 0.0, "elementwise": 0.0, "the rest": 0.0}
        for e in prof.key_averages(group_by_input_shape=True):
            us = float(e.self_cpu_time_total)
            if e.key in GEMMS:
                dims = [d for shape in e.input_shapes[:3] for d in shape[-2:]]
                parts["rank-r GEMMs" if r in dims else "base GEMMs"] += us
            elif e.key in ELEMENTWISE:
                parts["elementwise"] += us
            else:
                parts["the rest"] += us
        total = sum(parts.values())
        rows.append([name, *(f"{v / steps / 1e6 / unit:.2f}" for v in parts.values()),
                     f"{total / steps / 1e6 / unit:.2f}", f"{faults / steps:.0f}"])
    p = rho(d_in, d_out, r)
    rows.append(["FLOP bound", "2.00", f"{3 * p:.3f}", "0", "0", f"{2 + 3 * p:.3f}", "-"])
    headers = ["training step", "base GEMMs", "rank-r GEMMs", "elementwise", "the rest", "total",
               "page faults / step"]
    return (
        f"### Where the time goes: {d_in}→{d_out}, {tokens} tokens, r={r} (torch.profiler, "
        f"self CPU time per step, in base forwards of {C.fmt_seconds(unit)})\n\n"
        + C.markdown_table(headers, rows)
    )


def null_comparison(d_in: int, d_out: int, tokens: int, r: int, repeats: int = 15) -> C.Timing:
    """The reference's training step against an identical copy of itself: what this harness
    reads as a difference when there is none (memory placement, allocator state)."""
    import copy

    layers = contestants(d_in, d_out, r, torch.device("cpu"), None, False)
    twin = copy.deepcopy(layers["reference"])
    x = torch.randn(1, tokens, d_in, requires_grad=True)
    grad_out = torch.randn(1, tokens, d_out)
    times = C.time_interleaved(
        {"a": training_fn(layers["reference"], x, grad_out), "b": training_fn(twin, x, grad_out)},
        repeats=repeats,
    )
    return C.paired_ratio(times["a"], times["b"])


def profile(spec: str, tokens: int, r: int, with_peft: bool) -> None:
    """Print torch.profiler's operator table for the reference's (and peft's) training step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    d_in, d_out = (int(v) for v in spec.lower().split("x"))
    device = torch.device("cpu")
    layers = contestants(d_in, d_out, r, device, None, with_peft)
    x = torch.randn(1, tokens, d_in, requires_grad=True)
    grad_out = torch.randn(1, tokens, d_out)
    for name in ("reference", "peft"):
        if name not in layers:
            continue
        step = training_fn(layers[name], x, grad_out)
        for _ in range(3):
            step()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                step()
        print(f"\n## {name}: {d_in}->{d_out}, {tokens} tokens, r={r}, 10 training steps")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="MiniGPT's shapes and 64 tokens only")
    parser.add_argument("--profile", metavar="INxOUT", help="profile one shape instead of timing")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--r", type=int, default=8)
    args = parser.parse_args(argv)
    C.ensure_malloc_env()

    threads = C.pin_threads(args.threads or None)
    C.use_reference()
    with_peft = C.peft_version() is not None
    warnings.filterwarnings("ignore", module="peft")  # nothing here is about the adapters' content
    if args.profile:
        profile(args.profile, args.tokens, args.r, with_peft)
        return 0
    learner, learner_note = C.learner_lora()

    shapes = SHAPES[:2] if args.quick else SHAPES
    tokens_list = TOKENS[:1] if args.quick else TOKENS
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    names = ["frozen base", "full FT", "reference"]
    names += ["learner"] if learner is not None else []
    names += ["peft"] if with_peft else []

    print("## One LoRA layer: time against the FLOP bound (`benchmarks/lora_layer.py`)\n")
    print("\n".join(C.header_lines(threads)))
    print(
        "\nEvery time is a ratio to the frozen base's forward on the same input (`base fwd`: its "
        "median time per call). The contestants run side by side, in turn, in each repeat; a "
        "ratio is taken within each repeat, and the table gives the median over the repeats, "
        "`±` the interquartile range of the ratios as a share of that median. `ref/peft` is the "
        "reference's time over peft's, likewise. `inf` = a forward under no_grad; `train` = "
        "forward + backward with the input requiring grad (the optimizer step left out). Bounds "
        "in the same unit: inference 1 + rho, training 2 + 3 rho, with rho = r (d_in + d_out) / "
        "(d_in d_out); frozen base training 2, full fine-tuning 3. "
        f"At least {args.repeats} repeats (up to 41 while a case takes under 2 s). "
        f"Learner: {learner_note}. peft: {C.peft_version() or C.peft_missing_reason()}.\n"
    )
    for device in devices:
        rows: list[Row] = []
        for d_in, d_out in shapes:
            for tokens in tokens_list:
                for r in RANKS:
                    row = measure(
                        d_in, d_out, tokens, r, device=device, repeats=args.repeats,
                        learner=learner, with_peft=with_peft,
                    )
                    rows.append(row)
                    print(f"  measured {device.type} {d_in}->{d_out} T={tokens} r={r}",
                          file=sys.stderr, flush=True)
        print(render(rows, names, device))
        if device.type == "cpu" and not args.quick:
            null = null_comparison(1024, 1024, 2048, 8)
            low, high = C.median_ci(null.samples)
            margin = max(0.03, abs(null.median - 1.0))
            print(
                f"\nThe harness's resolution: the reference against an identical copy of itself "
                f"(1024→1024, 2048 tokens, r=8, {len(null.samples)} repeats) reads "
                f"{null.median:.3f} (95% interval {low:.3f}–{high:.3f}); a ratio counts as slower "
                f"only beyond {1 + margin:.2f}."
            )
            print(f"\n{verdict(rows, margin)}\n")
            print(breakdown(1024, 1024, 2048, 8, with_peft))
            print(NOTE)
        else:
            print(f"\n{verdict(rows)}\n")
    if len(devices) == 1:
        print("CUDA: skipped (torch.cuda.is_available() is False on this machine).\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
