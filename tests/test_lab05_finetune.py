"""Lab 05: fine-tuning a pretrained MiniGPT with LoRA (labs/05-finetune-minigpt.md).

Step A: ``make_optimizer`` holds the trainable parameters only. Step B: ``answer_loss`` scores
the answer's tokens only. Step C: ``train_step`` makes one clean update. Step D: ``evaluate``
measures without touching the model. Step E: ``fine_tune`` is repeatable from its seed. Step F:
``optimizer_state_bytes`` counts what the optimizer really holds.

These tests check behaviour only, on models that run in milliseconds. Expected values come from
independent float64 computations, never from the code under test. Most tests need no LoRA at
all; those that fine-tune a wrapped MiniGPT say so, and ask you to pass labs 00 and 02 first.
"""

from __future__ import annotations

import copy
import math
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

pytestmark = pytest.mark.lab05

STEP_A = "lab05 step A (make_optimizer)"
STEP_B = "lab05 step B (answer_loss)"
STEP_C = "lab05 step C (train_step)"
STEP_D = "lab05 step D (evaluate)"
STEP_E = "lab05 step E (fine_tune)"
STEP_F = "lab05 step F (optimizer_state_bytes)"

TOL = 1e-5  # DESIGN.md: float32 comparisons against a float64 reference
V = 28  # the size of minituner.tasks.ALPHABET


# --------------------------------------------------------------------------------------------
# small models that record how they are called
# --------------------------------------------------------------------------------------------


class TinyLM(nn.Module):
    """Token ids (B, T) -> logits (B, T, V): a frozen embedding, a trainable head.

    Records, on every forward, whether it ran in training mode and with gradients enabled.
    With ``dropout > 0`` its output is random in training mode and not in eval mode.
    """

    def __init__(self, vocab: int = V, width: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.embed.requires_grad_(False)  # the "pretrained", frozen part
        # nn.Dropout(0.0) still draws random numbers in training mode: leave it out then.
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(width, vocab)
        self.calls: list[tuple[bool, bool]] = []  # (training, grad enabled) per forward

    def forward(self, idx: Tensor) -> Tensor:
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.head(self.dropout(self.embed(idx)))  # (B, T, V)


class FixedLogits(nn.Module):
    """Returns the logits it was given, whatever the input (one trainable scalar, unused)."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, idx: Tensor) -> Tensor:
        return self.logits + 0.0 * self.unused


def frozen_and_trainable(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return frozen, trainable


def random_batch(tasks: ModuleType, n: int = 8, seed: int = 0) -> Any:
    """A batch of pig latin examples (prompt, answer and padding: all three occur)."""
    examples = tasks.pig_latin_task(n_train=n, n_eval=1, seed=seed).train
    return tasks.collate(examples)


def masked_ce64(logits: Tensor, targets: Tensor, mask: Tensor) -> float:
    """The expected answer loss, in float64: sum over scored tokens / number of scored tokens."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    per_token = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
    m = mask.double()
    return float((per_token * m).sum() / m.sum())


# --------------------------------------------------------------------------------------------
# step A: make_optimizer
# --------------------------------------------------------------------------------------------


def test_optimizer_holds_only_trainable_parameters(finetune: ModuleType) -> None:
    model = TinyLM()
    optimizer = finetune.make_optimizer(model, lr=1e-3)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    want = {id(p) for p in model.parameters() if p.requires_grad}
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    assert not held & frozen, (
        f"{STEP_A}: the optimizer holds frozen parameters (the embedding, requires_grad=False). "
        f"Give AdamW only the parameters that require grad: "
        f"[p for p in model.parameters() if p.requires_grad]. An optimizer over all parameters "
        f"is full fine-tuning waiting to happen: unfreeze one by mistake and it moves."
    )
    assert held == want, (
        f"{STEP_A}: the optimizer holds {len(held)} parameter tensors, expected the "
        f"{len(want)} that require grad (the head's weight and bias)."
    )


def test_optimizer_is_adamw_with_the_given_settings(finetune: ModuleType) -> None:
    optimizer = finetune.make_optimizer(TinyLM(), lr=3e-3, weight_decay=0.05)
    assert isinstance(optimizer, torch.optim.AdamW), (
        f"{STEP_A}: expected a torch.optim.AdamW, got {type(optimizer).__name__}."
    )
    for group in optimizer.param_groups:
        assert math.isclose(group["lr"], 3e-3) and math.isclose(group["weight_decay"], 0.05), (
            f"{STEP_A}: make_optimizer(model, lr=3e-3, weight_decay=0.05) built a group with "
            f"lr={group['lr']}, weight_decay={group['weight_decay']}: pass both to AdamW."
        )
    default = finetune.make_optimizer(TinyLM(), lr=1e-3)
    assert all(g["weight_decay"] == 0.0 for g in default.param_groups), (
        f"{STEP_A}: weight_decay defaults to 0.0 (AdamW's own default is 0.01): pass it on."
    )


def test_optimizer_refuses_a_model_with_nothing_to_train(finetune: ModuleType) -> None:
    model = TinyLM().requires_grad_(False)
    with pytest.raises(ValueError) as info:
        finetune.make_optimizer(model, lr=1e-3)
    assert "grad" in str(info.value), (
        f"{STEP_A}: the ValueError should say that no parameter requires grad, got: {info.value}"
    )


# --------------------------------------------------------------------------------------------
# step B: answer_loss
# --------------------------------------------------------------------------------------------


def test_answer_loss_is_the_mean_over_scored_tokens(finetune: ModuleType, tasks: ModuleType) -> None:
    batch = random_batch(tasks)
    logits = torch.randn(*batch.inputs.shape, V)
    got = finetune.answer_loss(logits, batch.targets, batch.loss_mask)
    assert isinstance(got, Tensor) and got.dim() == 0, (
        f"{STEP_B}: answer_loss must return a scalar tensor, got {got!r}"
    )
    want = masked_ce64(logits, batch.targets, batch.loss_mask)
    if abs(got.item() - want) <= TOL:
        return
    everything = masked_ce64(logits, batch.targets, torch.ones_like(batch.loss_mask))
    per_token = -torch.log_softmax(logits.double(), -1).gather(-1, batch.targets.unsqueeze(-1))
    over_all = float((per_token.squeeze(-1) * batch.loss_mask.double()).sum() / batch.loss_mask.numel())
    hint = "compute sum(ce * loss_mask) / sum(loss_mask)."
    if abs(got.item() - everything) <= TOL:
        hint = (
            "that is the mean over every token: you scored the prompt and the padding. Multiply "
            "the per-token loss by loss_mask (reduction='none') before averaging."
        )
    elif abs(got.item() - over_all) <= TOL:
        hint = (
            "the masked sum is divided by all B * T tokens instead of the scored ones: divide by "
            "loss_mask.sum(), or the loss shrinks as the padding grows."
        )
    pytest.fail(f"{STEP_B}: loss {got.item():.6f}, expected {want:.6f}; {hint}", pytrace=False)


def test_answer_loss_ignores_prompt_and_padding(finetune: ModuleType, tasks: ModuleType) -> None:
    batch = random_batch(tasks)
    logits = torch.randn(*batch.inputs.shape, V)
    changed = logits.clone()
    unscored = batch.loss_mask == 0
    changed[unscored] = torch.randn(int(unscored.sum()), V) * 10  # only where nothing is scored
    a = finetune.answer_loss(logits, batch.targets, batch.loss_mask).item()
    b = finetune.answer_loss(changed, batch.targets, batch.loss_mask).item()
    assert abs(a - b) <= TOL, (
        f"{STEP_B}: changing the logits at the prompt and padding positions (loss_mask = 0) "
        f"changed the loss from {a:.6f} to {b:.6f}: you scored the prompt and the padding. "
        f"Only the answer's tokens count."
    )


def test_answer_loss_sends_gradient_to_scored_logits_only(
    finetune: ModuleType, tasks: ModuleType
) -> None:
    batch = random_batch(tasks)
    logits = torch.randn(*batch.inputs.shape, V, requires_grad=True)
    finetune.answer_loss(logits, batch.targets, batch.loss_mask).backward()
    assert logits.grad is not None, f"{STEP_B}: the loss is not differentiable in the logits"
    unscored = batch.loss_mask == 0
    assert logits.grad[unscored].abs().max().item() == 0.0, (
        f"{STEP_B}: the loss sends gradient to the prompt and padding positions: you scored "
        f"the prompt and the padding."
    )
    assert logits.grad[~unscored].abs().max().item() > 0.0, (
        f"{STEP_B}: no gradient reaches the answer positions"
    )


# --------------------------------------------------------------------------------------------
# step C: train_step
# --------------------------------------------------------------------------------------------


def test_train_step_returns_the_loss_before_the_update(
    finetune: ModuleType, tasks: ModuleType
) -> None:
    model = TinyLM()
    batch = random_batch(tasks)
    with torch.no_grad():
        want = masked_ce64(model(batch.inputs), batch.targets, batch.loss_mask)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    got = finetune.train_step(model, optimizer, batch)
    assert isinstance(got, float), (
        f"{STEP_C}: train_step must return the loss as a Python float (loss.item()), "
        f"got {type(got).__name__}"
    )
    assert abs(got - want) <= TOL, (
        f"{STEP_C}: returned {got:.6f}, expected the answer loss before the update, {want:.6f}. "
        f"Compute the loss with answer_loss(logits, targets, loss_mask) on the batch."
    )


def test_train_step_moves_trainable_and_leaves_frozen(
    finetune: ModuleType, tasks: ModuleType
) -> None:
    model = TinyLM()
    frozen, trainable = frozen_and_trainable(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    finetune.train_step(model, optimizer, random_batch(tasks))
    for name, before in frozen.items():
        assert torch.equal(model.get_parameter(name), before), (
            f"{STEP_C}: the frozen parameter {name} changed"
        )
    moved = [n for n, before in trainable.items() if not torch.equal(model.get_parameter(n), before)]
    assert moved, (
        f"{STEP_C}: no trainable parameter changed: call loss.backward() and optimizer.step()."
    )


def test_train_step_clears_the_previous_gradients(finetune: ModuleType, tasks: ModuleType) -> None:
    batch = random_batch(tasks)
    clean = TinyLM()
    dirty = copy.deepcopy(clean)
    for p in dirty.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, 100.0)  # what a previous step left behind
    for model in (clean, dirty):
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        finetune.train_step(model, optimizer, batch)
    diff = (clean.head.weight - dirty.head.weight).abs().max().item()
    assert diff <= TOL, (
        f"{STEP_C}: with gradients left over from a previous step, the update differs by "
        f"{diff:.3g}: the gradients accumulate. Call optimizer.zero_grad() before backward."
    )


def test_train_step_trains_in_training_mode(finetune: ModuleType, tasks: ModuleType) -> None:
    model = TinyLM(dropout=0.1).eval()  # as evaluate may leave it
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    finetune.train_step(model, optimizer, random_batch(tasks))
    assert model.calls and model.calls[-1] == (True, True), (
        f"{STEP_C}: the forward pass ran with training={model.calls[-1][0] if model.calls else None}, "
        f"grad enabled={model.calls[-1][1] if model.calls else None}; expected both True. Call "
        f"model.train() in train_step: evaluate leaves the model in eval mode, with dropout off."
    )


def test_loss_falls_on_a_tiny_minigpt_with_lora(
    finetune: ModuleType, lora_after_lab02: ModuleType, minigpt: ModuleType, tasks: ModuleType
) -> None:
    config = minigpt.MiniGPTConfig(vocab_size=V, block_size=24, n_layer=1, n_head=2, n_embd=16)
    model = minigpt.MiniGPT(config)
    # lm_head too: on a random tiny model the loss then falls within a few steps.
    targets = ("q_proj", "v_proj", "lm_head")
    lora_after_lab02.wrap_minigpt_with_lora(model, r=4, target_modules=targets, dropout=0.0)
    frozen, _ = frozen_and_trainable(model)
    batch = random_batch(tasks, n=16)
    optimizer = finetune.make_optimizer(model, lr=3e-2)
    losses = [finetune.train_step(model, optimizer, batch) for _ in range(15)]
    assert losses[-1] < 0.8 * losses[0], (
        f"{STEP_C}: 15 steps on one batch took the loss from {losses[0]:.3f} to {losses[-1]:.3f}; "
        f"expected a fall of more than 20%. Does train_step call backward() and step()?"
    )
    changed = [n for n, before in frozen.items() if not torch.equal(model.get_parameter(n), before)]
    assert not changed, (
        f"{STEP_C}: the frozen base changed during LoRA fine-tuning: {changed[:3]}. Only the "
        f"LoRA factors may move: the optimizer must hold the trainable parameters only."
    )
    moved_b = [
        n for n, p in model.named_parameters() if n.endswith("lora_B") and p.abs().max().item() > 0
    ]
    assert moved_b, f"{STEP_C}: every lora_B is still zero after 15 steps: nothing trained."


# --------------------------------------------------------------------------------------------
# step D: evaluate
# --------------------------------------------------------------------------------------------


def logits_for(targets: Tensor, wrong: list[tuple[int, int]]) -> Tensor:
    """Logits whose argmax is ``targets`` everywhere, except at the (row, t) listed in ``wrong``."""
    B, T = targets.shape
    logits = torch.randn(B, T, V) * 0.1
    logits.scatter_(-1, targets.unsqueeze(-1), 5.0)
    for row, t in wrong:
        bad = (int(targets[row, t]) + 1) % V
        logits[row, t, bad] = 10.0
    return logits


def test_exact_match_needs_every_scored_token(finetune: ModuleType, tasks: ModuleType) -> None:
    batch = random_batch(tasks, n=4)
    mask = batch.loss_mask
    scored = [(int(t)) for t in torch.nonzero(mask[1])[:, 0]]
    unscored = [(int(t)) for t in torch.nonzero(mask[2] == 0)[:, 0]]
    # row 0 right; row 1 one answer token wrong; row 2 wrong only at the prompt; row 3 right
    logits = logits_for(batch.targets, [(1, scored[-2]), (2, unscored[0]), (2, unscored[1])])
    result = finetune.evaluate(FixedLogits(logits), batch)
    if math.isclose(result.accuracy, 0.75, abs_tol=1e-6):
        return
    scored_right = ((logits.argmax(-1) == batch.targets).float() * mask).sum() / mask.sum()
    hint = "an example counts as right when the argmax is the target at every scored position."
    if math.isclose(result.accuracy, 0.5, abs_tol=1e-6):
        hint = (
            "an example wrong only at its prompt was counted wrong: you scored the prompt and "
            "the padding. Compare only where loss_mask is 1."
        )
    elif math.isclose(result.accuracy, float(scored_right), abs_tol=1e-6):
        hint = "that is per-token accuracy: exact match needs every scored token of an example."
    pytest.fail(
        f"{STEP_D}: exact match {result.accuracy:.4f}, expected 0.75 (3 of 4 examples right); {hint}",
        pytrace=False,
    )


def test_evaluate_loss_is_the_answer_loss(finetune: ModuleType, tasks: ModuleType) -> None:
    batch = random_batch(tasks)
    logits = torch.randn(*batch.inputs.shape, V)
    result = finetune.evaluate(FixedLogits(logits), batch)
    want = masked_ce64(logits, batch.targets, batch.loss_mask)
    assert isinstance(result.loss, float) and isinstance(result.accuracy, float), (
        f"{STEP_D}: Evaluation.loss and .accuracy must be Python floats (use .item())"
    )
    assert abs(result.loss - want) <= TOL, (
        f"{STEP_D}: loss {result.loss:.6f}, expected the answer loss {want:.6f}: use answer_loss."
    )


def test_evaluate_runs_in_eval_mode_without_gradients(
    finetune: ModuleType, tasks: ModuleType
) -> None:
    model = TinyLM(dropout=0.5).train()
    batch = random_batch(tasks)
    first = finetune.evaluate(model, batch)
    training, grad = model.calls[-1]
    assert not training, (
        f"{STEP_D}: the forward pass ran in training mode: dropout was on, so the result is "
        f"random. Call model.eval() before the forward pass."
    )
    assert not grad, (
        f"{STEP_D}: the forward pass ran with gradients on: wrap it in torch.no_grad() (it "
        f"builds no graph, and uses far less memory)."
    )
    second = finetune.evaluate(model, batch)
    assert first == second, (
        f"{STEP_D}: two evaluations of the same model differ ({first} then {second}): dropout on?"
    )


def test_evaluate_changes_no_weight(finetune: ModuleType, tasks: ModuleType) -> None:
    model = TinyLM()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    finetune.evaluate(model, random_batch(tasks))
    for name, value in before.items():
        assert torch.equal(model.get_parameter(name), value), f"{STEP_D}: evaluate changed {name}"
        assert model.get_parameter(name).grad is None, (
            f"{STEP_D}: evaluate left a gradient on {name}: no backward in evaluate."
        )


# --------------------------------------------------------------------------------------------
# step E: fine_tune
# --------------------------------------------------------------------------------------------


def small_task(tasks: ModuleType) -> Any:
    return tasks.pig_latin_task(n_train=64, n_eval=16, seed=5)


def test_same_seed_gives_the_same_run(finetune: ModuleType, tasks: ModuleType) -> None:
    split = small_task(tasks)
    model = TinyLM()
    runs = []
    for noise in (1, 2):
        torch.manual_seed(noise)  # a different global random state before each run
        copy_ = copy.deepcopy(model)
        history = finetune.fine_tune(copy_, split.train, steps=6, lr=1e-2, batch_size=4, seed=7)
        runs.append((history.train_loss, copy_.head.weight.detach().clone()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1]), (
        f"{STEP_E}: two runs with the same seed differ (losses {runs[0][0][:3]}... and "
        f"{runs[1][0][:3]}...): the run is not repeatable. Draw the batches with "
        f"sample_batch(train, batch_size, generator) from generator = "
        f"torch.Generator().manual_seed(seed), never from torch's global generator."
    )


def test_different_seeds_draw_different_batches(finetune: ModuleType, tasks: ModuleType) -> None:
    split = small_task(tasks)
    model = TinyLM()
    a = finetune.fine_tune(copy.deepcopy(model), split.train, steps=4, lr=1e-2, batch_size=4, seed=0)
    b = finetune.fine_tune(copy.deepcopy(model), split.train, steps=4, lr=1e-2, batch_size=4, seed=1)
    assert a.train_loss != b.train_loss, (
        f"{STEP_E}: seeds 0 and 1 gave the same losses: seed the batch generator with `seed`."
    )


def test_fine_tune_leaves_the_global_generator_alone(finetune: ModuleType, tasks: ModuleType) -> None:
    split = small_task(tasks)
    model = TinyLM()
    state = torch.random.get_rng_state()
    finetune.fine_tune(model, split.train, steps=3, lr=1e-2, batch_size=4, seed=0)
    assert torch.equal(state, torch.random.get_rng_state()), (
        f"{STEP_E}: fine_tune changed torch's global random state (it seeded it, or drew "
        f"batches from it). Use a torch.Generator of your own: library code never seeds globally."
    )


def test_fine_tune_history_and_evaluations(finetune: ModuleType, tasks: ModuleType) -> None:
    split = small_task(tasks)
    eval_batch = tasks.collate(split.eval)
    model = TinyLM()
    frozen, _ = frozen_and_trainable(model)
    calls: list[int] = []
    history = finetune.fine_tune(
        model, split.train, steps=10, lr=1e-2, batch_size=4, seed=0, eval_batch=eval_batch,
        eval_every=4, on_step=lambda step, loss: calls.append(step),
    )
    assert len(history.train_loss) == 10 and all(isinstance(x, float) for x in history.train_loss), (
        f"{STEP_E}: history.train_loss must hold one float per step (10), got "
        f"{len(history.train_loss)}"
    )
    steps = [s for s, _ in history.evals]
    assert steps == [0, 4, 8, 10], (
        f"{STEP_E}: evaluations at steps {steps}; expected [0, 4, 8, 10]: before training, "
        f"every eval_every steps, and after the last step."
    )
    assert calls == list(range(1, 11)), (
        f"{STEP_E}: on_step was called with steps {calls}; expected 1 to 10, once each."
    )
    assert history.seconds_per_step > 0.0, f"{STEP_E}: seconds_per_step is not measured"
    for name, before in frozen.items():
        assert torch.equal(model.get_parameter(name), before), f"{STEP_E}: frozen {name} moved"
    assert model.training, f"{STEP_E}: leave the model in training mode after fine_tune"


def test_fine_tune_lowers_the_loss(finetune: ModuleType, tasks: ModuleType) -> None:
    split = small_task(tasks)
    eval_batch = tasks.collate(split.train[:16])
    history = finetune.fine_tune(
        TinyLM(), split.train, steps=30, lr=3e-2, batch_size=16, seed=0, eval_batch=eval_batch
    )
    first, last = history.evals[0][1].loss, history.evals[-1][1].loss
    assert last < 0.8 * first, (
        f"{STEP_E}: 30 steps took the eval loss from {first:.3f} to {last:.3f}: expected a "
        f"clear fall. Does every step call train_step with the optimizer from make_optimizer?"
    )


# --------------------------------------------------------------------------------------------
# step F: optimizer_state_bytes
# --------------------------------------------------------------------------------------------


def two_layers(dtype: torch.dtype = torch.float32) -> nn.Module:
    # 5*3 + 3 + 3*2 + 2 = 26 parameters in 4 tensors
    return nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 2)).to(dtype)


def one_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    x = torch.randn(4, 5, dtype=next(model.parameters()).dtype)
    model(x).pow(2).sum().backward()
    optimizer.step()


def test_state_is_empty_before_the_first_step(finetune: ModuleType) -> None:
    optimizer = torch.optim.AdamW(two_layers().parameters())
    assert finetune.optimizer_state_bytes(optimizer) == 0, (
        f"{STEP_F}: before any step AdamW holds no state: expected 0"
    )


@pytest.mark.parametrize("dtype,per_element", [(torch.float32, 4), (torch.float64, 8)])
def test_adamw_state_bytes_come_from_its_tensors(
    finetune: ModuleType, dtype: torch.dtype, per_element: int
) -> None:
    model = two_layers(dtype)
    optimizer = torch.optim.AdamW(model.parameters())
    one_step(model, optimizer)
    # exp_avg and exp_avg_sq in the parameters' dtype, and one `step` counter per tensor;
    # counted here from PyTorch's documented layout, independently of the code under test.
    n, tensors = 26, 4
    step_bytes = sum(
        s["step"].numel() * s["step"].element_size() for s in optimizer.state.values()
    )
    want = 2 * n * per_element + step_bytes
    got = finetune.optimizer_state_bytes(optimizer)
    hints = {
        2 * n * per_element: "you left out the `step` counters (one small tensor per parameter "
        "tensor): count every tensor in the state",
        2 * n: "you counted elements, not bytes: multiply numel() by element_size()",
        2 * n + tensors: "you counted elements, not bytes: multiply numel() by element_size()",
        2 * n * 4 + step_bytes: "you assumed 4 bytes per element: use element_size()",
        n * per_element: "you counted the parameters, not the optimizer's state",
    }
    assert got == want, (
        f"{STEP_F}: {got} bytes, expected {want} (exp_avg and exp_avg_sq: 2 x {n} x "
        f"{per_element} bytes, plus {step_bytes} bytes of step counters). "
        + hints.get(got, "sum numel() * element_size() over every tensor of optimizer.state.")
    )


def test_state_bytes_work_for_any_optimizer(finetune: ModuleType) -> None:
    model = two_layers()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    one_step(model, optimizer)
    got = finetune.optimizer_state_bytes(optimizer)
    assert got == 26 * 4, (
        f"{STEP_F}: SGD with momentum keeps one float32 buffer per parameter: expected "
        f"{26 * 4} bytes, got {got}. Count whatever tensors the state holds, not AdamW's names."
    )
