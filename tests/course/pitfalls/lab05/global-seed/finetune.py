"""Lab 05 finetune.py with one classic mistake: fine_tune seeds torch's global generator and draws batches from it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minituner.tasks import Batch, Example, sample_batch


@dataclass(frozen=True)
class Evaluation:
    """How a model does on a batch of examples.

    Attributes:
        loss: the mean cross-entropy over the scored tokens (``answer_loss``), a float.
        accuracy: the share of examples whose every scored token is predicted right, in [0, 1].
    """

    loss: float
    accuracy: float


@dataclass
class History:
    """What ``fine_tune`` saw.

    Attributes:
        train_loss: the loss of every step, in order (``len(train_loss) == steps``).
        evals: ``(step, Evaluation)`` pairs, at step 0 (before training), every ``eval_every``
            steps and after the last step; empty when there is no eval batch.
        seconds_per_step: the mean wall time of one ``train_step``, evaluations left out.
    """

    train_loss: list[float] = field(default_factory=list)
    evals: list[tuple[int, Evaluation]] = field(default_factory=list)
    seconds_per_step: float = 0.0


def learning_rate(step: int, steps: int, peak_lr: float, warmup_steps: int) -> float:
    """The learning rate of step ``step`` (0-based) of ``steps``: a linear warm-up to ``peak_lr``
    over ``warmup_steps`` steps, then a cosine decay towards 0 at the last step. Given code."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """An AdamW optimizer over the parameters of ``model`` that require grad, and no other.

    A frozen parameter gets no gradient, so AdamW would leave it alone anyway, unless weight
    decay is on (decoupled decay shrinks every parameter it holds, gradient or not). Handing
    AdamW only the trainable ones is also what keeps its state small: it allocates two running
    means for every parameter it holds (lab 01).

    Raises:
        ValueError: no parameter of ``model`` requires grad (the message says so).
    """
    # >>> lab05 step A: AdamW over the parameters that require grad, and none other
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(
            "no parameter of the model requires grad: wrap it with LoRA (lab 02) or unfreeze it"
        )
    return torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    # <<< lab05 step A


def answer_loss(logits: Tensor, targets: Tensor, loss_mask: Tensor) -> Tensor:
    """The mean cross-entropy of the scored tokens: those where ``loss_mask`` is 1.

    Shapes: logits: (B, T, V), targets: (B, T) token ids, loss_mask: (B, T) of 0.0 and 1.0
    -> a scalar tensor, differentiable with respect to ``logits``.

    The prompt (random letters nobody can predict) and the padding are not scored: the loss is
    the sum over scored tokens divided by the number of scored tokens.
    """
    # >>> lab05 step B: cross-entropy per token, then the mean over the scored tokens only
    per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)
    mask = loss_mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum()
    # <<< lab05 step B


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch) -> float:
    """One update of ``model`` on ``batch``; returns the loss before the update, as a float.

    Puts ``model`` in training mode, moves ``batch`` to the model's device, clears the gradients
    of the previous step, computes ``answer_loss`` of the model's logits, backpropagates and
    lets ``optimizer`` take its step.
    """
    # >>> lab05 step C: train mode, clear old gradients, forward, loss, backward, step
    model.train()
    batch = batch.to(_device_of(model))
    optimizer.zero_grad(set_to_none=True)
    logits = model(batch.inputs)  # (B, T, V)
    loss = answer_loss(logits, batch.targets, batch.loss_mask)
    # loss.backward(), in its typed spelling: mypy --strict rejects the untyped Tensor.backward.
    torch.autograd.backward(loss)
    optimizer.step()
    return loss.item()
    # <<< lab05 step C


def evaluate(model: nn.Module, batch: Batch) -> Evaluation:
    """The loss and exact-match accuracy of ``model`` on ``batch``, in eval mode, with no gradient.

    An example is right when, at every scored position, the most likely next token is the
    target: exactly the condition for greedy decoding to write the whole answer and its newline.
    Changes no weight and computes no gradient. The model is left in eval mode.
    """
    # >>> lab05 step D: eval mode and no_grad; loss and exact match over the scored tokens
    model.eval()
    batch = batch.to(_device_of(model))
    with torch.no_grad():
        logits = model(batch.inputs)  # (B, T, V)
        loss = answer_loss(logits, batch.targets, batch.loss_mask)
        right = (logits.argmax(dim=-1) == batch.targets) | (batch.loss_mask == 0)  # (B, T)
        accuracy = right.all(dim=1).float().mean()  # an example counts only when all is right
    return Evaluation(loss=loss.item(), accuracy=accuracy.item())
    # <<< lab05 step D


def fine_tune(
    model: nn.Module,
    train: Sequence[Example],
    steps: int,
    lr: float,
    batch_size: int = 32,
    seed: int = 0,
    eval_batch: Batch | None = None,
    eval_every: int = 0,
    warmup_steps: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> History:
    """Fine-tune ``model`` for ``steps`` steps on batches drawn from ``train``.

    A run is a function of its arguments: the batches come from ``sample_batch`` with a
    ``torch.Generator`` seeded with ``seed``, never from torch's global generator, so the same
    model and the same arguments give the same run, bit for bit (on the same machine). The
    learning rate of each step is ``learning_rate(step, steps, lr, warmup_steps)``.

    With ``eval_batch``, evaluates at step 0, every ``eval_every`` steps (when > 0) and after
    the last step, and leaves the model in training mode. ``on_step(step, loss)`` is called after
    every step (a progress bar, say), with ``step`` counted from 1.

    Returns:
        The ``History`` of the run.
    """
    # >>> lab05 step E: a seeded generator for the batches; step, record, evaluate
    torch.manual_seed(seed)
    generator = torch.default_generator
    optimizer = make_optimizer(model, lr)
    history = History()
    if eval_batch is not None:
        history.evals.append((0, evaluate(model, eval_batch)))
    seconds = 0.0
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step - 1, steps, lr, warmup_steps)
        batch = sample_batch(train, batch_size, generator)
        start = time.perf_counter()
        history.train_loss.append(train_step(model, optimizer, batch))
        seconds += time.perf_counter() - start
        if eval_batch is not None and (step == steps or (eval_every > 0 and step % eval_every == 0)):
            history.evals.append((step, evaluate(model, eval_batch)))
        if on_step is not None:
            on_step(step, history.train_loss[-1])
    history.seconds_per_step = seconds / steps if steps else 0.0
    model.train()
    return history
    # <<< lab05 step E


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """The bytes of every tensor ``optimizer`` keeps in its state, counted from the tensors.

    For AdamW that is, per parameter it holds, ``exp_avg`` and ``exp_avg_sq`` (the parameter's
    shape and dtype) and ``step`` (a one-element tensor): lab 01's closed form counts the first
    two. Zero before the first step, when the state is still empty.
    """
    # >>> lab05 step F: sum numel * element_size over the tensors of optimizer.state
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, Tensor):
                total += value.numel() * value.element_size()
    return total
    # <<< lab05 step F
