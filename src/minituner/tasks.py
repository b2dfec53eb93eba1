"""The corpus, the pretrained MiniGPT and the downstream task of Lab 05. Given code: you use it
from Lab 05 on, you never edit it.

Everything here is made by this repository, deterministically, from a seed: nothing is
downloaded.

- **Tokens.** One token per character of ``ALPHABET``: the newline (id 0), the marker ``>``
  (id 1) and the 26 lowercase letters. ``encode("ab>")`` is ``[2, 3, 1]``.
- **The pretraining corpus** is lines of a string game played on random lowercase words,
  *echo*: ``"hello>hello"``, the word, the marker, the word again. A model that learns it has
  learned to find a word and copy it, letter by letter, with attention.
  ``tools/pretrain_minigpt.py`` trains a MiniGPT on it and writes
  ``src/minituner/data/minigpt-pretrained.safetensors`` and its ``.json`` (the configuration and
  the held-out loss); ``load_pretrained()`` reads them back.
- **The downstream task** is pig latin, written with the echo marker: ``"hello>ellohay"`` (move
  the first letter to the end, then add ``"ay"``). The pretrained model has never seen it: given
  ``"hello>"`` it echoes ``"hello"``, so its exact-match accuracy is 0. ``pig_latin_task()``
  makes the train and eval splits, with no word in both.

Shapes use MiniGPT's letters: B batch, T time (tokens).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from minituner.minigpt import MiniGPT, MiniGPTConfig

#: The characters the models read and write; a token id is an index into this string.
ALPHABET = "\n>abcdefghijklmnopqrstuvwxyz"
#: The newline ends every line, and pads a batch to its longest line.
NEWLINE = 0
LETTERS = "abcdefghijklmnopqrstuvwxyz"
_IDS = {char: index for index, char in enumerate(ALPHABET)}

#: Where the pretrained checkpoint lives: its weights and, beside them, its description.
DATA_DIR = Path(__file__).resolve().parent / "data"
PRETRAINED_WEIGHTS = DATA_DIR / "minigpt-pretrained.safetensors"
PRETRAINED_INFO = DATA_DIR / "minigpt-pretrained.json"

#: Word lengths of the corpus and the task (inclusive).
MIN_LEN, MAX_LEN = 3, 8
#: Seeds of the random streams: pretraining lines, held-out lines, the task's words.
CORPUS_SEED, HELDOUT_SEED, TASK_SEED = 0, 1, 2


def encode(text: str) -> list[int]:
    """Token ids of ``text``; a character outside ``ALPHABET`` is a ``ValueError`` naming it."""
    try:
        return [_IDS[char] for char in text]
    except KeyError as err:
        raise ValueError(f"{err.args[0]!r} is not in the alphabet {ALPHABET!r}") from None


def decode(ids: Sequence[int] | Tensor) -> str:
    """The text of token ids (the inverse of ``encode``)."""
    values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    return "".join(ALPHABET[int(i)] for i in values)


# --- the games ---------------------------------------------------------------------------------


def echo(word: str) -> str:
    """The echo game: ``"hello"`` -> ``"hello"``."""
    return word


def rotate(word: str) -> str:
    """The first letter moved to the end: ``"hello"`` -> ``"elloh"``."""
    return word[1:] + word[:1]


def pig_latin(word: str) -> str:
    """Pig latin, the downstream task: rotate, then add ``"ay"``: ``"hello"`` -> ``"ellohay"``."""
    return rotate(word) + "ay"


#: The pretraining games, by the marker that separates the word from the answer.
GAMES: dict[str, Callable[[str], str]] = {">": echo}
#: The downstream task reuses the echo marker: same tokens, same format, a new rule.
TASK_MARKER = ">"


@dataclass(frozen=True)
class Example:
    """One line: ``prompt`` (the word and its marker) then ``answer``, then a newline.

    ``str(Example("hello>", "ellohay"))`` is ``"hello>ellohay\\n"``.
    """

    prompt: str
    answer: str

    def __str__(self) -> str:
        return f"{self.prompt}{self.answer}\n"


def random_word(rng: random.Random, min_len: int = MIN_LEN, max_len: int = MAX_LEN) -> str:
    """A word of random lowercase letters, its length uniform in ``[min_len, max_len]``."""
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(min_len, max_len)))


def corpus_examples(n: int, seed: int = CORPUS_SEED) -> list[Example]:
    """``n`` lines of the pretraining corpus, on random words (each game equally often, when
    ``GAMES`` has several)."""
    rng = random.Random(seed)
    markers = sorted(GAMES)
    out: list[Example] = []
    for _ in range(n):
        word = random_word(rng)
        marker = rng.choice(markers)
        out.append(Example(word + marker, GAMES[marker](word)))
    return out


@dataclass(frozen=True)
class TaskSplit:
    """The downstream task's examples: ``train`` to fine-tune on, ``eval`` to measure.

    No word of ``eval`` is in ``train``: the eval accuracy measures the rule, not memory.
    """

    train: list[Example]
    eval: list[Example]


def pig_latin_task(n_train: int = 4000, n_eval: int = 500, seed: int = TASK_SEED) -> TaskSplit:
    """The pig latin task: ``"hello>"`` -> ``"ellohay"``, with distinct train and eval words."""
    rng = random.Random(seed)
    train_words = [random_word(rng) for _ in range(n_train)]
    seen = set(train_words)
    eval_words: list[str] = []
    while len(eval_words) < n_eval:
        word = random_word(rng)
        if word not in seen:
            seen.add(word)
            eval_words.append(word)
    def make(words: list[str]) -> list[Example]:
        return [Example(w + TASK_MARKER, pig_latin(w)) for w in words]

    return TaskSplit(train=make(train_words), eval=make(eval_words))


# --- batches -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """A padded batch of lines, for next-token prediction.

    Shapes: ``inputs``, ``targets``: (B, T) int64 token ids; ``loss_mask``: (B, T) float32.
    ``targets[:, t]`` is the token that follows ``inputs[:, t]``. ``loss_mask`` is 1.0 where the
    target is scored (the answer's tokens and the newline that ends it) and 0.0 elsewhere (the
    prompt, which is random letters nobody can predict, and the padding).
    """

    inputs: Tensor
    targets: Tensor
    loss_mask: Tensor

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on ``device``."""
        return Batch(self.inputs.to(device), self.targets.to(device), self.loss_mask.to(device))

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def collate(examples: Sequence[Example], score: str = "answer") -> Batch:
    """Pad ``examples`` into one ``Batch``.

    ``score="answer"`` puts the loss mask on the answer and its newline (fine-tuning);
    ``score="all"`` on every token of the line but the first (pretraining: a language model
    learns the whole corpus). Padding is never scored.
    """
    if score not in ("answer", "all"):
        raise ValueError(f"score must be 'answer' or 'all', got {score!r}")
    if not examples:
        raise ValueError("collate needs at least one example")
    lines = [encode(str(e)) for e in examples]
    T = max(len(ids) for ids in lines) - 1
    inputs = torch.full((len(lines), T), NEWLINE, dtype=torch.long)  # (B, T)
    targets = torch.full((len(lines), T), NEWLINE, dtype=torch.long)  # (B, T)
    loss_mask = torch.zeros(len(lines), T)  # (B, T)
    for row, (example, ids) in enumerate(zip(examples, lines)):
        n = len(ids) - 1
        inputs[row, :n] = torch.tensor(ids[:-1])
        targets[row, :n] = torch.tensor(ids[1:])
        # The target at position t is token t + 1: the answer starts at len(prompt).
        first = 0 if score == "all" else len(example.prompt) - 1
        loss_mask[row, first:n] = 1.0
    return Batch(inputs, targets, loss_mask)


def sample_batch(examples: Sequence[Example], batch_size: int, generator: torch.Generator) -> Batch:
    """``batch_size`` examples drawn with replacement, by ``generator`` alone.

    The same generator state gives the same batch: seed the generator, and the batches of a
    whole run are fixed.
    """
    index = torch.randint(len(examples), (batch_size,), generator=generator)
    return collate([examples[int(i)] for i in index])


# --- the pretrained model ----------------------------------------------------------------------


def pretrained_info(path: Path = PRETRAINED_INFO) -> dict[str, Any]:
    """The description written beside the checkpoint: ``config``, ``heldout_loss`` and more."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: it ships with the course; restore it with git, or make it "
            f"again with `python tools/pretrain_minigpt.py`"
        )
    info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    for key in ("config", "heldout_loss"):
        if key not in info:
            raise ValueError(f"{path} has no {key!r}; make it again with tools/pretrain_minigpt.py")
    return info


def load_pretrained(
    weights: Path = PRETRAINED_WEIGHTS, info: Path = PRETRAINED_INFO
) -> MiniGPT:
    """The pretrained MiniGPT, in eval mode, on the CPU, every parameter trainable.

    Raises:
        FileNotFoundError: a file is missing (the message says how to make it again).
        ValueError: the weights do not fit the configuration (a key or a shape differs).
    """
    config = MiniGPTConfig(**pretrained_info(info)["config"])
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights} does not exist: restore it with git, or make it again with "
            f"`python tools/pretrain_minigpt.py`"
        )
    model = MiniGPT(config)
    state = load_file(str(weights))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{weights}: missing keys {missing}, unexpected keys {unexpected}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"{weights}: {key} has shape {tuple(value.shape)}, the configuration "
                f"expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def heldout_loss(model: nn.Module, examples: Sequence[Example], batch_size: int = 500) -> float:
    """The mean next-token loss of ``model`` over every scored token of ``examples`` (the
    language-model loss of the corpus: ``score="all"``). Runs in eval mode, restores the mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0.0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], score="all").to(device)
        logits = model(batch.inputs)  # (B, T, V)
        losses = F.cross_entropy(logits.transpose(1, 2), batch.targets, reduction="none")  # (B, T)
        total += float((losses * batch.loss_mask).sum())
        count += float(batch.loss_mask.sum())
    model.train(was_training)
    return total / count


@torch.no_grad()
def complete(model: nn.Module, prompt: str, max_new_tokens: int = 12) -> str:
    """What ``model`` writes after ``prompt``, greedily, up to the newline that ends the line."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor([encode(prompt)], device=device)  # (1, T)
    out: list[int] = []
    for _ in range(max_new_tokens):
        next_id = int(model(ids)[0, -1].argmax())
        if next_id == NEWLINE:
            break
        out.append(next_id)
        ids = torch.cat([ids, torch.tensor([[next_id]], device=device)], dim=1)
    model.train(was_training)
    return decode(out)
