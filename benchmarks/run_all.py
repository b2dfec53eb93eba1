"""``make bench``: run every benchmark, each in its own process, and write benchmarks/RESULTS.md.

Each benchmark prints its own tables on standard output (markdown, or plain text that is kept
as a code block); this script puts them under one header that names the machine, the versions
and the date: the label to quote the results with.

    python benchmarks/run_all.py [--out benchmarks/RESULTS.md] [--only lora_layer,memory] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

HERE = Path(__file__).resolve().parent

# (name, arguments, arguments with --quick, time limit in seconds)
BENCHMARKS: tuple[tuple[str, list[str], list[str], int], ...] = (
    ("lora_layer", [], ["--quick", "--repeats", "3"], 1800),
    ("memory", [], [], 900),
    ("merge_latency", ["--impl", "reference"], ["--impl", "reference", "--rounds", "3"], 900),
    ("grading", [], [], 900),
    ("feedback", [], ["--rounds", "1"], 900),
)


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def run_one(name: str, args: list[str], limit: int, env: dict[str, str]) -> tuple[str, float]:
    script = HERE / f"{name}.py"
    title = f"## `benchmarks/{name}.py`"
    if not script.is_file():
        return f"{title}\n\nNot present in this checkout: skipped.\n", 0.0
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(script), *args], cwd=C.ROOT, capture_output=True, text=True,
            env=env, timeout=limit, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"{title}\n\nTimed out after {limit} s.\n", time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    out = done.stdout.strip()
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-20:])
        return f"{title}\n\nFailed (exit {done.returncode}):\n\n```text\n{out}\n{tail}\n```\n", seconds
    if not out.startswith("## "):  # plain text: keep its columns as printed
        out = f"{title}\n\n```text\n{out}\n```"
    return out + "\n", seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (not for RESULTS.md)")
    args = parser.parse_args(argv)
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    known = {b[0] for b in BENCHMARKS}
    if only - known:
        parser.error(f"unknown benchmark(s) {sorted(only - known)}; known: {sorted(known)}")

    threads = C.pin_threads()
    env = dict(os.environ, MINITUNER_BENCH_THREADS=str(threads), HF_HUB_OFFLINE="1")
    load_before = load_average()
    sections: list[str] = []
    timings: list[str] = []
    for name, full, quick, limit in BENCHMARKS:
        if only and name not in only:
            continue
        print(f"make bench: {name} ...", file=sys.stderr, flush=True)
        text, seconds = run_one(name, quick if args.quick else full, limit, env)
        sections.append(text)
        timings.append(f"{name} {seconds:.0f} s")
        print(f"make bench: {name} done in {seconds:.0f} s", file=sys.stderr, flush=True)

    head = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`benchmarks/run_all.py`); every number below was measured in "
        "this one run, on this machine. Quote them with this label:",
        "",
        *C.header_lines(threads, allocator=False),
        f"- load average before / after the run: {load_before} → {load_average()}",
        f"- benchmark wall times: {', '.join(timings)}",
    ]
    if args.quick:
        head += ["", "**A quick smoke run (`--quick`): fewer shapes and repeats; not the results to quote.**"]
    text = "\n".join(head) + "\n\n" + "\n".join(sections)
    args.out.write_text(text, encoding="utf-8")
    print(f"make bench: wrote {args.out.relative_to(C.ROOT) if args.out.is_relative_to(C.ROOT) else args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
