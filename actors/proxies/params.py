"""params: the number of parameters of the network, in millions (float).

Every parameter tensor of the module counts once (shared tensors once), trainable or not, BatchNorm
affine parameters and biases included: the count NAS-Bench-201 and the NASLib peer data report
(``params`` column of NAS-Bench-Suite-Zero). BatchNorm mode: irrelevant; data: none (inputs unused).
Sign: the raw count, higher is better (bigger nets of a space are usually the more accurate ones; this
is the usual size baseline for zero-cost proxies).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import register


@register("params")
def make():
    def params(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        return sum(p.numel() for p in net.parameters()) / 1e6

    return params
