"""Run the course's tests in a child pytest process and read back what happened to each test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from labkit.plugin import Outcome


@dataclass
class Run:
    """What one child pytest session reported, test by test."""

    returncode: int | None
    timed_out: bool
    output: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def for_lab(self, lab: str) -> list[Outcome]:
        return [o for o in self.outcomes.values() if o.lab == lab]


def read_report(path: Path) -> dict[str, Outcome]:
    """Outcomes from a ``--labkit-report`` file; collected tests that never finished count as failed."""
    outcomes: dict[str, Outcome] = {}
    if not path.is_file():
        return outcomes
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") == "collected":
            for nodeid, lab in record.get("tests", []):
                outcomes[str(nodeid)] = Outcome(
                    str(nodeid), lab, "failed", "did not finish (time limit, crash or exit)"
                )
        elif record.get("event") == "result" and record.get("nodeid") in outcomes:
            entry = outcomes[record["nodeid"]]
            entry.outcome = str(record.get("outcome", "failed"))
            entry.message = str(record.get("message", ""))
    return outcomes


def run_pytest(
    root: Path,
    args: list[str],
    *,
    impl: str | None = None,
    timeout: float = 300.0,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
) -> Run:
    """Run ``python -m pytest ARGS`` in ``root`` (its own process group) and collect outcomes."""
    with tempfile.TemporaryDirectory(prefix="labkit-run-") as scratch:
        report = Path(scratch) / "report.jsonl"
        command = [python, "-m", "pytest", *args, f"--labkit-report={report}"]
        if impl is not None:
            command.append(f"--impl={impl}")
        child_env = dict(os.environ if env is None else env)
        child_env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        process = subprocess.Popen(
            command,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
            text=True,
            errors="replace",
        )
        timed_out = False
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        return Run(process.returncode, timed_out, output or "", read_report(report))
