"""Fisher (Theis et al. 2018; Turner et al. 2020) as a zero-cost proxy (Abdelfattah et al., "Zero-Cost
Proxies for Lightweight NAS", ICLR 2021).

For every output a (the activation straight out of a Conv2d or Linear, before whatever follows it: in
NB201 the BatchNorm, then the next ReLU) with loss L = mean cross_entropy(f(x), y) over the batch:

    fisher_k = 0.5 * mean over samples n of ( sum over positions of a[n,k,...] * dL/da[n,k,...] )^2

per output channel k (for a Linear on (N, out) there are no positions to sum). The reference
(SamsungLabs/zero-cost-nas ``fisher``, reused unchanged by NASLib) then broadcasts each channel's value
to every weight of that channel and sums per weight, so

    score = sum over layers, channels k of fan_in * fisher_k        (per_weight=True, the default)

with fan_in = weight.numel() / out_channels (C_in/groups * kh * kw for a Conv2d, in_features for a
Linear). ``per_weight=False`` gives the plain channel sum, sum over layers and channels of fisher_k.
A layer called several times in one forward adds one fisher term per call (the reference keeps only
the last call's activation). The outputs of Conv2d/Linear must not be modified in place afterwards.

BatchNorm: training mode (batch statistics). Data: the actor's labelled batch, one forward and one
backward pass (gradients are taken with respect to the activations only; no weight gradients).
Sign: the raw quantity (>= 0), higher is better.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import weighted_layers
from .base import register


@register("fisher")
def make(per_weight: bool = True):
    """Options: ``per_weight`` (True: weight each channel by its fan-in, as the reference's per-weight
    sum does; False: plain sum over channels)."""

    def fisher(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        net.train()
        layers = weighted_layers(net)
        acts: list[tuple[int, torch.Tensor]] = []  # (fan_in, activation) per call
        handles = []

        def make_hook(fan_in: int):
            def hook(module: nn.Module, args, output: torch.Tensor) -> None:
                if isinstance(output, torch.Tensor) and output.requires_grad:
                    acts.append((fan_in, output))
            return hook

        for _, m in layers:
            fan_in = m.weight.numel() // m.weight.shape[0] if per_weight else 1
            handles.append(m.register_forward_hook(make_hook(fan_in)))
        try:
            with torch.enable_grad():
                loss = F.cross_entropy(net(inputs), targets)
                if not acts:
                    return 0.0
                grads = torch.autograd.grad(loss, [a for _, a in acts], allow_unused=True)
        finally:
            for h in handles:
                h.remove()
        terms = []
        for (fan_in, act), grad in zip(acts, grads):
            if grad is None:
                continue
            prod = act.detach() * grad
            g_nk = prod.sum(dim=tuple(range(2, prod.dim()))) if prod.dim() > 2 else prod
            terms.append(g_nk.double().pow(2).mean(0).sum() * (0.5 * fan_in))
        return float(torch.stack(terms).sum().item()) if terms else 0.0

    return fisher
