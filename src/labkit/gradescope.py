"""The Gradescope autograder: build its zip (``make gradescope``) and grade one submission in
Gradescope's folder layout (``run_autograder`` runs ``python -m labkit.gradescope run``).

Gradescope unpacks the zip into ``/autograder/source``, runs ``setup.sh`` once to build its image,
then, per submission, puts the learner's files in ``/autograder/submission``, runs
``/autograder/run_autograder`` and reads ``/autograder/results/results.json``. The zip holds the
course as the grader needs it (``sandbox.snapshot``: config, tests, labkit, the given code and the
generated stubs) and never ``solutions/``.

Two environment variables let a self-check run ``run_autograder`` on a local copy of that layout:
``MINITUNER_AUTOGRADER_ROOT`` replaces ``/autograder`` and ``MINITUNER_AUTOGRADER_PYTHON`` the
interpreter ``setup.sh`` installs.
"""

from __future__ import annotations

import argparse
import re
import sys
import traceback
import zipfile
from collections.abc import Sequence
from pathlib import Path

from labkit import grade, sandbox, stubs
from labkit.manifest import Course, load_course

ROOT_ENV = "MINITUNER_AUTOGRADER_ROOT"
PYTHON_ENV = "MINITUNER_AUTOGRADER_PYTHON"
DEFAULT_ROOT = "/autograder"
#: What the tests need at grading time (requirements.txt also pins the maintainers' tools).
GRADING_PACKAGES = ("torch", "numpy", "pytest", "pytest-timeout", "safetensors", "tqdm")

SETUP_SH = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root, while it builds the autograder's image (Ubuntu 22.04 or
# 24.04). It installs Python >= 3.11 and the course's pinned packages (CPU PyTorch) into
# /autograder/venv. Built by `make gradescope` (labkit.gradescope); edit the course, not this file.
set -euo pipefail
cd /autograder/source
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
python=python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    apt-get install -y -qq python3.11 python3.11-venv
    python=python3.11
else
    apt-get install -y -qq python3-venv
fi
"$python" -m venv /autograder/venv
/autograder/venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip
/autograder/venv/bin/pip install --quiet --disable-pip-version-check \\
    --index-url https://download.pytorch.org/whl/cpu "{torch}"
/autograder/venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
# The tests run as the unprivileged user nobody: they must be able to read the interpreter.
chmod -R a+rX /autograder/venv /autograder/source
/autograder/venv/bin/python -c "import torch, pytest, pytest_timeout, safetensors, tqdm"
"""

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this for every submission (as /autograder/run_autograder, from /autograder).
# It grades /autograder/submission and writes /autograder/results/results.json.
# MINITUNER_AUTOGRADER_ROOT replaces /autograder and MINITUNER_AUTOGRADER_PYTHON the interpreter
# setup.sh installs; labkit's self-check sets both to run this on a local copy of the layout.
set -euo pipefail
root="${MINITUNER_AUTOGRADER_ROOT:-/autograder}"
python="${MINITUNER_AUTOGRADER_PYTHON:-$root/venv/bin/python}"
cd "$root/source"
export PYTHONPATH="$root/source/src"
exec "$python" -s -m labkit.gradescope run --root "$root" "$@"
"""


def grading_requirements(course: Course) -> str:
    """The lines of requirements.txt the tests need at grading time, pins kept."""
    path = course.root / "requirements.txt"
    wanted = set(GRADING_PACKAGES)
    lines = ["# What the graded tests need (from the course's requirements.txt; torch comes from",
             "# the CPU index in setup.sh)."]
    found: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        name = re.split(r"[=<>!~\[; ]", line.strip(), maxsplit=1)[0].lower()
        if name in wanted:
            found.add(name)
            lines.append(line.strip())
    for name in GRADING_PACKAGES:
        if name not in found:
            lines.append(name)
    return "\n".join(lines) + "\n"


def bundle_files(course: Course) -> dict[str, bytes]:
    """Every file of the autograder zip, by its path in the zip."""
    files = dict(sandbox.snapshot(course).files)
    package = course.stubs_dir.relative_to(course.root).as_posix()
    if course.solutions_dir.is_dir():
        # The lab files are always the generated stubs, never what an instructor's src/ holds.
        for name, text in stubs.generated(course).items():
            files[f"{package}/{name}"] = text.encode("utf-8")
    requirements = grading_requirements(course)
    torch_pin = next((line for line in requirements.splitlines() if line.lower().startswith("torch")), "torch")
    files["requirements.txt"] = requirements.encode("utf-8")
    files["setup.sh"] = SETUP_SH.replace("{torch}", torch_pin).encode("utf-8")
    files["run_autograder"] = RUN_AUTOGRADER.encode("utf-8")
    if course.solutions_dir.is_dir():
        solutions = {p.read_bytes() for p in course.solutions_dir.rglob("*") if p.is_file()}
        leaked = sorted(rel for rel, data in files.items() if data in solutions)
        if leaked:
            raise ValueError(f"the bundle would hold a reference solution ({leaked[0]}); refusing")
    return files


def build_bundle(course: Course, out: Path) -> Path:
    """Write the zip Gradescope takes; its root holds setup.sh and run_autograder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel, data in sorted(bundle_files(course).items()):
            info = zipfile.ZipInfo(rel, date_time=(2020, 1, 1, 0, 0, 0))
            executable = rel in ("setup.sh", "run_autograder")
            info.external_attr = ((0o755 if executable else 0o644) | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    tmp.replace(out)
    return out


def run(root: Path, args: argparse.Namespace) -> int:
    """Grade ``root/submission`` with the course in ``root/source``; write ``root/results``."""
    results = root / "results" / "results.json"
    try:
        course = load_course(root / "source")
        grader = grade.make_grader(args, course)
        result = grader.grade(root / "submission", name="submission")
    except Exception:  # the autograder's own failure: say so on stdout, write no score
        traceback.print_exc()
        print("labkit: the autograder failed before it could grade; this is not the learner's doing")
        return 1
    grade.write_json(results, grade.results_json(result, course))
    print(grade.summary_text(result))
    if result.log.strip():
        print("\n--- captured output of the test sessions (head and tail) ---")
        print(result.log)
    print(f"\nwrote {results}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(prog="python -m labkit.gradescope")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="grade the submission of a Gradescope layout")
    p.add_argument("--root", default=os.environ.get(ROOT_ENV, DEFAULT_ROOT),
                   help=f"the layout's root (default ${ROOT_ENV} or {DEFAULT_ROOT})")
    grade._add_limits(p)
    p = sub.add_parser("build", help="build the autograder zip")
    p.add_argument("--out", default="dist/gradescope-autograder.zip")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build_bundle(load_course(), Path(args.out)))
        return 0
    return run(Path(args.root), args)


if __name__ == "__main__":
    sys.exit(main())
