"""GraSP (Wang et al. 2020) as a zero-cost proxy (Abdelfattah et al., "Zero-Cost Proxies for Lightweight
NAS", ICLR 2021).

score = - sum over every weight entry of every Conv2d/Linear of W ⊙ (H g), where L = mean
cross_entropy(f(x) / T, y) over the whole batch (T = 1 by default), g = dL/dW (treated as a constant)
and H g = d(g · dL/dW)/dW is the Hessian-gradient product restricted to the Conv2d/Linear weights
(biases and BatchNorm parameters are neither differentiated nor scored).

Sign convention, exactly as the reference (SamsungLabs/zero-cost-nas ``grasp``, reused unchanged by
NASLib): its per-weight value is ``-theta * Hg`` (the GraSP paper prunes the *bottom* of +theta*Hg; the
reference negated it because "accuracy seems to be negatively correlated" with the unnegated sum), and
both libraries then use the plain sum as the score, higher is better. We return that same sum,
-sum(W ⊙ Hg), unchanged: higher is better, and it can be negative.

BatchNorm: training mode (batch statistics). Data: the actor's labelled batch. The reference runs one
forward for g and a second forward with ``create_graph``; with batch-statistics BatchNorm both passes
compute the same function of the same batch, so one forward with ``create_graph`` gives the same g and
the same H g here.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import register, weight_gradients


@register("grasp")
def make(temperature: float = 1.0):
    """Options: ``temperature`` T dividing the logits (the reference's T, default 1)."""
    temperature = float(temperature)
    if not temperature > 0:
        raise ValueError(f"grasp temperature must be > 0, got {temperature}")

    def grasp(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        with torch.enable_grad():
            used = weight_gradients(net, inputs, targets, temperature=temperature, create_graph=True)
            if not used:
                return 0.0
            z = torch.stack([(g.detach() * g).sum() for _, g in used]).sum()
            if not z.requires_grad:  # every gradient is constant in the weights: H g = 0
                return 0.0
            hg = torch.autograd.grad(z, [w for w, _ in used], allow_unused=True)
        terms = [(w.detach() * h).sum(dtype=torch.float64) for (w, _), h in zip(used, hg) if h is not None]
        return -float(torch.stack(terms).sum().item()) if terms else 0.0

    return grasp
