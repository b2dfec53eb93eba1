"""The reference agrees with Hugging Face peft, the library practitioners use.

peft is a course-development dependency (requirements-dev.txt, installed by `make check`), never
the learner's: these are self-checks of the reference, run with ``--impl reference``.

- One layer: the reference ``LoRALinear`` and peft's LoRA layer, on the same base weights and the
  same factors, over several (r, alpha), with and without a bias, give the same forward output,
  the same merged weight and the same number of trainable parameters.
- Adapter files: an adapter saved by lab 03's ``save_adapter`` loads with
  ``PeftModel.from_pretrained`` on a MiniGPT, with no warning from peft, and gives the same
  logits; an adapter peft saves for a MiniGPT loads with lab 03's ``load_adapter`` and gives the
  same logits; the merged models agree too.

Tolerance: ``TOL = 1e-6`` absolute, in float32, on outputs and weights of order 1 (DESIGN.md asks
1e-5 for reference comparisons; the two compute the same float operations in the same order, so
they agree far closer: the tests also report when they agree exactly). Nothing is downloaded:
``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import Tensor, nn

os.environ["HF_HUB_OFFLINE"] = "1"  # peft must find everything on disk; never reach a hub
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytestmark = pytest.mark.course

TOL = 1e-6
TARGETS = ("q_proj", "v_proj", "fc1")
PEFT_MISSING = (
    "peft is not installed: it is a course-development dependency "
    "(`.venv/bin/pip install -r requirements-dev.txt`, which `make check` does)"
)


def _peft_import_error() -> str | None:
    """None when peft imports; else why not."""
    if importlib.util.find_spec("peft") is None:
        return PEFT_MISSING
    try:
        import peft  # noqa: F401
    except Exception as err:  # a broken install is as good as none, and says why
        return f"peft is installed but does not import ({type(err).__name__}: {err})"
    return None


def test_peft_is_installed_in_ci() -> None:
    """CI (CI=true) runs `make check`, which installs peft: a missing peft there is a failure,
    not a silent skip of every cross-check below."""
    if os.environ.get("CI", "").lower() != "true":
        pytest.skip("not in CI (CI != true): a missing peft only skips the cross-checks here")
    problem = _peft_import_error()
    assert problem is None, f"CI=true, but {problem}: the peft cross-checks did not run"


@pytest.fixture(scope="module")
def peft() -> ModuleType:
    problem = _peft_import_error()
    if problem is not None:
        pytest.skip(problem)
    import peft as peft_module

    return peft_module


def max_diff(a: Tensor, b: Tensor) -> float:
    assert a.shape == b.shape, f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}"
    return (a.double() - b.double()).abs().max().item()


# ---------------------------------------------------------------------------------------------
# one layer


class Holder(nn.Module):
    """The smallest model peft can wrap: one linear layer, named ``layer``."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.layer(x)
        return out


def peft_pair(
    peft: ModuleType, lora: ModuleType, r: int, alpha: float, bias: bool, dropout: float = 0.0
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(reference LoRALinear, peft model, peft's LoRA layer) on the same base and factors."""
    base = nn.Linear(24, 40, bias=bias)
    with torch.no_grad():
        if bias:
            base.bias.normal_()
    ours = lora.LoRALinear(copy.deepcopy(base), r=r, alpha=alpha, dropout=dropout)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=["layer"])
    model = peft.get_peft_model(Holder(copy.deepcopy(base)), config)
    theirs = model.base_model.model.layer
    with torch.no_grad():
        ours.lora_B.normal_()  # a live branch: B = 0 would hide a wrong scale or order
        theirs.lora_A["default"].weight.copy_(ours.lora_A)
        theirs.lora_B["default"].weight.copy_(ours.lora_B)
    return ours, model, theirs


CASES = [(1, 1.0), (4, 8.0), (8, 16.0), (8, 4.0), (16, 32.0), (3, 7.5)]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize(("r", "alpha"), CASES, ids=[f"r{r}-alpha{a:g}" for r, a in CASES])
def test_layer_matches_peft(peft: ModuleType, r: int, alpha: float, bias: bool) -> None:
    import minituner.lora as lora

    ours, model, theirs = peft_pair(peft, lora, r, alpha, bias)
    assert ours.scaling == theirs.scaling["default"] == alpha / r

    x = torch.randn(5, 7, 24)
    with torch.no_grad():
        d = max_diff(ours(x), model(x))
    assert d <= TOL, f"r={r}, alpha={alpha}: forward differs from peft's by {d:.3g} > {TOL}"

    n_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    n_theirs = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_ours == n_theirs == r * (24 + 40), (
        f"trainable parameters: reference {n_ours}, peft {n_theirs}, closed form {r * 64}"
    )

    ours.merge_()
    theirs.merge()
    d = max_diff(ours.base.weight, theirs.base_layer.weight)
    assert d <= TOL, f"r={r}, alpha={alpha}: merged weight differs from peft's by {d:.3g}"
    if bias:
        assert torch.equal(ours.base.bias, theirs.base_layer.bias), "merging changed the bias"
    with torch.no_grad():
        d = max_diff(ours(x), model(x))
    assert d <= TOL, f"r={r}, alpha={alpha}: merged forward differs from peft's by {d:.3g}"


def test_layer_matches_peft_with_dropout_in_eval(peft: ModuleType) -> None:
    import minituner.lora as lora

    ours, model, _ = peft_pair(peft, lora, 8, 16.0, True, dropout=0.25)
    ours.eval()
    model.eval()
    x = torch.randn(6, 24)
    with torch.no_grad():
        d = max_diff(ours(x), model(x))
    assert d <= TOL, f"in eval mode, with dropout 0.25, the output differs from peft's by {d:.3g}"


def test_fresh_layer_initialises_like_peft(peft: ModuleType) -> None:
    """Both draw A from kaiming_uniform(a=sqrt(5)), bound 1/sqrt(in_features), and zero B."""
    import minituner.lora as lora

    base = nn.Linear(256, 40)
    ours = lora.LoRALinear(copy.deepcopy(base), r=16, alpha=32.0)
    model = peft.get_peft_model(
        Holder(copy.deepcopy(base)), peft.LoraConfig(r=16, lora_alpha=32, target_modules=["layer"])
    )
    theirs = model.base_model.model.layer
    bound = 1.0 / 256**0.5
    for name, a in (("reference", ours.lora_A), ("peft", theirs.lora_A["default"].weight)):
        assert a.abs().max().item() <= bound, f"{name}'s A exceeds the kaiming bound {bound}"
        # a uniform draw of 4096 values spans most of [-bound, bound]
        assert a.abs().max().item() > 0.9 * bound, f"{name}'s A is not spread like kaiming_uniform"
        assert abs(a.std().item() - bound / 3**0.5) < 0.1 * bound, f"{name}'s A has the wrong spread"
    assert torch.count_nonzero(ours.lora_B) == 0
    assert torch.count_nonzero(theirs.lora_B["default"].weight) == 0
    x = torch.randn(3, 256)
    with torch.no_grad():
        assert torch.equal(ours(x), base(x)) and torch.equal(model(x), base(x))


# ---------------------------------------------------------------------------------------------
# adapter files on a MiniGPT


@pytest.fixture
def no_peft_warning() -> Iterator[list[warnings.WarningMessage]]:
    """Record every warning; fail the test when one comes from peft (missing adapter keys is
    only a warning there, so a loader that silently loads nothing would otherwise pass)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    from_peft = [
        w for w in caught
        if f"{os.sep}peft{os.sep}" in w.filename or "adapter keys" in str(w.message)
    ]
    assert not from_peft, "peft warned: " + "; ".join(
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in from_peft
    )


def minigpt_model() -> nn.Module:
    from minituner.minigpt import build_minigpt

    return build_minigpt(seed=0).eval()


def our_adapter_model(r: int = 4, alpha: float = 8.0) -> nn.Module:
    """A MiniGPT wrapped by the reference on TARGETS, with non-zero factors."""
    from minituner.lora import LoRALinear, wrap_minigpt_with_lora

    model = wrap_minigpt_with_lora(minigpt_model(), r=r, alpha=alpha, target_modules=TARGETS, dropout=0.0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.normal_(0.0, 0.2)
    return model.eval()


def tokens() -> Tensor:
    return torch.randint(0, 128, (2, 32), generator=torch.Generator().manual_seed(1))


def test_lab03_adapter_loads_in_peft(
    peft: ModuleType, tmp_path: Path, no_peft_warning: list[warnings.WarningMessage]
) -> None:
    from minituner.checkpoint import save_adapter

    ours = our_adapter_model()
    save_adapter(ours, tmp_path / "adapter")
    theirs = peft.PeftModel.from_pretrained(minigpt_model(), str(tmp_path / "adapter")).eval()

    # Loading again through load_adapter returns what from_pretrained only warns about.
    result = theirs.load_adapter(str(tmp_path / "adapter"), adapter_name="again")
    assert not result.missing_keys and not result.unexpected_keys, (
        f"peft found missing keys {result.missing_keys} and unexpected keys {result.unexpected_keys}"
    )
    theirs.set_adapter("default")

    idx = tokens()
    with torch.no_grad():
        want, got = ours(idx), theirs(idx)
        d = max_diff(want, got)
        assert d <= TOL, f"logits of peft with lab 03's adapter differ from ours by {d:.3g}"
        assert max_diff(want, minigpt_model()(idx)) > 1e-3, "the adapter changes nothing: test is vacuous"


def test_peft_adapter_loads_with_lab03(
    peft: ModuleType, tmp_path: Path, no_peft_warning: list[warnings.WarningMessage]
) -> None:
    from minituner.checkpoint import load_adapter
    from minituner.lora import wrap_minigpt_with_lora

    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(TARGETS))
    theirs = peft.get_peft_model(minigpt_model(), config)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
    theirs.eval()
    theirs.save_pretrained(str(tmp_path / "peft-adapter"))
    saved: dict[str, Any] = json.loads((tmp_path / "peft-adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and saved["r"] == 4

    ours = wrap_minigpt_with_lora(minigpt_model(), r=4, alpha=8.0, target_modules=TARGETS, dropout=0.0)
    load_adapter(ours, tmp_path / "peft-adapter")
    ours.eval()
    idx = tokens()
    with torch.no_grad():
        d = max_diff(theirs(idx), ours(idx))
    assert d <= TOL, f"logits with peft's adapter loaded by lab 03 differ from peft's by {d:.3g}"


def test_merged_models_agree_with_peft(
    peft: ModuleType, tmp_path: Path, no_peft_warning: list[warnings.WarningMessage]
) -> None:
    from minituner.checkpoint import save_adapter
    from minituner.counting import count_parameters, minigpt_lora_count
    from minituner.lora import merge_and_unload
    from minituner.minigpt import MiniGPTConfig

    ours = our_adapter_model(r=8, alpha=16.0)
    save_adapter(ours, tmp_path / "adapter")
    theirs = peft.PeftModel.from_pretrained(minigpt_model(), str(tmp_path / "adapter"), is_trainable=True)

    closed = minigpt_lora_count(MiniGPTConfig(), 8, TARGETS)
    n_ours, n_theirs = count_parameters(ours), count_parameters(theirs)
    assert n_ours.trainable == n_theirs.trainable == closed.trainable, (
        f"trainable: reference {n_ours.trainable}, peft {n_theirs.trainable}, lab 01's closed "
        f"form {closed.trainable}"
    )
    assert n_ours.total == n_theirs.total == closed.total

    idx = tokens()
    with torch.no_grad():
        before = ours(idx)
    merged_ours = merge_and_unload(ours).eval()
    merged_theirs = theirs.merge_and_unload().eval()
    ours_state, theirs_state = merged_ours.state_dict(), merged_theirs.state_dict()
    assert sorted(ours_state) == sorted(theirs_state), "the merged models' parameter names differ"
    worst = max(max_diff(ours_state[k], theirs_state[k]) for k in ours_state)
    assert worst <= TOL, f"merged weights differ from peft's by up to {worst:.3g}"
    with torch.no_grad():
        after_ours, after_theirs = merged_ours(idx), merged_theirs(idx)
    assert max_diff(after_ours, after_theirs) <= TOL, "merged logits differ from peft's"
    assert max_diff(after_ours, before) <= 1e-5, "merging changed the reference's logits"


def test_missing_keys_warning_is_caught(peft: ModuleType, tmp_path: Path) -> None:
    """The guard above is not vacuous: an adapter with a key removed makes peft warn, and the
    warning is seen."""
    from safetensors.torch import load_file, save_file

    from minituner.checkpoint import save_adapter

    folder = save_adapter(our_adapter_model(), tmp_path / "adapter")
    tensors = load_file(folder / "adapter_model.safetensors")
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft.PeftModel.from_pretrained(minigpt_model(), str(folder))
    assert any("missing adapter keys" in str(w.message) for w in caught), (
        "peft no longer warns about a missing adapter key: update the no_peft_warning guard"
    )
