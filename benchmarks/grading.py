"""How fast the grader grades, and what its isolation costs against a plain pytest run.

    python benchmarks/grading.py                    8 copies of the reference, --jobs = the cores
    python benchmarks/grading.py --copies 16 --jobs 4

It makes a folder of N copies of the reference solutions in a temporary folder, and times:

- plain pytest: the course's graded tests on the reference in one ordinary ``pytest`` process
  (``--impl reference``, one torch thread, as the grader's sessions have);
- ``labkit grade-all`` with ``--jobs 1``: seconds per submission, and its ratio to plain pytest
  (the overhead of the sandbox: a scratch copy, a fresh locked-down process, the signed report
  and the checks after it);
- ``labkit grade-all`` with ``--jobs J``: submissions per minute, the number to plan a class with;
- the one-time setup of a grading run (reading the course, collecting its tests, probing the user).

Timings depend on the machine and on what else it runs: quote the ratio, and the machine line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from labkit import grade, sandbox  # noqa: E402
from labkit.manifest import load_course  # noqa: E402


def plain_pytest(markexpr: str, repeats: int) -> float:
    """Median wall seconds of one plain pytest process over the reference."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    times: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--impl=reference",
             "-m", markexpr, "--tb=no"],
            cwd=C.ROOT, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"plain pytest failed on the reference:\n{done.stdout[-2000:]}")
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=8, help="submissions in the folder (default 8)")
    parser.add_argument("--jobs", type=int, default=C.default_threads(), help="grade-all --jobs (default: the cores)")
    parser.add_argument("--repeats", type=int, default=3, help="plain pytest runs, median taken (default 3)")
    args = parser.parse_args(argv)

    course = load_course(C.ROOT)
    labs = course.available_labs
    markexpr = " or ".join(lab.marker for lab in labs)
    work = Path(tempfile.mkdtemp(prefix="labkit-bench-grading-"))
    try:
        folder = work / "submissions"
        for i in range(args.copies):
            target = folder / f"student-{i:03d}"
            target.mkdir(parents=True)
            for name in course.lab_files:
                shutil.copyfile(course.solutions_dir / name, target / name)

        plain = plain_pytest(markexpr, args.repeats)

        started = time.perf_counter()
        notices: list[str] = []
        user = grade.resolve_user("auto", sys.executable, notices)
        grader = grade.Grader(course, sandbox.Limits(user=user))
        setup = time.perf_counter() - started

        one = work / "one"
        one.mkdir()
        for i in range(min(2, args.copies)):
            shutil.copytree(folder / f"student-{i:03d}", one / f"student-{i:03d}")
        serial = grade.grade_all(grader, one, 1, progress=False)
        per_submission = serial.seconds / max(1, len(serial.grades))
        batch = grade.grade_all(grader, folder, args.jobs, progress=False)
        rate = 60 * len(batch.grades) / batch.seconds
        full = all(abs(g.score - g.max_score) < 1e-9 for g in [*serial.grades.values(), *batch.grades.values()])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    tests = len(grader.baseline.tests)
    print("## Grading throughput and the cost of isolation (`benchmarks/grading.py`)\n")
    print(f"{args.copies} copies of the reference, labs {', '.join(lab.id for lab in labs)} "
          f"({tests} tests); every copy scored full marks: {'yes' if full else 'NO'}.")
    print(f"The tests ran as {user or 'the grader user'}.\n")
    for notice in notices:
        print(f"> {notice}\n")
    print("| measurement | value |")
    print("|---|---|")
    print(f"| plain pytest, one process, reference (median of {args.repeats}) | {plain:.1f} s |")
    print(f"| `labkit grade-all --jobs 1`: seconds per submission | {per_submission:.1f} s |")
    print(f"| overhead: grade-all --jobs 1 per submission / plain pytest | {per_submission / plain:.2f}x |")
    print(f"| `labkit grade-all --jobs {args.jobs}`: {args.copies} submissions | {batch.seconds:.1f} s |")
    print(f"| `labkit grade-all --jobs {args.jobs}`: submissions per minute | {rate:.1f} |")
    print(f"| one-time setup per grading run (course snapshot, test collection, user probe) | {setup:.1f} s |")
    print()
    print("The sandbox starts a fresh interpreter (torch import included) for every submission, as plain "
          "pytest does once; the rest of the overhead is the scratch copy, the signed report and the "
          "after-run checks. Spread over cores with `--jobs`; each session uses one torch thread.")
    return 0 if full else 1


if __name__ == "__main__":
    raise SystemExit(main())
