"""A pytest plugin for ``benchmarks/feedback.py``: which test first imports a slow module.

``import torch`` leaves some of torch's heaviest parts unimported until first use:
``torch._dynamo`` (which brings sympy and parts of inductor along) costs about as much again as
``import torch`` itself. A graded test that triggers it (``torch.optim``, ``FlopCounterMode`` or
any ``TorchDispatchMode``, an elementwise operator on the meta device) slows every run of its lab.

    python -m pytest -p _import_watch ...   (with benchmarks/ on PYTHONPATH)
"""

from __future__ import annotations

import sys

import pytest

WATCHED = ("torch._dynamo", "torch._inductor", "sympy", "transformers", "peft")
_seen: set[str] = set(sys.modules)
_first: list[str] = []


def pytest_runtest_teardown(item: pytest.Item) -> None:
    for name in WATCHED:
        if name in sys.modules and name not in _seen:
            _seen.add(name)
            _first.append(f"{name} {item.nodeid}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _first:
        terminalreporter.write_line(f"IMPORTWATCH {line}")
