"""Grading: ``labkit grade PATH`` and ``labkit grade-all DIR`` (see DESIGN.md, Grading).

One :class:`Grader` per grading run reads the course once (``sandbox.snapshot``), collects the
course's own tests once with no submission at all (the *baseline*: the list of tests, their labs and
order, and which of them a skip marker skips on this machine), then grades submissions one by one or
several at a time:

1. find the submission's lab files (only the ones course.toml names), refuse symbolic links and
   files outside the submission, and screen each with the static check (``labkit.vet``); a missing
   or refused file is replaced by a module that raises ImportError saying why;
2. run the course's tests on them in a sandbox (``labkit.sandbox``) and keep only what the grader
   can vouch for; when that session ends abnormally (not by time or forgery), set aside the lab
   whose test was running and run the others again, so one lab's crash costs only that lab;
3. score: a lab's points are shared equally among its tests that do not skip in the baseline; a
   test scores only if it passed in a session that counts. A lab with ``notes_points`` adds one
   entry per measurement of its notes file, scored against the range in course.toml.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit import overlay, sandbox
from labkit.manifest import Course, Lab, load_course
from labkit.notes import Reading, read_notes
from labkit.vet import MAX_BYTES, vet_source

DEFAULT_TIMEOUT = 300.0
DEFAULT_TEST_TIMEOUT = 30.0
DEFAULT_MEMORY_MB = 3072
NOTES_LIMIT = 1024 * 1024
UNPRIVILEGED_USER = "nobody"


class GradeError(RuntimeError):
    """The course cannot be graded here; the message says why. Never a submission's fault."""


# --------------------------------------------------------------------------------------------
# a submission's files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabFile:
    """One lab file as the grader will use it."""

    name: str
    status: str  # "submitted" | "missing" | "refused"
    data: bytes
    reason: str = ""  # for missing and refused files: why, in words for the learner
    refusals: tuple[str, ...] = ()


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def read_lab_files(course: Course, path: Path, static_check: bool = True) -> dict[str, LabFile]:
    """The submission's lab files, screened; missing and refused ones as placeholders."""
    try:
        folder: Path | None = overlay.find_lab_folder(course, path)
    except overlay.ImplError:
        folder = None
    where = "the submission" if folder is None else (
        "the submission's top folder" if folder == path else f"{folder.relative_to(path).as_posix()}/"
    )
    out: dict[str, LabFile] = {}
    for name in course.lab_files:
        labs = [lab.id for lab in course.labs_for_file(name)]
        source = None if folder is None else folder / name
        reason = ""
        data = b""
        if source is None or not (source.exists() or source.is_symlink()):
            reason = f"the submission has no {name} (looked in {where})"
        elif source.is_symlink() or not _inside(source, path):
            reason = f"the grader refused {name}: it is a symbolic link or lies outside the submission; submit the file itself"
        elif not source.is_file():
            reason = f"the grader refused {name}: it is not a regular file"
        elif source.stat().st_size > MAX_BYTES:
            reason = f"the grader refused {name}: it is {source.stat().st_size} bytes, more than {MAX_BYTES}"
        else:
            data = source.read_bytes()
        if reason:
            status = "missing" if "has no" in reason else "refused"
            out[name] = LabFile(name, status, overlay.placeholder(name, labs, reason), reason)
            continue
        refusals = (
            tuple(str(r) for r in vet_source(data, name, course.allowed_imports_for(name), course.package))
            if static_check else ()
        )
        if refusals:
            more = f" (and {len(refusals) - 1} more)" if len(refusals) > 1 else ""
            reason = f"the grader refused {name}: {refusals[0]}{more}"
            out[name] = LabFile(name, "refused", overlay.placeholder(name, labs, reason), reason, refusals)
        else:
            out[name] = LabFile(name, "submitted", data)
    return out


def find_notes(lab: Lab, path: Path) -> Path | None:
    """The submission's notes file for ``lab``: as in the course, or in a folder named like it."""
    rel = Path(lab.notes)
    for candidate in (path / rel, path / rel.parent.name / rel.name, path / f"{rel.parent.name}.md"):
        if (candidate.is_file() and not candidate.is_symlink() and _inside(candidate, path)
                and candidate.stat().st_size <= NOTES_LIMIT):
            return candidate
    return None


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestScore:
    """One entry of results.json: a test, or a measurement of a notes file."""

    name: str
    lab: str
    status: str  # "passed" | "failed"
    score: float
    max_score: float
    output: str
    nodeid: str = ""


@dataclass(frozen=True)
class LabGrade:
    lab: str
    title: str
    score: float
    max_score: float
    passed: int
    failed: int
    notes_score: float = 0.0
    notes_max_score: float = 0.0
    notes_passed: int = 0
    notes_failed: int = 0


@dataclass(frozen=True)
class Grade:
    """Everything the grader observed about one submission, and its score."""

    name: str
    labs: tuple[LabGrade, ...]
    tests: tuple[TestScore, ...]
    files: tuple[LabFile, ...]
    problems: tuple[str, ...]  # sessions that did not count, and why
    log: str  # the sessions' captured output (head and tail), for the instructor
    seconds: float

    @property
    def score(self) -> float:
        return round(sum(lab.score for lab in self.labs), 6)

    @property
    def max_score(self) -> float:
        return round(sum(lab.max_score for lab in self.labs), 6)

    def lab(self, lab_id: str) -> LabGrade | None:
        return next((lab for lab in self.labs if lab.lab == lab_id), None)


def format_table(grade: Grade) -> str:
    """The per-lab table: tests passed/total, points earned/available, and the total."""
    has_notes = any(lab.notes_max_score for lab in grade.labs)
    head = f"{'lab':<6} {'title':<32} {'tests':>9}"
    head += f" {'notes':>7}" if has_notes else ""
    lines = [head + f" {'points':>17}"]
    for lab in grade.labs:
        row = f"{lab.lab:<6} {lab.title[:32]:<32} {f'{lab.passed}/{lab.passed + lab.failed}':>9}"
        if has_notes:
            notes = f"{lab.notes_passed}/{lab.notes_passed + lab.notes_failed}" if lab.notes_max_score else "-"
            row += f" {notes:>7}"
        lines.append(row + f" {lab.score:>8.2f} / {lab.max_score:<6g}")
    pad = 6 + 1 + 32 + 1 + 9 + (8 if has_notes else 0)
    lines.append(f"{'total':<{pad}} {grade.score:>8.2f} / {grade.max_score:<6g}")
    return "\n".join(lines)


def summary_text(grade: Grade) -> str:
    """What a learner reads first: the table, refused files and sessions that did not count."""
    parts = [format_table(grade)]
    refused = [f for f in grade.files if f.status == "refused"]
    if refused:
        parts.append("Refused lab files (every lab that uses one scores zero):")
        for f in refused:
            parts.extend(f"  {line}" for line in (f.refusals or (f.reason,)))
    missing = [f.name for f in grade.files if f.status == "missing"]
    if missing:
        parts.append(f"Missing lab files: {', '.join(missing)}")
    if grade.problems:
        parts.append("Test sessions that did not count (their tests count as failed):")
        parts.extend(f"  {p}" for p in grade.problems)
    return "\n".join(parts)


def results_json(grade: Grade, course: Course) -> dict[str, Any]:
    """The Gradescope autograder results (gradescope-autograders.readthedocs.io, specs)."""
    numbers: dict[str, int] = {}
    order = {lab.id: i + 1 for i, lab in enumerate(course.labs)}
    tests: list[dict[str, Any]] = []
    for t in grade.tests:
        numbers[t.lab] = numbers.get(t.lab, 0) + 1
        tests.append({
            "name": t.name,
            "number": f"{order.get(t.lab, 0)}.{numbers[t.lab]}",
            "score": round(t.score, 6),
            "max_score": round(t.max_score, 6),
            "status": t.status,
            "output": t.output,
            "output_format": "text",
            "tags": [t.lab],
            "visibility": "visible",
            "extra_data": {"lab": t.lab, "nodeid": t.nodeid} if t.nodeid else {"lab": t.lab},
        })
    return {
        "score": grade.score,
        "max_score": grade.max_score,
        "execution_time": round(grade.seconds, 1),
        "output": summary_text(grade),
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "extra_data": {
            "max_score": grade.max_score,
            "labs": {
                lab.lab: {
                    "title": lab.title,
                    "score": round(lab.score, 6),
                    "max_score": round(lab.max_score, 6),
                    "passed": lab.passed,
                    "failed": lab.failed,
                    "notes_score": round(lab.notes_score, 6),
                    "notes_max_score": round(lab.notes_max_score, 6),
                }
                for lab in grade.labs
            },
            "files": {f.name: {"status": f.status, "reason": f.reason} for f in grade.files},
            "problems": list(grade.problems),
        },
        "tests": tests,
    }


# --------------------------------------------------------------------------------------------
# the grader
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """The course's tests as they run here with no submission: their order, labs and skips."""

    tests: tuple[tuple[str, str], ...]  # (nodeid, lab id), in collection order
    skipped: Mapping[str, str]  # nodeid -> reason, for the tests a skip marker skips here

    def ids(self, labs: Iterable[str] | None = None) -> list[str]:
        wanted = None if labs is None else set(labs)
        return [nodeid for nodeid, lab in self.tests if wanted is None or lab in wanted]

    def paths(self, labs: Iterable[str]) -> list[str]:
        """The test files that hold these labs' tests, in collection order."""
        return list(dict.fromkeys(nodeid.split("::", 1)[0] for nodeid in self.ids(labs)))


def score(
    labs: Iterable[Lab],
    baseline: Baseline,
    outcomes: Mapping[str, tuple[str, str]],
    notes: Mapping[str, list[TestScore]],
) -> tuple[list[LabGrade], list[TestScore]]:
    """Points per lab and per test, from what the grader observed and nothing else.

    A lab's points are shared equally among its tests that do not skip in the baseline; a test
    scores when its outcome is "passed" (a test missing from ``outcomes`` failed). Notes entries
    (``notes_scores``) add to their lab.
    """
    tests: list[TestScore] = []
    grades: list[LabGrade] = []
    for lab in labs:
        counted = [n for n in baseline.ids([lab.id]) if n not in baseline.skipped]
        each = lab.points / len(counted) if counted else 0.0
        passed = 0
        for nodeid in counted:
            status, message = outcomes.get(nodeid, ("failed", "did not run"))
            ok = status == "passed"
            passed += ok
            tests.append(TestScore(_test_name(nodeid, lab.id), lab.id, "passed" if ok else "failed",
                                   each if ok else 0.0, each, "" if ok else message, nodeid))
        points = lab.points * passed / len(counted) if counted else 0.0
        mine = notes.get(lab.id, [])
        tests.extend(mine)
        notes_score = sum(t.score for t in mine)
        notes_max = sum(t.max_score for t in mine)
        grades.append(LabGrade(
            lab.id, lab.title, points + notes_score, lab.points + notes_max, passed,
            len(counted) - passed, notes_score, notes_max,
            sum(t.status == "passed" for t in mine), sum(t.status == "failed" for t in mine),
        ))
    return grades, tests


def notes_scores(lab: Lab, path: Path) -> list[TestScore]:
    """One entry per measurement of ``lab`` when it gives points for notes (``notes_points``)."""
    if lab.notes_points <= 0 or not lab.measurements:
        return []
    found = find_notes(lab, path)
    readings: list[Reading] = read_notes(lab, found) if found else [
        Reading(m, None, None) for m in lab.measurements
    ]
    each = lab.notes_points / len(readings)
    out: list[TestScore] = []
    for reading in readings:
        m = reading.measurement
        problem = reading.problem()
        if found is None:
            problem = f"no notes file: record `{m.name}` in {lab.notes} ({m.description})"
        ok = problem is None
        shown = f"{reading.value:g}" if reading.value is not None else "?"
        out.append(TestScore(
            f"{lab.id} notes: {m.name}", lab.id, "passed" if ok else "failed",
            each if ok else 0.0, each, problem or f"`{m.name}` = {shown} {m.unit}: in range",
        ))
    return out


def _markexpr(labs: Iterable[Lab]) -> str:
    return " or ".join(lab.marker for lab in labs)


def _test_name(nodeid: str, lab: str) -> str:
    return f"{lab}: {nodeid.split('::', 1)[-1]}"


@dataclass
class Grader:
    """Grades submissions of one course; build it once per grading run."""

    course: Course
    limits: sandbox.Limits = field(default_factory=sandbox.Limits)
    static_check: bool = True
    python: str = sys.executable
    notices: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labs = self.course.available_labs
        if not self.labs:
            raise GradeError("course.toml marks no lab `available = true`: nothing to grade")
        sandbox.sweep_stale()
        try:
            self.files = sandbox.snapshot(self.course)
        except (OSError, sandbox.SandboxError) as err:
            raise GradeError(f"cannot read the course at {self.course.root}: {err}") from None
        self.baseline = self._baseline()
        self.graded = tuple(lab for lab in self.labs if self.baseline.ids([lab.id]))
        for lab in self.labs:
            if lab not in self.graded:
                self.notices.append(f"{lab.id} is available but has no test: it is not graded")

    def _baseline(self) -> Baseline:
        """Collect the course's own tests once (``--collect-only``, with every lab file a
        placeholder): their ids, labs and order, and which skip markers skip them here."""
        lab_files = {
            name: overlay.placeholder(name, [lab.id for lab in self.course.labs_for_file(name)], f"no {name}")
            for name in self.course.lab_files
        }
        scratch = sandbox.make_scratch(self.files, lab_files, self._uid())
        try:
            session = sandbox.run_session(
                scratch, _markexpr(self.labs), None, self.limits, max(self.limits.timeout, 120.0),
                self.python, collect_only=True,
            )
        finally:
            scratch.cleanup()
        if not session.trusted or session.collected is None:
            tail = "\n".join(session.output.strip().splitlines()[-20:])
            raise GradeError(
                f"the course's tests do not collect here ({session.problem}); fix the course first:\n{tail}"
            )
        known = {lab.id for lab in self.labs}
        tests = tuple((nodeid, str(lab)) for nodeid, lab in session.collected if lab in known)
        if len(tests) != len(session.collected):
            raise GradeError("some collected tests carry no lab marker; give every graded test one")
        return Baseline(tests, dict(session.skips))

    def _uid(self) -> int | None:
        if not self.limits.user:
            return None
        import pwd

        return pwd.getpwnam(self.limits.user).pw_uid

    # -- one submission --------------------------------------------------------------------

    def grade(self, path: Path, name: str | None = None) -> Grade:
        started = time.monotonic()
        path = path.expanduser()
        if not path.is_dir():
            raise GradeError(f"{path}: not a folder; give the folder that holds the lab files")
        files = read_lab_files(self.course, path, self.static_check)
        outcomes, problems, log = self._run(files, started)
        notes = {lab.id: notes_scores(lab, path) for lab in self.graded}
        labs, tests = score(self.graded, self.baseline, outcomes, notes)
        return Grade(name or path.resolve().name, tuple(labs), tuple(tests), tuple(files.values()),
                     tuple(problems), log, time.monotonic() - started)

    def _run(self, files: Mapping[str, LabFile], started: float) -> tuple[dict[str, tuple[str, str]], list[str], str]:
        """Outcome of every baseline test: ("passed" | "failed" | "skipped", message).

        One session runs every lab that has a submitted file. When it ends abnormally (not by
        time, not by forgery), the lab whose test was running is set aside and the others run
        again together, until a session ends normally or no lab is left: a crash costs only the
        labs whose tests crash, and the tests of those labs count as failed.
        """
        real = {name for name, f in files.items() if f.status == "submitted"}
        to_run = [lab for lab in self.graded if real & set(lab.files)]
        outcomes: dict[str, tuple[str, str]] = {}
        for lab in self.graded:
            if lab in to_run:
                continue
            why = "; ".join(files[name].reason for name in lab.files if files[name].status != "submitted")
            for nodeid in self.baseline.ids([lab.id]):
                outcomes[nodeid] = ("failed", f"not run: {why}")
        problems: list[str] = []
        logs: list[str] = []
        lab_data = {name: f.data for name, f in files.items()}
        deadline = started + self.limits.timeout
        while to_run:
            session = self._session(lab_data, to_run, deadline)
            logs.append(session.output)
            outcomes.update(self._outcomes(session, to_run))
            if session.trusted:
                break
            names = ", ".join(lab.id for lab in to_run)
            problems.append(f"{names}: {session.problem}")
            if session.timed_out or session.forged is not None or len(to_run) == 1:
                break
            crashed = self._running_lab(session, to_run)
            to_run = [lab for lab in to_run if lab is not crashed]
            if deadline - time.monotonic() < 5.0:
                problems[-1] += "; no time was left to run the other labs again without it"
                break
            problems[-1] += f"; {crashed.id} scores zero and the other labs ran again without it"
        return outcomes, problems, "\n".join(logs)

    def _running_lab(self, session: sandbox.Session, labs: list[Lab]) -> Lab:
        """The lab whose test was running when ``session`` ended: the first that did not report."""
        for nodeid in self.baseline.ids([lab.id for lab in labs]):
            if nodeid not in session.results:
                lab_id = dict(self.baseline.tests)[nodeid]
                return next(lab for lab in labs if lab.id == lab_id)
        return labs[-1]

    def _session(self, lab_data: Mapping[str, bytes], labs: list[Lab], deadline: float) -> sandbox.Session:
        scratch = sandbox.make_scratch(self.files, lab_data, self._uid())
        try:
            ids = [lab.id for lab in labs]
            return sandbox.run_session(
                scratch, _markexpr(labs), self.baseline.ids(ids), self.limits,
                deadline - time.monotonic(), self.python, self.baseline.paths(ids),
            )
        finally:
            scratch.cleanup()

    def _outcomes(self, session: sandbox.Session, labs: list[Lab]) -> dict[str, tuple[str, str]]:
        out: dict[str, tuple[str, str]] = {}
        for nodeid in self.baseline.ids([lab.id for lab in labs]):
            reported = session.results.get(nodeid)
            if reported is None:
                out[nodeid] = ("failed", f"did not report: {session.problem or 'no result'}")
                continue
            status, message = reported
            if status == "skipped" and nodeid not in self.baseline.skipped:
                status, message = "failed", f"skipped ({message}), but the course does not skip it here"
            if status == "passed" and not session.trusted:
                status, message = "failed", f"passed, but does not count: {session.problem}"
            elif status == "failed" and not session.trusted:
                message = f"{message}\n(and the session did not count: {session.problem})"
            out[nodeid] = (status, message)
        return out


# --------------------------------------------------------------------------------------------
# many submissions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    grades: dict[str, Grade]
    errors: dict[str, str]  # submission -> why it could not be graded
    seconds: float


def submissions_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def grade_all(grader: Grader, folder: Path, jobs: int, progress: bool = True) -> Batch:
    """Grade every folder of ``folder``, ``jobs`` at a time; a failure to grade one never stops the rest."""
    from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

    paths = submissions_in(folder)
    started = time.monotonic()
    grades: dict[str, Grade] = {}
    errors: dict[str, str] = {}
    sandbox.CANCEL.clear()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures: dict[Future[Grade], Path] = {pool.submit(grader.grade, p): p for p in paths}
        bar = tqdm(total=len(paths), unit="sub", disable=not progress, file=sys.stderr, dynamic_ncols=True)
        try:
            for future in as_completed(futures):
                path = futures[future]
                try:
                    grades[path.name] = future.result()
                except Exception as err:  # the grader's own failure on this one: report, go on
                    errors[path.name] = f"{type(err).__name__}: {err}"
                bar.set_postfix_str(path.name[:20], refresh=False)
                bar.update(1)
        except KeyboardInterrupt:  # stop the running sessions too, then give up
            sandbox.CANCEL.set()
            for future in futures:
                future.cancel()
            raise
        finally:
            bar.close()
    return Batch(dict(sorted(grades.items())), dict(sorted(errors.items())), time.monotonic() - started)


def write_outputs(batch: Batch, course: Course, labs: Iterable[Lab], out: Path) -> None:
    labs = list(labs)
    out.mkdir(parents=True, exist_ok=True)
    for name, grade in batch.grades.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "results.json", results_json(grade, course))
        (folder / "log.txt").write_text(grade.log, encoding="utf-8", errors="replace")
    most = sum(lab.points + lab.notes_points * bool(lab.measurements) for lab in labs)
    with (out / "gradebook.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "total", "max", *(lab.id for lab in labs)])
        for name in sorted([*batch.grades, *batch.errors]):
            graded = batch.grades.get(name)
            if graded is None:
                writer.writerow([name, "", f"{most:g}", *("" for _ in labs)])
                continue
            cells = []
            for lab in labs:
                found = graded.lab(lab.id)
                cells.append(f"{found.score:.4g}" if found else "")
            writer.writerow([name, f"{graded.score:.4g}", f"{graded.max_score:g}", *cells])
    if batch.errors:
        (out / "failed.txt").write_text(
            "".join(f"{name}: {why}\n" for name, why in batch.errors.items()), encoding="utf-8"
        )


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def batch_summary(batch: Batch, labs: Iterable[Lab]) -> str:
    total = len(batch.grades) + len(batch.errors)
    rate = 60 * len(batch.grades) / batch.seconds if batch.seconds else 0.0
    lines = [f"graded {len(batch.grades)} of {total} submissions in {batch.seconds:.0f} s ({rate:.1f} per minute)"]
    if batch.errors:
        lines.append(f"failed to grade {len(batch.errors)}:")
        lines.extend(f"  {name}: {why}" for name, why in batch.errors.items())
    if batch.grades:
        lines.append(f"{'lab':<6} {'mean':>8} {'stdev':>8} {'min':>8} {'max':>8} {'full':>6}  of")
        rows: list[tuple[str, list[float], float]] = []
        for lab in labs:
            found = [g.lab(lab.id) for g in batch.grades.values()]
            scores = [f.score for f in found if f is not None]
            if scores:
                rows.append((lab.id, scores, max(f.max_score for f in found if f is not None)))
        totals = [g.score for g in batch.grades.values()]
        rows.append(("total", totals, max(g.max_score for g in batch.grades.values())))
        for label, scores, most in rows:
            spread = statistics.pstdev(scores) if len(scores) > 1 else 0.0
            full = sum(abs(s - most) < 1e-9 for s in scores)
            lines.append(f"{label:<6} {statistics.fmean(scores):>8.2f} {spread:>8.2f} {min(scores):>8.2f} "
                         f"{max(scores):>8.2f} {full:>6}  {most:g}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------


def resolve_user(choice: str, python: str, notices: list[str]) -> str | None:
    """The user the tests run as: ``auto`` is nobody when the grader is root and nobody can run
    the interpreter, else the grader's own user; ``same`` is always the grader's own user."""
    if choice == "same":
        return None
    if choice != "auto":
        why = sandbox.user_can_run(choice, python)
        if why:
            raise GradeError(f"--user {choice}: {why}")
        return choice
    if os.geteuid() != 0:
        return None
    why = sandbox.user_can_run(UNPRIVILEGED_USER, python)
    if why is None:
        return UNPRIVILEGED_USER
    notices.append(
        f"note: the tests run as root, not as {UNPRIVILEGED_USER} ({why}); a submission's code "
        "can then write wherever root can. Grade in a container, or make the interpreter "
        f"readable by {UNPRIVILEGED_USER}."
    )
    return None


def _add_limits(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"wall-time limit per submission, seconds (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--test-timeout", type=float, default=DEFAULT_TEST_TIMEOUT, metavar="S",
                   help=f"time limit per test, seconds (default {DEFAULT_TEST_TIMEOUT:g})")
    p.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MB, metavar="MB",
                   help=f"address-space limit of the tests' process, MiB (default {DEFAULT_MEMORY_MB})")
    p.add_argument("--user", default="auto", metavar="NAME",
                   help="run the tests as this user: 'auto' (nobody when grading as root), 'same', or a name")
    p.add_argument("--no-static-check", action="store_true",
                   help="skip the import/escape check of lab files (the runtime checks stay on); "
                   "for testing the sandbox, never for real grading")


def _interrupt_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so a terminated grader still kills its sessions and
    removes its scratch folders."""
    import signal
    import threading

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def make_grader(args: argparse.Namespace, course: Course | None = None) -> Grader:
    _interrupt_on_sigterm()
    course = course or load_course()
    notices: list[str] = []
    user = resolve_user(args.user, sys.executable, notices)
    try:
        limits = sandbox.Limits(timeout=args.timeout, test_timeout=args.test_timeout,
                                memory_mb=args.memory, user=user)
    except ValueError as err:
        raise GradeError(str(err)) from None
    grader = Grader(course, limits, static_check=not args.no_static_check, notices=notices)
    for notice in grader.notices:
        print(notice, file=sys.stderr)
    return grader


def _grade(args: argparse.Namespace) -> int:
    try:
        grader = make_grader(args)
        grade = grader.grade(Path(args.path))
    except GradeError as err:
        print(f"labkit grade: {err}", file=sys.stderr)
        return 2
    print(summary_text(grade))
    if args.out:
        write_json(Path(args.out), results_json(grade, grader.course))
        print(f"wrote {args.out}")
    return 0


def _grade_all(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"labkit grade-all: {folder} is not a folder of submissions", file=sys.stderr)
        return 2
    if not submissions_in(folder):
        print(f"labkit grade-all: {folder} holds no submission folder", file=sys.stderr)
        return 2
    try:
        grader = make_grader(args)
    except GradeError as err:
        print(f"labkit grade-all: {err}", file=sys.stderr)
        return 2
    batch = grade_all(grader, folder, args.jobs or os.cpu_count() or 1, progress=not args.quiet)
    out = Path(args.out)
    write_outputs(batch, grader.course, grader.graded, out)
    print(batch_summary(batch, grader.graded))
    print(f"wrote {out / 'gradebook.csv'} and {out}/<name>/results.json")
    return 1 if batch.errors else 0


def _gradescope_build(args: argparse.Namespace) -> int:
    from labkit import gradescope

    try:
        path = gradescope.build_bundle(load_course(), Path(args.out))
    except (GradeError, OSError, ValueError) as err:
        print(f"labkit gradescope-build: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}: upload it as the assignment's autograder (Gradescope, Configure Autograder)")
    return 0


def add_commands(sub: Any) -> None:
    """Register the grading subcommands on the ``labkit`` parser."""
    p = sub.add_parser("grade", help="grade one submission (its folder, clone or lab files)")
    p.add_argument("path", metavar="PATH", help="the submission: lab files, a minituner/ folder or a clone")
    p.add_argument("--out", metavar="FILE", help="write Gradescope-style results.json here")
    _add_limits(p)
    p.set_defaults(func=_grade)

    p = sub.add_parser("grade-all", help="grade every submission folder of DIR; write a gradebook")
    p.add_argument("dir", metavar="DIR", help="a folder holding one folder per submission")
    p.add_argument("--out", metavar="OUTDIR", default="grading-out",
                   help="where gradebook.csv and <name>/results.json go (default grading-out)")
    p.add_argument("--jobs", type=int, default=0, metavar="N",
                   help="submissions graded at once (default: the number of cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_limits(p)
    p.set_defaults(func=_grade_all)

    p = sub.add_parser("gradescope-build", help="build the Gradescope autograder zip (make gradescope)")
    p.add_argument("--out", metavar="ZIP", default="dist/gradescope-autograder.zip")
    p.set_defaults(func=_gradescope_build)


__all__ = [
    "Baseline", "Batch", "Grade", "GradeError", "Grader", "LabFile", "LabGrade", "TestScore",
    "add_commands", "batch_summary", "format_table", "grade_all", "read_lab_files",
    "results_json", "summary_text", "write_outputs",
]
