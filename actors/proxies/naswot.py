"""NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021).

Every nn.ReLU-family module (ReLU, ReLU6, LeakyReLU, PReLU, RReLU, ELU, as the peer's "ReLU in the type
name" rule) gives each sample n a binary code c_n = [input > 0] over all the units it sees (one per
input element). Summed over all calls of all such modules,

    K_ij = sum over units of [c_i == c_j] = c_i · c_j + (1 - c_i) · (1 - c_j)

(the number of units where samples i and j share the same activation bit = units minus their Hamming
distance), an N x N matrix of integers, and

    score = log |det K|        (torch.linalg.slogdet, in float64)

as in the paper's second version and NASLib's ``nwot``. BatchNorm: training mode (batch statistics).
Data: the actor's images (labels unused), one forward pass without gradients. Sign: the raw quantity,
higher is better (more distinct codes). A network whose codes coincide for two samples has det K = 0:
the score is then -inf. Only modules are seen: a functional relu (F.relu) adds nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import register

RELU_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU)
_EXACT_FLOAT32 = 2**24  # integers up to this are exact in float32


def add_codes(kernel: torch.Tensor, x: torch.Tensor) -> None:
    """kernel += c c^T + (1-c)(1-c)^T for the binary codes c = [x > 0] of x (N, ...), exactly.

    (1-c)(1-c)^T = D - s_i - s_j + c c^T with s = row sums and D units, so one matmul does.
    """
    codes = (x.detach().reshape(x.shape[0], -1) > 0)
    units = codes.shape[1]
    dtype = torch.float32 if units < _EXACT_FLOAT32 else torch.float64
    c = codes.to(dtype)
    same = (c @ c.T).double()
    s = codes.sum(1, dtype=torch.float64)
    kernel += 2.0 * same - s[:, None] - s[None, :] + float(units)


@register("naswot")
def make():
    def naswot(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        net.train()
        n = inputs.shape[0]
        kernel = torch.zeros((n, n), dtype=torch.float64, device=inputs.device)

        def hook(module: nn.Module, args, output) -> None:
            add_codes(kernel, args[0])

        handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, RELU_TYPES)]
        try:
            with torch.no_grad():
                net(inputs)
        finally:
            for h in handles:
                h.remove()
        return float(torch.linalg.slogdet(kernel).logabsdet.item())

    return naswot
