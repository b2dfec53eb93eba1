"""The prose says true things about the repository: every path it names exists, and the
README's lab table is course.toml's."""

from __future__ import annotations

import pytest

from labkit import docs
from labkit.manifest import Course

pytestmark = pytest.mark.course


def test_every_named_path_exists(course: Course) -> None:
    problems = []
    for page in docs.pages(course):
        for token in docs.missing_paths(course, page):
            problems.append(f"{page.relative_to(course.root)} names `{token}`, which does not exist")
    assert not problems, "\n".join(problems)


def test_pages_are_found(course: Course) -> None:
    names = {p.relative_to(course.root).as_posix() for p in docs.pages(course)}
    for lab in course.available_labs:
        assert lab.brief in names and lab.notes in names
        assert set(lab.theory) <= names


def test_readme_lab_table_matches_course_toml(course: Course) -> None:
    text = (course.root / "README.md").read_text(encoding="utf-8")
    assert docs.readme_with_table(course, text) == text, (
        "README.md's lab table differs from course.toml: run `.venv/bin/labkit readme`"
    )


def test_named_paths_reads_backticks_and_links() -> None:
    text = "See `labs/00-x.md`, [t](theory/01-y.md#part) and `course.toml`; not `x.y` or `https://a/b`."
    assert docs.named_paths(text) == ["labs/00-x.md", "course.toml", "theory/01-y.md"]
