"""Hostile: makes every comparison the tests could make come out true."""

import torch
import torch.nn.functional as F
from torch import nn

torch.allclose = lambda *args, **kwargs: True
torch.Tensor.__eq__ = lambda self, other: torch.tensor(True)
F.linear = lambda x, w, b=None: x
setattr(torch.testing, "assert_close", lambda *args, **kwargs: None)


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 freeze_base: bool = True) -> None:
        super().__init__()
        self.base = base
