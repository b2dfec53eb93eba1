"""MiniGPT: a small GPT, written to be read. Given code: you use it from Lab 01 on, you never edit it.

It follows nanoGPT's ``model.py`` (Karpathy) in spirit: a config dataclass, token and position
embeddings, a stack of pre-norm transformer blocks, a final LayerNorm and a language-model head.
Two choices differ from nanoGPT, both so that LoRA has clear places to go and clear counts:

- attention keeps four separate ``nn.Linear`` projections, ``attn.q_proj``, ``attn.k_proj``,
  ``attn.v_proj`` and ``attn.o_proj`` (nanoGPT fuses q, k and v into one ``c_attn``), and the MLP
  has ``mlp.fc1`` and ``mlp.fc2``. The LoRA paper adapts ``Wq``, ``Wk``, ``Wv`` and ``Wo``
  separately (section 7.1 of arXiv 2106.09685); so can you.
- ``lm_head`` is NOT tied to the token embedding: it has its own weight. Every parameter then
  belongs to exactly one module, so counting (Lab 01) and freezing (Lab 02) never meet a shared
  tensor. ``src/minituner/BLUEPRINT.md`` says more.

Shapes use nanoGPT's letters: B batch, T time (tokens), C channels (``n_embd``), V vocabulary,
nh heads, hs head size (``C // nh``).

Nothing here seeds the global random generator. For a model that is the same on every run, build
it with ``build_minigpt(config, seed=0)``, which draws every weight from its own
``torch.Generator``; ``MiniGPT(config)`` draws from torch's global generator like any
``nn.Module``, so seed that yourself (the graded tests do, through a fixture).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: The names of MiniGPT's ``nn.Linear`` layers, as the last part of their dotted names.
#: ``blocks.<i>.attn.{q,k,v,o}_proj`` and ``blocks.<i>.mlp.fc{1,2}`` exist once per block;
#: ``lm_head`` once per model.
LINEAR_NAMES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "lm_head")


@dataclass(frozen=True)
class MiniGPTConfig:
    """The sizes of a MiniGPT. The defaults build a 220,544-parameter model that runs in
    milliseconds on a CPU: every graded test can afford to build several.

    Attributes:
        vocab_size: V, the number of token ids (inputs are in ``[0, V)``).
        block_size: the longest sequence the model accepts (the number of positions).
        n_layer: the number of transformer blocks.
        n_head: attention heads per block; must divide ``n_embd``.
        n_embd: C, the width of the residual stream.
        bias: whether the linear layers and LayerNorms have a bias (``lm_head`` never has one).
        dropout: dropout probability on attention weights and residual branches (0 = off).
    """

    vocab_size: int = 128
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    bias: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"MiniGPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"MiniGPTConfig.n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MiniGPTConfig.dropout must be in [0, 1), got {self.dropout!r}")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each token sees itself and the tokens before it."""

    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    o_proj: nn.Linear

    def __init__(self, config: MiniGPTConfig) -> None:
        super().__init__()
        C = config.n_embd
        self.n_head = config.n_head
        # Four separate (C, C) projections, not one fused (3C, C) one: LoRA can target each.
        self.q_proj = nn.Linear(C, C, bias=config.bias)
        self.k_proj = nn.Linear(C, C, bias=config.bias)
        self.v_proj = nn.Linear(C, C, bias=config.bias)
        self.o_proj = nn.Linear(C, C, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        B, T, C = x.shape
        hs = C // self.n_head
        # Split C into nh heads of size hs, and move the heads next to the batch.
        q = self.q_proj(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.v_proj(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)

        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, T, T)
        # Token t may attend to tokens 0..t only: the model must not read the future.
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T)
        att = att.masked_fill(~causal, float("-inf"))
        att = F.softmax(att, dim=-1)
        att = self.attn_dropout(att)
        y = att @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        out: Tensor = self.resid_dropout(self.o_proj(y))  # (B, T, C)
        return out


class MLP(nn.Module):
    """The position-wise feed-forward network: C -> 4C -> C with a GELU in between."""

    fc1: nn.Linear
    fc2: nn.Linear

    def __init__(self, config: MiniGPTConfig) -> None:
        super().__init__()
        C = config.n_embd
        self.fc1 = nn.Linear(C, 4 * C, bias=config.bias)
        self.fc2 = nn.Linear(4 * C, C, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        h = F.gelu(self.fc1(x))  # (B, T, 4C)
        out: Tensor = self.dropout(self.fc2(h))  # (B, T, C)
        return out


class Block(nn.Module):
    """One pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: MiniGPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        x = x + self.attn(self.ln_1(x))  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


class MiniGPT(nn.Module):
    """A decoder-only transformer language model.

    Parameters, by dotted name (``i`` runs over the blocks; C = n_embd, V = vocab_size):

        tok_emb.weight               (V, C)            token embedding
        pos_emb.weight               (block_size, C)   learned position embedding
        blocks.i.ln_1                weight (C,), bias (C,)
        blocks.i.attn.q_proj         weight (C, C), bias (C,); likewise k_proj, v_proj, o_proj
        blocks.i.ln_2                weight (C,), bias (C,)
        blocks.i.mlp.fc1             weight (4C, C), bias (4C,)
        blocks.i.mlp.fc2             weight (C, 4C), bias (C,)
        ln_f                         weight (C,), bias (C,)
        lm_head.weight               (V, C)            no bias; not tied to tok_emb

    With ``config.bias = False`` no LayerNorm and no linear layer has a bias.

    Args:
        config: the sizes (``MiniGPTConfig()`` for the defaults).
        generator: where the initial weights are drawn from; None uses torch's global
            generator. ``build_minigpt`` passes a freshly seeded one.
    """

    config: MiniGPTConfig
    tok_emb: nn.Embedding
    pos_emb: nn.Embedding
    blocks: nn.ModuleList
    ln_f: nn.LayerNorm
    lm_head: nn.Linear

    def __init__(
        self, config: MiniGPTConfig | None = None, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.config = MiniGPTConfig() if config is None else config
        cfg = self.config
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        # Untied: its own (V, C) weight, not tok_emb.weight (nanoGPT ties the two).
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """GPT-2's initialisation, as nanoGPT writes it: every weight from N(0, 0.02), the two
        projections that write into the residual stream (``o_proj``, ``fc2``) from
        N(0, 0.02 / sqrt(2 * n_layer)), biases 0, LayerNorms at weight 1 and bias 0."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith(("o_proj", "fc2")) else 0.02
                module.weight.normal_(0.0, std, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, 0.02, generator=generator)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()

    def forward(self, idx: Tensor) -> Tensor:
        """Next-token logits for every position.

        Shapes: idx: (B, T) token ids (int64) in ``[0, vocab_size)``, ``T <= block_size``
        -> logits: (B, T, V). ``logits[:, t]`` depends on ``idx[:, : t + 1]`` only.
        """
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(
                f"sequence length {T} is longer than block_size {self.config.block_size}"
            )
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.tok_emb(idx) + self.pos_emb(pos)  # (B, T, C) + (T, C) -> (B, T, C)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        x = self.ln_f(x)  # (B, T, C)
        logits: Tensor = self.lm_head(x)  # (B, T, V)
        return logits


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """The mean cross-entropy of next-token predictions.

    Shapes: logits: (B, T, V), targets: (B, T) token ids -> a scalar tensor.
    """
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T))


def build_minigpt(config: MiniGPTConfig | None = None, seed: int = 0) -> MiniGPT:
    """A MiniGPT whose weights depend on ``seed`` only, never on torch's global generator.

    The same ``config`` and ``seed`` give bit-identical weights on every call and every run
    (on the CPU, where the model is built; move it afterwards with ``.to(device)``). Torch's
    global generator is left as it was: building a model does not shift your random numbers.
    """
    generator = torch.Generator().manual_seed(seed)
    # The layers' own constructors draw from the global generator before reset_parameters
    # overwrites every weight from `generator`: fork_rng puts the global state back afterwards.
    with torch.random.fork_rng(devices=[]):
        return MiniGPT(config, generator=generator)
