"""Self-checks of the grader (DESIGN.md, Grading; docs/grading.md).

- The static check refuses each escape it exists for, and no lab file the course ships (reference,
  stubs, pitfalls, alternatives).
- The report reader keeps only signed lines in order; captured output stays bounded.
- Scoring: points shared among the tests that do not skip, notes measurements scored against their
  ranges, results.json in Gradescope's schema.
- ``labkit grade-all`` over the hostile submissions of ``tests/course/hostile`` (with the reference,
  the stubs and a partly done submission beside them) gives each its expected score, and finishes.
- ``make gradescope``'s bundle holds no solution, and its ``run_autograder`` grades a local copy of
  Gradescope's folder layout, with the same scores as ``grade-all``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from labkit import grade, gradescope, sandbox, stubs
from labkit.manifest import Course, Lab, Measurement, load_course
from labkit.plugin import sign
from labkit.vet import vet_source

pytestmark = pytest.mark.course

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = ROOT / "tests" / "course" / "hostile"
ALLOWED_LORA = ["__future__", "math", "typing", "torch", "json", "os", "pathlib", "safetensors", "minituner"]


@pytest.fixture(scope="module")
def course() -> Course:
    return load_course(ROOT)


# --------------------------------------------------------------------------------------------
# the static check
# --------------------------------------------------------------------------------------------

REFUSED = {
    "os._exit": "import os\nos._exit(0)\n",
    "import outside the allowlist": "import time\ntime.sleep(1)\n",
    "rebinding torch": "import torch\ntorch.allclose = lambda *a, **k: True\n",
    "rebinding a dunder": "import torch\ntorch.Tensor.__eq__ = lambda *a: True\n",
    "setattr on a module": "import torch\nsetattr(torch, 'allclose', None)\n",
    "rebinding F": "import torch.nn.functional as F\nF.linear = None\n",
    "sys through torch": "import torch\nm = torch.sys.modules\n",
    "subclass walk": "x = ().__class__.__base__.__subclasses__()\n",
    "frames": "def f(e):\n    return e.__traceback__.tb_frame.f_back.f_globals\n",
    "globals()": "globals()['x'] = 1\n",
    "__builtins__": "__builtins__['len'] = None\n",
    "eval": "eval('1 + 1')\n",
    "exec as a value": "run = exec\n",
    "computed getattr": "def f(o, name):\n    return getattr(o, name)\n",
    "getattr of a dunder": "g = getattr(print, '__self__')\n",
    "a module as a value": "import torch\ndef patch(m):\n    m.allclose = None\npatch(torch)\n",
    "a class as a value": "import torch\ndef patch(c):\n    c.abs = None\npatch(torch.Tensor)\n",
    "type() kept": "import torch\nt = type(torch.zeros(1))\n",
    "private torch": "import torch\ntorch._C._set_grad_enabled(False)\n",
    "global hooks": "from torch import nn\nnn.modules.module.register_module_forward_hook(print)\n",
    "pickle load": "import torch\ntorch.load('x', weights_only=False)\n",
    "os.environ": "import os\nos.environ['X'] = '1'\n",
    "star import": "from torch import *\n",
    "chmod": "from pathlib import Path\nPath('x').chmod(0o777)\n",
    "__file__": "here = __file__\n",
    "torch.library": "import torch\nlib = torch.library.Library('aten', 'IMPL')\n",
    "default dtype": "import torch\ntorch.set_default_dtype(torch.float64)\n",
}

ACCEPTED = {
    "a LoRA layer": (
        "import math\nimport torch\nimport torch.nn.functional as F\nfrom torch import Tensor, nn\n\n"
        "class L(nn.Module):\n    base: nn.Linear\n"
        "    def __init__(self, base: nn.Linear, r: int = 8) -> None:\n        super().__init__()\n"
        "        if not isinstance(base, nn.Linear):\n"
        "            raise TypeError(f'base must be nn.Linear, got {type(base).__name__}')\n"
        "        self.lora_A = nn.Parameter(torch.empty(r, 3, dtype=base.weight.dtype))\n"
        "        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))\n"
        "    def forward(self, x: Tensor) -> Tensor:\n        return F.linear(x, self.lora_A)\n"
        "    def extra_repr(self) -> str:\n        return f'{self.__class__.__name__}'\n"
    ),
    "setattr on a parent module": (
        "def swap(model, parent_name, child, new):\n"
        "    setattr(model.get_submodule(parent_name), child, new)\n"
    ),
    "getattr over literal names": (
        "NAMES = ('r', 'alpha')\ndef f(layer):\n    for name in NAMES:\n        getattr(layer, name)\n"
        "    for key, attr in (('r', 'r'), ('lora_alpha', 'alpha')):\n        getattr(layer, attr)\n"
    ),
    "paths and safetensors": (
        "import os\nfrom pathlib import Path\nfrom safetensors.torch import save_file\n"
        "def f(d: str | os.PathLike[str], t) -> Path:\n    os.makedirs(d, exist_ok=True)\n"
        "    save_file(t, Path(d) / 'x.safetensors')\n    return Path(os.path.join(d, 'y'))\n"
    ),
    "type comparisons and casts": (
        "from typing import cast\nfrom torch import nn\n"
        "def f(m):\n    return type(m) is nn.Linear or isinstance(m, (nn.Linear, nn.Conv1d)), cast(nn.Linear, m)\n"
    ),
    "a syntax error (the tests report it)": "def f(:\n",
}


def test_static_check_allows_open_only_where_the_lab_grants_file_access() -> None:
    source = b"with open('adapter_config.json', 'w') as handle:\n    handle.write('{}')\n"
    assert vet_source(source, "counting.py", ["math", "torch"], "minituner")
    assert not vet_source(source, "checkpoint.py", ["json", "pathlib", "torch"], "minituner")


@pytest.mark.parametrize("source", list(REFUSED.values()), ids=list(REFUSED))
def test_static_check_refuses_an_escape(source: str) -> None:
    refusals = vet_source(source.encode(), "lora.py", ALLOWED_LORA, "minituner")
    assert refusals, f"the static check let this through:\n{source}"
    assert all(r.line > 0 and r.why for r in refusals), [str(r) for r in refusals]


@pytest.mark.parametrize("source", list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_static_check_accepts_ordinary_code(source: str) -> None:
    refusals = vet_source(source.encode(), "lora.py", ALLOWED_LORA, "minituner")
    assert not refusals, [str(r) for r in refusals]


def test_static_check_accepts_every_lab_file_the_course_ships(course: Course) -> None:
    folders = [course.solutions_dir, course.stubs_dir]
    folders += sorted(p for p in (ROOT / "tests/course/pitfalls").glob("*/*") if p.is_dir())
    folders += sorted(p for p in (ROOT / "tests/course/alternatives").glob("*/*") if p.is_dir())
    problems: list[str] = []
    for folder in folders:
        for name in course.lab_files:
            path = folder / name
            if path.is_file():
                refusals = vet_source(path.read_bytes(), name, course.allowed_imports_for(name), course.package)
                problems += [f"{path.relative_to(ROOT)}: {r}" for r in refusals]
    assert not problems, "the grader would refuse a lab file the course ships:\n" + "\n".join(problems)


# --------------------------------------------------------------------------------------------
# the report channel and the output cap
# --------------------------------------------------------------------------------------------


def _line(key: bytes, record: dict[str, Any]) -> bytes:
    body = json.dumps(record, sort_keys=True)
    return f"{sign(key, body)} {body}\n".encode()


def test_report_keeps_only_signed_lines_in_order() -> None:
    key = b"k" * 32
    good = sandbox._Report(key, ["t::a", "t::b"])
    good.feed(_line(key, {"seq": 0, "event": "collected", "tests": [["t::a", "lab00"], ["t::b", "lab00"]]}))
    good.feed(_line(key, {"seq": 1, "event": "result", "nodeid": "t::a", "outcome": "passed", "message": ""}))
    assert good.session.forged is None and good.session.results == {"t::a": ("passed", "")}

    for forged_line in (
        _line(b"x" * 32, {"seq": 2, "event": "result", "nodeid": "t::b", "outcome": "passed"}),  # wrong key
        _line(key, {"seq": 5, "event": "result", "nodeid": "t::b", "outcome": "passed"}),  # seq skipped
        _line(key, {"seq": 2, "event": "result", "nodeid": "t::a", "outcome": "passed"}),  # out of order
        b'{"seq": 2, "event": "result", "nodeid": "t::b", "outcome": "passed"}\n',  # unsigned
    ):
        report = sandbox._Report(key, ["t::a", "t::b"])
        report.feed(_line(key, {"seq": 0, "event": "collected", "tests": [["t::a", "lab00"], ["t::b", "lab00"]]}))
        report.feed(_line(key, {"seq": 1, "event": "result", "nodeid": "t::a", "outcome": "failed", "message": "m"}))
        report.feed(forged_line)
        assert report.session.forged is not None, forged_line
        assert report.session.results == {"t::a": ("failed", "m")}

    other = sandbox._Report(key, ["t::a"])
    other.feed(_line(key, {"seq": 0, "event": "collected", "tests": [["t::a", "lab00"], ["t::z", "lab00"]]}))
    assert other.session.forged is not None and "collected 2 tests" in other.session.forged


def test_captured_output_keeps_head_and_tail_only() -> None:
    out = sandbox._Output(keep=1000)
    for _ in range(10_000):
        out.feed(b"x" * 1000)
    out.feed(b"THE END")
    text = out.text()
    assert out.total == 10_000 * 1000 + 7
    assert len(text) < 2200 and text.endswith("THE END") and "dropped" in text


# --------------------------------------------------------------------------------------------
# scoring and results.json
# --------------------------------------------------------------------------------------------


def _lab(lab_id: str, points: float, **extra: Any) -> Lab:
    return Lab(id=lab_id, title=f"Lab {lab_id}", available=True, brief="b.md", notebook="n.ipynb",
               theory=(), files=("lora.py",), marker=lab_id, points=points,
               notes=f"experiments/{lab_id}/notes.md", allowed_imports=("torch",), **extra)


def test_points_are_shared_among_the_tests_that_do_not_skip() -> None:
    lab = _lab("lab00", 20)
    baseline = grade.Baseline(
        tests=(("t::a", "lab00"), ("t::b", "lab00"), ("t::c", "lab00"), ("t::cuda", "lab00")),
        skipped={"t::cuda": "needs a CUDA device"},
    )
    outcomes = {"t::a": ("passed", ""), "t::b": ("failed", "boom"), "t::cuda": ("passed", "")}
    labs, tests = grade.score([lab], baseline, outcomes, {})
    assert [t.nodeid for t in tests] == ["t::a", "t::b", "t::c"]  # the skipped test is not an entry
    assert labs[0].passed == 1 and labs[0].failed == 2
    assert labs[0].score == pytest.approx(20 / 3) and labs[0].max_score == 20
    assert [t.status for t in tests] == ["passed", "failed", "failed"]
    assert tests[1].output == "boom" and tests[2].output == "did not run"


def test_notes_measurements_are_scored_against_their_ranges(tmp_path: Path) -> None:
    measurements = (
        Measurement("init_max_abs_diff", "-", 0.0, 0.0, "exactly zero"),
        Measurement("trainable_params_r8", "parameters", 1024, 1024, "r=8 on Linear(64, 64)"),
        Measurement("speedup", "x", 1.0, 4.0, "merged over unmerged"),
        Measurement("latency", "ms", 0.0, 10.0, "one forward"),
    )
    lab = _lab("lab00", 20, measurements=measurements, notes_points=4.0)
    notes = tmp_path / lab.notes
    notes.parent.mkdir(parents=True)
    notes.write_text(
        "| measurement | value |\n|---|---|\n| `init_max_abs_diff` | 0.0 |\n"
        "| `trainable_params_r8` | 1,024 |\n| `speedup` | 9.5 |\n| `latency` | TODO |\n",
        encoding="utf-8",
    )
    entries = grade.notes_scores(lab, tmp_path)
    assert [e.status for e in entries] == ["passed", "passed", "failed", "failed"]
    assert sum(e.score for e in entries) == pytest.approx(2.0) and all(e.max_score == 1.0 for e in entries)
    assert "expected between 1 and 4" in entries[2].output and "not recorded" in entries[3].output
    baseline = grade.Baseline(tests=(("t::a", "lab00"),), skipped={})
    labs, tests = grade.score([lab], baseline, {"t::a": ("passed", "")}, {"lab00": entries})
    assert labs[0].score == pytest.approx(22.0) and labs[0].max_score == pytest.approx(24.0)
    assert len(tests) == 5
    missing = grade.notes_scores(lab, tmp_path / "nobody")
    assert all(e.status == "failed" and "no notes file" in e.output for e in missing)
    assert grade.notes_scores(replace(lab, notes_points=0.0), tmp_path) == []


def test_results_json_follows_gradescope_schema(course: Course) -> None:
    lab = _lab("lab00", 20)
    baseline = grade.Baseline(tests=(("t::a", "lab00"), ("t::b", "lab00")), skipped={})
    labs, tests = grade.score([lab], baseline, {"t::a": ("passed", ""), "t::b": ("failed", "why")}, {})
    refused = grade.LabFile("lora.py", "refused", b"", "the grader refused lora.py: line 1", ("line 1",))
    result = grade.Grade("alice", tuple(labs), tuple(tests), (refused,), ("all labs: x",), "", 1.5)
    data = json.loads(json.dumps(grade.results_json(result, course)))
    assert data["score"] == 10.0 and data["max_score"] == 20.0
    assert set(data) >= {"score", "tests", "output", "visibility", "stdout_visibility", "extra_data"}
    for entry in data["tests"]:
        assert set(entry) >= {"name", "score", "max_score", "status", "output"}
        assert entry["status"] in ("passed", "failed")
    assert data["tests"][1]["output"] == "why" and data["tests"][1]["score"] == 0
    assert data["extra_data"]["labs"]["lab00"] == {
        "title": "Lab lab00", "score": 10.0, "max_score": 20.0, "passed": 1, "failed": 1,
        "notes_score": 0, "notes_max_score": 0,
    }
    assert "line 1" in data["output"] and "all labs: x" in data["output"]


@pytest.mark.timeout(600)
def test_pytest_grade_prints_the_per_lab_table(course: Course) -> None:
    lab = course.available_labs[0]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--impl=reference",
         "--grade", "-m", lab.marker],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert "minituner grade" in done.stdout, done.stdout[-3000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith(lab.id))
    assert f"{lab.points:.2f} / {lab.points:g}" in row, row
    assert any(line.startswith("total") for line in done.stdout.splitlines())


# --------------------------------------------------------------------------------------------
# hostile submissions, graded by `labkit grade-all`
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    spec: dict[str, Any]
    source: Path | None = None  # the case's folder under tests/course/hostile


def _stub_except(course: Course, text: str, keep: str, where: str) -> str:
    """The reference file with every solution region of a lab other than ``keep`` stubbed."""
    lines = text.splitlines()
    out: list[str] = []
    cursor = 0
    for region in stubs.find_regions(text, where):
        if region.lab == keep:
            continue
        out.extend(lines[cursor:region.begin - 1])
        indent = lines[region.begin - 1][: len(lines[region.begin - 1]) - len(lines[region.begin - 1].lstrip())]
        out.append(f'{indent}raise NotImplementedError("{region.lab} step {region.step}")')
        cursor = region.end
    out.extend(lines[cursor:])
    return "\n".join(out) + "\n"


def _patched_reference(course: Course, patch: dict[str, Any]) -> str:
    text = (course.solutions_dir / patch["file"]).read_text(encoding="utf-8")
    if "method" in patch:
        lines = text.splitlines()
        at = next(i for i, line in enumerate(lines) if line.lstrip().startswith(f"def {patch['method']}("))
        while not lines[at].rstrip().endswith(":"):
            at += 1
        indent = " " * (len(lines[at]) - len(lines[at].lstrip()) + 4)
        lines.insert(at + 1, indent + patch["first_line"])
        text = "\n".join(lines) + "\n"
    return text + patch.get("append", "")


def _build(course: Course, case: Case, into: Path) -> None:
    into.mkdir(parents=True)
    if case.source is not None:
        for path in case.source.rglob("*"):
            if path.is_file() and path.name != "expected.toml":
                target = into / path.relative_to(case.source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    patch = case.spec.get("reference_patch")
    if patch:
        (into / patch["file"]).write_text(_patched_reference(course, patch), encoding="utf-8")
    base = case.spec.get("base", "stubs")
    generated = stubs.generated(course)
    for name in course.lab_files:
        if (into / name).exists() or (into / name).is_symlink():
            continue
        if base == "reference":
            shutil.copyfile(course.solutions_dir / name, into / name)
        elif base == "stubs":
            (into / name).write_text(generated[name], encoding="utf-8")


def _cases(course: Course) -> list[Case]:
    cases = [Case(p.parent.name, tomllib.loads(p.read_text(encoding="utf-8")), p.parent)
             for p in sorted(HOSTILE.glob("*/expected.toml"))]
    cases += [
        Case("reference", {"about": "the reference solutions", "base": "reference", "score": {"*": "full"}}),
        Case("stubs", {"about": "the committed stubs", "score": {"*": 0}}),
        Case("partial", {"about": "lab00 done, every other step a stub",
                         "score": {"lab00": "full", "*": 0}}),
        Case("symlink-to-solutions", {"about": "lora.py is a symbolic link to the reference",
                                      "refused": ["lora.py"], "mention": "symbolic link", "score": {"*": 0}}),
        Case("huge-file", {"about": "a 600 kB lora.py", "refused": ["lora.py"], "mention": "bytes",
                           "score": {"*": 0}}),
    ]
    return cases


def _make_generated(course: Course, case: Case, into: Path) -> None:
    if case.name == "partial":
        into.mkdir(parents=True)
        for name, text in stubs.generated(course).items():
            (into / name).write_text(text, encoding="utf-8")
        lab00 = course.labs[0]
        for name in lab00.files:
            text = (course.solutions_dir / name).read_text(encoding="utf-8")
            (into / name).write_text(_stub_except(course, text, lab00.id, name), encoding="utf-8")
    elif case.name == "symlink-to-solutions":
        into.mkdir(parents=True)
        (into / "lora.py").symlink_to(course.solutions_dir / "lora.py")
    elif case.name == "huge-file":
        into.mkdir(parents=True)
        (into / "lora.py").write_text("# padding\n" * 60_000, encoding="utf-8")
    else:
        _build(course, case, into)


@dataclass
class Batch:
    cases: dict[str, Case]
    out: Path
    seconds: dict[str, float]


def _grade_all(folder: Path, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labkit", "grade-all", str(folder), "--out", str(out), "--jobs", "2",
         "--quiet", *options],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )


@pytest.fixture(scope="module")
def batch(course: Course, tmp_path_factory: pytest.TempPathFactory) -> Batch:
    """Every case graded by `labkit grade-all`: the main batch, the hanging cases with a short
    limit, and the cases graded without the static check."""
    work = tmp_path_factory.mktemp("hostile")
    cases = {case.name: case for case in _cases(course)}
    groups: dict[str, tuple[list[str], list[Case]]] = {
        "main": (["--timeout", "120", "--test-timeout", "20"], []),
        "hang": (["--timeout", "8", "--test-timeout", "2"], []),
        "runtime": (["--timeout", "60", "--test-timeout", "20", "--no-static-check"], []),
    }
    for case in cases.values():
        group = "runtime" if case.spec.get("static_check", True) is False else (
            "hang" if "timeout" in case.spec else "main")
        groups[group][1].append(case)
    out = work / "out"
    seconds: dict[str, float] = {}
    for group, (options, members) in groups.items():
        folder = work / group
        for case in members:
            _make_generated(course, case, folder / case.name)
        started = time.monotonic()
        done = _grade_all(folder, out, *options)
        seconds[group] = time.monotonic() - started
        assert done.returncode == 0, (
            f"grade-all ({group}) exited {done.returncode}: it must grade every folder\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        assert f"graded {len(members)} of {len(members)}" in done.stdout, done.stdout[-2000:]
        assert (out / "gradebook.csv").is_file()
        shutil.copyfile(out / "gradebook.csv", work / f"gradebook-{group}.csv")
    return Batch(cases, out, seconds)


def _expected(case: Case, lab: str, max_score: float) -> float:
    table = case.spec.get("score", {})
    value = table.get(lab, table.get("*", 0))
    return max_score if value == "full" else float(value)


@pytest.mark.timeout(900)
def test_grade_all_gives_every_hostile_submission_its_expected_score(batch: Batch) -> None:
    problems: list[str] = []
    for name, case in sorted(batch.cases.items()):
        path = batch.out / name / "results.json"
        if not path.is_file():
            problems.append(f"{name}: no results.json")
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        labs = data["extra_data"]["labs"]
        for lab, got in labs.items():
            want = _expected(case, lab, got["max_score"] - got["notes_max_score"])
            if abs(got["score"] - want) > 1e-6:
                problems.append(f"{name} ({case.spec.get('about', '')}): {lab} scored {got['score']:g}, "
                                f"expected {want:g}\n    {data['output'][:600]}")
        files = data["extra_data"]["files"]
        for refused in case.spec.get("refused", []):
            if files[refused]["status"] != "refused":
                problems.append(f"{name}: {refused} was not refused ({files[refused]})")
        if "refused" not in case.spec:
            wrongly = [f for f, info in files.items() if info["status"] == "refused"]
            if wrongly:
                problems.append(f"{name}: the static check refused {wrongly}, which it must not")
        mention = case.spec.get("mention")
        if mention and mention.lower() not in json.dumps(data).lower():
            problems.append(f"{name}: results.json never says {mention!r}:\n    {data['output'][:600]}")
        if not data["tests"] or data["score"] != pytest.approx(sum(t["score"] for t in data["tests"])):
            problems.append(f"{name}: score {data['score']} is not the sum of its tests")
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(900)
def test_grade_all_writes_a_gradebook_and_bounded_logs(batch: Batch, course: Course) -> None:
    with (batch.out / "gradebook.csv").open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    assert header[:3] == ["name", "total", "max"]
    assert set(header[3:]) <= {lab.id for lab in course.labs} and header[3:], header
    log = batch.out / "runtime-flood-at-exit" / "log.txt"
    assert log.is_file() and log.stat().st_size < 256 * 1024, "the flood's captured output was not capped"
    assert "bytes of output dropped" in log.read_text(encoding="utf-8")
    # the hanging cases were cut at their limit, not left to run
    assert batch.seconds["hang"] < 90, batch.seconds


# --------------------------------------------------------------------------------------------
# the Gradescope bundle
# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_gradescope_bundle_runs_on_a_local_copy_of_the_layout(
    course: Course, batch: Batch, tmp_path: Path
) -> None:
    bundle = tmp_path / "autograder.zip"
    done = subprocess.run([sys.executable, "-m", "labkit", "gradescope-build", "--out", str(bundle)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    solutions = {p.read_bytes() for p in course.solutions_dir.rglob("*") if p.is_file()}
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        for required in ("setup.sh", "run_autograder", "requirements.txt", "course.toml", "conftest.py"):
            assert required in names, f"the bundle lacks {required}"
        assert any(n.startswith("tests/test_lab") for n in names) and "src/labkit/grade.py" in names
        assert not [n for n in names if n.startswith(("solutions/", "tests/course/"))], names
        assert not [n for n in names if archive.read(n) in solutions], "a solution file is in the bundle"
        mode = archive.getinfo("run_autograder").external_attr >> 16
        assert mode & 0o111, "run_autograder must be executable"
        layout = tmp_path / "autograder"
        archive.extractall(layout / "source")
    (layout / "submission").mkdir()
    (layout / "results").mkdir()
    for name in course.lab_files:
        shutil.copyfile(course.solutions_dir / name, layout / "submission" / name)
    shutil.copyfile(layout / "source" / "run_autograder", layout / "run_autograder")
    os.chmod(layout / "run_autograder", 0o755)
    env = dict(os.environ, **{gradescope.ROOT_ENV: str(layout), gradescope.PYTHON_ENV: sys.executable})
    run = subprocess.run([str(layout / "run_autograder")], cwd=layout, env=env,
                         capture_output=True, text=True, timeout=600)
    results = layout / "results" / "results.json"
    assert run.returncode == 0 and results.is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads(results.read_text(encoding="utf-8"))
    assert data["score"] == pytest.approx(data["max_score"]) and data["score"] > 0, data["output"]
    assert all(t["status"] == "passed" for t in data["tests"])
    # the same submission graded by grade-all: the same tests, the same scores (a re-run agrees)
    earlier = json.loads((batch.out / "reference" / "results.json").read_text(encoding="utf-8"))
    assert [(t["name"], t["score"]) for t in data["tests"]] == [(t["name"], t["score"]) for t in earlier["tests"]]
