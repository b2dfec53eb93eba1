"""Choose which code answers ``import minituner``: the learner's, the reference, or a submission.

This is the one place that decides it. The graded tests import ``minituner`` and nothing else of
the course; ``conftest.py`` calls :func:`activate` when pytest starts.

- ``learner`` (the default): ``src/minituner`` as it is.
- ``reference``: the lab files come from ``solutions/minituner``, the rest from ``src/minituner``.
- a path: the lab files come from that folder (the files themselves, a ``minituner/`` folder in it,
  or a whole clone's ``src/minituner/``); everything else comes from this repository.

Only the files ``course.toml`` lists are ever taken from outside. A lab file missing from a
submission becomes a module that raises ``ImportError`` saying so, so only the labs that need it fail.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from labkit.manifest import Course

LEARNER = "learner"
REFERENCE = "reference"


def placeholder(name: str, labs: Iterable[str], reason: str) -> bytes:
    """A module that fails to import, saying why, so only the labs that need it fail."""
    message = f"{reason}; the tests of {', '.join(labs)} need it"
    return (
        f'"""Placeholder written in place of {name}."""\n\n'
        f"raise ImportError({message!r})\n"
    ).encode("utf-8")


class ImplError(ValueError):
    """``--impl`` names something that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Impl:
    """Where the lab files come from, and the package folder that ``import minituner`` loads."""

    label: str
    source: Path
    package_dir: Path
    missing: tuple[str, ...]
    scratch: Path | None = None

    def cleanup(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def find_lab_folder(course: Course, path: Path) -> Path:
    """The folder inside ``path`` that holds the submission's lab files."""
    if not path.exists():
        raise ImplError(f"--impl {path}: no such file or folder")
    if path.is_file():
        if path.name in course.lab_files:
            return path.parent
        raise ImplError(
            f"--impl {path}: give a folder, not a file; lab files are {', '.join(course.lab_files)}"
        )
    for folder in (path, path / course.package, path / "src" / course.package):
        if any((folder / name).is_file() for name in course.lab_files):
            return folder
    raise ImplError(
        f"--impl {path}: no lab file ({', '.join(course.lab_files)}) in {path}, "
        f"{path}/{course.package}/ or {path}/src/{course.package}/"
    )


def build_package(course: Course, lab_folder: Path, into: Path) -> tuple[Path, tuple[str, ...]]:
    """Write ``into/<package>``: the given code of ``src/``, with the lab files of ``lab_folder``.

    Returns the package folder and the lab files that ``lab_folder`` lacks.
    """
    package_dir = into / course.package
    shutil.copytree(
        course.stubs_dir,
        package_dir,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".stubs.json"),
    )
    missing: list[str] = []
    for name in course.lab_files:
        target = package_dir / name
        source = lab_folder / name
        if source.is_file():
            shutil.copyfile(source, target)
        else:
            missing.append(name)
            labs = [lab.id for lab in course.labs_for_file(name)]
            reason = f"the submission has no {name} (looked in {lab_folder}); add the file"
            target.write_bytes(placeholder(name, labs, reason))
    return package_dir, tuple(missing)


def resolve(course: Course, impl: str | None) -> Impl:
    """Turn an ``--impl`` value into an :class:`Impl`, building a scratch package when needed."""
    if impl in (None, "", LEARNER):
        return Impl(LEARNER, course.stubs_dir, course.stubs_dir, ())
    if impl == REFERENCE:
        label, lab_folder = REFERENCE, course.solutions_dir
    else:
        assert impl is not None
        lab_folder = find_lab_folder(course, Path(impl).expanduser().resolve())
        label = str(lab_folder)
    scratch = Path(tempfile.mkdtemp(prefix="minituner-impl-"))
    try:
        package_dir, missing = build_package(course, lab_folder, scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Impl(label, lab_folder, package_dir, missing, scratch)


def activate(course: Course, impl: Impl) -> None:
    """Make ``import minituner`` (and its submodules) load from ``impl.package_dir``."""
    name = course.package
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]
    init = impl.package_dir / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(impl.package_dir)]
    )
    if spec is None or spec.loader is None:  # pragma: no cover - only with a broken tree
        raise ImplError(f"cannot load the package at {impl.package_dir}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    importlib.invalidate_caches()
