"""Run the course's tests on one submission's lab files, apart from everything else, and read back
what happened to each test in a way the submission cannot forge.

How one session runs (see docs/grading.md for the guarantees and their limits):

- A scratch copy of the course is written from an in-memory snapshot taken once per grading run:
  the course's tests, labkit, the given code and the submission's lab files (nothing else of the
  submission, no ``solutions/``). It is made read-only, and compared with what was written after
  the session: a submission that changes the tests, labkit or a lab file while it runs gets a
  session that does not count.
- pytest runs in a child process in its own session and process group (``start_new_session``),
  with a minimal environment, no plugin autoload, a per-test timeout (pytest-timeout), an address
  space, CPU time and file size limit (``setrlimit`` in the child before anything is imported), a
  wall-time limit enforced by killing the whole group, and, when the grader runs as root and the
  interpreter allows it, as an unprivileged user.
- Output is read with a cap: the first and last few KiB are kept, the rest is counted and dropped.
- The plugin reports each test on an inherited pipe, never a file. Each line carries a sequence
  number and an HMAC under a key the grader hands the plugin on a second pipe, which the plugin
  reads and closes before any submission code runs. A session counts only when every line is
  signed and in order, the collected tests equal the course's own list, every test reported, the
  plugin's closing line arrived, and the process exited by itself with pytest's own status.

The scores are computed by the grader process from those lines; nothing the child prints, writes
or returns is read as a score.
"""

from __future__ import annotations

import hmac
import json
import os
import pwd
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from labkit.manifest import Course
from labkit.plugin import sign

#: Kept from a session's output: this many bytes from its start and as many from its end.
OUTPUT_KEEP = 32 * 1024
#: The most report bytes the grader reads from one session (a real report is well under 1 MiB).
REPORT_LIMIT = 16 * 1024 * 1024
_LINE_LIMIT = 1024 * 1024

# Set in the child before pytest (or anything else) is imported. preexec_fn would do the same but
# is unsafe in a threaded parent (grade-all grades several submissions at once from threads).
_BOOT = """\
import resource, sys
def _limit(which, value):
    if value > 0:
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value if which != resource.RLIMIT_CPU else value + 5))
_limit(resource.RLIMIT_AS, int(sys.argv[1]))
_limit(resource.RLIMIT_CPU, int(sys.argv[2]))
_limit(resource.RLIMIT_FSIZE, int(sys.argv[3]))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
sys.argv = ["pytest", *sys.argv[4:]]
import pytest
raise SystemExit(pytest.main())
"""


#: Set to stop every running session at once (grade-all sets it on Ctrl-C: the sessions run in
#: sessions of their own, so the terminal's interrupt never reaches them).
CANCEL = threading.Event()


class SandboxError(RuntimeError):
    """The course itself cannot be graded here (its tests do not run); not a submission's fault."""


@dataclass(frozen=True)
class Limits:
    """What one submission may use. Times in seconds, sizes in MiB."""

    timeout: float = 300.0
    test_timeout: float = 30.0
    memory_mb: int = 3072
    file_mb: int = 256
    user: str | None = None  # run the tests as this user (needs root); None: as the grader

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.test_timeout <= 0:
            raise ValueError(f"time limits must be positive, got {self.timeout} and {self.test_timeout}")
        if self.memory_mb < 512:
            raise ValueError(f"memory limit {self.memory_mb} MiB is too small: torch alone needs ~700 MiB")


# --------------------------------------------------------------------------------------------
# the course as the tests need it
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CourseFiles:
    """The files a scratch copy of the course holds, read once: never ``solutions/``."""

    course: Course
    files: Mapping[str, bytes]
    package_dir: str  # e.g. "src/minituner"

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.files.values())


def _walk(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if "__pycache__" in path.parts or path.suffix == ".pyc" or not path.is_file():
            continue
        yield path


def snapshot(course: Course) -> CourseFiles:
    """Read what the tests need: config, ``tests/`` (without ``tests/course``), labkit, the package
    and the lab briefs, notes and theory pages course.toml names (its validation reads them)."""
    root = course.root
    files: dict[str, bytes] = {}

    def add(path: Path, rel: str | None = None) -> None:
        rel = rel or path.relative_to(root).as_posix()
        files[rel] = path.read_bytes()

    for name in ("course.toml", "pyproject.toml", "conftest.py"):
        if (root / name).is_file():
            add(root / name)
    tests = root / "tests"
    for path in _walk(tests):
        if path.relative_to(tests).parts[0] != "course":
            add(path)
    labkit_src = root / "src" / "labkit"
    if not labkit_src.is_dir():
        labkit_src = Path(__file__).resolve().parent
    for path in _walk(labkit_src):
        add(path, "src/labkit/" + path.relative_to(labkit_src).as_posix())
    package_dir = course.stubs_dir.relative_to(root).as_posix()
    for path in _walk(course.stubs_dir):
        if path.name != ".stubs.json":
            add(path)
    for lab in course.labs:
        for rel in (lab.brief, lab.notebook, lab.notes, *lab.theory):
            if (root / rel).is_file():
                add(root / rel)
    solutions = course.solutions_dir.relative_to(root).as_posix() if course.solutions_dir.is_relative_to(root) else None
    if solutions and any(rel == solutions or rel.startswith(solutions + "/") for rel in files):
        raise SandboxError(f"refusing to copy {solutions}/ into a grading sandbox")
    return CourseFiles(course, files, package_dir)


# --------------------------------------------------------------------------------------------
# one scratch folder
# --------------------------------------------------------------------------------------------


@dataclass
class Scratch:
    """A throwaway folder: ``course/`` (read-only copy), ``tmp/`` and ``home/`` (writable)."""

    root: Path
    written: dict[str, tuple[bytes, int, int]] = field(default_factory=dict)  # rel -> data, ino, mtime

    @property
    def course(self) -> Path:
        return self.root / "course"

    def cleanup(self) -> None:
        def writable(func: object, path: str, _exc: object) -> None:
            try:
                os.chmod(os.path.dirname(path), 0o700)
                os.chmod(path, 0o700)
            except OSError:
                pass
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
            except OSError:
                pass

        for folder, dirs, _files in os.walk(self.root):
            for name in dirs:
                try:
                    os.chmod(os.path.join(folder, name), 0o700)
                except OSError:
                    pass
        shutil.rmtree(self.root, onerror=writable)


SCRATCH_PREFIX = "labkit-grade-"


def sweep_stale(folder: Path | None = None) -> int:
    """Remove the scratch folders of graders that died without cleaning up (killed by SIGKILL,
    say); a folder's name carries its grader's process id. Returns how many it removed."""
    folder = folder or Path(tempfile.gettempdir())
    removed = 0
    for path in folder.glob(f"{SCRATCH_PREFIX}*-*"):
        try:
            pid = int(path.name[len(SCRATCH_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid() or not path.is_dir() or path.stat().st_uid != os.geteuid():
            continue
        try:
            os.kill(pid, 0)
            continue  # that grader still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        Scratch(path).cleanup()
        removed += 1
    return removed


def make_scratch(files: CourseFiles, lab_files: Mapping[str, bytes], uid: int | None) -> Scratch:
    """Write the course and the submission's lab files into a fresh folder, then lock it."""
    scratch = Scratch(Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")))
    try:
        os.chmod(scratch.root, 0o755)
        content = dict(files.files)
        for name, data in lab_files.items():
            content[f"{files.package_dir}/{name}"] = data
        for rel, data in content.items():
            target = scratch.course / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for rel in content:
            path = scratch.course / rel
            path.chmod(0o444)
            info = path.stat()
            scratch.written[rel] = (content[rel], info.st_ino, info.st_mtime_ns)
        for folder in sorted({p for p in scratch.course.rglob("*") if p.is_dir()} | {scratch.course}, reverse=True):
            folder.chmod(0o555)
        for name in ("tmp", "home"):
            (scratch.root / name).mkdir(mode=0o700)
            if uid is not None:
                os.chown(scratch.root / name, uid, -1)
    except BaseException:
        scratch.cleanup()
        raise
    return scratch


def tampered(scratch: Scratch) -> str | None:
    """What the session changed in the copy of the course; None when nothing."""
    seen: set[str] = set()
    for folder, dirs, names in os.walk(scratch.course):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            rel = path.relative_to(scratch.course).as_posix()
            seen.add(rel)
            expected = scratch.written.get(rel)
            if expected is None:
                return f"it created {rel}"
            try:
                info = path.lstat()
                if not stat.S_ISREG(info.st_mode):
                    return f"it replaced {rel}"
                if (info.st_ino, info.st_mtime_ns) != expected[1:] or path.read_bytes() != expected[0]:
                    return f"it changed {rel}"
            except OSError:
                return f"it changed {rel}"
    missing = sorted(set(scratch.written) - seen)
    return f"it removed {missing[0]}" if missing else None


# --------------------------------------------------------------------------------------------
# one child pytest session
# --------------------------------------------------------------------------------------------


@dataclass
class Session:
    """What one child session reported, as far as the grader can trust it."""

    collected: list[tuple[str, str | None]] | None = None
    skips: dict[str, str] = field(default_factory=dict)  # marked skips (collect-only baseline)
    results: dict[str, tuple[str, str]] = field(default_factory=dict)  # nodeid -> outcome, message
    finished: int | None = None
    returncode: int | None = None
    timed_out: bool = False
    forged: str | None = None  # a line the plugin did not write, out of order or unsigned
    problem: str | None = None  # why the session does not count; None when it does
    output: str = ""
    output_bytes: int = 0
    seconds: float = 0.0

    @property
    def trusted(self) -> bool:
        return self.problem is None


class _Report:
    """Reads the plugin's signed lines as they arrive and keeps only what it can vouch for."""

    def __init__(self, key: bytes, expected: list[str] | None) -> None:
        self.key = key
        self.expected = expected
        self.buffer = b""
        self.total = 0
        self.seq = 0
        self.next = 0
        self.session = Session()

    def feed(self, data: bytes) -> None:
        if self.session.forged is not None:
            return
        self.total += len(data)
        if self.total > REPORT_LIMIT:
            self.session.forged = f"the report pipe carried more than {REPORT_LIMIT} bytes"
            return
        self.buffer += data
        while b"\n" in self.buffer and self.session.forged is None:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.line(line)
        if len(self.buffer) > _LINE_LIMIT:
            self.session.forged = "the report pipe carried an over-long line"

    def line(self, raw: bytes) -> None:
        s = self.session
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            s.forged = "the report pipe carried bytes that are not the plugin's"
            return
        mac, _, body = text.partition(" ")
        if not hmac.compare_digest(mac.encode(), sign(self.key, body).encode()):
            s.forged = "a report line was not signed by the grader's plugin"
            return
        try:
            record = json.loads(body)
        except json.JSONDecodeError:
            s.forged = "a signed report line is not JSON"
            return
        if not isinstance(record, dict) or record.get("seq") != self.seq:
            s.forged = "report lines arrived out of order"
            return
        self.seq += 1
        event = record.get("event")
        if event == "collected" and s.collected is None:
            tests = [(str(t[0]), None if t[1] is None else str(t[1])) for t in record.get("tests", [])]
            s.collected = tests
            skips = record.get("skips", {})
            s.skips = {str(k): str(v) for k, v in skips.items()} if isinstance(skips, dict) else {}
            ids = [t[0] for t in tests]
            if self.expected is not None and ids != self.expected:
                s.forged = _difference(self.expected, ids)
        elif event == "result" and s.collected is not None:
            nodeid = str(record.get("nodeid"))
            if self.next >= len(s.collected) or s.collected[self.next][0] != nodeid:
                s.forged = f"a result for {nodeid} arrived out of the collected order"
                return
            self.next += 1
            s.results[nodeid] = (str(record.get("outcome", "failed")), str(record.get("message", "")))
        elif event == "finished" and s.finished is None:
            s.finished = int(record.get("exitstatus", -1))
        else:
            s.forged = f"unexpected report event {event!r}"


def _difference(expected: list[str], got: list[str]) -> str:
    missing = [t for t in expected if t not in set(got)]
    extra = [t for t in got if t not in set(expected)]
    detail = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra else "in another order"
    return f"the session collected {len(got)} tests, the course has {len(expected)} ({detail})"


class _Output:
    """The head and tail of a stream, however much of it comes."""

    def __init__(self, keep: int = OUTPUT_KEEP) -> None:
        self.keep = keep
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.keep - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.keep:
                del self.tail[: len(self.tail) - self.keep]

    def text(self) -> str:
        dropped = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {dropped} bytes of output dropped ...]\n" if dropped > 0 else ""
        return (bytes(self.head).decode("utf-8", "replace") + middle
                + bytes(self.tail).decode("utf-8", "replace"))


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (so its group id cannot be reused yet)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def child_env(scratch: Scratch) -> dict[str, str]:
    """A minimal environment: nothing of the grader's (tokens, paths) leaks into the tests."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(scratch.root / "home"),
        "TMPDIR": str(scratch.root / "tmp"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": str(scratch.course / "src"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONNOUSERSITE": "1",
        "PYTHONFAULTHANDLER": "1",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }


def run_session(
    scratch: Scratch,
    markexpr: str,
    expected: list[str] | None,
    limits: Limits,
    budget: float,
    python: str = sys.executable,
    paths: list[str] | None = None,
    collect_only: bool = False,
) -> Session:
    """Run the course's tests selected by ``markexpr`` (in ``paths``, default ``tests``) in
    ``scratch``, for at most ``budget`` seconds; ``expected`` is the list of test ids the session
    must collect (None: whatever it collects, for the baseline)."""
    key = secrets.token_bytes(32)
    key_read, key_write = os.pipe()
    report_read, report_write = os.pipe()
    os.write(key_write, key)
    os.close(key_write)
    user = pwd.getpwnam(limits.user) if limits.user else None
    budget = max(1.0, budget)
    command = [
        python, "-s", "-B", "-c", _BOOT,
        str(limits.memory_mb * 1024 * 1024), str(int(budget * 2 + 30)), str(limits.file_mb * 1024 * 1024),
        "-c", "pyproject.toml", "--rootdir=.", "-p", "labkit.plugin", "-p", "pytest_timeout",
        *(["--collect-only"] if collect_only else []),
        "-p", "no:cacheprovider", "-q", "--color=no", "--tb=no", "--show-capture=no",
        "-m", markexpr, f"--timeout={limits.test_timeout:g}", "--timeout-method=signal",
        f"--labkit-report-fd={report_write}", f"--labkit-key-fd={key_read}", *(paths or ["tests"]),
    ]
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            command,
            cwd=scratch.course,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_env(scratch),
            pass_fds=(key_read, report_write),
            start_new_session=True,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )
    finally:
        os.close(key_read)
        os.close(report_write)
    report = _Report(key, expected)
    output = _Output()
    assert process.stdout is not None
    streams = {process.stdout.fileno(): output.feed, report_read: report.feed}
    selector = selectors.DefaultSelector()
    for fd in streams:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    deadline = started + budget
    timed_out = False
    exited_at: float | None = None
    try:
        while streams:
            now = time.monotonic()
            if exited_at is None and _exited(process.pid):
                exited_at = now
                _kill_group(process.pid)  # whatever it left behind in its group goes with it
            if exited_at is None and (now >= deadline or CANCEL.is_set()):
                timed_out = True
                _kill_group(process.pid)
                exited_at = now
            if exited_at is not None and now - exited_at > 2.0:
                break  # something outside the group holds a pipe open: stop listening
            for item, _ in selector.select(timeout=0.05):
                fd = int(item.fd)
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    streams[fd](data)
                else:
                    selector.unregister(fd)
                    del streams[fd]
        if exited_at is None:
            while not _exited(process.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if not _exited(process.pid):
                timed_out = True
            _kill_group(process.pid)
    finally:
        selector.close()
        os.close(report_read)
        process.stdout.close()
        if process.poll() is None:
            _kill_group(process.pid)
        process.wait()
    session = report.session
    session.returncode = process.returncode
    session.timed_out = timed_out
    session.output = output.text()
    session.output_bytes = output.total
    session.seconds = time.monotonic() - started
    session.problem = _judge(session, report, scratch, budget, limits, collect_only)
    return session


def _judge(
    session: Session, report: _Report, scratch: Scratch, budget: float, limits: Limits, collect_only: bool
) -> str | None:
    if session.timed_out and CANCEL.is_set():
        return "grading was cancelled"
    if session.timed_out:
        return f"the tests did not finish within the {budget:.0f} s limit (an endless loop, or far too slow)"
    changed = tampered(scratch)
    if changed is not None:
        session.forged = f"the code under test changed the grader's copy of the course: {changed}"
        return session.forged
    if session.forged is not None:
        return session.forged
    code = session.returncode
    if session.collected is None:
        return f"the session ended before its tests were collected ({_how(code, limits)})"
    if session.finished is None:
        return f"the session ended in the middle of the tests ({_how(code, limits)})"
    if session.finished not in (0, 1):
        return f"the session did not end normally ({_PYTEST_STATUS.get(session.finished, f'pytest status {session.finished}')})"
    if code != session.finished:
        return f"the session did not end normally (after its tests: {_how(code, limits)})"
    if report.next != (0 if collect_only else len(session.collected)):
        return "the session ended before every test reported"
    return None


_PYTEST_STATUS = {
    2: "pytest was interrupted: a KeyboardInterrupt raised by the code under test stops the whole session",
    3: "pytest hit an internal error",
    4: "pytest was called wrongly",
    5: "no test was collected",
}


def _how(code: int | None, limits: Limits) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        hint = {
            "SIGKILL": f"killed: often memory beyond the {limits.memory_mb} MiB limit",
            "SIGSEGV": "a crash in native code",
            "SIGXCPU": "CPU time limit",
            "SIGXFSZ": f"a file larger than {limits.file_mb} MiB",
        }.get(name, "killed by a signal")
        return f"{name}, {hint}"
    return f"exit code {code}: something called exit"


def user_can_run(user: str, python: str = sys.executable) -> str | None:
    """None when ``user`` can start ``python`` with torch and pytest; else why not."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return f"there is no user {user!r}"
    if os.geteuid() != 0:
        return "running the tests as another user needs root"
    try:
        done = subprocess.run(
            [python, "-s", "-c", "import torch, pytest, pytest_timeout"],
            user=entry.pw_uid, group=entry.pw_gid, extra_groups=[],
            capture_output=True, timeout=120, cwd="/", env={"PATH": "/usr/bin:/bin", "HOME": "/"},
        )
    except (OSError, subprocess.SubprocessError) as err:
        return f"{user} cannot start {python}: {err}"
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        return f"{user} cannot run {python} with torch: {tail[0]}"
    return None
