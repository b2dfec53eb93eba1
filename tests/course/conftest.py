"""Self-checks of the course itself. They run in `make check` (`labkit check`), never for grades."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.manifest import Course, load_course

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def course() -> Course:
    return load_course(ROOT)
