"""Memory of training with LoRA against full fine-tuning, measured and set against lab 01.

Two tables:

1. Gradient and AdamW-state bytes, summed over the real tensors after one training step (every
   ``p.grad``; every tensor in ``optimizer.state``), beside lab 01's closed forms
   (``counting.adamw_training_bytes`` of ``counting.minigpt_lora_count`` or of the whole model).
   torch's AdamW also keeps one ``step`` counter per parameter tensor: a scalar float32, counted
   apart (the closed form leaves it out; it is 4 bytes per tensor, not per parameter).
2. The peak memory of one training step (forward, backward, AdamW step), in steady state (the
   optimizer states already exist, as on every step but the first). On CUDA: the caching
   allocator's own counters (``torch.cuda.max_memory_allocated``). On CPU, where torch keeps no
   such counter: the live bytes before the step (every parameter, buffer, optimizer state and
   input, summed from the tensors) plus the highest running sum of the CPU allocator's
   allocations and frees that ``torch.profiler`` records during the step (``profile_memory``).

    python benchmarks/memory.py [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TARGETS: tuple[str, ...] = ("q_proj", "v_proj")  # lab 02's default targets
R = 8


@dataclass(frozen=True)
class Setup:
    label: str
    n_embd: int
    n_layer: int
    n_head: int
    block_size: int
    batch: int


SETUPS: tuple[Setup, ...] = (
    Setup("MiniGPT (defaults)", 64, 4, 4, 64, 8),
    Setup("MiniGPT, C=384, 6 blocks", 384, 6, 6, 128, 4),
)


def build(setup: Setup, lora: bool, device: torch.device) -> tuple[nn.Module, object]:
    from minituner.lora import wrap_minigpt_with_lora
    from minituner.minigpt import MiniGPTConfig, build_minigpt

    config = MiniGPTConfig(
        n_embd=setup.n_embd, n_layer=setup.n_layer, n_head=setup.n_head,
        block_size=setup.block_size,
    )
    model = build_minigpt(config, seed=0)
    if lora:
        wrap_minigpt_with_lora(model, r=R, alpha=2.0 * R, target_modules=TARGETS, dropout=0.0)
    return model.to(device).train(), config


def batch(setup: Setup, device: torch.device) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 128, (setup.batch, setup.block_size), generator=g)
    targets = torch.randint(0, 128, (setup.batch, setup.block_size), generator=g)
    return idx.to(device), targets.to(device)


def step(model: nn.Module, optimizer: torch.optim.Optimizer, idx: Tensor, targets: Tensor) -> None:
    from minituner.minigpt import lm_loss

    torch.autograd.backward(lm_loss(model(idx), targets))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def state_bytes(optimizer: torch.optim.Optimizer) -> tuple[int, int]:
    """(bytes of exp_avg and exp_avg_sq, bytes of the step counters) in ``optimizer.state``."""
    moments = counters = 0
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, Tensor):
                if key == "step":
                    counters += value.nbytes
                else:
                    moments += value.nbytes
    return moments, counters


def live_bytes(model: nn.Module, optimizer: torch.optim.Optimizer, *tensors: Tensor) -> int:
    total = sum(p.nbytes for p in model.parameters()) + sum(b.nbytes for b in model.buffers())
    total += sum(t.nbytes for t in tensors)
    for state in optimizer.state.values():
        total += sum(v.nbytes for v in state.values() if isinstance(v, Tensor))
    return total


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """The profiler writes start/stop lines to file descriptor 2; keep the table clean."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def cpu_peak_above_start(run: object) -> int:
    """The highest running sum of CPU allocations minus frees recorded while ``run()`` runs."""
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()  # type: ignore[operator]
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events = [e for e in events if str(e.device_type()).endswith("CPU")]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def gradient_table() -> str:
    from minituner.counting import adamw_training_bytes, count_parameters, minigpt_lora_count

    rows: list[list[object]] = []
    device = torch.device("cpu")
    for setup in SETUPS:
        for lora in (False, True):
            model, config = build(setup, lora, device)
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=1e-3)
            idx, targets = batch(setup, device)
            from minituner.minigpt import lm_loss

            torch.autograd.backward(lm_loss(model(idx), targets))
            grads = sum(p.grad.nbytes for p in params if p.grad is not None)
            optimizer.step()
            moments, counters = state_bytes(optimizer)
            count = count_parameters(model)
            if lora:
                closed_count = minigpt_lora_count(config, R, TARGETS)  # type: ignore[arg-type]
                assert closed_count.trainable == count.trainable, (closed_count, count)
            closed = adamw_training_bytes(count.trainable)
            method = f"LoRA r={R} on {', '.join(TARGETS)}" if lora else "full fine-tuning"
            rows.append([
                setup.label, method, f"{count.trainable:,}", f"{count.trainable / count.total:.2%}",
                f"{grads:,}", f"{closed.gradients:,}", f"{moments:,}", f"{closed.optimizer_states:,}",
                f"{counters:,} ({counters // 4} tensors)",
                "yes" if (grads, moments) == (closed.gradients, closed.optimizer_states) else "NO",
            ])
    headers = [
        "model", "method", "trainable", "share", "grad bytes", "lab 01", "AdamW moments bytes",
        "lab 01", "step counters", "equal",
    ]
    return C.markdown_table(headers, rows)


def peak_table(device: torch.device) -> str:
    rows: list[list[object]] = []
    for setup in SETUPS:
        measured: dict[bool, int] = {}
        for lora in (False, True):
            model, _ = build(setup, lora, device)
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=1e-3)
            idx, targets = batch(setup, device)
            step(model, optimizer, idx, targets)  # the first step creates the AdamW states
            start = live_bytes(model, optimizer, idx, targets)

            def run() -> None:
                step(model, optimizer, idx, targets)

            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
                run()
                torch.cuda.synchronize(device)
                peak = torch.cuda.max_memory_allocated(device)
                above = peak - before
                start = before
                how = "torch.cuda.max_memory_allocated"
            else:
                above = cpu_peak_above_start(run)
                peak = start + above
                how = "live tensors + torch.profiler CPU allocator peak"
            measured[lora] = peak
            method = f"LoRA r={R} on {', '.join(TARGETS)}" if lora else "full fine-tuning"
            rows.append([
                setup.label, f"{setup.batch}x{setup.block_size}", method, C.fmt_bytes(start),
                C.fmt_bytes(above), C.fmt_bytes(peak), how,
            ])
            del model, optimizer
        rows[-1].append(f"{measured[True] / measured[False]:.2f}")
        rows[-2].append("1.00")
    headers = [
        "model", "tokens", "method", "live before the step", "peak above that", "peak", "measured by",
        "peak vs full FT",
    ]
    return f"### Peak memory of one training step, {device.type.upper()}\n\n" + C.markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    threads = C.pin_threads(args.threads or None)
    C.use_reference()

    print("## Memory: LoRA against full fine-tuning (`benchmarks/memory.py`)\n")
    print("\n".join(C.header_lines(threads)))
    print(
        "\nFloat32 weights, AdamW (torch.optim.AdamW, lr 1e-3), LoRA dropout 0; the reference "
        "`wrap_minigpt_with_lora`. `lab 01` columns are the closed forms of "
        "`solutions/minituner/counting.py` (`adamw_training_bytes`): 4 bytes of gradient and 8 of "
        "AdamW moments per trainable parameter. The step counters are torch's own, outside the "
        "closed form.\n"
    )
    print("### Gradient and optimizer-state bytes, from the real tensors after one step\n")
    print(gradient_table())
    print()
    print(peak_table(torch.device("cpu")))
    print()
    if torch.cuda.is_available():
        print(peak_table(torch.device("cuda")))
    else:
        print("CUDA: skipped (torch.cuda.is_available() is False on this machine); on a GPU the "
              "same table is measured with torch.cuda.max_memory_allocated.")
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
