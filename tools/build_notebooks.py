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


# --- lab01 and lab02: shared helpers ---------------------------------------------------------


def draft_functions(module: str, names: list[str], lab: str, prefix: str = "draft_") -> str:
    """Top-level functions of ``solutions/minituner/<module>`` as drafts for ``lab``.

    Each function keeps its signature and docstring, is renamed ``<prefix><name>``, and has each
    region of ``lab`` replaced by ``raise NotImplementedError("<lab> step <X>: <what>")``.
    """
    path = SOLUTIONS / module
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source, filename=str(path))
    found = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    drafts: list[str] = []
    for name in names:
        if name not in found:
            raise SystemExit(f"{path}: no function {name}; update tools/build_notebooks.py")
        node = found[name]
        assert node.end_lineno is not None
        end = node.end_lineno
        while end < len(lines) and _CLOSE.match(lines[end]):
            end += 1
        out: list[str] = []
        inside: re.Match[str] | None = None
        for line in lines[node.lineno - 1 : end]:
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
        text = "\n".join(out)
        drafts.append(re.sub(rf"^def {name}\b", f"def {prefix}{name}", text, count=1))
    return "\n\n\n".join(drafts)


def _find_root_cell(imports: str, shown: str) -> NotebookNode:
    """The setup cell of labs 01 and 02: find the course, import, say where the code is from."""
    return code(
        textwrap.dedent(
            '''
            import importlib.util
            import sys
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

            '''
        )
        + textwrap.dedent(imports).strip("\n")
        + "\n\n"
        + textwrap.dedent(shown).strip("\n")
        + textwrap.dedent(
            '''


            def check(ok: bool, claim: str, hint: str = "") -> None:
                """Print PASS or FAIL for ``claim``; on FAIL, stop with the hint."""
                if ok:
                    print(f"PASS  {claim}")
                    return
                print(f"FAIL  {claim}" + (f"\\n      hint: {hint}" if hint else ""))
                raise AssertionError(f"{claim}. {hint}".strip())
            '''
        )
    )


# --- lab01: parameter counts -----------------------------------------------------------------


def lab01_parameter_counts() -> Cells:
    return [
        md(
            """
            # Lab 01 companion: parameter counts

            A workbench for [Lab 01](01-parameter-counts.md). It uses your functions in
            `src/minituner/counting.py` as a calculator: each closed form next to a module
            counted for real, the `nn.Linear(4096, 4096)` example, the LoRA paper's GPT-3
            numbers, one real AdamW step and one real safetensors file. It is not graded:
            `make test LAB=lab01` grades the file.

            On a fresh clone `counting.py` is a stub, and the first cell that calls it stops with
            a `NotImplementedError` naming the step to write next. The five functions are short:
            write them in the file directly. (The course's own self-check runs this notebook
            against the reference solution.)

            Every check prints a `PASS` or `FAIL` line and stops the notebook on a failure. Run
            the cells from the top (*Run All* works).
            """
        ),
        md(
            """
            ## Setup

            If `minituner` is not importable yet, the next cell puts the course's `src/` on
            `sys.path`. It prints which files the code comes from: check that they are the ones
            you edit.
            """
        ),
        _find_root_cell(
            """
            import json
            import struct
            import tempfile

            import torch
            from torch import nn

            import minituner.counting
            import minituner.lora
            from minituner.counting import (
                adamw_training_bytes,
                adapter_checkpoint_bytes,
                count_parameters,
                lora_linear_count,
                minigpt_lora_count,
            )
            from minituner.minigpt import MiniGPTConfig, build_minigpt
            """,
            """
            print(f"counting comes from {minituner.counting.__file__}")
            print(f"LoRALinear comes from {minituner.lora.__file__}")
            """,
        ),
        md(
            """
            ## Step A: count any module

            The default MiniGPT, counted by `count_parameters` and by a plain sum over
            `parameters()`; then the same model with its token embedding frozen, and a tiny model
            whose head shares its embedding's weight (tied: one tensor, counted once).
            """
        ),
        code(
            """
            model = build_minigpt(MiniGPTConfig(), seed=0)
            plain = sum(p.numel() for p in model.parameters())
            count = count_parameters(model)
            print(count)
            check(count.total == plain == 220_544, f"the default MiniGPT holds {count.total:,} parameters")
            check(count.trainable == count.total, "a fresh model trains every parameter")

            model.tok_emb.requires_grad_(False)  # freeze the (128, 64) token embedding
            frozen = count_parameters(model)
            check(
                frozen.trainable == 220_544 - 128 * 64,
                f"with tok_emb frozen, {frozen.trainable:,} train ({frozen.frozen:,} frozen)",
                "count p.numel() as trainable only when p.requires_grad",
            )

            tied = nn.ModuleDict({"emb": nn.Embedding(12, 5), "head": nn.Linear(5, 12, bias=False)})
            tied["head"].weight = tied["emb"].weight  # one (12, 5) tensor, two modules
            check(count_parameters(tied).total == 60, "a tied weight counts once: 60, not 120")
            """
        ),
        md(
            """
            ## Step B: one wrapped linear layer

            The closed form against a real frozen `nn.Linear` with two factors of the right
            shapes, then the example that the course's source material got wrong: `r = 8` on
            `nn.Linear(4096, 4096)`. If your Lab 00 `LoRALinear` works, the cell counts one too.
            """
        ),
        code(
            """
            for d_in, d_out, r, bias in [(64, 64, 8, True), (96, 384, 4, True), (10, 3, 2, False)]:
                real = nn.ModuleDict({
                    "base": nn.Linear(d_in, d_out, bias=bias).requires_grad_(False),
                    "A": nn.Linear(d_in, r, bias=False),  # stands in for lora_A: (r, in)
                    "B": nn.Linear(r, d_out, bias=False),  # stands in for lora_B: (out, r)
                })
                closed = lora_linear_count(d_in, d_out, r, bias=bias)
                check(
                    closed == count_parameters(real),
                    f"Linear({d_in}, {d_out}, bias={bias}), r={r}: {closed}",
                )

            with_bias = lora_linear_count(4096, 4096, 8)
            without = lora_linear_count(4096, 4096, 8, bias=False)
            print(f"with bias:    {with_bias.trainable:,} / {with_bias.total:,} = {with_bias.trainable_share:.3%}")
            print(f"without bias: {without.trainable:,} / {without.total:,} = {without.trainable_share:.3%}")
            check(with_bias.total == 16_846_848, "nn.Linear(4096, 4096) has a bias: 16,846,848 in all")

            try:
                layer = minituner.lora.LoRALinear(nn.Linear(64, 64), r=8)
            except NotImplementedError as exc:
                print(f"(your LoRALinear is not written yet: {exc})")
            else:
                check(
                    count_parameters(layer) == lora_linear_count(64, 64, 8),
                    "your LoRALinear(nn.Linear(64, 64), r=8) matches the closed form",
                )
            """
        ),
        md(
            """
            ## Step C: a whole MiniGPT, without building it

            The closed form against a real MiniGPT, on which the cell counts `r * (in + out)` for
            each linear layer a target selects; then the table of your notes.
            """
        ),
        code(
            """
            config = MiniGPTConfig()
            real = build_minigpt(config, seed=0)
            base_total = sum(p.numel() for p in real.parameters())
            for targets in [("q_proj", "v_proj"), ("fc1", "fc2"), ("q_proj", "k_proj", "v_proj", "o_proj", "lm_head")]:
                extra = sum(
                    8 * (m.in_features + m.out_features)
                    for name, m in real.named_modules()
                    if isinstance(m, nn.Linear) and name.rpartition(".")[2] in targets
                )
                closed = minigpt_lora_count(config, 8, targets)
                check(
                    (closed.trainable, closed.total) == (extra, base_total + extra),
                    f"r=8 on {targets}: {closed.trainable:,} trainable of {closed.total:,}",
                )

            print()
            print(" r | trainable |   total | share")
            for r in (1, 4, 8, 16):
                c = minigpt_lora_count(config, r)
                print(f"{r:2d} | {c.trainable:9,} | {c.total:7,} | {c.trainable_share:.2%}")
            """
        ),
        md(
            """
            ## Step D: bytes on disk

            A real safetensors file of two bfloat16 factors: an 8-byte length, a JSON header,
            then the tensor data. `adapter_checkpoint_bytes` counts the data only.
            """
        ),
        code(
            """
            from safetensors.torch import save_file

            tensors = {
                "blocks.0.attn.q_proj.lora_A": torch.zeros(8, 64, dtype=torch.bfloat16),
                "blocks.0.attn.q_proj.lora_B": torch.zeros(64, 8, dtype=torch.bfloat16),
            }
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "adapter.safetensors"
                save_file(tensors, str(path))
                raw = path.read_bytes()
            (header_len,) = struct.unpack("<Q", raw[:8])
            print(json.dumps(json.loads(raw[8 : 8 + header_len]), indent=1))
            payload = len(raw) - 8 - header_len
            print(f"file {len(raw):,} B = 8 + header {header_len:,} B + payload {payload:,} B")
            check(
                adapter_checkpoint_bytes(1_024, torch.bfloat16) == payload,
                "adapter_checkpoint_bytes(1024, bfloat16) is the payload",
            )
            """
        ),
        md(
            """
            ## Step E: bytes in memory

            One real AdamW step on a small float32 model with a frozen part: the optimizer keeps
            `exp_avg` and `exp_avg_sq` for each trainable parameter, nothing for the frozen ones.
            (The first optimizer step of a session can take a few seconds: PyTorch sets up its
            compiler machinery then.) Then full fine-tuning against LoRA on the default MiniGPT.
            """
        ),
        code(
            """
            small = nn.Sequential(nn.Embedding(20, 16), nn.Linear(16, 16), nn.Linear(16, 5))
            small[0].requires_grad_(False)
            trainable = [p for p in small.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=1e-3)
            small(torch.randint(0, 20, (3, 4))).sum().backward()
            optimizer.step()
            state = sum(
                t.numel() * t.element_size()
                for s in optimizer.state.values() for k, t in s.items() if k.startswith("exp_avg")
            )
            grads = sum(p.grad.numel() * p.grad.element_size() for p in trainable)
            n = sum(p.numel() for p in trainable)
            predicted = adamw_training_bytes(n)
            check(
                (predicted.optimizer_states, predicted.gradients) == (state, grads),
                f"{n:,} trainable: AdamW holds {state:,} B of state, gradients {grads:,} B",
            )

            full = adamw_training_bytes(count_parameters(build_minigpt(config)).total)
            lora = adamw_training_bytes(minigpt_lora_count(config, 8).trainable)
            print(f"full fine-tuning: {full.total:,} B; LoRA r=8: {lora.total:,} B "
                  f"({full.total / lora.total:.1f} times less)")
            """
        ),
        md(
            """
            ## The LoRA paper's numbers

            GPT-3 175B as a `MiniGPTConfig` (sizes from Table 2.1 of the GPT-3 paper, arXiv
            2005.14165), with LoRA `r = 4` on `Wq` and `Wv` as in section 4.2 of the LoRA paper
            (arXiv 2106.09685). `theory/04-counting-parameters.md` discusses each line.
            """
        ),
        code(
            """
            gpt3 = MiniGPTConfig(vocab_size=50257, block_size=2048, n_layer=96, n_head=96, n_embd=12288)
            c = minigpt_lora_count(gpt3, 4)
            base = c.total - c.trainable
            print(f"GPT-3-sized MiniGPT: {base:,} parameters ({base - 50257 * 12288:,} with a tied head)")
            print(f"LoRA r=4 on q, v: {c.trainable:,} trainable; 175e9 / that = {175e9 / c.trainable:,.0f}")
            print(f"checkpoint, float16: full {adapter_checkpoint_bytes(175_000_000_000, torch.float16) / 1e9:,.0f} GB, "
                  f"adapter {adapter_checkpoint_bytes(c.trainable, torch.float16) / 1e6:.1f} MB")
            extra = adamw_training_bytes(c.trainable, torch.float16)
            print(f"training memory the adapter adds: {extra.total / 1e9:.2f} GB on top of 350 GB of weights")
            check(c.trainable == 18_874_368, "the paper's 18M: 96 * 2 * 4 * (12,288 + 12,288)")
            """
        ),
        md(
            """
            ## Record what you measured

            Once `make test LAB=lab01` is green, copy these rows into the table of
            [`experiments/01-parameter-counts/notes.md`](../experiments/01-parameter-counts/notes.md),
            and answer the questions under it in your own words.
            """
        ),
        code(
            """
            measured = {f"trainable_r{r}": minigpt_lora_count(config, r).trainable for r in (1, 4, 8, 16)}
            at8 = minigpt_lora_count(config, 8)
            measured["total_r8"] = at8.total
            measured["trainable_share_r8"] = round(100 * at8.trainable_share, 2)
            measured["adapter_bytes_r8_fp32"] = adapter_checkpoint_bytes(at8.trainable, torch.float32)
            measured["training_bytes_full"] = adamw_training_bytes(
                count_parameters(build_minigpt(config)).total
            ).total
            measured["training_bytes_lora_r8"] = adamw_training_bytes(at8.trainable).total
            measured["gpt3_trainable_r4"] = minigpt_lora_count(gpt3, 4).trainable
            for name, value in measured.items():
                print(f"| `{name}` | {value} |")
            """
        ),
        md(
            """
            Next: run `make status`, then go on to Lab 02, which wraps a MiniGPT and checks its
            trainable count against your `minigpt_lora_count`.
            """
        ),
    ]


# --- lab02: wrapping a MiniGPT ---------------------------------------------------------------


def lab02_wrapping_minigpt() -> Cells:
    draft = draft_functions("lora.py", ["find_lora_targets", "wrap_minigpt_with_lora"], "lab02")
    return [
        md(
            """
            # Lab 02 companion: wrapping a MiniGPT

            A workbench for [Lab 02](02-wrapping-minigpt.md). You check the selection rule on a
            model with decoys, wrap a MiniGPT, watch the refusals leave the model untouched, train
            the adapter towards a reachable target, and run the six sanity checks of Lab 00 on a
            whole model. It is not graded: `make test LAB=lab02` grades
            `src/minituner/lora.py`.

            The cells use your `LoRALinear` (Lab 00) and your two functions of this lab. On a
            fresh clone the first cell that needs one stops with a `NotImplementedError` naming
            the step to write next. (The course's own self-check runs this notebook against the
            reference solution.)

            Every check prints a `PASS` or `FAIL` line and stops the notebook on a failure. Run
            the cells from the top (*Run All* works).
            """
        ),
        md("## Setup"),
        _find_root_cell(
            """
            import copy
            import time
            from typing import Sequence

            import torch
            import torch.nn.functional as F
            from torch import Tensor, nn

            import minituner.lora
            from minituner.lora import LoRALinear, find_lora_targets, wrap_minigpt_with_lora
            from minituner.minigpt import MiniGPTConfig, build_minigpt, lm_loss
            """,
            """
            print(f"LoRALinear comes from {minituner.lora.__file__}")
            """,
        ),
        md(
            """
            ## The functions to fill

            The next cell holds drafts of `find_lora_targets` and `wrap_minigpt_with_lora`, with
            the signatures and docstrings of the ones in `src/minituner/lora.py` and the bodies
            still to do. Fill them here if you like to sketch first, set `USE_DRAFT = True`, and
            run the cells below. Then move the code into `src/minituner/lora.py` (only that file
            is graded), set `USE_DRAFT = False`, restart the kernel, and run everything again.
            """
        ),
        code(
            "USE_DRAFT = False  # True: the cells below use the drafts in this cell\n\n\n"
            + draft
            + "\n\n\nif USE_DRAFT:\n"
            + "    find_lora_targets = draft_find_lora_targets  # noqa: F811\n"
            + "    wrap_minigpt_with_lora = draft_wrap_minigpt_with_lora  # noqa: F811\n"
            + 'print("the cells below use the", "drafts" if USE_DRAFT else "functions of src/minituner/lora.py")'
        ),
        md(
            """
            ## The selection rule, on a model with decoys

            A target selects a linear layer whose dotted name equals it or ends with `"." +
            target`. This model has a `q_proj` in each block, and two decoys beside it:
            `q_proj_gate` (starts with `q_proj`) and `xq_proj` (ends with `q_proj`, but not after
            a dot). The last line shows what a substring test would have selected.
            """
        ),
        code(
            """
            class Attention(nn.Module):
                def __init__(self, d: int) -> None:
                    super().__init__()
                    self.q_proj, self.v_proj = nn.Linear(d, d), nn.Linear(d, d)
                    self.q_proj_gate, self.xq_proj = nn.Linear(d, d), nn.Linear(d, d)  # decoys


            toy = nn.Module()
            toy.blocks = nn.ModuleList([nn.Module(), nn.Module()])
            for block in toy.blocks:
                block.attn = Attention(8)
            toy.head = nn.Linear(8, 5)

            for targets in [("q_proj",), ("attn.v_proj",), ("head",), ("blocks.1.attn.q_proj",)]:
                print(f"{str(targets):26} -> {find_lora_targets(toy, targets)}")
            check(
                find_lora_targets(toy, ("q_proj",)) == ["blocks.0.attn.q_proj", "blocks.1.attn.q_proj"],
                "q_proj selects the two q_proj layers and neither decoy",
                "match name == t or name.endswith('.' + t), never `t in name`",
            )
            substring = [n for n, m in toy.named_modules() if isinstance(m, nn.Linear) and "q_proj" in n]
            print(f"a substring test would select: {substring}")
            """
        ),
        md(
            """
            ## Wrap a MiniGPT

            The logits before and after wrapping are identical, bit for bit: every `lora_B` starts
            at zero. Only the factors train, and their count is Lab 01's closed form (checked
            here if your `counting.py` is written).
            """
        ),
        code(
            """
            config = MiniGPTConfig()
            model = build_minigpt(config, seed=0)
            idx = torch.randint(0, config.vocab_size, (4, 32))  # (B, T) token ids
            with torch.no_grad():
                before = model(idx)  # (B, T, vocab_size)
            snapshot = {id(p): p.detach().clone() for p in model.parameters()}  # BEFORE wrapping

            wrap_minigpt_with_lora(model, r=8, alpha=16.0, dropout=0.0)
            print(model.blocks[0].attn)
            model.eval()
            with torch.no_grad():
                after = model(idx)
            check(torch.equal(after, before), "the wrapped model's logits equal the original's exactly")

            trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
            print(f"{len(trainable)} trainable tensors, e.g. {trainable[:2]}")
            check(
                all(n.endswith(("lora_A", "lora_B")) for n in trainable),
                "only lora_A and lora_B train",
                "freeze the model (requires_grad_(False)) before swapping in LoRALinear",
            )
            n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            try:
                from minituner.counting import minigpt_lora_count

                predicted = minigpt_lora_count(config, 8).trainable
            except NotImplementedError:
                predicted = 8 * 4 * 2 * (64 + 64)  # Lab 01 not done: the formula by hand
            check(n_trainable == predicted == 8_192, f"{n_trainable:,} trainable, as Lab 01 predicts")
            """
        ),
        md(
            """
            ## Refusals leave the model as it was

            A typo in a target, and a second wrap, are `ValueError`s that name the problem. The
            cell checks that after each one the model has the same modules, the same
            `requires_grad` flags and the same values as before.
            """
        ),
        code(
            """
            def fingerprint(m: nn.Module) -> tuple:
                return (
                    [(n, id(x)) for n, x in m.named_modules()],
                    [(n, p.requires_grad) for n, p in m.named_parameters()],
                )


            fresh = build_minigpt(config, seed=0)
            for call, target in [
                (lambda: wrap_minigpt_with_lora(fresh, target_modules=("q_proj", "v_prj")), fresh),
                (lambda: wrap_minigpt_with_lora(model, target_modules=("k_proj",)), model),
            ]:
                before_call = fingerprint(target)
                try:
                    call()
                except ValueError as exc:
                    print(f"ValueError: {exc}")
                else:
                    check(False, "the call must raise ValueError")
                check(fingerprint(target) == before_call, "nothing changed before the error")
            """
        ),
        md(
            """
            ## A toy training run with a reachable target

            The "teacher" is the same pretrained MiniGPT plus a rank-2 change on every `q_proj`
            and `v_proj` weight. A rank-8 LoRA on those layers can represent that change exactly,
            so the best possible loss is zero, and a correct wrapper gets close: the loss (the
            mean squared difference of the logits) falls by orders of magnitude. With a target
            the adapter cannot reach, a plateau would be expected and would tell you nothing.
            On a laptop CPU the run takes a few seconds.
            """
        ),
        code(
            """
            torch.manual_seed(0)
            R_TRUE = 2
            teacher = build_minigpt(config, seed=0)  # the same pretrained weights as `model`
            with torch.no_grad():
                for name, layer in teacher.named_modules():
                    if name.endswith(("q_proj", "v_proj")):
                        d = layer.weight.shape[0]
                        B_true, A_true = torch.randn(d, R_TRUE), torch.randn(R_TRUE, d)
                        layer.weight += 0.5 * (B_true @ A_true) / d  # a rank-2 change
            X = torch.randint(0, config.vocab_size, (8, 16))
            with torch.no_grad():
                Y = teacher(X)  # (8, 16, vocab_size)

            model.train()
            optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
            start, losses = time.perf_counter(), []
            for step in range(151):
                loss = F.mse_loss(model(X), Y)
                losses.append(loss.item())
                if step % 50 == 0:
                    print(f"step {step:3d}  loss {loss.item():.2e}")
                if step == 150:
                    break
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            print(f"150 steps in {time.perf_counter() - start:.1f} s")
            check(
                losses[-1] < 0.01 * losses[0],
                f"final loss {losses[-1]:.1e} is below 1% of the initial {losses[0]:.1e}",
                "if the loss never moves, the factors get no gradient: is each LoRALinear set on "
                "its parent module, and are its factors trainable?",
            )
            """
        ),
        md(
            """
            ## Six sanity checks, on a whole model

            The habit of Lab 00, scaled up. Checks 1, 3, 5 and 6 use the model you just trained.
            """
        ),
        code(
            """
            # 1. Only the factors train, also after .eval(), .train() and .to().
            model.eval().train().to(torch.float32)
            names = [n for n, p in model.named_parameters() if p.requires_grad]
            check(all(n.endswith(("lora_A", "lora_B")) for n in names), "1. only LoRA factors train")
            share = sum(p.numel() for p in model.parameters() if p.requires_grad) / sum(
                p.numel() for p in model.parameters()
            )
            print(f"   trainable share: {share:.2%}")

            # 2. Identity at init: a freshly wrapped model gives the original logits.
            original = build_minigpt(config, seed=1).eval()
            wrapped = wrap_minigpt_with_lora(copy.deepcopy(original), dropout=0.0).eval()
            with torch.no_grad():
                check(torch.equal(wrapped(idx), original(idx)), "2. identity at init, exactly")

            # 3. Every pretrained tensor is bit-identical to the snapshot taken before wrapping.
            kept = [p for p in model.parameters() if id(p) in snapshot]
            check(
                len(kept) == len(snapshot) and all(torch.equal(p, snapshot[id(p)]) for p in kept),
                f"3. all {len(kept)} pretrained tensors unchanged after training",
            )

            # 4. Shapes: lora_A (r, in), lora_B (out, r) in every wrapped layer.
            layers = {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}
            check(
                all(m.lora_A.shape == (8, m.base.in_features) and m.lora_B.shape == (m.base.out_features, 8)
                    for m in layers.values()),
                f"4. {len(layers)} wrapped layers, factors (r, in) and (out, r)",
            )

            # 5. Merged weights reproduce the output (by hand, ahead of Lab 04).
            merged = build_minigpt(config, seed=0).eval()
            with torch.no_grad():
                for name, m in layers.items():
                    merged.get_submodule(name).weight += m.scaling * m.lora_B @ m.lora_A
                model.eval()
                diff = (merged(idx) - model(idx)).abs().max().item()
            check(diff < 1e-5, f"5. merged model vs LoRA model: max abs diff {diff:.1e} < 1e-5")

            # 6. Gradients reach the factors, never the pretrained weights.
            model.train()
            model.zero_grad(set_to_none=True)
            lm_loss(model(idx), idx).backward()
            check(
                all((p.grad is not None) == p.requires_grad for p in model.parameters()),
                "6. gradients on the factors only",
            )
            """
        ),
        md(
            """
            ## Record what you measured

            Once `make test LAB=lab02` is green, the next cell measures the five values of
            [`experiments/02-wrapping-minigpt/notes.md`](../experiments/02-wrapping-minigpt/notes.md)
            the way the notes describe, on a fresh default MiniGPT, and prints them as table rows.
            """
        ),
        code(
            """
            model = build_minigpt(config, seed=0)
            idx = torch.randint(0, config.vocab_size, (4, 32))
            with torch.no_grad():
                before = model(idx)
            snapshot = {id(p): p.detach().clone() for p in model.parameters()}
            wrap_minigpt_with_lora(model, dropout=0.0)
            measured = {
                "wrapped_layers": sum(isinstance(m, LoRALinear) for m in model.modules()),
                "trainable_tensors": sum(p.requires_grad for p in model.parameters()),
                "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            }
            model.eval()
            with torch.no_grad():
                measured["init_max_abs_logit_diff"] = (model(idx) - before).abs().max().item()
            model.train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
            for _ in range(20):
                optimizer.zero_grad()
                lm_loss(model(idx), idx).backward()
                optimizer.step()
            measured["base_max_abs_change"] = max(
                (p - snapshot[id(p)]).abs().max().item() for p in model.parameters() if id(p) in snapshot
            )
            if USE_DRAFT:
                print("(measured with your drafts: record those of src/minituner/lora.py instead)")
            for name, value in measured.items():
                print(f"| `{name}` | {value} |")
            """
        ),
        md(
            """
            Next: run `make status`. Lab 03 saves the factors of a wrapped model to disk and loads
            them back.
            """
        ),
    ]


# --- lab03 and lab04: shared setup -----------------------------------------------------------


def _setup_cell(imports: str) -> NotebookNode:
    """The setup cell of labs 03 and 04: find the course, import, say where LoRALinear is from."""
    return code(
        textwrap.dedent(
            """
        import importlib.util
        import sys
        from pathlib import Path


        def find_course_root(start: Path) -> Path:
            \"\"\"The nearest folder at or above ``start`` that holds course.toml.\"\"\"
            for folder in (start, *start.parents):
                if (folder / "course.toml").is_file():
                    return folder
            raise FileNotFoundError(
                f"no course.toml in {start} or above it: open this notebook from inside "
                "your minituner clone"
            )


        if importlib.util.find_spec("minituner") is None:
            sys.path.insert(0, str(find_course_root(Path.cwd().resolve()) / "src"))

        """
        )
        + textwrap.dedent(imports).strip("\n")
        + textwrap.dedent(
            """


        import minituner.lora

        print(f"LoRALinear comes from {minituner.lora.__file__}")


        def check(ok: bool, claim: str, hint: str = "") -> None:
            \"\"\"Print PASS or FAIL for ``claim``; on FAIL, stop with the hint.\"\"\"
            if ok:
                print(f"PASS  {claim}")
                return
            print(f"FAIL  {claim}" + (f"\\n      hint: {hint}" if hint else ""))
            raise AssertionError(f"{claim}. {hint}".strip())


        def wrap_by_hand(model, targets, r=8, alpha=16.0):
            \"\"\"Put a LoRALinear in place of each nn.Linear whose name ends in a target.\"\"\"
            names = [n for n, m in model.named_modules()
                     if isinstance(m, nn.Linear) and n.rpartition(".")[2] in targets]
            for name in names:
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child,
                        LoRALinear(model.get_submodule(name), r=r, alpha=alpha))
            return names


        def train_by_hand(model, std=0.02):
            \"\"\"Random factors, as after training: a fresh adapter adds nothing worth saving.\"\"\"
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_" in name:
                        p.normal_(0.0, std)
        """
        )
    )


# --- lab03: adapter checkpoints --------------------------------------------------------------


def lab03_adapter_checkpoints() -> Cells:
    return [
        md(
            """
            # Lab 03 companion: adapter checkpoints

            A workbench for [Lab 03](03-adapter-checkpoints.md). You save an adapter, open its
            safetensors file byte by byte, compare its size with the model's, load it back, and
            then break copies of it on purpose to watch each error and check that the model did
            not change. It is not graded: `make test LAB=lab03` grades
            `src/minituner/lora.py` and `src/minituner/checkpoint.py`.

            The cells use **your** code. Until Lab 00 and this lab's steps are written, a cell
            stops with the `NotImplementedError` that names the step to write next. Run the cells
            from the top.
            """
        ),
        _setup_cell(
            """
            import json
            import os
            import shutil
            import struct
            import tempfile

            import torch
            from safetensors.torch import load_file, save_file
            from torch import nn

            from minituner.checkpoint import adapter_config, load_adapter, save_adapter, to_peft_key
            from minituner.lora import LoRALinear, load_lora_state_dict, lora_state_dict
            from minituner.minigpt import build_minigpt
            """
        ),
        md(
            """
            ## An adapter worth saving

            The default MiniGPT with LoRA at `r = 8`, `alpha = 16` on `q_proj` and `v_proj` (the
            LoRA paper's choice), wrapped by hand so this notebook does not need Lab 02, and with
            random factors standing in for a trained adapter.
            """
        ),
        code(
            """
            torch.manual_seed(0)
            model = build_minigpt(seed=0)
            names = wrap_by_hand(model, ("q_proj", "v_proj"))
            train_by_hand(model)
            model.eval()

            state = lora_state_dict(model)
            n_adapter = sum(t.numel() for t in state.values())
            print(f"{len(state)} tensors, {n_adapter:,} numbers; first keys:")
            for key in list(state)[:4]:
                print(f"  {key:32s} {tuple(state[key].shape)}")
            check(n_adapter == 4 * 2 * 8 * (64 + 64), f"the adapter holds {n_adapter:,} numbers = 4 * 2 * 8 * (64 + 64)",
                  "lora_state_dict must return lora_A and lora_B of every LoRALinear, nothing else")
            """
        ),
        md(
            """
            ## Save it, and look inside

            `save_adapter` writes two files. The config is plain JSON; the tensors file is
            safetensors: 8 bytes giving the header's length, the JSON header (name, dtype, shape
            and byte offsets of each tensor), then the raw bytes.
            """
        ),
        code(
            """
            workdir = Path(tempfile.mkdtemp(prefix="lab03-"))
            folder = workdir / "adapter"
            save_adapter(model, folder)
            for path in sorted(folder.iterdir()):
                print(f"{path.name:28s} {path.stat().st_size:>8,} bytes")
            print((folder / "adapter_config.json").read_text())
            """
        ),
        code(
            """
            raw = (folder / "adapter_model.safetensors").read_bytes()
            (header_len,) = struct.unpack("<Q", raw[:8])  # little-endian unsigned 64-bit
            header = json.loads(raw[8 : 8 + header_len])
            print(f"header: {header_len:,} bytes of JSON for {len(header) - ('__metadata__' in header)} tensors")
            print("metadata:", header.get("__metadata__"))
            first = sorted(k for k in header if k != "__metadata__")[0]
            print(f"{first}: {header[first]}")
            data_bytes = len(raw) - 8 - header_len
            check(data_bytes == n_adapter * 4,
                  f"after the header come {data_bytes:,} bytes = {n_adapter:,} float32 numbers x 4",
                  "save only the factors, in the model's dtype")
            check(first == to_peft_key(names[0] + ".lora_A"),
                  f"the keys are peft's: {first}", "base_model.model.<name>.lora_A.weight")
            """
        ),
        md(
            """
            ## How small?

            The whole model saved the same way, for comparison. The share of bytes is a little
            above the share of numbers: each file carries a header.
            """
        ),
        code(
            """
            save_file(build_minigpt(seed=0).state_dict(), str(workdir / "model.safetensors"))
            adapter_bytes = (folder / "adapter_model.safetensors").stat().st_size
            model_bytes = (workdir / "model.safetensors").stat().st_size
            n_model = sum(p.numel() for p in build_minigpt(seed=0).parameters())
            print(f"numbers: {n_adapter:,} / {n_model:,} = {n_adapter / n_model:.4f}")
            print(f"bytes:   {adapter_bytes:,} / {model_bytes:,} = {adapter_bytes / model_bytes:.4f}")
            """
        ),
        md(
            """
            ## Load it back

            A second MiniGPT on the same base weights, wrapped the same way, with fresh factors
            (B = 0: it computes the base). After `load_adapter` its logits must equal the first
            model's exactly: the same bits went out and came back.
            """
        ),
        code(
            """
            fresh = build_minigpt(seed=0)
            wrap_by_hand(fresh, ("q_proj", "v_proj"))
            fresh.eval()
            idx = torch.randint(0, 128, (2, 16))
            with torch.no_grad():
                before = (fresh(idx) - model(idx)).abs().max().item()
                config = load_adapter(fresh, folder)
                roundtrip = (fresh(idx) - model(idx)).abs().max().item()
            print(f"before loading: max |diff| = {before:.3g}; after: {roundtrip}")
            check(roundtrip == 0.0, "the round trip gives identical logits",
                  "load every factor into the parameter of the same name")
            """
        ),
        md(
            """
            ## Break it on purpose

            Each cell below copies the adapter folder, damages the copy in one way, and tries to
            load it into a model that already holds an adapter. Every attempt must raise an error
            that names the file (and the key, when a key is at fault), and leave every parameter
            of the model bit for bit as it was.
            """
        ),
        code(
            """
            def damaged(name, damage):
                \"\"\"A copy of the adapter folder with ``damage`` applied.\"\"\"
                target = workdir / name
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(folder, target)
                damage(target)
                return target


            def set_config(**changes):
                def damage(target):
                    path = target / "adapter_config.json"
                    data = json.loads(path.read_text())
                    data.update(changes)
                    path.write_text(json.dumps(data))
                return damage


            def truncate(target):
                path = target / "adapter_model.safetensors"
                path.write_bytes(path.read_bytes()[:5000])


            def drop_last_key(target):
                path = target / "adapter_model.safetensors"
                tensors = load_file(str(path))
                del tensors[sorted(tensors)[-1]]
                save_file(tensors, str(path))


            faults = {
                "truncated file": truncate,
                "r = 4 in the config": set_config(r=4),
                "other target layers": set_config(target_modules=["k_proj"]),
                "a key missing": drop_last_key,
                "no config file": lambda target: (target / "adapter_config.json").unlink(),
            }
            for number, (what, damage) in enumerate(faults.items()):
                snapshot = {k: v.clone() for k, v in fresh.state_dict().items()}
                try:
                    load_adapter(fresh, damaged(f"broken-{number}", damage))
                except (ValueError, KeyError, OSError) as exc:
                    print(f"{what}: {type(exc).__name__}: {str(exc)[:160]}")
                else:
                    check(False, f"{what}: load_adapter raised nothing", "validate before loading")
                unchanged = all(torch.equal(v, snapshot[k]) for k, v in fresh.state_dict().items())
                check(unchanged, f"{what}: the model is unchanged", "check everything, then copy")
            """
        ),
        md(
            """
            One more, quieter fault: factors of the wrong rank. A `(1, 64)` tensor broadcasts into
            an `(8, 64)` parameter, so a copy without a shape check succeeds and loads garbage.
            """
        ),
        code(
            """
            wrong = {k: v[:1].clone() if k.endswith("lora_A") else v[:, :1].clone()
                     for k, v in lora_state_dict(model).items()}
            try:
                load_lora_state_dict(fresh, wrong)
            except ValueError as exc:
                print(f"ValueError: {str(exc)[:200]}")
            else:
                check(False, "an r = 1 state loaded into r = 8 factors without an error",
                      "compare every value's shape with its parameter's before copying")
            """
        ),
        md(
            """
            ## Record what you measured

            Once `make test LAB=lab03` is green, copy these values into
            [`experiments/03-adapter-checkpoints/notes.md`](../experiments/03-adapter-checkpoints/notes.md),
            and answer the questions under its table.
            """
        ),
        code(
            """
            measured = {
                "adapter_params": n_adapter,
                "adapter_file_bytes": adapter_bytes,
                "model_file_bytes": model_bytes,
                "adapter_to_model_ratio": round(adapter_bytes / model_bytes, 4),
                "roundtrip_max_abs_diff": roundtrip,
            }
            for name, value in measured.items():
                print(f"| `{name}` | {value} |")
            shutil.rmtree(workdir, ignore_errors=True)
            """
        ),
    ]


# --- lab04: merge for inference --------------------------------------------------------------


def lab04_merge_for_inference() -> Cells:
    return [
        md(
            """
            # Lab 04 companion: merge for inference

            A workbench for [Lab 04](04-merge-for-inference.md). You merge one layer and check it
            against the formula, watch what each classic mistake does to the output, measure the
            bfloat16 gap, merge a whole MiniGPT and time it, and swap one adapter for another. It
            is not graded: `make test LAB=lab04` grades `src/minituner/lora.py`.

            The cells use **your** code; until it is written, a cell stops with the
            `NotImplementedError` that names the step to write next. Run the cells from the top.
            """
        ),
        _setup_cell(
            """
            import copy
            import math
            import statistics
            import time

            import torch
            from torch import Tensor, nn

            from minituner.lora import LoRALinear, merge_and_unload
            from minituner.minigpt import MiniGPT, build_minigpt
            """
        ),
        md(
            """
            ## A sketch to fill (optional)

            `merged_weight` computes what `merge_` must store, with plain tensors. Fill it in and
            set `USE_SKETCH = True` to compare it with the float64 formula below; the graded code
            is `LoRALinear.merge_` in `src/minituner/lora.py`.
            """
        ),
        code(
            """
            USE_SKETCH = False


            def merged_weight(W0: Tensor, A: Tensor, B: Tensor, scaling: float) -> Tensor:
                \"\"\"W0: (out, in), A: (r, in), B: (out, r) -> the merged (out, in) weight.\"\"\"
                raise NotImplementedError("lab04 sketch: return W0 plus the scaled update")


            if USE_SKETCH:
                W0, A, B = torch.randn(5, 3), torch.randn(2, 3), torch.randn(5, 2)
                got = merged_weight(W0, A, B, 1.5).double()
                want = W0.double() + 1.5 * B.double() @ A.double()
                check(got.shape == want.shape and (got - want).abs().max().item() < 1e-5,
                      "the sketch matches W0 + scaling * B @ A")
            """
        ),
        md(
            """
            ## One layer

            A `LoRALinear` on `nn.Linear(48, 32)` (not square: a transposed update cannot hide)
            with `r = 4`, `alpha = 12` (scaling 3) and random factors. Before merging, the cell
            takes float64 copies of `W0`, `A` and `B`; after `merge_`, the weight must be
            `W0 + 3 * B @ A`, the output unchanged, the factors zero, and a second merge a no-op.
            """
        ),
        code(
            """
            torch.manual_seed(0)
            base = nn.Linear(48, 32)
            layer = LoRALinear(base, r=4, alpha=12.0)
            with torch.no_grad():
                layer.lora_A.normal_(0.0, 0.1)
                layer.lora_B.normal_(0.0, 0.1)
            layer.eval()
            W0, A, B = (t.detach().double().clone() for t in (base.weight, layer.lora_A, layer.lora_B))
            x = torch.randn(16, 48)
            with torch.no_grad():
                before = layer(x)
                layer.merge_()
                after = layer(x)
                want_W = W0 + layer.scaling * B @ A  # (out, in)
                w_diff = (layer.base.weight.double() - want_W).abs().max().item()
                out_diff = (after - before).abs().max().item()
                layer.merge_()
                twice_diff = (layer(x) - before).abs().max().item()
            check(w_diff < 1e-5, f"base.weight = W0 + scaling * B @ A (max diff {w_diff:.1e})")
            check(out_diff < 1e-5, f"the output is unchanged (max diff {out_diff:.1e})")
            check(layer.lora_A.abs().sum().item() == 0 and layer.lora_B.abs().sum().item() == 0,
                  "both factors are zero after merging")
            check(twice_diff < 1e-5, f"a second merge changes nothing (max diff {twice_diff:.1e})")
            check(not any(p.requires_grad for p in layer.base.parameters()), "the base is still frozen")
            """
        ),
        md(
            """
            ## What the classic mistakes do

            The same layer's numbers, merged wrongly by hand, with plain tensors (your code is not
            involved). Each line prints how far the output lands from the right one.
            """
        ),
        code(
            """
            x64 = x.double()
            b64 = base.bias.detach().double()
            s = 12.0 / 4
            right = x64 @ (W0 + s * B @ A).T + b64
            mistakes = {
                "factors left live (update counted twice)": x64 @ (W0 + s * B @ A).T + b64 + s * (x64 @ A.T) @ B.T,
                "merged twice, factors live": x64 @ (W0 + 2 * s * B @ A).T + b64 + s * (x64 @ A.T) @ B.T,
                "scaling forgotten": x64 @ (W0 + B @ A).T + b64,
            }
            for what, y in mistakes.items():
                print(f"{what:45s} max |error| = {(y - right).abs().max().item():.3f}")
            print(f"transpose: (B @ A).T has shape {tuple((B @ A).T.shape)}, the weight {tuple(W0.shape)}")

            torch.manual_seed(1)
            leaky = LoRALinear(nn.Linear(48, 32), r=4, alpha=12.0, dropout=0.5)
            with torch.no_grad():
                leaky.lora_B.normal_(0.0, 0.1)
                leaky.train()  # dropout active: a merge through forward sees it
                eye = torch.eye(48)
                through_forward = (leaky(eye) - leaky.base(eye)).T
                from_factors = leaky.scaling * leaky.lora_B @ leaky.lora_A
            lost = (through_forward == 0).all(dim=0).sum().item()
            print(f"update measured through forward in train mode: {lost} of 48 columns dropped, "
                  f"max |error| = {(through_forward - from_factors).abs().max().item():.3f}")
            """
        ),
        md(
            """
            ## bfloat16: how close is close

            bfloat16 keeps 8 significant bits, so neighbouring numbers near `y` are up to
            `2^-7 * |y|` apart. Merged and unmerged outputs round different values, and land about
            one spacing apart. The graded tests allow `max |y| / 32`.
            """
        ),
        code(
            """
            torch.manual_seed(0)
            big = LoRALinear(nn.Linear(1024, 1024).bfloat16(), r=8)
            with torch.no_grad():
                big.lora_B.normal_(0.0, 0.02)
            big.eval()
            xb = torch.randn(256, 1024, dtype=torch.bfloat16)
            with torch.no_grad():
                want = big(xb).double()
                big.merge_()
                got = big(xb).double()
            top = want.abs().max().item()
            gap = (got - want).abs().max().item()
            spacing = 2.0 ** (math.floor(math.log2(top)) - 7)
            print(f"largest output {top:.3f}: bfloat16 spacing there {spacing:.4f}")
            print(f"max |merged - unmerged| = {gap:.4f} = {gap / spacing:.2f} spacings = {gap / top:.4f} of max |y|")
            check(big.base.weight.dtype == torch.bfloat16, "the merged weight is still bfloat16")
            check(gap <= top / 32, f"the gap is within max |y| / 32 = {top / 32:.4f}")
            bf16_rel = gap / top
            """
        ),
        md(
            """
            ## A whole MiniGPT

            Every projection of every block wrapped (r = 8), random factors, then
            `merge_and_unload`. The merged model must compute the same logits, hold no LoRA layer,
            and have exactly the base's parameters, so its `state_dict` loads into a plain MiniGPT.
            """
        ),
        code(
            """
            torch.manual_seed(0)
            TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")
            lora_model = build_minigpt(seed=0)
            wrap_by_hand(lora_model, TARGETS)
            train_by_hand(lora_model)
            lora_model.eval()
            idx = torch.randint(0, 128, (8, 64))
            merged = merge_and_unload(copy.deepcopy(lora_model)).eval()
            with torch.no_grad():
                fp32_diff = (merged(idx) - lora_model(idx)).abs().max().item()
            n_merged = sum(p.numel() for p in merged.parameters())
            check(fp32_diff < 1e-5, f"merged logits match (max diff {fp32_diff:.1e})")
            check(not any(isinstance(m, LoRALinear) for m in merged.modules()), "no LoRALinear is left")
            check(n_merged == 220_544, f"{n_merged:,} parameters, the base MiniGPT's 220,544")
            plain = MiniGPT()
            plain.load_state_dict(merged.state_dict())
            print("the merged state_dict loads into a plain MiniGPT")
            """
        ),
        md(
            """
            ## A quick timing

            A few rounds, one thread: enough to see the unmerged overhead. For numbers worth
            recording, run `python benchmarks/merge_latency.py`, which interleaves many rounds and
            reports the spread.
            """
        ),
        code(
            """
            torch.set_num_threads(1)
            base_model = build_minigpt(seed=0).eval()
            variants = {"base": base_model, "unmerged": lora_model, "merged": merged}
            times = {name: [] for name in variants}
            with torch.no_grad():
                for _ in range(5):
                    for name, m in variants.items():
                        start = time.perf_counter()
                        for _ in range(5):
                            m(idx)
                        times[name].append((time.perf_counter() - start) / 5)
            for name, ts in times.items():
                ratio = statistics.median(ts) / statistics.median(times["base"])
                print(f"{name:9s} {1e3 * statistics.median(ts):7.2f} ms per call, {ratio:.2f} x base")
            """
        ),
        md(
            """
            ## Serving two adapters

            A merged weight serves one task. To switch tasks between batches, subtract one update
            and add another (section 4.1 of the LoRA paper). To serve both in one batch, keep them
            unmerged and add each request's branch to one shared base product (section 4.2 names
            the limit of merging).
            """
        ),
        code(
            """
            torch.manual_seed(0)
            lin = nn.Linear(64, 64)
            W0 = lin.weight.detach().clone()
            s = 2.0
            (A1, B1), (A2, B2) = [(torch.randn(8, 64) * 0.1, torch.randn(64, 8) * 0.1) for _ in range(2)]
            with torch.no_grad():
                lin.weight += s * B1 @ A1                       # serving task 1, merged
                lin.weight += s * (B2 @ A2) - s * (B1 @ A1)     # swap to task 2
            swap_err = (lin.weight - (W0 + s * B2 @ A2)).abs().max().item()
            print(f"float32 swap: max |W - (W0 + s B2 A2)| = {swap_err:.1e}")

            W_bf = W0.bfloat16()
            for _ in range(50):  # 50 swaps there and back, in bfloat16
                W_bf = (W_bf + (s * B1 @ A1).bfloat16()) - (s * B1 @ A1).bfloat16()
            drift = (W_bf.float() - W0).abs().max().item()
            print(f"bfloat16 after 50 round trips: max |W - W0| = {drift:.4f} (keep W0, or reload it)")

            # One batch, two tasks, unmerged: a shared base product plus each row's own branch.
            xs = torch.randn(4, 64)
            task = torch.tensor([0, 1, 1, 0])
            with torch.no_grad():
                shared = xs @ W0.T + lin.bias
                branch1 = s * (xs @ A1.T) @ B1.T
                branch2 = s * (xs @ A2.T) @ B2.T
                mixed = shared + torch.where(task[:, None] == 0, branch1, branch2)
                per_task = torch.stack([
                    xs[i] @ (W0 + s * (B1 @ A1 if task[i] == 0 else B2 @ A2)).T + lin.bias
                    for i in range(4)
                ])
            check((mixed - per_task).abs().max().item() < 1e-5,
                  "one unmerged batch serves both tasks, each row with its own adapter")
            """
        ),
        md(
            """
            ## Record what you measured

            Once `make test LAB=lab04` is green, copy these into
            [`experiments/04-merge-for-inference/notes.md`](../experiments/04-merge-for-inference/notes.md);
            take the two latency ratios from `python benchmarks/merge_latency.py`.
            """
        ),
        code(
            """
            measured = {
                "merge_max_abs_diff_fp32": fp32_diff,
                "merge_rel_diff_bf16": round(bf16_rel, 5),
                "merged_param_count": n_merged,
            }
            for name, value in measured.items():
                print(f"| `{name}` | {value} |")
            """
        ),
    ]


# --- lab05: fine-tuning a pretrained MiniGPT -------------------------------------------------


def lab05_finetune_minigpt() -> Cells:
    return [
        md(
            """
            # Lab 05 companion: fine-tuning a pretrained MiniGPT

            A workbench for [Lab 05](05-finetune-minigpt.md). You load the pretrained MiniGPT the
            course ships, watch it fail the new task, wrap it with **your** LoRA, fine-tune it
            with **your** `fine_tune`, and read what it writes afterwards. It is not graded:
            `make test LAB=lab05` grades `src/minituner/finetune.py`.

            On a fresh clone `finetune.py` is a stub, and the first cell that calls it stops with
            a `NotImplementedError` naming the step to write next. (The course's own self-check
            runs this notebook against the reference solution.) The whole notebook runs in under
            a minute on a laptop CPU. Every check prints a `PASS` or `FAIL` line and stops the
            notebook on a failure.
            """
        ),
        md(
            """
            ## Setup

            If `minituner` is not importable yet, the next cell puts the course's `src/` on
            `sys.path`. It prints which files the code comes from.
            """
        ),
        _find_root_cell(
            """
            import copy
            import time

            import torch

            import minituner.finetune
            import minituner.lora
            from minituner import tasks
            from minituner.finetune import evaluate, fine_tune, make_optimizer, optimizer_state_bytes
            from minituner.lora import wrap_minigpt_with_lora

            torch.set_num_threads(1)  # the runs are tiny: one thread is as fast, and repeatable
            """,
            """
            print(f"finetune comes from {minituner.finetune.__file__}")
            print(f"LoRALinear comes from {minituner.lora.__file__}")
            """,
        ),
        md(
            """
            ## The pretrained model, and the task it cannot do

            `tools/pretrain_minigpt.py` trained this MiniGPT on lines of the echo game
            (`hello>hello`) and recorded its held-out loss beside the weights. Asked for pig
            latin (`hello>` should give `ellohay`), it echoes.
            """
        ),
        code(
            """
            pretrained = tasks.load_pretrained()
            info = tasks.pretrained_info()
            print(f"parameters: {info['parameters']:,}; held-out loss {info['heldout_loss']:.4f}")
            split = tasks.pig_latin_task()
            eval_batch = tasks.collate(split.eval)
            for word in ["hello", "lora", "minigpt"]:
                print(f"{word + '>':<10} writes {tasks.complete(pretrained, word + '>')!r:<12} "
                      f"pig latin is {tasks.pig_latin(word)!r}")
            before = evaluate(copy.deepcopy(pretrained), eval_batch)
            check(
                before.accuracy == 0.0,
                f"the pretrained model scores {before.accuracy:.3f} exact match on the "
                f"{len(split.eval)} eval words (loss {before.loss:.2f})",
                "evaluate must count an example right only when every answer token is right",
            )
            """
        ),
        md(
            """
            ## Wrap with LoRA and fine-tune

            LoRA on every block's six linear layers at r = 4, alpha 16, no dropout; 150 steps of
            your `fine_tune` (the experiment runs 500 per configuration). The base must not move:
            the cell snapshots it first.
            """
        ),
        code(
            """
            torch.manual_seed(0)  # the initial A of every LoRA layer
            model = copy.deepcopy(pretrained)
            wrap_minigpt_with_lora(
                model, r=4, alpha=16.0, dropout=0.0,
                target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"),
            )
            frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in model.parameters())
            print(f"trainable: {trainable:,} of {total:,} parameters ({trainable / total:.2%})")

            start = time.perf_counter()
            history = fine_tune(
                model, split.train, steps=150, lr=5e-3, batch_size=32, seed=0,
                eval_batch=eval_batch, eval_every=50, warmup_steps=30,
            )
            print(f"150 steps in {time.perf_counter() - start:.1f} s "
                  f"({1000 * history.seconds_per_step:.1f} ms per step)")
            for step, result in history.evals:
                print(f"step {step:3d}: eval loss {result.loss:.3f}, exact match {result.accuracy:.3f}")
            check(
                history.evals[-1][1].loss < 0.5 * history.evals[0][1].loss,
                "the eval loss fell by more than half",
                "if it did not move, check make_optimizer and train_step",
            )
            check(
                all(torch.equal(model.get_parameter(n), v) for n, v in frozen.items()),
                "every frozen parameter is bit-for-bit what it was before training",
                "the optimizer must hold the trainable parameters only",
            )
            """
        ),
        md(
            """
            ## What it writes now

            Greedy decoding, one token at a time, on eval words it never trained on.
            """
        ),
        code(
            """
            for example in split.eval[:8]:
                got = tasks.complete(model, example.prompt)
                mark = "ok " if got == example.answer else "   "
                print(f"{mark} {example.prompt:<10} -> {got!r:<14} (pig latin: {example.answer!r})")
            """
        ),
        md(
            """
            ## The optimizer's memory, counted

            One step of AdamW on the LoRA factors, and on the whole model for comparison: your
            `optimizer_state_bytes` against lab 01's 8 bytes per trainable parameter. The
            difference is AdamW's `step` counters, 4 bytes per parameter tensor.
            """
        ),
        code(
            """
            from minituner.finetune import train_step

            # load_pretrained() returns a model whose every parameter trains: full fine-tuning.
            for name, candidate in [("LoRA", copy.deepcopy(model)), ("full", copy.deepcopy(pretrained))]:
                optimizer = make_optimizer(candidate, lr=1e-3)
                train_step(candidate, optimizer, tasks.collate(split.train[:32]))
                n = sum(p.numel() for p in candidate.parameters() if p.requires_grad)
                tensors = sum(1 for p in candidate.parameters() if p.requires_grad)
                measured = optimizer_state_bytes(optimizer)
                print(f"{name:>4}: {n:>7,} trainable in {tensors:>2} tensors; AdamW state "
                      f"{measured:>9,} bytes = 8 x {n:,} + 4 x {tensors}")
                check(measured == 8 * n + 4 * tensors, f"{name}: the state is 8 bytes per "
                      "parameter plus 4 per tensor", "count numel() * element_size() of every "
                      "tensor in optimizer.state")
            """
        ),
        md(
            """
            ## Next

            Run the full experiment on your code, `make experiment LAB=lab05` (one to two minutes
            on two cores), read `experiments/05-finetune-minigpt/results.md` against Tables 5 and
            6 of the paper (`theory/08-what-the-paper-measured.md`), and fill in
            `experiments/05-finetune-minigpt/notes.md`.
            """
        ),
    ]

# --- the registry ----------------------------------------------------------------------------

NOTEBOOKS: dict[str, Builder] = {
    "00-lora-by-hand": lab00_lora_by_hand,
    "01-parameter-counts": lab01_parameter_counts,
    "02-wrapping-minigpt": lab02_wrapping_minigpt,
    "03-adapter-checkpoints": lab03_adapter_checkpoints,
    "04-merge-for-inference": lab04_merge_for_inference,
    "05-finetune-minigpt": lab05_finetune_minigpt,
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
