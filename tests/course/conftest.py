"""Self-checks of the course itself. They run in `make check` (`labkit check`), never for grades."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.manifest import Course, load_course

ROOT = Path(__file__).resolve().parents[2]

# Submissions that exist to be graded, never collected: pitfalls, alternatives and hostile ones
# (some of the latter carry their own tests/ and conftest.py on purpose).
collect_ignore_glob = ["pitfalls/*", "alternatives/*", "hostile/*"]

# The markers a self-check may carry; `pytest -m EXPR` can select one only if EXPR accepts them.
COURSE_MARKERS = ({"course"}, {"course", "slow"})


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Skip importing the self-checks when ``-m`` cannot select any of them (``pytest -m lab00``,
    what ``make test`` runs): they would all be deselected anyway, and importing them (nbformat,
    nbclient, labkit's checks) costs a learner's every run a third of an ``import torch``
    (benchmarks/feedback.py)."""
    expression = config.getoption("markexpr", "")
    if not expression:
        return None
    try:
        from _pytest.mark.expression import Expression

        compiled = Expression.compile(expression)
        selectable = any(
            compiled.evaluate(lambda name, /, **kwargs: name in markers)
            for markers in COURSE_MARKERS
        )
    except Exception:  # an expression or a pytest this hook does not understand: collect
        return None
    return None if selectable else True


@pytest.fixture(scope="session")
def course() -> Course:
    return load_course(ROOT)
