"""Hostile: rewrites the course's tests and plugin from inside the test run, and drops a fake report.

pathlib is allowed to lora.py (lab 03 saves adapters), so the static check lets this through; the
grader's copy of the course is read-only, and is compared with what the grader wrote after the run.
"""

from pathlib import Path

FAKE_TEST = "def test_everything_passes() -> None:\n    pass\n"
for target, text in [
    ("tests/test_lab00_lora_linear.py", FAKE_TEST),
    ("tests/conftest.py", ""),
    ("conftest.py", "import pytest\n"),
    ("src/labkit/plugin.py", ""),
    ("report.jsonl", '{"event": "result", "outcome": "passed"}\n'),
]:
    try:
        Path(target).write_text(text, encoding="utf-8")
    except OSError:
        pass


class LoRALinear:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("a stub: the tests must fail, whatever the files say")
