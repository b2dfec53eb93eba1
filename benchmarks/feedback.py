"""How long a learner waits for feedback: each lab's tests against a bare ``import torch``.

For every lab with tests, the wall time of ``python -m pytest -m labNN --impl=reference -q``
(the command ``make test LAB=labNN`` runs, against the reference so that every test runs to the
end) is set against the wall time of ``python -c "import torch"`` in the same run: the cost no
test of a PyTorch course can avoid. Rounds interleave all commands; each ratio is taken within a
round, and the table gives its median and spread over the rounds. The course's goal is 2x or less.

The last column names the first test that imports one of torch's slow, lazily imported parts
(``torch._dynamo`` above all: about one more ``import torch``), found by one more, untimed run
with the ``benchmarks/_import_watch.py`` plugin.

    python benchmarks/feedback.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GOAL = 2.0


def wall(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=C.ROOT, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - t0
    last = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode not in (0,):
        last = f"exit {done.returncode}: {last}"
    return elapsed, last


def labs_with_tests() -> list[str]:
    from labkit.manifest import load_course

    course = load_course(C.ROOT)
    found = []
    for lab in course.labs:
        if any(f"pytest.mark.{lab.marker}" in p.read_text(encoding="utf-8")
               for p in (C.ROOT / "tests").glob("test_*.py")):
            found.append(lab.marker)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    py = sys.executable
    commands: dict[str, list[str]] = {"import torch": [py, "-c", "import torch"]}
    for marker in labs_with_tests():
        commands[marker] = [py, "-m", "pytest", "-m", marker, "--impl=reference", "-q",
                            "-p", "no:cacheprovider"]
    for cmd in commands.values():  # warm the file cache and the .pyc files once
        wall(cmd, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    summary: dict[str, str] = {}
    for _ in range(args.rounds):
        for name, cmd in commands.items():
            elapsed, last = wall(cmd, env)
            times[name].append(elapsed)
            summary[name] = last

    # Which test, if any, imports one of torch's slow parts (one more run per lab, untimed).
    watch_env = dict(env, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    heavy: dict[str, str] = {}
    for name, cmd in commands.items():
        if name == "import torch":
            continue
        done = subprocess.run(
            [*cmd, "-p", "_import_watch"], cwd=C.ROOT, capture_output=True, text=True,
            env=watch_env, stdin=subprocess.DEVNULL,
        )
        found = [line.split(" ", 2)[1:] for line in done.stdout.splitlines()
                 if line.startswith("IMPORTWATCH ")]
        heavy[name] = "; ".join(f"{mod} by {node.split('::')[-1]}" for mod, node in found) or "none"

    print("## Feedback time: each lab's tests against `import torch` (`benchmarks/feedback.py`)\n")
    print("\n".join(C.header_lines(None)))
    print(
        f"\n`python -m pytest -m labNN --impl=reference -q` against `python -c \"import torch\"`, "
        f"wall time of the whole process, {args.rounds} interleaved rounds after one warm-up; the "
        f"ratio is taken within each round (median, and the spread between the rounds' lowest "
        f"and highest). Goal: {GOAL:g}x or less.\n"
    )
    base = times["import torch"]
    rows: list[list[object]] = [
        ["`import torch`", C.fmt_seconds(statistics.median(base)), "1.00", "-", "", ""]
    ]
    over = []
    for name in commands:
        if name == "import torch":
            continue
        ratios = [t / b for t, b in zip(times[name], base)]
        med = statistics.median(ratios)
        ok = med <= GOAL
        if not ok:
            over.append(name)
        rows.append([
            f"`pytest -m {name}`", C.fmt_seconds(statistics.median(times[name])), f"{med:.2f}",
            f"{min(ratios):.2f}–{max(ratios):.2f}", ("ok" if ok else "OVER") + f" ({summary[name]})",
            heavy[name],
        ])
    print(C.markdown_table(
        ["command", "median wall", "ratio", "range", "goal ≤ 2x (pytest's last line)",
         "slow imports (first test to trigger)"], rows))
    print()
    if over:
        print(f"Over the {GOAL:g}x goal: {', '.join(over)}.\n")
    else:
        print(f"Every lab's tests finish within {GOAL:g}x a bare `import torch`.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
