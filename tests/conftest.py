"""Fixtures shared by the graded tests of every lab.

Tests reach the code under test through these fixtures, never through a module-level import:
a lab file that does not import fails that lab's tests one by one, each with a message that
says what to fix, instead of stopping the whole run at collection. Which ``minituner`` answers
(the learner's, the reference, a submission) is decided when pytest starts, by the root
``conftest.py``; nothing here cares.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest
import torch
from torch import nn

SEED = 0

# The tests use small tensors, where torch's thread pool costs more than it saves (about 10 ms a
# tiny op on a busy 2-core machine) and makes timings depend on the machine. One thread: fast
# feedback, and the same arithmetic everywhere.
torch.set_num_threads(1)


def import_lab_module(module: str, path: str, lab: str) -> ModuleType:
    """Import ``module`` or fail the calling test with a message for the learner.

    ``path`` is where the learner edits that module and ``lab`` the lab whose tests need it;
    both only go into the message.
    """
    try:
        return importlib.import_module(module)
    except (Exception, SystemExit) as exc:  # a syntax error, a bad import, an exit at import
        error = f"{type(exc).__name__}: {exc}"
    # Failing outside the except block keeps the import's own traceback out of the report.
    pytest.fail(
        f"could not import {module} ({path}): {error}. "
        f"Fix that error first: every {lab} test needs it.",
        pytrace=False,
    )


@pytest.fixture
def lora() -> ModuleType:
    """The module ``minituner.lora`` under test (lab00 onwards)."""
    return import_lab_module("minituner.lora", "src/minituner/lora.py", "lab00")


@pytest.fixture
def counting() -> ModuleType:
    """The module ``minituner.counting`` under test (lab01)."""
    return import_lab_module("minituner.counting", "src/minituner/counting.py", "lab01")


@pytest.fixture
def minigpt() -> ModuleType:
    """The given module ``minituner.minigpt`` (never a learner's file)."""
    return import_lab_module("minituner.minigpt", "src/minituner/minigpt.py", "lab01 and lab02")


LAB00_FIRST = "this test uses your LoRALinear from lab00: pass lab00 first"


def lora_linear_problem(lora: ModuleType) -> str | None:
    """What is wrong with ``lora.LoRALinear`` as later labs use it; None when it works.

    A quick check, not lab00's tests: it builds one layer, and checks that only the factors
    train, that it starts at the base exactly and that the branch adds ``scaling * B (A x)``.
    Any exception is reported as its type and message, so a stub's NotImplementedError (which
    names the lab00 step to do) shows through.
    """
    # fork_rng: this check must not shift the random numbers the test draws after it.
    with torch.random.fork_rng(devices=[]):
        try:
            base = nn.Linear(5, 3)
            layer = lora.LoRALinear(base, r=2, alpha=4.0)
            x = torch.randn(4, 5)
            with torch.no_grad():
                at_init = (layer(x) - base(x)).abs().max().item()
            trainable = sorted(n for n, p in layer.named_parameters() if p.requires_grad)
            if trainable != ["lora_A", "lora_B"]:
                return (
                    f"LoRALinear(nn.Linear(5, 3), r=2) trains {trainable}; expected only "
                    f"['lora_A', 'lora_B']"
                )
            if at_init != 0.0:
                return f"a fresh LoRALinear differs from its base by {at_init:.3g}; expected 0.0"
            with torch.no_grad():
                layer.lora_B.copy_(torch.randn(3, 2))
                got = layer.eval()(x).double()
                want = base(x).double() + 2.0 * (x.double() @ layer.lora_A.double().T) @ (
                    layer.lora_B.double().T
                )
            if (got - want).abs().max().item() > 1e-5:
                return "with B non-zero, LoRALinear(base, r=2, alpha=4.0)(x) is not base(x) + 2 * B(A x)"
        except Exception as exc:  # a stub, or a broken layer
            return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture
def lora_after_lab00(lora: ModuleType) -> ModuleType:
    """``minituner.lora`` for the labs that build on LoRALinear (lab02 onwards).

    Fails the test at once, saying to pass lab00 first, when LoRALinear does not work yet.
    """
    problem = lora_linear_problem(lora)
    if problem is not None:
        pytest.fail(f"{LAB00_FIRST} ({problem})", pytrace=False)
    return lora


# --- lab05: fine-tuning ------------------------------------------------------------------------


@pytest.fixture
def finetune() -> ModuleType:
    """The module ``minituner.finetune`` under test (lab05)."""
    return import_lab_module("minituner.finetune", "src/minituner/finetune.py", "lab05")


@pytest.fixture
def tasks() -> ModuleType:
    """The given module ``minituner.tasks`` (the corpus, the task, the pretrained model)."""
    return import_lab_module("minituner.tasks", "src/minituner/tasks.py", "lab05")


LAB02_FIRST = "this test uses your wrap_minigpt_with_lora from lab02: pass lab02 first"


@pytest.fixture
def lora_after_lab02(lora_after_lab00: ModuleType, minigpt: ModuleType) -> ModuleType:
    """``minituner.lora`` for the labs that wrap a whole MiniGPT (lab05).

    Fails the test at once, saying to pass lab02 first (and keeping the original error, a
    stub's NotImplementedError included), when ``wrap_minigpt_with_lora`` does not work yet.
    """
    with torch.random.fork_rng(devices=[]):
        try:
            config = minigpt.MiniGPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
            model = minigpt.MiniGPT(config)
            lora_after_lab00.wrap_minigpt_with_lora(model, r=2, target_modules=("q_proj",))
            trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
            want = ["blocks.0.attn.q_proj.lora_A", "blocks.0.attn.q_proj.lora_B"]
            problem = None if trainable == want else f"after wrapping q_proj, {trainable} train; expected {want}"
        except Exception as exc:  # a stub, or a broken wrap
            problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:
        pytest.fail(f"{LAB02_FIRST} ({problem})", pytrace=False)
    return lora_after_lab00


@pytest.fixture(autouse=True)
def seed() -> int:
    """Seed torch before every test: tests seed explicitly, library code never does."""
    torch.manual_seed(SEED)
    return SEED
