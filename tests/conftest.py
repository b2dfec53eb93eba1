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

SEED = 0


def import_lab_module(module: str, path: str, lab: str) -> ModuleType:
    """Import ``module`` or fail the calling test with a message for the learner.

    ``path`` is where the learner edits that module and ``lab`` the lab whose tests need it;
    both only go into the message.
    """
    try:
        return importlib.import_module(module)
    except (Exception, SystemExit) as exc:  # a syntax error, a bad import, an exit at import
        pytest.fail(
            f"could not import {module} ({path}): {type(exc).__name__}: {exc}. "
            f"Fix that error first: every {lab} test needs it.",
            pytrace=False,
        )


@pytest.fixture
def lora() -> ModuleType:
    """The module ``minituner.lora`` under test (lab00 onwards)."""
    return import_lab_module("minituner.lora", "src/minituner/lora.py", "lab00")


@pytest.fixture(autouse=True)
def seed() -> int:
    """Seed torch before every test: tests seed explicitly, library code never does."""
    torch.manual_seed(SEED)
    return SEED
