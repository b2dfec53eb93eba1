"""Build the companion notebooks in ``labs/`` from code, so they are reviewed as code.

    python tools/build_notebooks.py            rewrite every notebook
    python tools/build_notebooks.py lab00      rewrite only the notebooks named
    python tools/build_notebooks.py --check    exit 1, naming each notebook that differs

Each notebook is a function that returns its cells; ``NOTEBOOKS`` maps a notebook's id (the name
of its file in ``labs/``, without ``.ipynb``, as ``course.toml`` names it) to that function. A new
lab adds one function and one entry. The output is deterministic: no outputs, no execution
counts, cell ids numbered by position, fixed metadata. Edit this file, never the ``.ipynb``.

The draft class a notebook shows is cut from the reference in ``solutions/`` the way the stubs
are: signature and docstrings kept, each solution region of the lab replaced by
``raise NotImplementedError``. When a reference docstring changes, ``--check`` says so.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import cast

import nbformat
from nbformat import v4
from nbformat.notebooknode import NotebookNode

ROOT = Path(__file__).resolve().parent.parent
LABS = ROOT / "labs"
SOLUTIONS = ROOT / "solutions" / "minituner"

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

Cells = list[NotebookNode]
Builder = Callable[[], Cells]


# --- helpers every notebook uses -------------------------------------------------------------


def md(text: str) -> NotebookNode:
    """A markdown cell; ``text`` is dedented and stripped, so it can be indented in the source."""
    cell = v4.new_markdown_cell(textwrap.dedent(text).strip("\n"))  # type: ignore[no-untyped-call]
    return cast(NotebookNode, cell)


def code(text: str) -> NotebookNode:
    """A code cell with no outputs and no execution count."""
    cell = v4.new_code_cell(textwrap.dedent(text).strip("\n"))  # type: ignore[no-untyped-call]
    return cast(NotebookNode, cell)


def assemble(notebook_id: str, cells: Cells) -> NotebookNode:
    """The notebook, with ids numbered by position and fixed metadata, validated."""
    nb: NotebookNode = v4.new_notebook()  # type: ignore[no-untyped-call]
    metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    nb.metadata = nbformat.from_dict(metadata)  # type: ignore[no-untyped-call]
    for index, cell in enumerate(cells):
        cell.id = f"{notebook_id[:2]}-{index:02d}"
    nb.cells = cells
    nbformat.validate(nb)
    return nb


def render(nb: NotebookNode) -> str:
    """The exact text written to disk: nbformat's JSON and one final newline."""
    text: str = nbformat.writes(nb)  # type: ignore[no-untyped-call]
    return text if text.endswith("\n") else text + "\n"


_OPEN = re.compile(r"^(?P<indent>\s*)# >>> (?P<lab>lab\d\d) step (?P<step>\w+): (?P<what>.+?)\s*$")
_CLOSE = re.compile(r"^\s*# <<< (?P<lab>lab\d\d) step (?P<step>\w+)\s*$")


def draft_class(module: str, name: str, lab: str, draft_name: str) -> str:
    """The source of class ``name`` from ``solutions/minituner/<module>``, as a draft for ``lab``.

    Methods whose regions belong to other labs are left out; each region of ``lab`` becomes a
    ``raise NotImplementedError("<lab> step <X>: <what the marker says>")`` at its indentation;
    everything else (signatures, docstrings, class-level annotations) is kept as it is.
    """
    path = SOLUTIONS / module
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source, filename=str(path))
    found = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    if not found:
        raise SystemExit(f"{path}: no class {name}; update tools/build_notebooks.py")
    cls = found[0]
    assert cls.end_lineno is not None

    skip: set[int] = set()  # 0-based line numbers to leave out
    for node in cls.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        assert node.end_lineno is not None
        start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
        end = node.end_lineno  # the closing marker comes after the last statement: take it too
        while end < len(lines) and _CLOSE.match(lines[end]):
            end += 1
        labs = {m["lab"] for line in lines[start:end] if (m := _OPEN.match(line))}
        if labs and lab not in labs:
            skip.update(range(start, end))
            if start > 0 and not lines[start - 1].strip():
                skip.add(start - 1)  # the blank line before the method

    out: list[str] = []
    inside: re.Match[str] | None = None
    for number in range(cls.lineno - 1, cls.end_lineno):
        line = lines[number]
        if number in skip:
            continue
        if inside is not None:
            closing = _CLOSE.match(line)
            if closing and closing["lab"] == inside["lab"] and closing["step"] == inside["step"]:
                inside = None
            continue
        opening = _OPEN.match(line)
        if opening and opening["lab"] == lab:
            message = json.dumps(f"{lab} step {opening['step']}: {opening['what']}")
            out.append(f"{opening['indent']}raise NotImplementedError({message})")
            inside = opening
            continue
        out.append(line)
    if inside is not None:
        raise SystemExit(f"{path}: region '{lab} step {inside['step']}' is never closed")
    text = "\n".join(out)
    return re.sub(rf"^class {name}\b", f"class {draft_name}", text, count=1)


# --- lab00: LoRALinear by hand ---------------------------------------------------------------


def lab00_lora_by_hand() -> Cells:
    draft = draft_class("lora.py", "LoRALinear", "lab00", "DraftLoRALinear")
    return [
        md(
            """
            # Lab 00 companion: LoRALinear by hand

            This notebook is a workbench for [Lab 00](00-lora-by-hand.md). You use it to sketch
            `LoRALinear`, to see it behave, and to build the habit of six sanity checks. It is
            not graded: the graded code lives in `src/minituner/lora.py`, and
            `make test LAB=lab00` grades it.

            The cells below import `LoRALinear` from `minituner.lora`, so they show **your**
            implementation. On a fresh clone that file is a stub, and the first cell that builds a
            layer stops with a `NotImplementedError` naming the step to write next. (The course's
            own self-check runs this notebook against the reference solution.)

            Every check prints a `PASS` or `FAIL` line and stops the notebook on a failure. Run
            the cells from the top (*Run All* works).
            """
        ),
        md(
            """
            ## Setup

            If `minituner` is not importable yet (you opened this notebook from `labs/` without
            installing the package), the next cell finds the course root (the folder holding
            `course.toml`) and puts its `src/` on `sys.path`. If `minituner` is already
            importable, it is left alone. The cell prints which file `LoRALinear` comes from:
            check that it is the one you are editing.
            """
        ),
        code(
            '''
            import importlib.util
            import sys
            import time
            from pathlib import Path


            def find_course_root(start: Path) -> Path:
                """The nearest folder at or above ``start`` that holds course.toml."""
                for folder in (start, *start.parents):
                    if (folder / "course.toml").is_file():
                        return folder
                raise FileNotFoundError(
                    f"no course.toml in {start} or above it: open this notebook from inside "
                    "your minituner clone"
                )


            if importlib.util.find_spec("minituner") is None:
                sys.path.insert(0, str(find_course_root(Path.cwd().resolve()) / "src"))

            import math

            import torch
            import torch.nn.functional as F
            from torch import Tensor, nn

            import minituner.lora
            from minituner.lora import LoRALinear

            print(f"LoRALinear comes from {minituner.lora.__file__}")


            def check(ok: bool, claim: str, hint: str = "") -> None:
                """Print PASS or FAIL for ``claim``; on FAIL, stop with the hint."""
                if ok:
                    print(f"PASS  {claim}")
                    return
                print(f"FAIL  {claim}" + (f"\\n      hint: {hint}" if hint else ""))
                raise AssertionError(f"{claim}. {hint}".strip())
            '''
        ),
        md(
            """
            ## The stub to fill

            The next cell holds `DraftLoRALinear`: the same signature and docstrings as the
            `LoRALinear` you write in `src/minituner/lora.py`, with every body still to do. If
            you like to sketch in a notebook first, fill it in here, set `USE_DRAFT = True`, and
            run the cells below: they then test your draft instead of the package's class.

            When the draft passes, move the code into `src/minituner/lora.py` (only that file is
            graded), set `USE_DRAFT = False`, restart the kernel, and run everything again: the
            checks now run on the code the tests grade. `merge_` is not here: it belongs to
            Lab 04.
            """
        ),
        # Not dedented as a block: the draft's lines start at column 0.
        code(
            "USE_DRAFT = False  # True: the cells below use the draft in this cell\n\n\n"
            + draft
            + "\n\n\nLayer = DraftLoRALinear if USE_DRAFT else LoRALinear\n"
            + 'print(f"the cells below use {Layer.__name__}")'
        ),
        md(
            """
            ## Verification

            Four facts about a fresh layer. Each cell seeds its own random numbers, so you can
            run it again on its own.

            **Identity at init.** `lora_B` starts at zero, so `B @ A` is zero and the layer
            computes exactly what the base computes: the difference is `0.0`, not merely small.
            """
        ),
        code(
            """
            torch.manual_seed(0)
            base = nn.Linear(64, 64)
            layer = Layer(base, r=8, alpha=16.0)
            x = torch.randn(16, 64)  # (batch, in_features)
            with torch.no_grad():
                init_diff = (layer(x) - base(x)).abs().max().item()
            check(
                init_diff == 0.0,
                f"identity at init: max |layer(x) - base(x)| = {init_diff}, expected exactly 0.0",
                "B must start at zero (nn.init.zeros_), so that B @ A = 0 at step 0",
            )
            """
        ),
        md(
            """
            **Shapes.** `lora_A` is `(r, in_features)` and `lora_B` is `(out_features, r)`, the
            way `nn.Linear` stores its weight (`(out, in)`). A layer with different `in` and
            `out` catches swapped factors that a square layer would hide. Both factors are
            `nn.Parameter`s, and any leading batch dimensions pass through.
            """
        ),
        code(
            """
            torch.manual_seed(0)
            layer = Layer(nn.Linear(32, 48), r=4)
            check(
                tuple(layer.lora_A.shape) == (4, 32),
                f"lora_A has shape {tuple(layer.lora_A.shape)}, expected (r, in) = (4, 32)",
                "A maps the input down to r: (r, in_features)",
            )
            check(
                tuple(layer.lora_B.shape) == (48, 4),
                f"lora_B has shape {tuple(layer.lora_B.shape)}, expected (out, r) = (48, 4)",
                "B maps r up to the output: (out_features, r)",
            )
            check(
                isinstance(layer.lora_A, nn.Parameter) and isinstance(layer.lora_B, nn.Parameter),
                "lora_A and lora_B are nn.Parameter",
                "create them as nn.Parameter(...) so the module registers and trains them",
            )
            y = layer(torch.randn(2, 7, 32))  # (batch, seq, in_features)
            check(
                tuple(y.shape) == (2, 7, 48),
                f"output of a (2, 7, 32) input has shape {tuple(y.shape)}, expected (2, 7, 48)",
                "use F.linear, which works on any leading dimensions",
            )
            """
        ),
        md(
            """
            **Parameter counts.** On `nn.Linear(64, 64)` at `r = 8`, LoRA adds
            `r * (in + out) = 8 * (64 + 64) = 1,024` trainable parameters. The base keeps its
            `64 * 64 + 64 = 4,160` (weight and bias), frozen, for a total of `5,184`.
            """
        ),
        code(
            """
            torch.manual_seed(0)
            layer = Layer(nn.Linear(64, 64), r=8)
            n_trainable = sum(p.numel() for p in layer.parameters() if p.requires_grad)
            n_total = sum(p.numel() for p in layer.parameters())
            check(
                n_trainable == 1_024,
                f"trainable parameters: {n_trainable:,}, expected 8 * (64 + 64) = 1,024",
                "freeze the base (base.requires_grad_(False)); only lora_A and lora_B train",
            )
            check(
                n_total == 5_184,
                f"all parameters: {n_total:,}, expected 64 * 64 + 64 + 1,024 = 5,184",
                "the layer holds the base and exactly two factors, nothing else",
            )
            print(f"trainable share: {n_trainable / n_total:.1%}")
            """
        ),
        md(
            """
            **Scaling.** The update is multiplied by `alpha / r`. At init `B = 0` hides any
            mistake here, so the cell first sets `B` to random values, then measures the scale
            on the output: the ratio of `layer(x) - base(x)` to the unscaled branch
            `x @ A.T @ B.T`, computed here in float64. A second `(r, alpha)` pair catches a
            scale that is right only by accident (a constant `2.0`, say).
            """
        ),
        code(
            """
            for r, alpha in [(8, 16.0), (4, 32.0)]:
                torch.manual_seed(0)
                base = nn.Linear(64, 64)
                layer = Layer(base, r=r, alpha=alpha)
                with torch.no_grad():
                    layer.lora_B.copy_(torch.randn_like(layer.lora_B))  # B != 0: the branch shows
                    x = torch.randn(16, 64)
                    delta = (layer(x) - base(x)).double()  # what the layer adds to the base
                    branch = x.double() @ layer.lora_A.double().T @ layer.lora_B.double().T
                    scale = ((delta * branch).sum() / (branch * branch).sum()).item()
                    expected = (alpha / r) * branch
                    worst = ((delta - expected).abs().max() / expected.abs().max()).item()
                check(
                    abs(scale - alpha / r) < 1e-4 * (alpha / r) and worst < 1e-4,
                    f"r={r}, alpha={alpha:g}: measured scale {scale:.4f}, "
                    f"expected alpha / r = {alpha / r:g} (max relative deviation {worst:.1e})",
                    "multiply the branch by alpha / r (self.scaling), not by alpha or r",
                )
            """
        ),
        md(
            """
            ## A toy training run

            A frozen `nn.Linear(64, 64)` plays the pretrained layer. The target is that same layer
            plus a rank-4 change, `target_W = W + B_true @ A_true`. A rank-8 LoRA can represent a
            rank-4 change exactly, so the best it can do is a loss of zero, and a correct layer
            gets there: the loss falls by orders of magnitude in 300 steps of Adam, on the
            trainable parameters only. The cell prints how long that took; on a CPU, expect well
            under a second.

            The cell takes a snapshot of the base weight **before** training, for check 3 below.
            """
        ),
        code(
            """
            torch.manual_seed(0)
            D, R, ALPHA, R_TRUE, STEPS = 64, 8, 16.0, 4, 300

            base = nn.Linear(D, D)  # stands in for a pretrained layer: frozen, never updated
            layer = Layer(base, r=R, alpha=ALPHA)

            # A snapshot taken now, and a copy (clone), not a view of the same memory.
            W_before = base.weight.detach().clone()
            b_before = base.bias.detach().clone()

            # The target is the base plus a rank-4 change: reachable by a rank-8 LoRA.
            B_true = torch.randn(D, R_TRUE) / math.sqrt(D)  # (out, r_true)
            A_true = torch.randn(R_TRUE, D) / math.sqrt(R_TRUE)  # (r_true, in)
            target_W = W_before + B_true @ A_true  # (out, in), rank of the change: 4
            X = torch.randn(512, D)  # (N, in)
            Y = F.linear(X, target_W, b_before)  # (N, out)

            trainable = [p for p in layer.parameters() if p.requires_grad]
            optimizer = torch.optim.Adam(trainable, lr=1e-2)

            start = time.perf_counter()
            losses = []
            for step in range(STEPS + 1):
                loss = F.mse_loss(layer(X), Y)
                losses.append(loss.item())
                if step % 50 == 0:
                    print(f"step {step:3d}  loss {loss.item():.2e}")
                if step == STEPS:
                    break
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            seconds = time.perf_counter() - start

            ratio = losses[-1] / losses[0]
            print(f"{STEPS} steps in {seconds:.2f} s; final / initial loss = {ratio:.1e}")
            check(
                losses[-1] < 0.01 * losses[0],
                f"final loss {losses[-1]:.2e} is below 1% of the initial {losses[0]:.2e}",
                "if the loss never moves, check that lora_A and lora_B require grad and that "
                "forward adds the branch; if it moves slowly, check the scaling",
            )
            """
        ),
        md(
            """
            **Why the target has rank 4.** A rank-8 LoRA can only add a change of rank at most 8.
            Had you fitted a full-rank random target, the best rank-8 change would still miss
            the other 56 directions of the difference, and the loss would stop at a floor far
            above zero (the Eckart-Young theorem says how far: the energy in the singular values
            the rank cannot reach). That plateau looks exactly like a bug, a learning rate too
            small, or a scale mistake, so the run would tell you nothing. With a reachable target
            the only correct outcome is a loss near zero, and anything else is worth
            investigating. Try it: replace `B_true @ A_true` with `torch.randn(D, D) / D`, and
            watch the loss stall far above zero and the check fail.
            """
        ),
        md(
            """
            ## Six sanity checks

            Run these on every LoRA layer you write, here and in your own projects. Checks 1, 3,
            5 and 6 use the layer you just trained.
            """
        ),
        md(
            """
            **1. Only A and B are trainable**, even after the moves that can leak a freeze:
            `.train()`, `.eval()`, `.to(...)`. Their share of the layer's parameters is printed.
            """
        ),
        code(
            """
            layer.eval().train().to(torch.float32)
            names = sorted(n for n, p in layer.named_parameters() if p.requires_grad)
            check(
                names == ["lora_A", "lora_B"],
                f"trainable parameters: {names}, expected ['lora_A', 'lora_B']",
                "freeze every parameter of the base, weight and bias",
            )
            n_lora = layer.lora_A.numel() + layer.lora_B.numel()
            n_all = sum(p.numel() for p in layer.parameters())
            print(f"LoRA share: {n_lora:,} / {n_all:,} = {n_lora / n_all:.1%}")
            """
        ),
        md(
            """
            **2. Identity at init.** A fresh layer adds exactly nothing: its output equals the
            base's, bit for bit.
            """
        ),
        code(
            """
            torch.manual_seed(1)
            fresh_base = nn.Linear(D, D)
            fresh = Layer(fresh_base, r=R, alpha=ALPHA)
            x = torch.randn(16, D)
            with torch.no_grad():
                diff = (fresh(x) - fresh_base(x)).abs().max().item()
            check(
                diff == 0.0,
                f"fresh layer: max |layer(x) - base(x)| = {diff}, expected exactly 0.0",
                "B must start at zero",
            )
            """
        ),
        md(
            """
            **3. The base is unchanged after training.** Compare against the snapshot taken
            *before* training, with `torch.equal` (exact). A snapshot taken after training, or a
            "snapshot" that is the same tensor (`W_before = base.weight`, no `clone`), compares
            the weight with itself and passes whatever happened.
            """
        ),
        code(
            """
            check(
                torch.equal(base.weight, W_before) and torch.equal(base.bias, b_before),
                "base weight and bias are bit-for-bit what they were before training",
                "the optimizer updated the base: is it frozen, and is the optimizer given only "
                "the parameters that require grad?",
            )
            """
        ),
        md(
            """
            **4. Shapes.** `lora_A` is `(r, in)`, `lora_B` is `(out, r)`.
            """
        ),
        code(
            """
            check(
                tuple(layer.lora_A.shape) == (R, D) and tuple(layer.lora_B.shape) == (D, R),
                f"lora_A {tuple(layer.lora_A.shape)}, lora_B {tuple(layer.lora_B.shape)}; "
                f"expected ({R}, {D}) and ({D}, {R})",
                "A: (r, in_features), B: (out_features, r)",
            )
            """
        ),
        md(
            """
            **5. The merged weight reproduces the output.** Fold the trained update into one
            weight by hand, `W_merged = W + (alpha / r) * B @ A`, and compare a plain linear layer
            with that weight against the LoRA layer, in eval mode. In float32 they agree within
            `1e-5`. (Lab 04 turns this into `merge_`; here you only compute it.)
            """
        ),
        code(
            """
            layer.eval()
            x = torch.randn(16, D)
            with torch.no_grad():
                W_merged = base.weight + (ALPHA / R) * layer.lora_B @ layer.lora_A  # (out, in)
                merge_diff = (F.linear(x, W_merged, base.bias) - layer(x)).abs().max().item()
            check(
                merge_diff < 1e-5,
                f"merged weight vs LoRA layer: max abs diff {merge_diff:.1e}, expected < 1e-5",
                "the forward must compute base(x) + (alpha / r) * B (A x), nothing more",
            )
            layer.train()
            """
        ),
        md(
            """
            **6. Gradients reach A and B, not the base.** One backward pass through the trained
            layer: both factors get a non-zero gradient; the base's weight and bias get none.
            (The check uses the trained layer, where `B` is no longer zero. On a fresh layer,
            look at `lora_A.grad` yourself and explain what you see: the notes ask about it.)
            """
        ),
        code(
            """
            layer.zero_grad(set_to_none=True)
            layer(torch.randn(16, D)).pow(2).mean().backward()
            for name in ("lora_A", "lora_B"):
                grad = getattr(layer, name).grad
                check(
                    grad is not None and bool(grad.abs().sum() > 0),
                    f"{name} receives a non-zero gradient",
                    "the branch must be part of forward, and the factor must require grad",
                )
            check(
                base.weight.grad is None and base.bias.grad is None,
                "the base weight and bias receive no gradient",
                "freeze the base: base.requires_grad_(False)",
            )
            layer.zero_grad(set_to_none=True)
            """
        ),
        md(
            """
            ## Record what you measured

            Once `make test LAB=lab00` is green, fill in the table of
            [`experiments/00-lora-by-hand/notes.md`](../experiments/00-lora-by-hand/notes.md).
            The next cell measures its four values the way the notes describe, on a fresh
            `LoRALinear(nn.Linear(64, 64))` at `r = 8`, and prints them as table rows. Copy the
            values, and answer the questions under the table in your own words.
            """
        ),
        code(
            """
            torch.manual_seed(0)
            base = nn.Linear(64, 64)
            lora = Layer(base, r=8)
            x = torch.randn(32, 64)
            measured = {}
            with torch.no_grad():
                measured["init_max_abs_diff"] = (lora(x) - base(x)).abs().max().item()
            measured["trainable_params_r8"] = sum(
                p.numel() for p in lora.parameters() if p.requires_grad
            )
            measured["total_params_r8"] = sum(p.numel() for p in lora.parameters())
            lora(x).sum().backward()
            measured["params_with_grad"] = sum(p.grad is not None for p in lora.parameters())

            if USE_DRAFT:
                print("(measured on your draft: record those of src/minituner/lora.py instead)")
            for name, value in measured.items():
                print(f"| `{name}` | {value} |")
            """
        ),
        md(
            """
            Next: run `make status`. It shows whether Lab 00's tests pass and its notes hold
            values in range, and it names what to do next.
            """
        ),
    ]


# --- the registry ----------------------------------------------------------------------------

NOTEBOOKS: dict[str, Builder] = {
    "00-lora-by-hand": lab00_lora_by_hand,
}


def build(notebook_id: str) -> str:
    return render(assemble(notebook_id, NOTEBOOKS[notebook_id]()))


def select(names: list[str]) -> list[str]:
    """Notebook ids for ``names`` (an id, ``labNN``, or a path to the .ipynb); all if empty."""
    if not names:
        return list(NOTEBOOKS)
    chosen: list[str] = []
    for name in names:
        stem = Path(name).stem
        matches = [i for i in NOTEBOOKS if i == stem or f"lab{i[:2]}" == stem]
        if not matches:
            raise SystemExit(f"no notebook {name!r}; the notebooks are: {', '.join(NOTEBOOKS)}")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help="notebook ids (00-lora-by-hand) or lab ids (lab00); all if none"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a notebook differs"
    )
    args = parser.parse_args(argv)

    stale: list[str] = []
    for notebook_id in select(args.names):
        path = LABS / f"{notebook_id}.ipynb"
        shown = path.relative_to(ROOT).as_posix()
        text = build(notebook_id)
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if args.check:
            if current is None:
                stale.append(f"{shown} is missing")
            elif current != text:
                stale.append(f"{shown} differs from what tools/build_notebooks.py builds")
            continue
        if current != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"wrote {shown}")
        else:
            print(f"unchanged {shown}")

    if args.check and not args.names:
        built = {f"{i}.ipynb" for i in NOTEBOOKS}
        for extra in sorted(LABS.glob("*.ipynb")):
            if extra.name not in built:
                stale.append(f"labs/{extra.name} is not built by tools/build_notebooks.py")
    for line in stale:
        print(line, file=sys.stderr)
    if stale:
        print(
            "edit tools/build_notebooks.py, not the .ipynb (a notebook saved from Jupyter "
            "carries outputs), then run: python tools/build_notebooks.py",
            file=sys.stderr,
        )
        return 1
    if args.check:
        print(f"{len(select(args.names))} notebook(s) up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
