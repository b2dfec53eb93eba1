"""Inference time of a base model, its unmerged LoRA version and its merged version (lab 04).

    python benchmarks/merge_latency.py                  your code if it works, else the reference
    python benchmarks/merge_latency.py --impl reference the reference solutions
    python benchmarks/merge_latency.py --threads 4      pin another thread count

Two workloads: the default MiniGPT with LoRA (r = 8, alpha = 16) on every projection of every
block (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``fc1``, ``fc2``), and one
``nn.Linear(1024, 1024)`` with LoRA at r = 8. Each is timed in eval mode under
``torch.no_grad()``, three ways: the base alone, the unmerged LoRA model (base + branch), and the
model after ``merge_and_unload``. Rounds interleave the three variants (in a rotating order), and
each ratio is taken within a round, so a machine that slows down mid-run shifts all three alike.
The table gives the median time per call and, for each ratio to the base, the median over the
rounds and its spread (the 10th to 90th percentile of the per-round ratios).

A second table measures the merge's precision: merged against unmerged outputs, in float32 and
in bfloat16 (the numbers that ``labs/04-merge-for-inference.md`` and
``tests/test_lab04_merge.py`` quote).

Timings depend on the machine: compare ratios, never absolute times, across machines.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")
R, ALPHA = 8, 16.0


def choose_code(impl: str) -> tuple[ModuleType, str]:
    """``minituner.lora`` from the learner's code or the reference, and a line saying which."""
    from labkit import overlay
    from labkit.manifest import load_course

    course = load_course(ROOT)
    if impl == "auto":
        overlay.activate(course, overlay.resolve(course, overlay.LEARNER))
        import minituner.lora as lora

        try:
            layer = lora.LoRALinear(nn.Linear(3, 2), r=1)
            lora.merge_and_unload(nn.Sequential(layer))
            return lora, "your code (src/minituner/lora.py)"
        except NotImplementedError as exc:
            note = f"the reference solutions: your code is not finished ({exc})"
        impl = "reference"
    else:
        note = "the reference solutions" if impl == "reference" else "your code"
    chosen = overlay.resolve(course, impl if impl == "reference" else overlay.LEARNER)
    overlay.activate(course, chosen)  # kept active until the process ends
    import minituner.lora as lora

    return lora, note


def wrap(lora: ModuleType, model: nn.Module, targets: tuple[str, ...]) -> nn.Module:
    """Replace each targeted nn.Linear by a LoRALinear with a non-zero (trained-looking) B."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.rpartition(".")[2] in targets:
            layer = lora.LoRALinear(module, r=R, alpha=ALPHA)
            with torch.no_grad():
                layer.lora_B.normal_(0.0, 0.02)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer)
    return model


def variants(
    lora: ModuleType, base: nn.Module, targets: tuple[str, ...]
) -> dict[str, nn.Module]:
    """The base, its unmerged LoRA version and the merged one, each in eval mode."""
    if isinstance(base, nn.Linear):
        unmerged: nn.Module = lora.LoRALinear(copy.deepcopy(base), r=R, alpha=ALPHA)
        with torch.no_grad():
            unmerged.lora_B.normal_(0.0, 0.02)
    else:
        unmerged = wrap(lora, copy.deepcopy(base), targets)
    merged = lora.merge_and_unload(copy.deepcopy(unmerged))
    return {"base": base.eval(), "unmerged LoRA": unmerged.eval(), "merged": merged.eval()}


def calls_for(fn: Callable[[], object], budget_s: float) -> int:
    """How many calls of ``fn`` take about ``budget_s`` seconds."""
    fn()
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < budget_s / 4:
        fn()
        n += 1
    return max(1, 4 * n)


def time_round(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def bench(models: dict[str, nn.Module], x: Tensor, rounds: int, budget_s: float) -> list[str]:
    """Table rows for one workload: time per call and the ratio to the base per variant."""
    fns = {name: (lambda m=m: m(x)) for name, m in models.items()}
    with torch.no_grad():
        calls = calls_for(fns["base"], budget_s)
        times: dict[str, list[float]] = {name: [] for name in fns}
        names = list(fns)
        for i in range(rounds):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                times[name].append(time_round(fns[name], calls))
    rows = []
    for name in names:
        ratios = [t / b for t, b in zip(times[name], times["base"], strict=True)]
        rows.append(
            f"  {name:<15} {1e3 * statistics.median(times[name]):>10.3f} ms"
            f"   {statistics.median(ratios):>6.3f}   [{percentile(ratios, 0.1):.3f}, "
            f"{percentile(ratios, 0.9):.3f}]"
        )
    return rows


def precision(lora: ModuleType, minigpt: ModuleType) -> list[str]:
    """Merged against unmerged outputs: max abs diff, and relative to the largest output."""
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        layer = nn.Linear(1024, 1024).to(dtype)
        model = variants(lora, layer, TARGETS)
        x = torch.randn(256, 1024, dtype=dtype)
        with torch.no_grad():
            want, got = model["unmerged LoRA"](x).double(), model["merged"](x).double()
        diff = (got - want).abs().max().item()
        rows.append(
            f"  Linear(1024, 1024)  {str(dtype):<15} {diff:>10.3g}   {diff / want.abs().max().item():>10.3g}"
        )
        torch.manual_seed(0)
        gpt = minigpt.build_minigpt(seed=0).to(dtype)
        model = variants(lora, gpt, TARGETS)
        idx = torch.randint(0, gpt.config.vocab_size, (8, 64))
        with torch.no_grad():
            want, got = model["unmerged LoRA"](idx).double(), model["merged"](idx).double()
        diff = (got - want).abs().max().item()
        rows.append(
            f"  MiniGPT logits      {str(dtype):<15} {diff:>10.3g}   {diff / want.abs().max().item():>10.3g}"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=["auto", "learner", "reference"], default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per workload")
    parser.add_argument("--budget", type=float, default=0.05, help="seconds per timing")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    lora, note = choose_code(args.impl)
    import minituner.minigpt as minigpt

    print("merge latency: base vs unmerged LoRA vs merged (eval mode, torch.no_grad)")
    print(f"  code:     {note}")
    print(
        f"  machine:  {platform.machine()} {platform.processor() or ''}".rstrip()
        + f", {platform.system()} {platform.release()}"
    )
    print(
        f"  versions: Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s) pinned"
    )
    print(f"  LoRA:     r = {R}, alpha = {ALPHA:g}; {args.rounds} interleaved rounds")
    print()

    torch.manual_seed(0)
    gpt = minigpt.build_minigpt(seed=0)
    idx = torch.randint(0, gpt.config.vocab_size, (8, 64))
    workloads = [
        (
            f"MiniGPT (default config, LoRA on {', '.join(TARGETS)}), batch 8 x 64 tokens",
            variants(lora, gpt, TARGETS),
            idx,
        ),
        (
            "nn.Linear(1024, 1024), 256 tokens",
            variants(lora, nn.Linear(1024, 1024), TARGETS),
            torch.randn(256, 1024),
        ),
    ]
    header = f"  {'variant':<15} {'median/call':>13}   {'ratio':>6}   [p10, p90] of the ratio"
    for title, models, x in workloads:
        print(title)
        print(header)
        for row in bench(models, x, args.rounds, args.budget):
            print(row)
        print()

    print("merge precision: merged vs unmerged outputs (same inputs)")
    print(f"  {'workload':<19} {'dtype':<15} {'max |diff|':>10}   {'/ max |y|':>10}")
    for row in precision(lora, minigpt):
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
