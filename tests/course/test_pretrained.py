"""Lab 05's pretrained MiniGPT: the checkpoint in the repository is the one its description
documents, and the task is one it does not already solve."""

from __future__ import annotations

import subprocess
import sys

import pytest

from labkit.manifest import Course

pytestmark = pytest.mark.course


def test_pretrained_heldout_loss_is_the_documented_number(course: Course) -> None:
    # tools/pretrain_minigpt.py --check recomputes the held-out loss of the shipped weights on
    # the held-out lines it regenerates from their seed, and compares it with the .json.
    done = subprocess.run(
        [sys.executable, "tools/pretrain_minigpt.py", "--check"],
        cwd=course.root, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_pretrained_model_echoes_and_fails_the_task() -> None:
    from minituner import tasks

    model = tasks.load_pretrained()
    info = tasks.pretrained_info()
    assert info["echo_accuracy"] >= 0.99 and info["pig_latin_accuracy"] == 0.0, info
    assert tasks.complete(model, "hello>") == "hello"  # it echoes: pig latin is new to it
    assert tasks.pig_latin("hello") == "ellohay"
    assert tasks.PRETRAINED_WEIGHTS.stat().st_size < 2 * 2**20  # "a few MB at most"


def test_task_splits_share_no_word() -> None:
    from minituner import tasks

    split = tasks.pig_latin_task()
    assert len(split.train) == 4000 and len(split.eval) == 500
    assert not {e.prompt for e in split.train} & {e.prompt for e in split.eval}
    assert split == tasks.pig_latin_task()  # deterministic: the same split on every call


def test_experiment_quick_run(course: Course) -> None:
    """The lab05 experiment's code paths (the workers, the tables), in a few seconds."""
    from minituner import lab05_experiment

    specs = lab05_experiment.run_specs()
    assert len(specs) == 11 and sum(s.targets is None for s in specs) == 1
    cpu = lab05_experiment.choose_device("cpu")
    results = lab05_experiment.run_all(specs[:2], steps=2, device=cpu, workers=1)
    assert [r.name for r in results] == [s.name for s in specs[:2]]
    full, lora = results
    from minituner import tasks

    tensors = len(list(tasks.load_pretrained().parameters()))  # 69: one 4-byte `step` each
    assert full.optimizer_state_bytes == full.closed_form_state_bytes + 4 * tensors
    # q and v, at rank r, in 4 blocks of width 64: r * (64 + 64) each
    assert lora.trainable_params == specs[1].r * (64 + 64) * 2 * 4 < lora.total_params
