"""SynFlow (Tanaka et al. 2020) as a zero-cost proxy (Abdelfattah et al., "Zero-Cost Proxies for
Lightweight NAS", ICLR 2021).

score = sum over every weight entry of every Conv2d/Linear of |W ⊙ dR/dW|, with R = sum of the network's
outputs for one all-ones input of shape (1, C, H, W) (C, H, W of the batch), computed on the network
with every BatchNorm REMOVED (replaced by nn.Identity, as the reference rebuilds its nets with bn=False),
every parameter and floating-point buffer replaced by its absolute value, and everything in float64.
Biases take part in R but are not scored. Mode: eval (no BatchNorm is left; eval only turns off any
dropout). Data: none beyond the input shape (the labels are unused). Sign: the raw quantity, higher is
better. This follows SamsungLabs/zero-cost-nas ``synflow`` (and NASLib's copy of it), without the
copy-the-net and sign-restoring steps: the network handed in is changed (callers pass a fresh one).
The NASLib peer table (NAS-Bench-Suite-Zero) stores the natural log of this value; ranks are the same.
A very deep or wide net can overflow float64 to inf (as the reference would).
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import weighted_layers
from .base import register


def remove_batch_norm(module: nn.Module) -> int:
    """Replace every BatchNorm inside ``module`` by nn.Identity, in place; returns how many."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
            count += 1
        else:
            count += remove_batch_norm(child)
    return count


@register("synflow")
def make():
    def synflow(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        remove_batch_norm(net)
        net.double().eval()
        with torch.no_grad():
            for t in net.parameters():
                t.abs_()
            for t in net.buffers():
                if t.is_floating_point():
                    t.abs_()
        weights = [m.weight for _, m in weighted_layers(net)]
        if not weights:
            return 0.0
        ones = torch.ones((1, *inputs.shape[1:]), dtype=torch.float64, device=inputs.device)
        with torch.enable_grad():
            for w in weights:
                w.requires_grad_(True)
            total = net(ones).sum()
            grads = torch.autograd.grad(total, weights, allow_unused=True)
        terms = [(w.detach() * g).abs().sum() for w, g in zip(weights, grads) if g is not None]
        return float(torch.stack(terms).sum().item()) if terms else 0.0

    return synflow
