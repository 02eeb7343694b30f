"""grad_norm (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021).

score = sum over every Conv2d/Linear layer l of ||dL/dW_l||_2, the Euclidean (Frobenius) norm of the
gradient of its weight (biases not scored), where L = mean cross_entropy(f(x), y) over the whole batch.
BatchNorm: training mode (batch statistics), as in the reference (SamsungLabs/zero-cost-nas
``grad_norm``). Data: the actor's labelled batch, one forward and backward pass. A layer that gets no
gradient contributes 0. Sign: the raw quantity, higher is better.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import register, weight_gradients


@register("grad_norm")
def make():
    def grad_norm(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        norms = [g.detach().double().norm() for _, g in weight_gradients(net, inputs, targets)]
        return float(torch.stack(norms).sum().item()) if norms else 0.0

    return grad_norm
