"""The given MiniGPT (src/minituner/minigpt.py) does what its docstrings and the labs say.

Not graded: MiniGPT is given code, the same for every learner, so these run in `make check`.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from minituner.minigpt import LINEAR_NAMES, MiniGPT, MiniGPTConfig, build_minigpt, lm_loss

pytestmark = pytest.mark.course


def test_default_size_and_layer_names() -> None:
    model = MiniGPT(MiniGPTConfig())
    assert sum(p.numel() for p in model.parameters()) == 220_544  # quoted in theory/04
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert {n.rpartition(".")[2] for n in linears} == set(LINEAR_NAMES)
    assert "blocks.3.attn.q_proj" in linears and "blocks.0.mlp.fc2" in linears
    assert model.lm_head.bias is None


def test_head_is_not_tied_to_the_embedding() -> None:
    model = MiniGPT(MiniGPTConfig())
    assert model.lm_head.weight is not model.tok_emb.weight
    assert model.lm_head.weight.data_ptr() != model.tok_emb.weight.data_ptr()


def test_no_bias_config_has_no_bias_anywhere() -> None:
    model = MiniGPT(MiniGPTConfig(bias=False))
    assert not [n for n, _ in model.named_parameters() if n.endswith("bias")]


def test_forward_shape_and_loss_at_init() -> None:
    config = MiniGPTConfig()
    model = build_minigpt(config, seed=0)
    idx = torch.randint(0, config.vocab_size, (3, 17))
    logits = model(idx)
    assert logits.shape == (3, 17, config.vocab_size) and logits.dtype == torch.float32
    loss = lm_loss(logits, idx).item()
    assert abs(loss - math.log(config.vocab_size)) < 0.2  # small init: near-uniform predictions


def test_is_causal() -> None:
    config = MiniGPTConfig()
    model = build_minigpt(config, seed=0).eval()
    idx = torch.randint(0, config.vocab_size, (2, 12))
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % config.vocab_size
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.equal(a[:, 7:], b[:, 7:])


def test_build_is_deterministic_and_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first, second = build_minigpt(seed=5), build_minigpt(seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), second.parameters()))
    other = build_minigpt(seed=6)
    assert not torch.equal(first.lm_head.weight, other.lm_head.weight)


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n_head"):
        MiniGPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="n_layer"):
        MiniGPTConfig(n_layer=0)
    with pytest.raises(ValueError, match="dropout"):
        MiniGPTConfig(dropout=1.0)
    model = MiniGPT(MiniGPTConfig(block_size=8))
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))
