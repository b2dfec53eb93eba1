"""The pytest side of labkit: ``--impl``, ``--grade``, lab markers and a machine-readable report.

``conftest.py`` at the repository root loads this module as a plugin, so every pytest run of the
course, whatever its arguments, chooses the code under test in the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from labkit import overlay
from labkit.manifest import Course, ManifestError, load_course

_COURSE = pytest.StashKey[Course]()
_IMPL = pytest.StashKey[overlay.Impl]()
_TALLY = pytest.StashKey["Tally"]()
MESSAGE_LIMIT = 4000


@dataclass
class Outcome:
    nodeid: str
    lab: str | None
    outcome: str = "passed"  # passed | failed | skipped
    message: str = ""


def sign(key: bytes, line: str) -> str:
    """The MAC the grader checks on each report line (see labkit.sandbox)."""
    return hmac.new(key, line.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass
class Tally:
    """What this session observed: every collected test and how it ended.

    Each event becomes one JSON line on ``report`` with a sequence number. When the grader hands
    the session a key (``--labkit-key-fd``), each line is prefixed with its MAC, so lines the code
    under test writes to the same pipe are told apart from the plugin's own.
    """

    tests: dict[str, Outcome] = field(default_factory=dict)
    report: IO[str] | None = None
    key: bytes | None = field(default=None, repr=False)
    seq: int = 0

    def emit(self, record: dict[str, Any]) -> None:
        if self.report is None:
            return
        line = json.dumps({"seq": self.seq, **record}, sort_keys=True)
        self.seq += 1
        if self.key is not None:
            line = f"{sign(self.key, line)} {line}"
        try:
            self.report.write(line + "\n")
            self.report.flush()
        except (OSError, ValueError):  # the reader went away: nothing left to tell it
            self.report = None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("minituner", "minituner course")
    group.addoption(
        "--impl",
        action="store",
        default=overlay.LEARNER,
        metavar="WHICH",
        help="code under test: 'learner' (src/minituner, the default), 'reference' "
        "(solutions/), or a PATH holding a submission's lab files",
    )
    group.addoption(
        "--grade",
        action="store_true",
        default=False,
        help="print a per-lab score table (points from course.toml)",
    )
    group.addoption(
        "--labkit-report",
        action="store",
        default=None,
        metavar="FILE",
        help="write one JSON line per collected and finished test to FILE (used by labkit)",
    )
    group.addoption(
        "--labkit-report-fd",
        action="store",
        type=int,
        default=None,
        metavar="FD",
        help="write the same report to an inherited pipe (used by labkit grade)",
    )
    group.addoption(
        "--labkit-key-fd",
        action="store",
        type=int,
        default=None,
        metavar="FD",
        help="read the key that signs each report line from an inherited pipe (used by labkit grade)",
    )


def _joined(args: list[str]) -> list[str] | None:
    """``args`` with ``--impl VALUE`` written as ``--impl=VALUE``; None when nothing changes."""
    out: list[str] = []
    changed = False
    i = 0
    while i < len(args):
        if args[i] == "--impl" and i + 1 < len(args):
            out.append(f"--impl={args[i + 1]}")
            changed = True
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out if changed else None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    """Make ``pytest --impl PATH`` mean what it says, from any folder and for any PATH.

    pytest picks its root folder and configuration file before any plugin can declare options,
    so in ``--impl PATH`` it first reads PATH as a test path and roots the session there. The
    joined form ``--impl=PATH`` has no such problem: when the command line used the spaced form,
    start pytest again with the joined one (or ask for it, when pytest was called from Python).
    """
    given = list(early_config.invocation_params.args)
    joined = _joined(given)
    if joined is None:
        return
    if given == sys.argv[1:]:
        capture = early_config.pluginmanager.getplugin("capturemanager")
        if capture is not None:  # give the terminal back before replacing this process
            capture.stop_global_capturing()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "pytest", *joined])
    raise pytest.UsageError("write the option as --impl=PATH (with '=') when calling pytest.main")


def lab_of(item: pytest.Item, course: Course) -> str | None:
    markers = {m.name for m in item.iter_markers()}
    for lab in course.labs:
        if lab.marker in markers:
            return lab.id
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    try:
        course = load_course(Path(str(config.rootpath)))
    except ManifestError as err:
        raise pytest.UsageError(str(err)) from None
    for lab in course.labs:
        config.addinivalue_line("markers", f"{lab.marker}: {lab.id}, {lab.title}")
    try:
        impl = overlay.resolve(course, config.getoption("--impl"))
    except overlay.ImplError as err:
        raise pytest.UsageError(str(err)) from None
    overlay.activate(course, impl)
    config.stash[_COURSE] = course
    config.stash[_IMPL] = impl
    tally = Tally()
    report_path = config.getoption("--labkit-report")
    report_fd = config.getoption("--labkit-report-fd")
    key_fd = config.getoption("--labkit-key-fd")
    if key_fd is not None:
        # Read before any code under test runs, then close: the key lives only in this object.
        tally.key = _read_key(key_fd)
    if report_fd is not None:
        os.set_inheritable(report_fd, False)  # processes the code under test starts never get it
        tally.report = os.fdopen(report_fd, "w", encoding="utf-8")  # noqa: SIM115 - closed at unconfigure
    elif report_path:
        tally.report = open(report_path, "w", encoding="utf-8")  # noqa: SIM115 - closed at unconfigure
    config.stash[_TALLY] = tally


def _read_key(fd: int) -> bytes:
    chunks: list[bytes] = []
    try:
        while sum(map(len, chunks)) < 256:
            chunk = os.read(fd, 256)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    key = b"".join(chunks)
    if len(key) < 16:
        raise pytest.UsageError("--labkit-key-fd gave no key: it is meant for labkit grade only")
    return key


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``pytest --grade`` alone grades the labs: the course's own self-checks are left out."""
    if not config.getoption("--grade") or config.option.markexpr or config.option.keyword:
        return
    course = config.stash[_COURSE]
    graded = [item for item in items if lab_of(item, course) is not None]
    others = [item for item in items if lab_of(item, course) is None]
    if others:
        config.hook.pytest_deselected(items=others)
        items[:] = graded


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    tally = session.config.stash.get(_TALLY, None)
    if tally is not None:
        tally.emit({"event": "finished", "exitstatus": int(exitstatus)})


def pytest_unconfigure(config: pytest.Config) -> None:
    impl = config.stash.get(_IMPL, None)
    if impl is not None:
        impl.cleanup()
    tally = config.stash.get(_TALLY, None)
    if tally is not None and tally.report is not None:
        tally.report.close()
        tally.report = None


def pytest_report_header(config: pytest.Config) -> str | None:
    impl = config.stash.get(_IMPL, None)
    if impl is None:
        return None
    where = "src/minituner (your code)" if impl.label == overlay.LEARNER else impl.label
    line = f"minituner code under test: {where}"
    if impl.missing:
        line += f" (missing: {', '.join(impl.missing)})"
    return line


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    course, tally = config.stash[_COURSE], config.stash[_TALLY]
    for item in session.items:
        tally.tests[item.nodeid] = Outcome(item.nodeid, lab_of(item, course))
    tally.emit(
        {"event": "collected", "tests": [[t.nodeid, t.lab] for t in tally.tests.values()],
         "skips": _marked_skips(session.items) if tally.report is not None else {}}
    )


def _marked_skips(items: list[pytest.Item]) -> dict[str, str]:
    """Tests a skip or skipif marker skips on this machine, with the reason (the grader's baseline
    needs them from a --collect-only run: their points go to the tests that run)."""
    try:
        from _pytest.skipping import evaluate_skip_marks
    except ImportError:  # pragma: no cover - a pytest without it: no test counts as skipped
        return {}
    skips: dict[str, str] = {}
    for item in items:
        try:
            skip = evaluate_skip_marks(item)
        except Exception:  # a marker that cannot be evaluated skips nothing here
            continue
        if skip is not None:
            skips[item.nodeid] = skip.reason
    return skips


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    tally = item.config.stash.get(_TALLY, None)
    if tally is None:
        return report
    entry = tally.tests.setdefault(item.nodeid, Outcome(item.nodeid, None))
    if report.failed and entry.outcome != "failed":
        entry.outcome = "failed"
        if call.excinfo is not None:
            entry.message = call.excinfo.exconly()[:MESSAGE_LIMIT]
        else:
            entry.message = report.longreprtext[-MESSAGE_LIMIT:]
        if report.when != "call":
            entry.message = f"(in {report.when}) {entry.message}"
    elif report.skipped and entry.outcome == "passed":
        entry.outcome = "skipped"
        entry.message = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
    if report.when == "teardown":
        tally.emit(
            {"event": "result", "nodeid": entry.nodeid, "lab": entry.lab,
             "outcome": entry.outcome, "message": entry.message}
        )
    return report


@dataclass(frozen=True)
class LabScore:
    lab: str
    title: str
    passed: int
    failed: int
    skipped: int
    points: float
    max_points: float


def lab_scores(course: Course, outcomes: list[Outcome]) -> list[LabScore]:
    """Points per lab: a lab's points shared equally among its tests that were not skipped."""
    scores: list[LabScore] = []
    for lab in course.labs:
        mine = [o for o in outcomes if o.lab == lab.id]
        if not lab.available and not mine:
            continue
        passed = sum(o.outcome == "passed" for o in mine)
        failed = sum(o.outcome == "failed" for o in mine)
        skipped = sum(o.outcome == "skipped" for o in mine)
        counted = passed + failed
        earned = lab.points * passed / counted if counted else 0.0
        scores.append(LabScore(lab.id, lab.title, passed, failed, skipped, earned, lab.points))
    return scores


def format_table(scores: list[LabScore]) -> str:
    lines = [f"{'lab':<6} {'title':<32} {'tests':>9} {'points':>15}"]
    for s in scores:
        tests = f"{s.passed}/{s.passed + s.failed}"
        lines.append(f"{s.lab:<6} {s.title:<32} {tests:>9} {s.points:>7.2f} / {s.max_points:<6g}")
    total = sum(s.points for s in scores)
    most = sum(s.max_points for s in scores)
    lines.append(f"{'total':<6} {'':<32} {'':>9} {total:>7.2f} / {most:<6g}")
    return "\n".join(lines)


def grading_refusals(course: Course, impl: overlay.Impl) -> list[str]:
    """What ``labkit grade`` would refuse in the lab files under test (see labkit.vet)."""
    from labkit.vet import vet_file

    if impl.label == overlay.REFERENCE:
        return []
    problems: list[str] = []
    for name in course.lab_files:
        if name in impl.missing:
            continue
        path = impl.package_dir / name
        if path.is_file():
            allowed = course.allowed_imports_for(name)
            problems.extend(str(r) for r in vet_file(path, allowed, course.package))
    return problems


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    course = config.stash.get(_COURSE, None)
    tally = config.stash.get(_TALLY, None)
    impl = config.stash.get(_IMPL, None)
    if course is None or tally is None or impl is None:
        return
    ran_labs = any(o.lab is not None for o in tally.tests.values())
    if ran_labs:
        refusals = grading_refusals(course, impl)
        if refusals:
            terminalreporter.section("minituner: the grader will refuse this code", yellow=True)
            for line in refusals:
                terminalreporter.write_line(line)
            terminalreporter.write_line(
                "A refused file scores zero for every lab that uses it, whatever the tests say "
                "here. Change the lines above (docs/grading.md says why each rule exists)."
            )
    if not config.getoption("--grade"):
        return
    scores = [s for s in lab_scores(course, list(tally.tests.values())) if s.passed + s.failed]
    terminalreporter.section("minituner grade")
    if not scores:
        terminalreporter.write_line("no graded test ran: select labs with -m, or run without -m")
        return
    terminalreporter.write_line(format_table(scores))
    skipped = sum(s.skipped for s in scores)
    if skipped:
        terminalreporter.write_line(
            f"({skipped} skipped test{'s' if skipped != 1 else ''} not counted: "
            "a lab's points are shared among the tests that ran)"
        )
