"""SNIP (Lee et al. 2019) as a zero-cost proxy (Abdelfattah et al., "Zero-Cost Proxies for Lightweight
NAS", ICLR 2021).

score = sum over every weight entry of every Conv2d/Linear of |W ⊙ dL/dW| (biases not scored), where
L = mean cross_entropy(f(x), y) over the whole batch. This is the gradient of L with respect to a
multiplicative all-ones mask on each weight, which is how the reference (SamsungLabs/zero-cost-nas
``snip``) computes it; here it is taken directly from dL/dW. BatchNorm: training mode (batch
statistics). Data: the actor's labelled batch, one forward and backward pass. Sign: the raw quantity,
higher is better.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import register, weight_gradients


@register("snip")
def make():
    def snip(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        terms = [(w.detach() * g.detach()).abs().sum(dtype=torch.float64)
                 for w, g in weight_gradients(net, inputs, targets)]
        return float(torch.stack(terms).sum().item()) if terms else 0.0

    return snip
