"""Load and validate ``course.toml``, the one list of labs every other part of labkit reads."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "course.toml"
_LAB_ID = re.compile(r"^lab\d{2}$")


class ManifestError(ValueError):
    """course.toml is missing, malformed, or names something that does not exist."""


@dataclass(frozen=True)
class Measurement:
    """One value a learner records in a lab's notes file, with its accepted range."""

    name: str
    unit: str
    min: float
    max: float
    description: str

    def accepts(self, value: float) -> bool:
        return self.min <= value <= self.max


@dataclass(frozen=True)
class Lab:
    id: str
    title: str
    available: bool
    brief: str
    notebook: str
    theory: tuple[str, ...]
    files: tuple[str, ...]
    marker: str
    points: float
    notes: str
    allowed_imports: tuple[str, ...]
    measurements: tuple[Measurement, ...] = ()
    notes_points: float = 0.0


@dataclass(frozen=True)
class Course:
    root: Path
    title: str
    package: str
    stubs_dir: Path
    solutions_dir: Path
    labs: tuple[Lab, ...] = field(default_factory=tuple)

    @property
    def available_labs(self) -> tuple[Lab, ...]:
        return tuple(lab for lab in self.labs if lab.available)

    def lab(self, lab_id: str) -> Lab:
        for lab in self.labs:
            if lab.id == lab_id:
                return lab
        known = ", ".join(lab.id for lab in self.labs)
        raise ManifestError(f"no lab {lab_id!r} in {MANIFEST_NAME}; the labs are: {known}")

    @property
    def lab_files(self) -> tuple[str, ...]:
        """Every file a learner edits, in manifest order, each once."""
        seen: dict[str, None] = {}
        for lab in self.labs:
            for name in lab.files:
                seen.setdefault(name, None)
        return tuple(seen)

    def labs_for_file(self, name: str) -> tuple[Lab, ...]:
        return tuple(lab for lab in self.labs if name in lab.files)

    def allowed_imports_for(self, name: str) -> frozenset[str]:
        """A lab file may import what any lab that edits it allows."""
        allowed: set[str] = set()
        for lab in self.labs_for_file(name):
            allowed.update(lab.allowed_imports)
        return frozenset(allowed)


def find_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: this package's tree) with course.toml."""
    candidates = [start or Path.cwd(), Path(__file__).resolve().parent]
    for begin in candidates:
        for folder in [begin.resolve(), *begin.resolve().parents]:
            if (folder / MANIFEST_NAME).is_file():
                return folder
    raise ManifestError(
        f"no {MANIFEST_NAME} found at or above {candidates[0]}: run this from the course's folder"
    )


def _need(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in table:
        raise ManifestError(f"{MANIFEST_NAME}: {where} has no {key!r}; add `{key} = ...` to it")
    value = table[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ManifestError(
            f"{MANIFEST_NAME}: {where} key {key!r} must be a {names}, got {value!r}"
        )
    return value


def _strings(table: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    values = _need(table, key, list, where)
    if not all(isinstance(v, str) for v in values):
        raise ManifestError(f"{MANIFEST_NAME}: {where} key {key!r} must be a list of strings")
    return tuple(values)


def _measurement(table: Any, where: str) -> Measurement:
    if not isinstance(table, dict):
        raise ManifestError(f"{MANIFEST_NAME}: {where} must be a table, got {table!r}")
    name = _need(table, "name", str, where)
    where = f"{where} ({name})"
    low = float(_need(table, "min", (int, float), where))
    high = float(_need(table, "max", (int, float), where))
    if low > high:
        raise ManifestError(f"{MANIFEST_NAME}: {where} has min {low} > max {high}; swap them")
    return Measurement(
        name=name,
        unit=_need(table, "unit", str, where),
        min=low,
        max=high,
        description=_need(table, "description", str, where),
    )


def _lab(table: Any, index: int, root: Path) -> Lab:
    where = f"[[lab]] #{index + 1}"
    if not isinstance(table, dict):
        raise ManifestError(f"{MANIFEST_NAME}: {where} must be a table")
    lab_id = _need(table, "id", str, where)
    if not _LAB_ID.match(lab_id):
        raise ManifestError(f"{MANIFEST_NAME}: {where} id {lab_id!r} must look like 'lab00'")
    where = f"lab {lab_id}"
    raw_measurements = table.get("measurements", [])
    if not isinstance(raw_measurements, list):
        raise ManifestError(f"{MANIFEST_NAME}: {where} key 'measurements' must be a list of tables")
    lab = Lab(
        id=lab_id,
        title=_need(table, "title", str, where),
        available=_need(table, "available", bool, where),
        brief=_need(table, "brief", str, where),
        notebook=_need(table, "notebook", str, where),
        theory=_strings(table, "theory", where),
        files=_strings(table, "files", where),
        marker=_need(table, "marker", str, where),
        points=float(_need(table, "points", (int, float), where)),
        notes=_need(table, "notes", str, where),
        allowed_imports=_strings(table, "allowed_imports", where),
        measurements=tuple(
            _measurement(m, f"{where} measurement #{i + 1}") for i, m in enumerate(raw_measurements)
        ),
        notes_points=float(table.get("notes_points", 0.0)),
    )
    if lab.marker != lab.id:
        raise ManifestError(
            f"{MANIFEST_NAME}: {where} marker {lab.marker!r} must equal its id {lab.id!r}"
        )
    if not lab.files:
        raise ManifestError(f"{MANIFEST_NAME}: {where} lists no files; name the file(s) it edits")
    for name in lab.files:
        if "/" in name or not name.endswith(".py"):
            raise ManifestError(
                f"{MANIFEST_NAME}: {where} file {name!r} must be a .py file name inside the package"
            )
    if lab.available:
        paths = [("brief", lab.brief), ("notebook", lab.notebook), ("notes", lab.notes)]
        paths += [("theory", page) for page in lab.theory]
        for key, rel in paths:
            if not (root / rel).is_file():
                raise ManifestError(
                    f"{MANIFEST_NAME}: {where} key {key!r} names {rel}, which does not exist; "
                    f"create it or mark the lab `available = false`"
                )
    return lab


def load_course(root: Path | None = None) -> Course:
    """Read and validate ``course.toml`` at ``root`` (default: found from the working folder)."""
    root = find_root() if root is None else root.resolve()
    path = root / MANIFEST_NAME
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path} does not exist: run this from the course's folder") from None
    except tomllib.TOMLDecodeError as err:
        raise ManifestError(f"{path} is not valid TOML: {err}") from None
    course = _need(data, "course", dict, "the file")
    raw_labs = _need(data, "lab", list, "the file")
    labs = tuple(_lab(table, i, root) for i, table in enumerate(raw_labs))
    seen: set[str] = set()
    for lab in labs:
        if lab.id in seen:
            raise ManifestError(
                f"{MANIFEST_NAME}: lab {lab.id} is listed twice; give each [[lab]] its own id"
            )
        seen.add(lab.id)
    ids = [lab.id for lab in labs]
    if ids != sorted(ids):
        raise ManifestError(f"{MANIFEST_NAME}: labs must be listed in order, got {ids}")
    return Course(
        root=root,
        title=_need(course, "title", str, "[course]"),
        package=_need(course, "package", str, "[course]"),
        stubs_dir=root / _need(course, "stubs", str, "[course]"),
        solutions_dir=root / _need(course, "solutions", str, "[course]"),
        labs=labs,
    )
