"""Companion notebooks: valid nbformat, no outputs, built from tools/build_notebooks.py, and
every one executes from top to bottom against the reference solutions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from labkit import overlay
from labkit.manifest import Course, Lab, load_course

pytestmark = pytest.mark.course

ROOT = Path(__file__).resolve().parents[2]
LABS = list(load_course(ROOT).available_labs)


def test_notebooks_match_their_builder(course: Course) -> None:
    done = subprocess.run(
        [sys.executable, "tools/build_notebooks.py", "--check"],
        cwd=course.root, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("lab", LABS, ids=[lab.id for lab in LABS])
def test_notebook_is_valid_and_clean(course: Course, lab: Lab) -> None:
    nb = nbformat.read(course.root / lab.notebook, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{lab.notebook} carries outputs: rebuild it with tools/build_notebooks.py"
            )


@pytest.mark.parametrize("lab", LABS, ids=[lab.id for lab in LABS])
def test_notebook_executes_against_the_reference(
    course: Course, lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    impl = overlay.resolve(course, overlay.REFERENCE)
    try:
        # The kernel inherits this environment: the reference package comes first on its path.
        monkeypatch.setenv("PYTHONPATH", str(impl.package_dir.parent))
        monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        nb = nbformat.read(course.root / lab.notebook, as_version=4)
        client = NotebookClient(
            nb, timeout=180, kernel_name="python3",
            resources={"metadata": {"path": str((course.root / lab.notebook).parent)}},
        )
        client.execute()
        text = "\n".join(
            out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", [])
        )
        # The notebook says where LoRALinear came from: it must be the reference, not src/.
        assert f"LoRALinear comes from {impl.package_dir}" in text, text[:2000]
    finally:
        impl.cleanup()
