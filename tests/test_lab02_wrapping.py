"""Lab 02: wrapping a MiniGPT (labs/02-wrapping-minigpt.md).

Step A: ``find_lora_targets`` selects the ``nn.Linear`` layers whose dotted name equals a target
or ends with ``"." + target``. Step B: ``wrap_minigpt_with_lora`` swaps each for a ``LoRALinear``
in place, freezes everything else, and refuses a bad target or a wrapped model before it changes
anything.

Every test builds its models here: the given MiniGPT, and small models of its own with nested
names and decoys (``q_proj_gate``, ``xq_proj``). The wrapping tests use your LoRALinear from
lab00; when it does not work yet they say so and stop (the ``lora_after_lab00`` fixture).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import Tensor, nn

pytestmark = pytest.mark.lab02

STEP_A = "lab02 step A (find_lora_targets)"
STEP_B = "lab02 step B (wrap_minigpt_with_lora)"

SUBSTRING = (
    "a substring match: a target selects a layer only when the layer's dotted name equals it or "
    "ends with '.' + target (name == t or name.endswith('.' + t)), never `t in name`"
)
FREEZE = (
    "every other parameter must be frozen: call model.requires_grad_(False) before you swap in "
    "the LoRALinear layers, so that only the new lora_A and lora_B train"
)
PARENT = (
    "replace the module on its parent: parent = model.get_submodule('blocks.0.attn'); "
    "setattr(parent, 'q_proj', new). setattr(model, 'blocks.0.attn.q_proj', new) adds a new, "
    "unused attribute and leaves the old layer in place"
)


# --------------------------------------------------------------------------------------------
# models built by the tests
# --------------------------------------------------------------------------------------------


class ToyAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.q_proj_gate = nn.Linear(d, d)  # decoy: starts with "q_proj"
        self.xq_proj = nn.Linear(d, d)  # decoy: ends with "q_proj", but not after a dot

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.q_proj_gate(x))
        out: Tensor = self.v_proj(torch.tanh(self.q_proj(x)) * gate) + 0.5 * self.xq_proj(x)
        return out


class ToyBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.attn = ToyAttention(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        out: Tensor = x + self.attn(h) + self.mlp(h)
        return out


class ToyModel(nn.Module):
    """Not a MiniGPT: nested names, numbered children, a root-level head and decoys."""

    def __init__(self, vocab: int = 11, d: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList([ToyBlock(d), ToyBlock(d)])
        self.head = nn.Linear(d, vocab)

    def forward(self, idx: Tensor) -> Tensor:
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        out: Tensor = self.head(x)
        return out


class NotLinearNamedQ(nn.Module):
    """A module named ``q_proj`` that is not an ``nn.Linear``, beside one that is."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.attn = nn.Module()
        self.attn.q_proj = nn.Linear(d, d)
        self.conv = nn.Module()
        self.conv.q_proj = nn.Sequential(nn.Linear(d, d), nn.ReLU())  # contains a Linear

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.attn.q_proj(x) + self.conv.q_proj(x)
        return out


TOY_Q = ["blocks.0.attn.q_proj", "blocks.1.attn.q_proj"]
TOY_V = ["blocks.0.attn.v_proj", "blocks.1.attn.v_proj"]
TOY_DECOYS = [f"blocks.{i}.attn.{n}" for i in (0, 1) for n in ("q_proj_gate", "xq_proj")]


def small_config(minigpt: ModuleType, **overrides: Any) -> Any:
    sizes = {"vocab_size": 32, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16}
    sizes.update(overrides)
    return minigpt.MiniGPTConfig(**sizes)


def tokens(vocab: int, batch: int = 3, length: int = 10) -> Tensor:
    return torch.randint(0, vocab, (batch, length))


def linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def selected_by(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """The test's own selection: whole dotted name or "." suffix, nn.Linear only."""
    return [
        n for n in linear_names(model) if any(n == t or n.endswith("." + t) for t in targets)
    ]


def module_map(model: nn.Module) -> dict[str, int]:
    return {name: id(module) for name, module in model.named_modules()}


def trainable_names(model: nn.Module) -> list[str]:
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


def is_lora_layer(module: nn.Module) -> bool:
    return isinstance(getattr(module, "lora_A", None), nn.Parameter) and isinstance(
        getattr(module, "base", None), nn.Linear
    )


def lora_layer_at(model: nn.Module, name: str) -> Any:
    """The wrapped layer at ``name``, or a failure saying how to replace a layer."""
    layer = model.get_submodule(name)
    if not is_lora_layer(layer):
        pytest.fail(
            f"{STEP_B}: after wrapping, model.get_submodule({name!r}) must be a LoRALinear; it is "
            f"a {type(layer).__name__}. {PARENT}.",
            pytrace=False,
        )
    return layer


def wrap(lora: ModuleType, model: nn.Module, **kwargs: Any) -> nn.Module:
    """Call the learner's wrap and turn a crash into a message for step B."""
    try:
        result = lora.wrap_minigpt_with_lora(model, **kwargs)
    except NotImplementedError:
        raise
    except Exception as exc:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        pytest.fail(
            f"{STEP_B}: wrap_minigpt_with_lora(model, {args}) raised {type(exc).__name__}: {exc}. "
            f"Every target here selects at least one nn.Linear, and the model is not wrapped yet.",
            pytrace=False,
        )
    assert result is model, (
        f"{STEP_B}: wrap_minigpt_with_lora must wrap the model in place and return that same "
        f"model; it returned {type(result).__name__} (a copy, or None)."
    )
    return model


def expect_value_error(
    call: Callable[[], object], step: str, what: str, must_name: str, why: str
) -> str:
    """Run ``call``; it must raise ValueError whose message contains ``must_name``."""
    try:
        call()
    except NotImplementedError:
        raise
    except ValueError as exc:
        message = str(exc)
        assert must_name in message, (
            f"{step}: {what} raised ValueError as it should, but its message must name "
            f"{must_name!r}; it was {message!r}."
        )
        return message
    except Exception as exc:
        pytest.fail(
            f"{step}: {what} must raise ValueError naming {must_name!r} ({why}); it raised "
            f"{type(exc).__name__}: {exc}.",
            pytrace=False,
        )
    pytest.fail(f"{step}: {what} must raise ValueError naming {must_name!r}: {why}.", pytrace=False)


# --------------------------------------------------------------------------------------------
# step A: find_lora_targets
# --------------------------------------------------------------------------------------------

FIND_CASES: list[Any] = [
    pytest.param(("q_proj",), TOY_Q, id="q_proj"),
    pytest.param(("q_proj", "v_proj"), TOY_Q + TOY_V, id="q_proj+v_proj"),
    pytest.param(("attn.q_proj",), TOY_Q, id="dotted-suffix"),
    pytest.param(("head",), ["head"], id="root-level-name"),
    pytest.param(("blocks.1.attn.v_proj",), ["blocks.1.attn.v_proj"], id="full-name"),
    pytest.param(("mlp.0", "mlp.2"), [f"blocks.{i}.mlp.{j}" for i in (0, 1) for j in (0, 2)],
                 id="numbered-children"),
    pytest.param(("q_proj_gate",), [TOY_DECOYS[0], TOY_DECOYS[2]], id="the-decoy-itself"),
]


@pytest.mark.parametrize(("targets", "expected"), FIND_CASES)
def test_find_selects_whole_names_and_dotted_suffixes(
    lora: ModuleType, targets: tuple[str, ...], expected: list[str]
) -> None:
    model = ToyModel()
    before = module_map(model)
    got = lora.find_lora_targets(model, targets)
    got_list = list(got)
    extra = sorted(set(got_list) - set(expected))
    hint = ""
    if any(n in TOY_DECOYS or n.endswith("q_proj_gate") for n in extra):
        hint = f" It selected a decoy: {SUBSTRING}."
    assert sorted(got_list) == sorted(expected), (
        f"{STEP_A}: find_lora_targets(model, {targets}) must select {sorted(expected)}; got "
        f"{sorted(got_list)}.{hint}"
    )
    assert len(got_list) == len(set(got_list)), (
        f"{STEP_A}: each selected name must appear once; got {got_list}."
    )
    assert module_map(model) == before, f"{STEP_A}: find_lora_targets must not change the model."


def test_find_never_matches_a_substring(lora: ModuleType) -> None:
    model = ToyModel()
    got = sorted(lora.find_lora_targets(model, ("q_proj",)))
    decoys = [n for n in got if n not in TOY_Q]
    assert not decoys, (
        f"{STEP_A}: target 'q_proj' must not select {decoys}: {SUBSTRING}."
    )
    assert got == TOY_Q, f"{STEP_A}: target 'q_proj' must select {TOY_Q}; got {got}."


def test_find_selects_only_linear_layers(lora: ModuleType) -> None:
    model = NotLinearNamedQ()
    got = sorted(lora.find_lora_targets(model, ("q_proj",)))
    assert got == ["attn.q_proj"], (
        f"{STEP_A}: only nn.Linear layers are selected: 'conv.q_proj' is an nn.Sequential, so "
        f"target 'q_proj' must select ['attn.q_proj'] only; got {got}. Check "
        f"isinstance(module, nn.Linear) for every name you select."
    )


@pytest.mark.parametrize(
    ("targets", "bad"),
    [
        (("q_proj", "k_proj"), "k_proj"),
        (("proj",), "proj"),
        (("blocks.0",), "blocks.0"),
        (("attn",), "attn"),
    ],
    ids=["no-such-layer", "substring-only", "not-a-linear", "a-parent-module"],
)
def test_find_refuses_a_target_that_selects_nothing(
    lora: ModuleType, targets: tuple[str, ...], bad: str
) -> None:
    model = ToyModel()
    expect_value_error(
        lambda: lora.find_lora_targets(model, targets),
        STEP_A,
        f"find_lora_targets(model, {targets})",
        bad,
        f"{bad!r} selects no nn.Linear of the model (a target must equal a linear layer's dotted "
        f"name or its last part(s); a substring is not enough)",
    )


def test_find_refuses_an_empty_target_list(lora: ModuleType) -> None:
    model = ToyModel()
    try:
        lora.find_lora_targets(model, ())
    except NotImplementedError:
        raise
    except ValueError:
        return
    except Exception as exc:
        pytest.fail(
            f"{STEP_A}: an empty target_modules must raise ValueError (nothing to wrap); it "
            f"raised {type(exc).__name__}: {exc}.",
            pytrace=False,
        )
    pytest.fail(
        f"{STEP_A}: an empty target_modules must raise ValueError: wrapping nothing is a mistake.",
        pytrace=False,
    )


# --------------------------------------------------------------------------------------------
# step B: wrap_minigpt_with_lora on a MiniGPT
# --------------------------------------------------------------------------------------------

MINIGPT_TARGETS: list[tuple[str, ...]] = [
    ("q_proj", "v_proj"),
    ("q_proj", "k_proj", "v_proj", "o_proj"),
    ("fc1", "fc2", "lm_head"),
    ("attn.o_proj",),
]


@pytest.mark.parametrize("targets", MINIGPT_TARGETS, ids=["+".join(t) for t in MINIGPT_TARGETS])
def test_logits_are_identical_at_init(
    lora_after_lab00: ModuleType, minigpt: ModuleType, targets: tuple[str, ...]
) -> None:
    config = small_config(minigpt)
    model = minigpt.MiniGPT(config)
    idx = tokens(config.vocab_size)
    with torch.no_grad():
        before = model(idx)
    wrap(lora_after_lab00, model, target_modules=targets)
    model.eval()
    with torch.no_grad():
        after = model(idx)
    diff = (after - before).abs().max().item()
    assert torch.equal(after, before), (
        f"{STEP_B}: right after wrapping {targets}, the logits must equal the unwrapped model's "
        f"exactly (B = 0 in every LoRALinear); max abs diff {diff:.3g}. Wrap the model's own "
        f"layers (do not re-initialise or copy them), and touch nothing else."
    )


def test_wraps_exactly_the_selected_layers_keeping_them_as_base(
    lora_after_lab00: ModuleType, minigpt: ModuleType
) -> None:
    model = minigpt.MiniGPT(small_config(minigpt))
    targets = ("q_proj", "v_proj")
    names = selected_by(model, targets)
    originals = {n: model.get_submodule(n) for n in names}
    wrap(lora_after_lab00, model, r=4, alpha=8.0, target_modules=targets)
    for name, original in originals.items():
        layer = model.get_submodule(name)
        assert is_lora_layer(layer), (
            f"{STEP_B}: after wrapping, model.get_submodule({name!r}) must be a LoRALinear; it is "
            f"a {type(layer).__name__}. {PARENT}."
        )
        assert layer.base is original, (
            f"{STEP_B}: the LoRALinear at {name!r} must keep the model's own nn.Linear as its "
            f"base (the same object, with its pretrained weights), not a copy or a new layer."
        )
        assert (layer.r, layer.scaling) == (4, 2.0), (
            f"{STEP_B}: with r=4 and alpha=8.0 the layer at {name!r} must have r = 4 and scaling "
            f"= 2.0; it has r = {layer.r}, scaling = {layer.scaling}. Pass r and alpha on to "
            f"LoRALinear."
        )
    untouched = [n for n in linear_names(model) if n not in names and not n.endswith(".base")]
    for name in untouched:
        assert type(model.get_submodule(name)) is nn.Linear, (
            f"{STEP_B}: {name!r} is not a target and must stay the plain nn.Linear it was."
        )


@pytest.mark.parametrize("r", [1, 4, 8])
@pytest.mark.parametrize("targets", MINIGPT_TARGETS, ids=["+".join(t) for t in MINIGPT_TARGETS])
def test_only_the_lora_factors_train(
    lora_after_lab00: ModuleType, minigpt: ModuleType, targets: tuple[str, ...], r: int
) -> None:
    model = minigpt.MiniGPT(small_config(minigpt))
    names = selected_by(model, targets)
    # the lab01 closed form: r * (in + out) for each wrapped layer
    expected_count = sum(
        r * (model.get_submodule(n).in_features + model.get_submodule(n).out_features)
        for n in names
    )
    wrap(lora_after_lab00, model, r=r, target_modules=targets)
    expected = sorted(f"{n}.{f}" for n in names for f in ("lora_A", "lora_B"))
    got = trainable_names(model)
    leaked = [n for n in got if n not in expected]
    if not got:
        pytest.fail(
            f"{STEP_B}: nothing trains after wrapping: the new factors were frozen too. Freeze "
            f"first (model.requires_grad_(False)), then create the LoRALinear layers, whose "
            f"factors start trainable.",
            pytrace=False,
        )
    assert not leaked, (
        f"{STEP_B}: {FREEZE}. Still trainable: {leaked[:6]}{' ...' if len(leaked) > 6 else ''} "
        f"(embeddings, LayerNorms, lm_head and non-target linears are all frozen in LoRA)."
    )
    assert got == expected, (
        f"{STEP_B}: the trainable parameters must be the lora_A and lora_B of {names}; got {got}."
    )
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count == expected_count, (
        f"{STEP_B}: r={r} on {targets} must train sum of r * (in + out) = {expected_count:,} "
        f"numbers (lab01's closed form); it trains {count:,}."
    )


def test_training_moves_only_the_lora_factors(
    lora_after_lab00: ModuleType, minigpt: ModuleType
) -> None:
    config = small_config(minigpt)
    model = minigpt.MiniGPT(config)
    snapshot = {id(p): (n, p.detach().clone()) for n, p in model.named_parameters()}
    wrap(lora_after_lab00, model, target_modules=("q_proj", "v_proj"), dropout=0.0)
    model.train()
    idx, targets = tokens(config.vocab_size), tokens(config.vocab_size)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        pytest.fail(
            f"{STEP_B}: nothing trains after wrapping: the new factors were frozen too. Freeze "
            f"first (model.requires_grad_(False)), then create the LoRALinear layers.",
            pytrace=False,
        )
    for _ in range(3):  # plain SGD on what requires grad, as an optimizer would update it
        model.zero_grad(set_to_none=True)
        loss = minigpt.lm_loss(model(idx), targets)
        if not loss.requires_grad:
            pytest.fail(
                f"{STEP_B}: after wrapping, the loss depends on no trainable parameter: the "
                f"LoRALinear layers are not used by the model's forward. {PARENT}.",
                pytrace=False,
            )
        loss.backward()
        with torch.no_grad():
            for p in trainable:
                if p.grad is not None:
                    p -= 0.5 * p.grad
    for name, p in model.named_parameters():
        if name.endswith(("lora_A", "lora_B")):
            assert p.grad is not None and not torch.equal(p.grad, torch.zeros_like(p.grad)), (
                f"{STEP_B}: after three training steps {name} has no gradient: the wrapped "
                f"layer is not used by the model's forward. {PARENT}."
            )
            continue
        assert id(p) in snapshot, (
            f"{STEP_B}: {name} is a new parameter that is not a LoRA factor: the LoRALinear must "
            f"keep the model's own nn.Linear as its base, not a copy."
        )
        old_name, old = snapshot[id(p)]
        assert p.grad is None, (
            f"{STEP_B}: {name} (was {old_name}) received a gradient: {FREEZE}."
        )
        assert torch.equal(p.detach(), old), (
            f"{STEP_B}: three training steps changed {name} (was {old_name}), which is not a "
            f"LoRA factor: the pretrained weights must stay bit-identical. {FREEZE}."
        )


@pytest.mark.parametrize(
    "move",
    [
        pytest.param(lambda m: m.to(torch.float64), id="to(float64)"),
        pytest.param(lambda m: m.eval(), id="eval()"),
        pytest.param(lambda m: m.eval().train(), id="eval().train()"),
        pytest.param(lambda m: m.to("cpu").double(), id="to(cpu).double()"),
    ],
)
def test_wrapping_survives_module_calls(
    lora_after_lab00: ModuleType, minigpt: ModuleType, move: Callable[[nn.Module], nn.Module],
    request: pytest.FixtureRequest,
) -> None:
    config = small_config(minigpt)
    model = minigpt.MiniGPT(config)
    reference = copy.deepcopy(model)
    wrap(lora_after_lab00, model, target_modules=("q_proj", "v_proj"), dropout=0.0)
    expected = trainable_names(model)
    move(model)
    move(reference)
    call = request.node.callspec.id
    assert trainable_names(model) == expected, (
        f"{STEP_B}: after model.{call} the trainable parameters must still be the LoRA factors "
        f"only; got {trainable_names(model)}. Freeze with requires_grad_(False), which survives "
        f".to(), .train() and .eval()."
    )
    idx = tokens(config.vocab_size)
    model.eval()
    reference.eval()
    with torch.no_grad():
        got, want = model(idx), reference(idx)
    assert got.dtype == want.dtype and torch.equal(got, want), (
        f"{STEP_B}: after model.{call} the wrapped model must still give the unwrapped model's "
        f"logits exactly ({want.dtype}); max abs diff "
        f"{(got.double() - want.double()).abs().max().item():.3g}, dtype {got.dtype}."
    )


def test_state_dict_holds_the_factors_and_round_trips(
    lora_after_lab00: ModuleType, minigpt: ModuleType
) -> None:
    config = small_config(minigpt)
    source = wrap(lora_after_lab00, minigpt.build_minigpt(config, seed=1), r=2, dropout=0.0)
    names = selected_by(minigpt.MiniGPT(config), ("q_proj", "v_proj"))
    with torch.no_grad():
        for name in names:
            layer = lora_layer_at(source, name)
            layer.lora_B.copy_(torch.randn_like(layer.lora_B))
    state = source.state_dict()
    missing = [f"{n}.{f}" for n in names for f in ("lora_A", "lora_B") if f"{n}.{f}" not in state]
    assert not missing, (
        f"{STEP_B}: model.state_dict() must hold each factor under its full dotted name; "
        f"missing {missing[:4]}. {PARENT}."
    )
    target = wrap(lora_after_lab00, minigpt.build_minigpt(config, seed=2), r=2, dropout=0.0)
    try:
        target.load_state_dict(state)
    except Exception as exc:
        pytest.fail(
            f"{STEP_B}: two MiniGPTs wrapped the same way must have the same state_dict keys and "
            f"shapes, but load_state_dict failed: {type(exc).__name__}: {exc}",
            pytrace=False,
        )
    idx = tokens(config.vocab_size)
    source.eval()
    target.eval()
    with torch.no_grad():
        assert torch.equal(source(idx), target(idx)), (
            f"{STEP_B}: after load_state_dict of a wrapped model's state, a second wrapped model "
            f"must give the same logits."
        )


# --------------------------------------------------------------------------------------------
# step B: other models, decoys, non-linear modules
# --------------------------------------------------------------------------------------------


def test_works_on_a_model_that_is_not_a_minigpt(lora_after_lab00: ModuleType) -> None:
    model = ToyModel()
    decoys = {n: model.get_submodule(n) for n in TOY_DECOYS}
    idx = tokens(11)
    with torch.no_grad():
        before = model(idx)
    wrap(lora_after_lab00, model, r=2, target_modules=("q_proj", "v_proj", "head"))
    wrapped = sorted(n for n, m in model.named_modules() if is_lora_layer(m))
    expected = sorted(TOY_Q + TOY_V + ["head"])
    wrongly = [n for n in wrapped if n in TOY_DECOYS]
    assert not wrongly, f"{STEP_B}: it wrapped the decoys {wrongly}: {SUBSTRING}."
    assert wrapped == expected, (
        f"{STEP_B}: targets ('q_proj', 'v_proj', 'head') on this model must wrap {expected}; "
        f"wrapped {wrapped}."
    )
    for name, decoy in decoys.items():
        assert model.get_submodule(name) is decoy and not decoy.weight.requires_grad, (
            f"{STEP_B}: the decoy {name!r} must stay the same nn.Linear, frozen like every "
            f"other non-LoRA parameter."
        )
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(idx), before), (
            f"{STEP_B}: right after wrapping, this model's output must be unchanged, exactly."
        )


def test_a_non_linear_module_with_a_target_name_is_left_alone(
    lora_after_lab00: ModuleType,
) -> None:
    model = NotLinearNamedQ()
    inner = model.conv.q_proj
    try:
        lora_after_lab00.wrap_minigpt_with_lora(model, r=2, target_modules=("q_proj",))
    except NotImplementedError:
        raise
    except Exception as exc:
        pytest.fail(
            f"{STEP_B}: only nn.Linear layers are wrapped: 'conv.q_proj' is an nn.Sequential and "
            f"must be left alone, but wrapping raised {type(exc).__name__}: {exc}. Select modules "
            f"with isinstance(module, nn.Linear) as well as by name.",
            pytrace=False,
        )
    assert model.conv.q_proj is inner and type(inner[0]) is nn.Linear, (
        f"{STEP_B}: only nn.Linear layers are wrapped: 'conv.q_proj' (an nn.Sequential) and the "
        f"layers inside it must be left as they were."
    )
    assert is_lora_layer(model.attn.q_proj), (
        f"{STEP_B}: 'attn.q_proj' is an nn.Linear named q_proj and must be wrapped. If you "
        f"did wrap it, the new layer is not where the old one was: {PARENT}."
    )


# --------------------------------------------------------------------------------------------
# step B: refusals, before anything changes
# --------------------------------------------------------------------------------------------


def state_of(model: nn.Module) -> tuple[dict[str, int], dict[str, bool], dict[str, Tensor]]:
    return (
        module_map(model),
        {n: p.requires_grad for n, p in model.named_parameters()},
        {n: p.detach().clone() for n, p in model.named_parameters()},
    )


def assert_unchanged(model: nn.Module, before: Any, what: str) -> None:
    modules, flags, values = before
    now_modules, now_flags, _ = state_of(model)
    changed_modules = sorted(n for n in set(modules) | set(now_modules)
                             if modules.get(n) != now_modules.get(n))
    assert not changed_modules, (
        f"{STEP_B}: {what} must raise before anything changes, but modules changed: "
        f"{changed_modules[:4]}. Check every target (and whether the model is wrapped) first, "
        f"then wrap."
    )
    refrozen = sorted(n for n in flags if flags[n] != now_flags.get(n))
    assert not refrozen, (
        f"{STEP_B}: {what} must raise before anything changes, but requires_grad changed on "
        f"{refrozen[:4]}{' ...' if len(refrozen) > 4 else ''}. Check first, then freeze and wrap."
    )
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), values[name]), (
            f"{STEP_B}: {what} must raise before anything changes, but {name} changed value."
        )


@pytest.mark.parametrize(
    ("targets", "bad"),
    [(("q_proj", "v_proj", "nope"), "nope"), (("nope", "q_proj"), "nope"), (("fc1", "fc3"), "fc3")],
    ids=["bad-last", "bad-first", "fc3"],
)
def test_a_bad_target_raises_before_anything_changes(
    lora_after_lab00: ModuleType, minigpt: ModuleType, targets: tuple[str, ...], bad: str
) -> None:
    model = minigpt.MiniGPT(small_config(minigpt))
    before = state_of(model)
    what = f"wrap_minigpt_with_lora(model, target_modules={targets})"
    expect_value_error(
        lambda: lora_after_lab00.wrap_minigpt_with_lora(model, target_modules=targets),
        STEP_B, what, bad, f"{bad!r} selects no nn.Linear of a MiniGPT",
    )
    assert_unchanged(model, before, what)


@pytest.mark.parametrize(
    "second", [("q_proj", "v_proj"), ("k_proj",)], ids=["same-targets", "other-targets"]
)
def test_wrapping_twice_is_refused(
    lora_after_lab00: ModuleType, minigpt: ModuleType, second: tuple[str, ...]
) -> None:
    model = wrap(lora_after_lab00, minigpt.MiniGPT(small_config(minigpt)),
                 target_modules=("q_proj", "v_proj"))
    before = state_of(model)
    what = f"wrapping an already wrapped model again (target_modules={second})"
    try:
        lora_after_lab00.wrap_minigpt_with_lora(model, target_modules=second)
    except NotImplementedError:
        raise
    except ValueError as exc:
        assert "q_proj" in str(exc) or "v_proj" in str(exc), (
            f"{STEP_B}: {what} raised ValueError as it should, but the message must name a "
            f"wrapped layer (e.g. 'blocks.0.attn.q_proj'); it was {str(exc)!r}."
        )
        assert_unchanged(model, before, what)
        return
    except Exception as exc:
        pytest.fail(
            f"{STEP_B}: {what} must raise ValueError (the model is already wrapped); it raised "
            f"{type(exc).__name__}: {exc}.",
            pytrace=False,
        )
    nested = [n for n, m in model.named_modules() if is_lora_layer(m) and ".base" in n]
    pytest.fail(
        f"{STEP_B}: {what} must raise ValueError naming a layer that is already wrapped: a model "
        f"that contains a LoRALinear is already wrapped. It raised nothing"
        + (f" and nested LoRA layers ({nested[:2]})." if nested else "."),
        pytrace=False,
    )


def test_a_model_holding_a_lora_layer_is_already_wrapped(lora_after_lab00: ModuleType) -> None:
    model = ToyModel()
    model.blocks[1].attn.v_proj = lora_after_lab00.LoRALinear(model.blocks[1].attn.v_proj, r=2)
    before = state_of(model)
    what = "wrap_minigpt_with_lora on a model that already holds a LoRALinear"
    expect_value_error(
        lambda: lora_after_lab00.wrap_minigpt_with_lora(model, target_modules=("q_proj",)),
        STEP_B, what, "blocks.1.attn.v_proj",
        "the model is already wrapped; name the LoRALinear you found",
    )
    assert_unchanged(model, before, what)


def test_dropout_reaches_each_layer(lora_after_lab00: ModuleType, minigpt: ModuleType) -> None:
    config = small_config(minigpt)
    model = minigpt.MiniGPT(config)
    names = selected_by(model, ("q_proj", "v_proj"))
    wrap(lora_after_lab00, model, r=4, dropout=0.5)
    with torch.no_grad():
        for name in names:
            B = lora_layer_at(model, name).lora_B
            B.copy_(torch.randn_like(B))
    idx = tokens(config.vocab_size)
    with torch.no_grad():
        model.train()
        first, second = model(idx), model(idx)
        model.eval()
        third, fourth = model(idx), model(idx)
    assert not torch.equal(first, second), (
        f"{STEP_B}: with dropout=0.5 (and B non-zero), two train-mode calls must differ: pass "
        f"dropout on to every LoRALinear(layer, r=r, alpha=alpha, dropout=dropout)."
    )
    assert torch.equal(third, fourth), (
        f"{STEP_B}: in eval mode the wrapped model must be deterministic (dropout off)."
    )
