"""Read the measured values a learner records in ``experiments/NN-slug/notes.md``.

The values live in a markdown table whose first cell is the measurement's name in backticks and
whose second cell is the value (``TODO`` until recorded); the rest of the file is free prose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from labkit.manifest import Lab, Measurement

_ROW = re.compile(r"^\s*\|\s*`(?P<name>[A-Za-z0-9_.-]+)`\s*\|(?P<value>[^|]*)\|")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class Reading:
    """One measurement as the notes file records it."""

    measurement: Measurement
    raw: str | None  # the cell's text; None when the row is missing
    value: float | None  # None when missing, TODO, or not a number

    @property
    def recorded(self) -> bool:
        return self.value is not None

    @property
    def in_range(self) -> bool:
        return self.value is not None and self.measurement.accepts(self.value)

    def problem(self) -> str | None:
        """What is wrong with this reading, in words for the learner; None when it is fine."""
        m = self.measurement
        if self.raw is None:
            return f"`{m.name}` has no row in the table"
        if self.value is None:
            if self.raw.strip().upper() in ("", "TODO"):
                return f"`{m.name}` is not recorded yet ({m.description})"
            return f"`{m.name}` = {self.raw.strip()!r} is not a number"
        if not m.accepts(self.value):
            want = f"{m.min:g}" if m.min == m.max else f"between {m.min:g} and {m.max:g}"
            return f"`{m.name}` = {self.value:g}, expected {want}: measure it again ({m.description})"
        return None


def parse_value(cell: str) -> float | None:
    text = cell.strip().strip("`*").replace(",", "").replace("_", "").replace(" ", "")
    return float(text) if _NUMBER.match(text) else None


def read_table(path: Path) -> dict[str, str]:
    """Measurement name -> raw value cell, from every matching table row of ``path``."""
    cells: dict[str, str] = {}
    if not path.is_file():
        return cells
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _ROW.match(line)
        if match:
            cells.setdefault(match["name"], match["value"])
    return cells


def read_notes(lab: Lab, path: Path) -> list[Reading]:
    """One reading per measurement ``course.toml`` names for ``lab``, from the notes at ``path``."""
    cells = read_table(path)
    readings: list[Reading] = []
    for m in lab.measurements:
        raw = cells.get(m.name)
        readings.append(Reading(m, raw, None if raw is None else parse_value(raw)))
    return readings
