"""Self-checks of the course itself. They run in `make check` (`labkit check`), never for grades."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.manifest import Course, load_course

ROOT = Path(__file__).resolve().parents[2]

# Submissions that exist to be graded, never collected: pitfalls, alternatives and hostile ones
# (some of the latter carry their own tests/ and conftest.py on purpose).
collect_ignore_glob = ["pitfalls/*", "alternatives/*", "hostile/*"]


@pytest.fixture(scope="session")
def course() -> Course:
    return load_course(ROOT)
