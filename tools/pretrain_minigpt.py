"""Pretrain the MiniGPT that Lab 05 fine-tunes, and write it into the package.

    .venv/bin/python tools/pretrain_minigpt.py           # about 2 minutes on 2 CPU cores
    .venv/bin/python tools/pretrain_minigpt.py --check   # recompute the held-out loss of the
                                                         # shipped checkpoint; exit 1 if it differs

The corpus is made here, from fixed seeds (``minituner.tasks.corpus_examples``): lines of the
echo game on random lowercase words (``"hello>hello"``). The model learns it as a language model
learns text: next-token prediction on every token of every line (the word's own letters are
random, so only the copy after the marker can be predicted). Nothing is downloaded.

It writes, in ``src/minituner/data/``:

- ``minigpt-pretrained.safetensors``: the weights (float32, under 1 MB);
- ``minigpt-pretrained.json``: the configuration, the training settings, and what the model
  does on held-out lines: its loss (``heldout_loss``, the number the course's self-check
  confirms), and its exact-match accuracy at echo and at pig latin (which it never saw).

Training runs on the CPU with one thread, from fixed seeds, so a second run on the same machine
writes the same weights. Another machine may differ in the last bits (its CPU kernels round
differently); the checkpoint in the repository is the reference, and ``--check`` confirms that it
is the one described.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from minituner import tasks  # noqa: E402
from minituner.minigpt import MiniGPTConfig, build_minigpt  # noqa: E402

CONFIG = MiniGPTConfig(
    vocab_size=len(tasks.ALPHABET), block_size=32, n_layer=4, n_head=4, n_embd=64, dropout=0.0
)
STEPS = 1500
BATCH_SIZE = 32
PEAK_LR = 3e-3
WARMUP_STEPS = 100
WEIGHT_DECAY = 0.01
HELDOUT_LINES = 2000
MODEL_SEED = 0
# The games' exact-match accuracies are measured on this many held-out words each.
ACCURACY_WORDS = 500
TOLERANCE = 1e-4  # --check: the recomputed held-out loss may differ from the recorded one by this


def lr_at(step: int) -> float:
    """Linear warm-up, then cosine decay to 0."""
    if step < WARMUP_STEPS:
        return PEAK_LR * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / (STEPS - WARMUP_STEPS)
    # A float32 cosine, as the shipped checkpoint was made with: keep it, or a rerun differs.
    return PEAK_LR * 0.5 * (1.0 + torch.cos(torch.tensor(torch.pi * progress)).item())


@torch.no_grad()
def game_accuracy(model: torch.nn.Module, examples: list[tasks.Example]) -> float:
    """Exact match of the answers (and their newline), by greedy next-token argmax."""
    model.eval()
    batch = tasks.collate(examples)
    right = (model(batch.inputs).argmax(-1) == batch.targets) | (batch.loss_mask == 0)
    return float(right.all(dim=1).float().mean())


def measure(model: torch.nn.Module) -> dict[str, float]:
    """The held-out loss, and the accuracy at each game and at the downstream task."""
    rng = random.Random(tasks.HELDOUT_SEED + 100)
    words = [tasks.random_word(rng) for _ in range(ACCURACY_WORDS)]
    out = {"heldout_loss": tasks.heldout_loss(model, heldout_examples())}
    for marker, game in sorted(tasks.GAMES.items()):
        examples = [tasks.Example(w + marker, game(w)) for w in words]
        out[f"{game.__name__}_accuracy"] = game_accuracy(model, examples)
    out["pig_latin_accuracy"] = game_accuracy(model, tasks.pig_latin_task().eval)
    return out


def heldout_examples() -> list[tasks.Example]:
    return tasks.corpus_examples(HELDOUT_LINES, seed=tasks.HELDOUT_SEED)


def pretrain() -> tuple[torch.nn.Module, float]:
    torch.set_num_threads(1)  # one thread: the same arithmetic, in the same order, every run
    model = build_minigpt(CONFIG, seed=MODEL_SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PEAK_LR, weight_decay=WEIGHT_DECAY)
    corpus = tasks.corpus_examples(STEPS * BATCH_SIZE, seed=tasks.CORPUS_SEED)
    start = time.perf_counter()
    model.train()
    with tqdm(range(STEPS), desc="pretraining", unit="step") as bar:
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            # One pass over the corpus: step i reads lines [i * B, (i + 1) * B).
            batch = tasks.collate(corpus[step * BATCH_SIZE : (step + 1) * BATCH_SIZE], score="all")
            logits = model(batch.inputs)  # (B, T, V)
            per_token = F.cross_entropy(logits.transpose(1, 2), batch.targets, reduction="none")
            loss = (per_token * batch.loss_mask).sum() / batch.loss_mask.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call,unused-ignore]
            optimizer.step()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval(), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="recompute the shipped checkpoint's held-out loss; write nothing")
    args = parser.parse_args(argv)

    if args.check:
        info = tasks.pretrained_info()
        got = tasks.heldout_loss(tasks.load_pretrained(), heldout_examples())
        want = float(info["heldout_loss"])
        ok = abs(got - want) <= TOLERANCE
        print(f"held-out loss {got:.6f}, recorded {want:.6f}: {'ok' if ok else 'DIFFERENT'}")
        return 0 if ok else 1

    model, seconds = pretrain()
    results = measure(model)
    tasks.DATA_DIR.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tasks.PRETRAINED_WEIGHTS))
    info = {
        "made_by": "tools/pretrain_minigpt.py",
        "config": {
            "vocab_size": CONFIG.vocab_size, "block_size": CONFIG.block_size,
            "n_layer": CONFIG.n_layer, "n_head": CONFIG.n_head, "n_embd": CONFIG.n_embd,
            "bias": CONFIG.bias, "dropout": CONFIG.dropout,
        },
        "alphabet": tasks.ALPHABET,
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": {
            "steps": STEPS, "batch_size": BATCH_SIZE, "peak_lr": PEAK_LR,
            "warmup_steps": WARMUP_STEPS, "weight_decay": WEIGHT_DECAY,
            "corpus_lines": STEPS * BATCH_SIZE, "corpus_seed": tasks.CORPUS_SEED,
            "model_seed": MODEL_SEED, "seconds": round(seconds, 1), "torch": torch.__version__,
        },
        "heldout": {"lines": HELDOUT_LINES, "seed": tasks.HELDOUT_SEED, "score": "all"},
        **{k: round(v, 6) for k, v in results.items()},
    }
    tasks.PRETRAINED_INFO.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    for key, value in results.items():
        print(f"{key}: {value:.4f}")
    print(f"wrote {tasks.PRETRAINED_WEIGHTS.relative_to(ROOT)} and "
          f"{tasks.PRETRAINED_INFO.relative_to(ROOT)} in {seconds:.0f} s of training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
