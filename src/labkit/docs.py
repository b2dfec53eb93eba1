"""The course's prose, checked: the README's lab table, and the paths that pages name."""

from __future__ import annotations

import re
from pathlib import Path

from labkit.manifest import Course

TABLE_BEGIN = "<!-- labs:begin (generated from course.toml by `labkit readme`) -->"
TABLE_END = "<!-- labs:end -->"

# A backticked token or a markdown link target that starts in one of the course's folders.
_TOP = ("labs", "theory", "src", "solutions", "tests", "experiments", "benchmarks", "docs", "tools", ".ci")
_CODE = re.compile(r"`([^`\s]+)`")
_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
_TOP_FILES = {"README.md", "CONTRIBUTING.md", "CHANGELOG.md", "course.toml", "Makefile",
              "pyproject.toml", "requirements.txt", "conftest.py"}


def lab_table(course: Course) -> str:
    """The README's table of labs, one row per lab of course.toml."""
    rows = [
        "| lab | title | brief | you edit | points | status |",
        "|---|---|---|---|---|---|",
    ]
    for lab in course.labs:
        brief = f"[{lab.brief}]({lab.brief})" if lab.available else lab.brief
        quote = "`" if lab.available else ""
        files = ", ".join(f"{quote}src/{course.package}/{name}{quote}" for name in lab.files)
        state = "available" if lab.available else "coming"
        rows.append(f"| {lab.id} | {lab.title} | {brief} | {files} | {lab.points:g} | {state} |")
    return "\n".join(rows)


def readme_with_table(course: Course, text: str) -> str:
    """``text`` with the block between the table markers replaced by the current table."""
    start, end = text.find(TABLE_BEGIN), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"README.md lacks the markers {TABLE_BEGIN!r} ... {TABLE_END!r}")
    return text[: start + len(TABLE_BEGIN)] + "\n" + lab_table(course) + "\n" + text[end:]


def named_paths(text: str) -> list[str]:
    """Repository paths a page names, in backticks or as relative links."""
    found: list[str] = []
    for match in [*_CODE.finditer(text), *_LINK.finditer(text)]:
        token = match.group(1).rstrip(".,:;")
        if "://" in token or token.startswith(("/", "~", "$")) or "*" in token or "<" in token:
            continue
        if "NN" in token:  # a pattern such as labs/NN-slug.md, not a path
            continue
        token = token.split("::")[0]
        if token in _TOP_FILES or (token.split("/")[0] in _TOP and "/" in token):
            found.append(token)
    return found


def missing_paths(course: Course, page: Path) -> list[str]:
    """The paths ``page`` names that do not exist (relative to the root, or to the page)."""
    text = page.read_text(encoding="utf-8")
    missing: list[str] = []
    for token in named_paths(text):
        candidates = [course.root / token, page.parent / token]
        if not any(c.exists() for c in candidates):
            missing.append(token)
    return missing


def pages(course: Course) -> list[Path]:
    """Every page whose paths must exist: briefs, theory, write-ups, notes, README, docs."""
    root = course.root
    found = [root / "README.md", root / "CONTRIBUTING.md"]
    for folder, pattern in (("labs", "*.md"), ("theory", "*.md"), ("solutions", "*.md"),
                            ("docs", "*.md"), ("experiments", "*/notes.md"),
                            ("src/minituner", "*.md"), ("benchmarks", "*.md")):
        found.extend(sorted((root / folder).glob(pattern)))
    return [p for p in found if p.is_file()]
