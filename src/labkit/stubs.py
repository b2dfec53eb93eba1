"""Generate the learner's stubs from the reference solutions.

A solution region in ``solutions/minituner/<file>.py`` is fenced by two comment lines::

    # >>> lab00 step C: add the scaled low-rank branch, computed down to r first
    ...
    # <<< lab00 step C

The stub keeps everything outside the regions (imports, signatures, types, docstrings) and turns
each region into one ``raise NotImplementedError("lab00 step C: ... See <brief>")`` at the
region's indentation. ``src/minituner/.stubs.json`` records what was last generated, so a stub a
learner has edited is never overwritten without ``force``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from labkit.manifest import Course

RECORD_NAME = ".stubs.json"
_BEGIN = re.compile(r"^(?P<indent>\s*)# >>> (?P<lab>lab\d{2}) step (?P<step>[A-Z]): (?P<what>.+?)\s*$")
_END = re.compile(r"^\s*# <<< (?P<lab>lab\d{2}) step (?P<step>[A-Z])\s*$")


class StubError(ValueError):
    """A reference file's regions are malformed, or a stub cannot be written safely."""


@dataclass(frozen=True)
class Region:
    lab: str
    step: str
    what: str
    begin: int  # 1-based line of the opening marker
    end: int  # 1-based line of the closing marker


def find_regions(text: str, where: str) -> list[Region]:
    """Every solution region of a reference file, checked for matching markers."""
    regions: list[Region] = []
    open_at: tuple[int, re.Match[str]] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        begin, end = _BEGIN.match(line), _END.match(line)
        if begin:
            if open_at is not None:
                raise StubError(f"{where}:{number}: region opens inside the one at line {open_at[0]}")
            open_at = (number, begin)
        elif end:
            if open_at is None:
                raise StubError(f"{where}:{number}: region closes but none is open")
            start, match = open_at
            if (end["lab"], end["step"]) != (match["lab"], match["step"]):
                raise StubError(
                    f"{where}:{number}: closes {end['lab']} step {end['step']} but line {start} "
                    f"opened {match['lab']} step {match['step']}"
                )
            regions.append(Region(match["lab"], match["step"], match["what"], start, number))
            open_at = None
        elif "# >>>" in line or "# <<<" in line:
            raise StubError(
                f"{where}:{number}: malformed marker {line.strip()!r}; "
                "write '# >>> lab00 step A: what to do' and '# <<< lab00 step A'"
            )
    if open_at is not None:
        raise StubError(f"{where}:{open_at[0]}: region never closes; add '# <<< ...' after it")
    return regions


def make_stub(course: Course, text: str, where: str) -> str:
    """The learner's version of one reference file."""
    briefs = {lab.id: lab.brief for lab in course.labs}
    lines = text.splitlines()
    out: list[str] = []
    cursor = 0
    for region in find_regions(text, where):
        if region.lab not in briefs:
            raise StubError(f"{where}:{region.begin}: {region.lab} is not a lab in course.toml")
        out.extend(lines[cursor : region.begin - 1])
        indent = _BEGIN.match(lines[region.begin - 1])["indent"]  # type: ignore[index]
        message = f"{region.lab} step {region.step}: {region.what}. See {briefs[region.lab]}"
        out.append(f"{indent}raise NotImplementedError({json.dumps(message)})")
        cursor = region.end
    out.extend(lines[cursor:])
    return "\n".join(out) + "\n"


def generated(course: Course) -> dict[str, str]:
    """File name -> stub text, for every lab file that has a reference."""
    stubs: dict[str, str] = {}
    for name in course.lab_files:
        source = course.solutions_dir / name
        if source.is_file():
            text = source.read_text(encoding="utf-8")
            stubs[name] = make_stub(course, text, str(source.relative_to(course.root)))
    return stubs


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _record(course: Course) -> dict[str, str]:
    path = course.stubs_dir / RECORD_NAME
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def stale(course: Course) -> list[str]:
    """Lab files whose committed stub differs from what the generator makes now."""
    out: list[str] = []
    for name, text in generated(course).items():
        path = course.stubs_dir / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(name)
    return out


def write_stubs(course: Course, force: bool = False) -> tuple[list[str], list[str]]:
    """Write every stub; return (written, refused). Edited stubs are refused unless ``force``."""
    record = _record(course)
    written: list[str] = []
    refused: list[str] = []
    for name, text in generated(course).items():
        path = course.stubs_dir / name
        if path.is_file():
            current = path.read_text(encoding="utf-8")
            if current == text:
                record[name] = _digest(text)
                continue
            if not force and record.get(name) != _digest(current):
                refused.append(name)
                continue
        path.write_text(text, encoding="utf-8")
        record[name] = _digest(text)
        written.append(name)
    (course.stubs_dir / RECORD_NAME).write_text(
        json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return written, refused
