"""Helpers every benchmark of minituner shares: thread pinning, timing, the header, tables.

A benchmark here prints a markdown section (a title, a short note, one or more tables) on
standard output; ``benchmarks/run_all.py`` runs each in its own process and writes
``benchmarks/RESULTS.md``. Times are measured side by side in one run, interleaved (each repeat
runs every contestant once, in turn), so a slow drift of the machine hits them all alike; a table
gives the median and the spread (the interquartile range, as a share of the median).
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # a fresh clone run without the editable install
    sys.path.insert(0, str(ROOT / "src"))

# Nothing a benchmark does may reach a model hub: peft and its dependencies stay offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# ---------------------------------------------------------------------------------------------
# threads and the machine


def default_threads() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def pin_threads(n: int | None = None) -> int:
    """Pin torch's intra-op threads to ``n``; return it.

    The default is one thread (or ``MINITUNER_BENCH_THREADS``): ratios then measure one core's
    efficiency, which is what a FLOP bound speaks to, and they stay meaningful on a busy machine,
    where a multi-threaded kernel waits for its slowest thread at every operator.
    """
    n = n or int(os.environ.get("MINITUNER_BENCH_THREADS", "0")) or 1
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already started: keep what is there
        pass
    return n


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str | None:
    """The installed version of ``name``, or None; never imports the package."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if done.returncode != 0:
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
        text=True, timeout=10,
    ).stdout.strip()
    return done.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def device_line() -> str:
    if torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return "CUDA: not available (CPU only; the CUDA measurements are skipped)"


#: glibc malloc settings for the timing benchmarks. By default glibc returns large freed buffers
#: to the kernel (munmap, or a trim of the heap) and faults them in again on the next step:
#: thousands of minor page faults per training step at 2048 tokens, landing on whichever layer
#: happens to free last. Fixed thresholds keep freed buffers for reuse, for every contestant
#: alike (PyTorch's CPU performance guide suggests jemalloc or tcmalloc for the same reason).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def ensure_malloc_env() -> None:
    """Start this process again with :data:`MALLOC_ENV` when it is not set: glibc reads it only
    at start-up. The timing benchmarks call it first thing."""
    if platform.system() != "Linux" or all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
        return
    if os.environ.get("MINITUNER_BENCH_REEXEC") == "1":  # never loop
        return
    env = dict(os.environ, MINITUNER_BENCH_REEXEC="1", **MALLOC_ENV)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def malloc_line() -> str:
    if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
        return ("- allocator: glibc malloc with MALLOC_MMAP_THRESHOLD_=32 MiB and "
                "MALLOC_TRIM_THRESHOLD_=1 GiB (freed buffers are reused, not faulted in anew "
                "every step)")
    return "- allocator: glibc malloc defaults"


def header_lines(threads: int | None, allocator: bool = True) -> list[str]:
    """The machine, versions and date: the label every table of RESULTS.md is quoted with.
    ``threads`` None: the commands measured run with torch's default thread count."""
    peft = package_version("peft")
    pinned = (
        f"pinned: {threads} intra-op, 1 inter-op" if threads is not None
        else f"torch's default ({torch.get_num_threads()}), as a learner's run has"
    )
    return [
        f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs visible "
        f"({default_threads()} usable by this process), {platform.system()} {platform.machine()}",
        f"- torch threads {pinned}",
        *([malloc_line()] if allocator else []),
        f"- {device_line()}",
        f"- python {platform.python_version()}, torch {torch.__version__}, "
        f"peft {peft or 'not installed'}",
        f"- commit: {git_commit()}",
    ]


# ---------------------------------------------------------------------------------------------
# timing


@dataclass(frozen=True)
class Timing:
    """Seconds per call, one sample per repeat."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def iqr(self) -> float:
        if len(self.samples) < 4:
            return max(self.samples) - min(self.samples)
        q = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q[2] - q[0]

    @property
    def spread(self) -> float:
        """The interquartile range as a share of the median (0.03 = 3 %)."""
        return self.iqr / self.median if self.median > 0 else 0.0


def median_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval for the median: the order statistics that a
    binomial(n, 1/2) count puts the median between with probability at least ``level``."""
    xs = sorted(values)
    n = len(xs)
    k = 0  # the largest k with P(Binomial(n, 1/2) < k) <= (1 - level) / 2
    tail = 0.0
    while k < n // 2:
        tail_next = tail + math.comb(n, k) / 2**n
        if tail_next > (1.0 - level) / 2:
            break
        tail = tail_next
        k += 1
    k = max(k, 1)
    return xs[k - 1], xs[n - k]


def paired_ratio(a: Timing, b: Timing) -> Timing:
    """``a / b`` round by round (the two were timed side by side in each round): a slow spell of
    the machine that hits both cancels out. Its median and spread are those of the ratios."""
    return Timing(tuple(x / y for x, y in zip(a.samples, b.samples)))


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    contestants: dict[str, Callable[[], object]],
    *,
    repeats: int = 7,
    min_sample_s: float = 0.02,
    warmup: int = 2,
    device: torch.device | None = None,
    budget_s: float = 0.0,
    max_repeats: int = 41,
) -> dict[str, Timing]:
    """Time each callable side by side: ``repeats`` rounds, each running every contestant once,
    in an order shuffled anew for each round.

    A sample runs its callable enough times in a row to last about ``min_sample_s`` (calibrated
    once per contestant after ``warmup`` calls), so a fast call is not lost in the timer's noise.
    When the rounds are fast, more are run (up to ``max_repeats``) until ``budget_s`` seconds
    have gone: cheap cases get more rounds, hence a steadier median, at little cost.
    Returns seconds per call. On CUDA, each sample is closed by a synchronize.
    """
    loops: dict[str, int] = {}
    for name, fn in contestants.items():
        for _ in range(warmup):
            fn()
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        once = max(time.perf_counter() - t0, 1e-7)
        loops[name] = max(1, min(10_000, round(min_sample_s / once)))
    samples: dict[str, list[float]] = {name: [] for name in contestants}
    names = list(contestants)
    shuffler = random.Random(0)
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or (
        rounds < max_repeats and time.perf_counter() - start < budget_s
    ):
        # A fresh order every round (seeded: the same on every run): no contestant always runs
        # right after the same other one, whose freed memory or warm caches it would inherit.
        order = shuffler.sample(names, len(names))
        rounds += 1
        for name in order:
            fn = contestants[name]
            n = loops[name]
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            _sync(device)
            samples[name].append((time.perf_counter() - t0) / n)
    return {name: Timing(tuple(s)) for name, s in samples.items()}


# ---------------------------------------------------------------------------------------------
# tables


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    right = [all(_numeric(r[i]) for r in cells[1:]) for i in range(len(headers))]
    lines = ["| " + " | ".join(cells[0]) + " |"]
    lines.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def _numeric(text: str) -> bool:
    t = text.replace(",", "").replace("x", "").replace("%", "").replace("±", "").strip()
    t = t.replace("ms", "").replace("µs", "").replace("s", "").replace("MiB", "").replace("KiB", "")
    try:
        float(t.split()[0] if t else "x")
    except ValueError:
        return False
    return True


def fmt_seconds(s: float) -> str:
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


def fmt_bytes(n: float) -> str:
    if abs(n) >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    if abs(n) >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{int(n)} B"


# ---------------------------------------------------------------------------------------------
# the code under test: the reference, the learner's, peft


def use_reference() -> None:
    """Make ``import minituner`` load the reference solutions (as ``--impl reference`` does)."""
    from labkit import overlay
    from labkit.manifest import load_course

    course = load_course(ROOT)
    impl = overlay.resolve(course, overlay.REFERENCE)
    overlay.activate(course, impl)
    import atexit

    atexit.register(impl.cleanup)


def learner_lora() -> tuple[ModuleType | None, str]:
    """The learner's ``src/minituner/lora.py`` as a module of its own, when its ``LoRALinear``
    constructs and starts at the base exactly; else ``(None, why not)``."""
    path = ROOT / "src" / "minituner" / "lora.py"
    spec = importlib.util.spec_from_file_location("_minituner_learner_lora", path)
    if spec is None or spec.loader is None:
        return None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        base = torch.nn.Linear(8, 4)
        layer = module.LoRALinear(base, r=2, alpha=4.0)
        x = torch.randn(3, 8)
        if not torch.equal(layer(x), base(x)):
            return None, "not done yet (its output at init differs from the base)"
        with torch.no_grad():
            layer.lora_B.fill_(0.1)
        want = base(x) + 2.0 * (x @ layer.lora_A.T @ layer.lora_B.T)
        if not torch.allclose(layer(x), want, atol=1e-5):
            return None, "not done yet (its output is not base(x) + scaling * B A x)"
    except NotImplementedError as err:
        return None, f"not done yet ({str(err).split(':')[0]})"
    except Exception as err:  # a learner's file may fail in any way
        return None, f"not done yet ({type(err).__name__}: {err})"
    return module, "src/minituner/lora.py"


def peft_version() -> str | None:
    return package_version("peft")


def peft_missing_reason() -> str:
    return "peft is not installed (it is a course-development dependency: requirements-dev.txt)"
