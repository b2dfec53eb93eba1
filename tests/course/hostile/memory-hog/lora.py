"""Hostile: asks for 32 GiB at import (and would fill it), to take the grader's machine down."""

import torch

HOG = torch.ones(2**33)  # 2**33 float32 = 32 GiB
