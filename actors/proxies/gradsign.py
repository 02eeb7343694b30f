"""GradSign (Zhang & Jia, ICLR 2022).

score = sum over every weight entry k of every Conv2d/Linear of | sum_i sign(g_ik) |, where g_i is the
gradient of cross_entropy(f(x_i), y_i) for sample i alone, taken at initialisation in training mode with
BatchNorm normalising each sample by its own statistics. sign(0) = 0; non-finite g_ik are left out of
the inner sum and counted on the returned ``Score``. Higher is better (more samples agree).
Data: the actor's labelled batch. Biases and BatchNorm parameters are not scored.
"""

from __future__ import annotations

import torch
from torch import nn

from ..per_sample import sign_sums
from .base import Score, register


@register("gradsign")
def make(engine: str = "hooks", chunk_size: int | None = None):
    def gradsign(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Score:
        sums = sign_sums(net, inputs, targets, engine=engine, chunk_size=chunk_size)
        return Score(sums.score(), nonfinite=sums.nonfinite)

    return gradsign
