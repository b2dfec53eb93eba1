"""Lab 05's experiment: LoRA against full fine-tuning, a rank ablation, and which matrices to
adapt, on the pretrained MiniGPT and the pig latin task. Given code: it runs *your* code
(``minituner.finetune``, ``minituner.lora``, ``minituner.counting``), so finish labs 00-05 first.

    make experiment LAB=lab05                      # the same as the next line
    .venv/bin/python -m minituner.lab05_experiment # about 2 minutes on 2 CPU cores
    .venv/bin/python -m minituner.lab05_experiment --quick   # a 20-step smoke run, seconds

It writes, in ``experiments/05-finetune-minigpt/`` (``--out`` to change it):

- ``results.md``: the three tables, ready to paste into your notes;
- ``results.json``: every number, and every loss curve;
- ``results.png``: the loss curves, the accuracy against the rank, and the accuracy of each
  choice of matrices.

Every run starts from the same pretrained weights, draws the same batches (seed 0) and, for
LoRA, the same initial factors (``torch.manual_seed(0)`` before wrapping), so the runs differ
only in what they train. Uses CUDA when it is there (``--device cpu`` to refuse it).
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

from minituner import tasks
from minituner.memory import PeakMemory, tensor_bytes

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "experiments" / "05-finetune-minigpt"

STEPS = 500
BATCH_SIZE = 32
WARMUP_STEPS = 30
EVAL_EVERY = 50
SEED = 0
LORA_LR = 5e-3
FULL_LR = 1e-3
ALPHA = 16.0  # the default of LoRALinear, the same at every rank (section 4.1 of the paper)
LORA_DROPOUT = 0.0  # no dropout: a run is then a function of its seed alone

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL_SIX = (*ATTENTION, "fc1", "fc2")


@dataclass(frozen=True)
class RunSpec:
    """One fine-tuning run. ``targets`` None means full fine-tuning (every parameter trains)."""

    name: str
    targets: tuple[str, ...] | None
    r: int
    lr: float
    tables: tuple[str, ...]


def run_specs() -> list[RunSpec]:
    """The runs, each once; a run may appear in several tables."""
    specs = [RunSpec("full fine-tuning", None, 0, FULL_LR, ("compare",))]
    for r in (1, 2, 4, 8, 16, 64):
        tables = ("rank",) + (("compare",) if r == 8 else ()) + (("targets",) if r == 4 else ())
        specs.append(RunSpec(f"LoRA q,v r={r}", ("q_proj", "v_proj"), r, LORA_LR, tables))
    # One budget: 8 * (64 + 64) = 1,024 LoRA parameters per block (q,v at r = 4 is above).
    specs += [
        RunSpec("LoRA q r=8", ("q_proj",), 8, LORA_LR, ("targets",)),
        RunSpec("LoRA v r=8", ("v_proj",), 8, LORA_LR, ("targets",)),
        RunSpec("LoRA q,k,v,o r=2", ATTENTION, 2, LORA_LR, ("targets",)),
        RunSpec("LoRA all six r=1", ALL_SIX, 1, LORA_LR, ("targets",)),
    ]
    return specs


@dataclass
class RunResult:
    name: str
    targets: list[str] | None
    r: int
    lr: float
    tables: list[str]
    trainable_params: int
    total_params: int
    optimizer_state_bytes: int
    closed_form_state_bytes: int
    peak_memory_bytes: int
    ms_per_step: float
    eval_loss: float
    accuracy: float
    train_loss: list[float]
    evals: list[tuple[int, float, float]]


def closed_form_state_bytes(n_trainable: int) -> int:
    """Lab 01's closed form for AdamW's state, from your ``minituner.counting``."""
    from minituner import counting

    return int(counting.adamw_training_bytes(n_trainable).optimizer_states)


def build(spec: RunSpec, pretrained: nn.Module, device: torch.device) -> nn.Module:
    """A fresh copy of the pretrained model, wrapped as ``spec`` says, on ``device``."""
    from minituner.lora import wrap_minigpt_with_lora

    model = copy.deepcopy(pretrained)
    if spec.targets is not None:
        torch.manual_seed(SEED)  # the same initial A for every run of the same shape
        wrap_minigpt_with_lora(
            model, r=spec.r, alpha=ALPHA, target_modules=spec.targets, dropout=LORA_DROPOUT
        )
    else:
        model.requires_grad_(True)
    return model.to(device)


def peak_memory(model: nn.Module, train: list[tasks.Example], device: torch.device) -> int:
    """Peak tensor bytes of the first training step (weights, activations, gradients, and the
    optimizer state it creates), on a throwaway copy of ``model``."""
    from minituner.finetune import make_optimizer, train_step

    probe = copy.deepcopy(model)
    optimizer = make_optimizer(probe, lr=1e-3)
    batch = tasks.sample_batch(train, BATCH_SIZE, torch.Generator().manual_seed(SEED)).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        train_step(probe, optimizer, batch)
        torch.cuda.synchronize()
        # What this step added on top of everything already allocated, plus the model itself.
        return int(torch.cuda.max_memory_allocated(device) - before + tensor_bytes(probe))
    with PeakMemory(baseline=tensor_bytes(probe)) as mem:
        train_step(probe, optimizer, batch)
    return int(mem.peak)


def run_one(
    spec: RunSpec,
    pretrained: nn.Module,
    split: tasks.TaskSplit,
    eval_batch: tasks.Batch,
    steps: int,
    device: torch.device,
    progress: _Progress,
) -> RunResult:
    from minituner.finetune import fine_tune, make_optimizer, optimizer_state_bytes, train_step

    model = build(spec, pretrained, device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    peak = peak_memory(model, split.train, device)

    # The optimizer's real state: one step on a throwaway copy fills it.
    probe = copy.deepcopy(model)
    optimizer = make_optimizer(probe, lr=1e-3)
    train_step(probe, optimizer, tasks.collate(split.train[:BATCH_SIZE]))
    state_bytes = optimizer_state_bytes(optimizer)
    del probe, optimizer

    history = fine_tune(
        model, split.train, steps=steps, lr=spec.lr, batch_size=BATCH_SIZE, seed=SEED,
        eval_batch=eval_batch, eval_every=EVAL_EVERY, warmup_steps=min(WARMUP_STEPS, steps),
        on_step=lambda step, loss: progress.update(1),
    )
    final = history.evals[-1][1]
    return RunResult(
        name=spec.name, targets=None if spec.targets is None else list(spec.targets), r=spec.r,
        lr=spec.lr, tables=list(spec.tables), trainable_params=trainable, total_params=total,
        optimizer_state_bytes=state_bytes, closed_form_state_bytes=closed_form_state_bytes(trainable),
        peak_memory_bytes=peak, ms_per_step=1000 * history.seconds_per_step,
        eval_loss=final.loss, accuracy=final.accuracy, train_loss=history.train_loss,
        evals=[(s, e.loss, e.accuracy) for s, e in history.evals],
    )


# --- writing the results ---------------------------------------------------------------------


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:.2f}"


def tables_markdown(results: list[RunResult], base: dict[str, float], meta: dict[str, Any]) -> str:
    """The three tables of ``results.md``."""
    by_table = {t: [r for r in results if t in r.tables] for t in ("compare", "rank", "targets")}
    lines = [
        "# Lab 05 — results of `python -m minituner.lab05_experiment`",
        "",
        f"{meta['steps']} steps per run, batch {BATCH_SIZE}, AdamW, warm-up {WARMUP_STEPS} steps "
        f"then cosine decay; LoRA: alpha = {ALPHA:g} at every rank, dropout {LORA_DROPOUT:g}, "
        f"lr {LORA_LR:g}; full fine-tuning: lr {FULL_LR:g}. Device: {meta['device']}, "
        f"torch {meta['torch']}, {meta['workers']} worker process(es) of one thread. Whole "
        f"experiment: "
        f"{meta['seconds']:.0f} s.",
        "",
        f"Before fine-tuning, the pretrained model scores {base['accuracy']:.3f} exact match "
        f"(eval loss {base['loss']:.3f}) on the {meta['eval_examples']} held-out pig latin words.",
        "",
        "## LoRA against full fine-tuning",
        "",
        "| run | trainable params | share | AdamW state, measured (bytes) | lab 01 closed form "
        "(bytes) | peak memory of a step (MB) | ms / step | eval loss | exact match |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in by_table["compare"]:
        lines.append(
            f"| {r.name} | {r.trainable_params:,} | {r.trainable_params / r.total_params:.2%} | "
            f"{r.optimizer_state_bytes:,} | {r.closed_form_state_bytes:,} | "
            f"{_mb(r.peak_memory_bytes)} | {r.ms_per_step:.1f} | {r.eval_loss:.3f} | "
            f"{r.accuracy:.3f} |"
        )
    lines += [
        "",
        "## Rank ablation: LoRA on q and v (the paper's Table 6 setting)",
        "",
        "| r | trainable params | eval loss | exact match |",
        "|---|---|---|---|",
    ]
    for r in by_table["rank"]:
        lines.append(f"| {r.r} | {r.trainable_params:,} | {r.eval_loss:.3f} | {r.accuracy:.3f} |")
    lines += [
        "",
        "## Which matrices to adapt, at one budget (the paper's Table 5 setting)",
        "",
        "| matrices | r | trainable params | eval loss | exact match |",
        "|---|---|---|---|---|",
    ]
    for r in by_table["targets"]:
        names = ", ".join(t.removesuffix("_proj") for t in (r.targets or []))
        lines.append(
            f"| {names} | {r.r} | {r.trainable_params:,} | {r.eval_loss:.3f} | {r.accuracy:.3f} |"
        )
    lines += ["", "![loss curves, accuracy against rank, accuracy per choice of matrices]"
              "(results.png)", ""]
    return "\n".join(lines)


def plot(results: list[RunResult], path: Path) -> None:
    """Three panels: eval loss curves; accuracy against rank; accuracy per choice of matrices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    for r in results:
        if "compare" in r.tables or r.name == "LoRA all six r=1":
            steps = [s for s, _, _ in r.evals]
            ax1.plot(steps, [loss for _, loss, _ in r.evals], marker="o", ms=3, label=r.name)
    ax1.set(xlabel="step", ylabel="eval loss (answer tokens)", yscale="log",
            title="Eval loss during fine-tuning")
    ax1.legend()

    ranks = [r for r in results if "rank" in r.tables]
    ax2.plot([r.r for r in ranks], [r.accuracy for r in ranks], marker="o", label="LoRA q,v")
    full = [r for r in results if r.targets is None]
    if full:
        ax2.axhline(full[0].accuracy, color="gray", ls="--", label="full fine-tuning")
    ax2.set(xlabel="rank r", ylabel="exact match", xscale="log", ylim=(-0.02, 1.02),
            title="Accuracy against rank (Table 6 setting)")
    ax2.set_xticks([r.r for r in ranks], [str(r.r) for r in ranks])
    ax2.legend()

    chosen = [r for r in results if "targets" in r.tables]
    labels = [r.name.removeprefix("LoRA ") for r in chosen]
    ax3.bar(range(len(chosen)), [r.accuracy for r in chosen], color="tab:blue")
    ax3.set_xticks(range(len(chosen)), labels, rotation=20)
    ax3.set(ylabel="exact match", ylim=(0, 1.02), title="One budget, different matrices (Table 5)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- the command -----------------------------------------------------------------------------


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; use --device cpu or auto")
    return torch.device(name)


class _Progress:
    """Counts finished steps, in this process or, through a shared counter, in the workers."""

    def __init__(self, counter: Any = None, bar: Any = None) -> None:
        self.counter = counter
        self.bar = bar

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)
        if self.counter is not None:
            with self.counter.get_lock():
                self.counter.value += n


_WORKER_PROGRESS = _Progress()


def _init_worker(counter: Any) -> None:
    # One thread per worker: the runs are too small for two threads to help, and a run's
    # arithmetic (so its result) does not then depend on the machine's number of cores.
    torch.set_num_threads(1)
    global _WORKER_PROGRESS
    _WORKER_PROGRESS = _Progress(counter=counter)


def _run_in_worker(spec: RunSpec, steps: int) -> RunResult:
    split = tasks.pig_latin_task()
    return run_one(spec, tasks.load_pretrained(), split, tasks.collate(split.eval), steps,
                   torch.device("cpu"), _WORKER_PROGRESS)


def run_all(specs: list[RunSpec], steps: int, device: torch.device, workers: int) -> list[RunResult]:
    """Every run, with one progress bar over all their steps. On the CPU with ``workers > 1``,
    the runs share out over that many processes of one thread each."""
    total = steps * len(specs)
    with tqdm(total=total, desc="lab05 experiment", unit="step") as bar:
        if device.type != "cpu" or workers <= 1:
            threads = torch.get_num_threads()
            if device.type == "cpu":
                torch.set_num_threads(1)  # as in the workers: the same arithmetic, the same result
            try:
                split = tasks.pig_latin_task()
                pretrained, eval_batch = tasks.load_pretrained(), tasks.collate(split.eval)
                progress = _Progress(bar=bar)
                return [run_one(s, pretrained, split, eval_batch, steps, device, progress)
                        for s in specs]
            finally:
                torch.set_num_threads(threads)
        context = multiprocessing.get_context("spawn")
        counter = context.Value("i", 0)
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(counter,)) as pool:
            futures = [pool.submit(_run_in_worker, spec, steps) for spec in specs]
            while not all(f.done() for f in futures):
                time.sleep(0.2)
                bar.update(counter.value - bar.n)
            bar.update(total - bar.n)
            return [f.result() for f in futures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS, help=f"steps per run (default {STEPS})")
    parser.add_argument("--quick", action="store_true",
                        help="20 steps per run and no files written unless --out is given")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="CPU only: processes to share the runs between, one thread each "
                        "(default: 2, or 1 on a one-core machine)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"where to write the results (default {OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    steps = 20 if args.quick else args.steps
    out = args.out if args.out is not None else (None if args.quick else OUT)
    device = choose_device(args.device)

    start = time.perf_counter()
    split = tasks.pig_latin_task()
    from minituner.finetune import evaluate

    before = evaluate(tasks.load_pretrained().to(device), tasks.collate(split.eval))
    specs = run_specs()
    results = run_all(specs, steps, device, args.workers)
    seconds = time.perf_counter() - start

    meta = {
        "steps": steps, "device": str(device), "torch": torch.__version__,
        "workers": args.workers if device.type == "cpu" else 1, "seconds": seconds,
        "eval_examples": len(split.eval),
    }
    base = {"loss": before.loss, "accuracy": before.accuracy}
    text = tables_markdown(results, base, meta)
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(text, encoding="utf-8")
        payload = {"meta": meta, "pretrained": base, "runs": [asdict(r) for r in results]}
        (out / "results.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        plot(results, out / "results.png")
        shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
        print(f"\nwrote {shown}/results.md, results.json and results.png in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
