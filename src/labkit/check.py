"""``make check``: every self-check that proves the course itself is right.

Each check returns a list of problems (empty when it passes). The checks that run whole pytest
sessions run two at a time; everything reports at the end, and any problem makes the exit code 1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from labkit import overlay, stubs
from labkit.manifest import Course
from labkit.runner import Run, run_pytest

Check = Callable[[Course], list[str]]
PITFALLS = Path("tests/course/pitfalls")
ALTERNATIVES = Path("tests/course/alternatives")


def _graded_args(course: Course) -> list[str]:
    return ["-q", "-m", " or ".join(lab.marker for lab in course.available_labs)]


def _failures(run: Run) -> list[str]:
    return [f"{o.nodeid}: {o.message.splitlines()[0] if o.message else ''}"
            for o in run.outcomes.values() if o.outcome == "failed"]


def _session_problem(run: Run, what: str) -> list[str]:
    if run.timed_out:
        return [f"{what}: timed out"]
    if not run.outcomes:
        tail = "\n".join(run.output.strip().splitlines()[-15:])
        return [f"{what}: no test ran (exit {run.returncode})\n{tail}"]
    if run.returncode not in (0, 1):
        tail = "\n".join(run.output.strip().splitlines()[-15:])
        return [f"{what}: pytest exited {run.returncode} (collection or usage error)\n{tail}"]
    return []


def check_stubs_current(course: Course) -> list[str]:
    return [
        f"src/minituner/{name} differs from what solutions/ generates: run `make stubs`"
        for name in stubs.stale(course)
    ]


def check_mypy(course: Course) -> list[str]:
    problems: list[str] = []
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--hide-error-context"]
    env = dict(os.environ, MYPYPATH=str(course.root / "src"))
    done = subprocess.run(
        [*mypy, "-p", "minituner", "-p", "labkit"],
        cwd=course.root, capture_output=True, text=True, env=env,
    )
    if done.returncode != 0:
        problems.append("mypy --strict src/:\n" + (done.stdout + done.stderr).strip())
    impl = overlay.resolve(course, overlay.REFERENCE)
    try:
        done = subprocess.run(
            [*mypy, "-p", course.package],
            cwd=impl.package_dir.parent, capture_output=True, text=True,
            env=dict(os.environ, MYPYPATH=str(impl.package_dir.parent)),
        )
        if done.returncode != 0:
            out = (done.stdout + done.stderr).replace(str(impl.package_dir), "solutions/minituner")
            problems.append("mypy --strict solutions/ (with the given code):\n" + out.strip())
    finally:
        impl.cleanup()
    return problems


def check_reference(course: Course) -> list[str]:
    run = run_pytest(course.root, _graded_args(course), impl=overlay.REFERENCE)
    problems = _session_problem(run, "reference")
    return problems or [f"reference fails {f}" for f in _failures(run)]


def check_stubs_red(course: Course) -> list[str]:
    """The generated stubs fail every graded test by NotImplementedError, none at collection."""
    scratch = Path(tempfile.mkdtemp(prefix="labkit-stubs-"))
    try:
        for name, text in stubs.generated(course).items():
            (scratch / name).write_text(text, encoding="utf-8")
        run = run_pytest(course.root, _graded_args(course), impl=str(scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    problems = _session_problem(run, "stubs")
    for o in run.outcomes.values():
        if o.outcome == "skipped":  # e.g. a CUDA test on a machine without CUDA
            continue
        if o.outcome != "failed":
            problems.append(f"{o.nodeid} {o.outcome} on the stubs: it must fail until the lab is done")
        elif "NotImplementedError" not in o.message:
            first = o.message.splitlines()[0] if o.message else "(no message)"
            problems.append(f"{o.nodeid} fails on the stubs without NotImplementedError: {first}")
    return problems


@dataclass(frozen=True)
class Case:
    folder: Path
    lab: str
    must_mention: tuple[str, ...]  # empty for an alternative: it must pass everything
    pitfall: str


def _cases(course: Course) -> list[Case]:
    cases: list[Case] = []
    for spec in sorted((course.root / PITFALLS).glob("*/*/pitfall.toml")):
        data = tomllib.loads(spec.read_text(encoding="utf-8"))
        mentions = tuple(str(m) for m in data.get("must_mention", []))
        if not mentions:
            raise ValueError(f"{spec}: must_mention is empty; name the phrase a test must say")
        cases.append(Case(spec.parent, str(data["lab"]), mentions, str(data.get("pitfall", ""))))
    for folder in sorted((course.root / ALTERNATIVES).glob("*/*/")):
        if folder.is_dir() and any(folder.glob("*.py")):
            cases.append(Case(folder, folder.parent.name, (), "correct alternative"))
    return cases


def _judge(course: Course, case: Case) -> list[str]:
    rel = case.folder.relative_to(course.root)
    if not course.lab(case.lab).available:
        return []
    # A case holds only the files its mistake lives in; the other lab files (a later lab's
    # earlier work) come from the reference, so one lab's bug is judged on its own.
    scratch = Path(tempfile.mkdtemp(prefix="labkit-case-"))
    try:
        for name in course.lab_files:
            own, ref = case.folder / name, course.solutions_dir / name
            if own.is_file() or ref.is_file():
                shutil.copyfile(own if own.is_file() else ref, scratch / name)
        run = run_pytest(course.root, ["-q", "-m", case.lab], impl=str(scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    problems = _session_problem(run, str(rel))
    if problems:
        return problems
    failed = [o for o in run.outcomes.values() if o.outcome == "failed"]
    if not case.must_mention:
        return [f"{rel} (a correct alternative) fails {f}" for f in _failures(run)]
    if not failed:
        return [f"{rel}: no {case.lab} test fails on the pitfall '{case.pitfall}'"]
    wanted = [m.lower() for m in case.must_mention]
    if not any(any(w in o.message.lower() for w in wanted) for o in failed):
        seen = "; ".join(sorted({o.message.splitlines()[0][:120] for o in failed})[:3])
        return [
            f"{rel}: tests fail on '{case.pitfall}' but none names it "
            f"(wanted one of {list(case.must_mention)}); messages: {seen}"
        ]
    return []


def check_pitfalls(course: Course) -> list[str]:
    cases = _cases(course)
    if not cases:
        return [f"no pitfall implementations under {PITFALLS}"]
    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for found in pool.map(lambda c: _judge(course, c), cases):
            problems.extend(found)
    return problems


def check_course_tests(course: Course) -> list[str]:
    """The self-checks written as pytest tests under tests/course (paths, README, notebooks...)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "tests/course", "-m", "course",
         "--impl=reference"],
        cwd=course.root, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-40:])
        return [f"tests/course failed (exit {done.returncode}):\n{tail}"]
    return []


CHECKS: dict[str, Check] = {
    "stubs-current": check_stubs_current,
    "mypy": check_mypy,
    "reference-green": check_reference,
    "stubs-red": check_stubs_red,
    "pitfalls": check_pitfalls,
    "course-tests": check_course_tests,
}


def run_checks(course: Course, only: list[str] | None = None) -> int:
    names = list(CHECKS) if not only else only
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"labkit check: unknown check(s) {unknown}; known: {', '.join(CHECKS)}")
        return 2
    start = time.monotonic()

    def timed(name: str) -> tuple[str, list[str], float]:
        t0 = time.monotonic()
        try:
            problems = CHECKS[name](course)
        except Exception as err:  # a broken check is a failed check, with its reason
            problems = [f"the check itself crashed: {type(err).__name__}: {err}"]
        return name, problems, time.monotonic() - t0

    failed = 0
    with ThreadPoolExecutor(max_workers=2) as pool:
        for name, problems, seconds in pool.map(timed, names):
            mark = "ok  " if not problems else "FAIL"
            print(f"[{mark}] {name:<16} {seconds:6.1f} s", flush=True)
            for problem in problems:
                print("       " + problem.replace("\n", "\n       "))
            failed += bool(problems)
    total = time.monotonic() - start
    print(f"\nself-checks took {total:.0f} s")
    print(f"{len(names) - failed} passed, {failed} failed")
    return 1 if failed else 0
