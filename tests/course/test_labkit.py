"""The course machinery itself: manifest validation, stub generation, the --impl overlay, notes
parsing and status. Each test builds a small course of its own in a temporary folder."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from labkit import notes, overlay, status, stubs
from labkit.manifest import Course, ManifestError, load_course
from labkit.plugin import Outcome
from labkit.runner import Run

pytestmark = pytest.mark.course

ROOT = Path(__file__).resolve().parents[2]

LAB_TABLE = """
[[lab]]
id = "{id}"
title = "Toy lab"
available = {available}
brief = "labs/{id}.md"
notebook = "labs/{id}.ipynb"
theory = []
files = ["toy.py"]
marker = "{id}"
points = 10
notes = "notes/{id}.md"
allowed_imports = ["math"]
{extra}
"""

REFERENCE = '''"""A toy lab file."""


def double(x: int) -> int:
    """Return 2 * x."""
    # >>> lab00 step A: return twice the input
    return 2 * x
    # <<< lab00 step A


def given() -> int:
    return 1
'''


def make_course(tmp: Path, labs: str | None = None) -> Path:
    (tmp / "labs").mkdir()
    (tmp / "notes").mkdir()
    (tmp / "src" / "pkg").mkdir(parents=True)
    (tmp / "solutions" / "pkg").mkdir(parents=True)
    for name in ("labs/lab00.md", "labs/lab00.ipynb", "notes/lab00.md", "src/pkg/__init__.py"):
        (tmp / name).write_text("", encoding="utf-8")
    (tmp / "solutions" / "pkg" / "toy.py").write_text(REFERENCE, encoding="utf-8")
    body = labs if labs is not None else LAB_TABLE.format(id="lab00", available="true", extra="")
    (tmp / "course.toml").write_text(
        '[course]\ntitle = "t"\npackage = "pkg"\nstubs = "src/pkg"\nsolutions = "solutions/pkg"\n'
        + body,
        encoding="utf-8",
    )
    return tmp


# --- manifest ----------------------------------------------------------------------------------


def test_the_real_manifest_loads_with_the_seed_labs_in_order() -> None:
    course = load_course(ROOT)
    assert [lab.id for lab in course.labs][:5] == ["lab00", "lab01", "lab02", "lab03", "lab04"]
    assert course.lab("lab00").available


def test_manifest_names_the_lab_and_key_when_a_key_is_missing(tmp_path: Path) -> None:
    table = LAB_TABLE.format(id="lab00", available="true", extra="").replace('points = 10\n', "")
    make_course(tmp_path, table)
    with pytest.raises(ManifestError, match=r"lab lab00 has no 'points'"):
        load_course(tmp_path)


def test_manifest_names_a_path_that_does_not_exist(tmp_path: Path) -> None:
    make_course(tmp_path)
    (tmp_path / "labs" / "lab00.md").unlink()
    with pytest.raises(ManifestError, match=r"lab lab00 key 'brief' names labs/lab00.md.*available = false"):
        load_course(tmp_path)


def test_manifest_rejects_a_duplicate_id(tmp_path: Path) -> None:
    one = LAB_TABLE.format(id="lab00", available="true", extra="")
    make_course(tmp_path, one + one)
    with pytest.raises(ManifestError, match="lab lab00 is listed twice"):
        load_course(tmp_path)


def test_manifest_does_not_require_files_of_a_lab_not_yet_available(tmp_path: Path) -> None:
    labs = LAB_TABLE.format(id="lab00", available="true", extra="")
    labs += LAB_TABLE.format(id="lab01", available="false", extra="")
    make_course(tmp_path, labs)
    course = load_course(tmp_path)
    assert [lab.id for lab in course.available_labs] == ["lab00"]


def test_manifest_rejects_a_measurement_with_min_above_max(tmp_path: Path) -> None:
    extra = '[[lab.measurements]]\nname = "m"\nunit = "-"\nmin = 2\nmax = 1\ndescription = "d"\n'
    make_course(tmp_path, LAB_TABLE.format(id="lab00", available="true", extra=extra))
    with pytest.raises(ManifestError, match=r"measurement #1 \(m\) has min 2.0 > max 1.0"):
        load_course(tmp_path)


# --- stubs -------------------------------------------------------------------------------------


def test_stub_keeps_signature_and_docstring_and_names_the_step(tmp_path: Path) -> None:
    course = load_course(make_course(tmp_path))
    text = stubs.generated(course)["toy.py"]
    assert 'def double(x: int) -> int:\n    """Return 2 * x."""\n    raise NotImplementedError(' in text
    assert "lab00 step A: return twice the input. See labs/lab00.md" in text
    assert "return 2 * x" not in text and "def given() -> int:\n    return 1" in text


@pytest.mark.parametrize(
    "bad, complaint",
    [
        ("    # >>> lab00 step A: x\n    pass\n", "never closes"),
        ("    pass\n    # <<< lab00 step A\n", "closes but none is open"),
        ("    # >>> lab00 step A: x\n    # <<< lab00 step B\n", "closes lab00 step B"),
        ("    # >>> lab00 stepA x\n", "malformed marker"),
    ],
)
def test_malformed_regions_are_reported_with_their_line(bad: str, complaint: str) -> None:
    with pytest.raises(stubs.StubError, match=complaint):
        stubs.find_regions("def f() -> None:\n" + bad, "toy.py")


def test_generator_never_overwrites_a_learners_edits_without_force(tmp_path: Path) -> None:
    course = load_course(make_course(tmp_path))
    assert stubs.write_stubs(course) == (["toy.py"], [])
    stub = tmp_path / "src" / "pkg" / "toy.py"
    assert stubs.stale(course) == []
    stub.write_text(stub.read_text().replace("raise NotImplementedError", "return 2 * x  #"))
    # The reference changes too: the edited stub must still be kept.
    ref = tmp_path / "solutions" / "pkg" / "toy.py"
    ref.write_text(ref.read_text().replace("Return 2 * x.", "Return x doubled."))
    written, refused = stubs.write_stubs(course)
    assert (written, refused) == ([], ["toy.py"])
    assert "return 2 * x  #" in stub.read_text()
    assert stubs.write_stubs(course, force=True) == (["toy.py"], [])
    assert "Return x doubled." in stub.read_text()


def test_an_untouched_stub_is_updated_when_the_reference_changes(tmp_path: Path) -> None:
    course = load_course(make_course(tmp_path))
    stubs.write_stubs(course)
    ref = tmp_path / "solutions" / "pkg" / "toy.py"
    ref.write_text(ref.read_text().replace("Return 2 * x.", "Return x doubled."))
    assert stubs.stale(course) == ["toy.py"]
    assert stubs.write_stubs(course) == (["toy.py"], [])
    assert stubs.stale(course) == []


def test_committed_stubs_are_what_the_generator_makes() -> None:
    assert stubs.stale(load_course(ROOT)) == [], "run `make stubs`"


# --- overlay -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["", "pkg", "src/pkg"])
def test_impl_path_finds_the_lab_files_in_each_layout(tmp_path: Path, layout: str) -> None:
    (tmp_path / "course").mkdir()
    course = load_course(make_course(tmp_path / "course"))
    sub = tmp_path / "submission"
    folder = sub / layout if layout else sub
    folder.mkdir(parents=True)
    (folder / "toy.py").write_text("X = 1\n", encoding="utf-8")
    (sub / "conftest.py").write_text("raise SystemExit('never run')\n", encoding="utf-8")
    impl = overlay.resolve(course, str(sub))
    try:
        assert impl.missing == ()
        assert (impl.package_dir / "toy.py").read_text() == "X = 1\n"
        assert (impl.package_dir / "__init__.py").exists()  # given code from the course
        assert not (impl.package_dir.parent / "conftest.py").exists()
    finally:
        impl.cleanup()
    assert not impl.package_dir.exists()


def test_impl_path_without_lab_files_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "course").mkdir()
    course = load_course(make_course(tmp_path / "course"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(overlay.ImplError, match=r"no lab file \(toy.py\) in"):
        overlay.resolve(course, str(tmp_path / "empty"))
    with pytest.raises(overlay.ImplError, match="no such file or folder"):
        overlay.resolve(course, str(tmp_path / "nowhere"))


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args], cwd=ROOT, capture_output=True, text=True,
        stdin=subprocess.DEVNULL,
    )


def test_pytest_impl_with_a_space_is_an_option_whatever_the_path(tmp_path: Path) -> None:
    # An existing folder outside the repository, written after a space: pytest must not take it
    # for a test path (which would root the session there and collect nothing of the course).
    done = _pytest("--impl", str(tmp_path), "-q", "-m", "lab00")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "no lab file" in done.stdout + done.stderr
    assert len((done.stdout + done.stderr).strip().splitlines()) <= 3, "must be a short error"


def test_pytest_impl_nonexistent_path_is_a_one_line_error() -> None:
    done = _pytest("--impl", "/no/such/folder", "-q")
    assert done.returncode == 4
    assert "ERROR: --impl /no/such/folder: no such file or folder" in done.stderr


def test_missing_lab_file_fails_only_the_tests_that_need_it(tmp_path: Path) -> None:
    course = load_course(ROOT)
    (tmp_path / "notes.txt").write_text("no code here")
    present = course.lab_files[0]
    (tmp_path / present).write_text((course.solutions_dir / present).read_text())
    impl = overlay.resolve(course, str(tmp_path))
    try:
        for name in course.lab_files[1:]:
            text = (impl.package_dir / name).read_text()
            assert f"the submission has no {name}" in text
    finally:
        impl.cleanup()


# --- notes and status --------------------------------------------------------------------------


def test_notes_reader_accepts_commas_and_reports_each_problem(tmp_path: Path) -> None:
    course = load_course(ROOT)
    lab = course.lab("lab00")
    path = tmp_path / "notes.md"
    path.write_text(textwrap.dedent("""
        | measurement | value | unit | how |
        |---|---|---|---|
        | `init_max_abs_diff` | 0.0 | - | x |
        | `trainable_params_r8` | 1,024 | p | x |
        | `total_params_r8` | 4160 | p | x |
        | `params_with_grad` | TODO | t | x |
    """))
    readings = {r.measurement.name: r for r in notes.read_notes(lab, path)}
    assert readings["init_max_abs_diff"].in_range
    assert readings["trainable_params_r8"].value == 1024 and readings["trainable_params_r8"].in_range
    assert "expected 5184" in (readings["total_params_r8"].problem() or "")
    assert "not recorded yet" in (readings["params_with_grad"].problem() or "")


def test_status_points_at_the_earliest_unfinished_step() -> None:
    course = load_course(ROOT)
    run = Run(1, False, "", {
        "t1": Outcome("t1", "lab00", "failed", 'NotImplementedError: lab00 step C: add the branch. See labs/00-lora-by-hand.md'),
        "t2": Outcome("t2", "lab00", "failed", 'NotImplementedError: lab00 step A: check the arguments. See labs/00-lora-by-hand.md'),
        "t3": Outcome("t3", "lab00", "passed", ""),
    })
    text = status.render(course, status.collect(course, run), run)
    assert "1/3" in text
    assert "Next: read labs/00-lora-by-hand.md (lab00 step A: check the arguments)" in text


def test_status_on_a_fresh_clone_shows_lab00_unstarted_with_the_next_step() -> None:
    course = load_course(ROOT)
    text = status.status(course)
    row = next(line for line in text.splitlines() if line.startswith("lab00"))
    assert " 0/" in row and "not started" in row, text
    assert "Next: read labs/00-lora-by-hand.md (lab00 step A" in text, text
