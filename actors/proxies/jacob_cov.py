"""Jacobian covariance (Mellor et al. 2020, first version) as a zero-cost proxy (Abdelfattah et al.,
"Zero-Cost Proxies for Lightweight NAS", ICLR 2021).

J = d(sum of all outputs)/d(inputs), one row per sample (reshaped to (N, C*H*W)); with
BatchNorm in training mode the samples interact through the batch statistics, and J includes that,
as in the reference. C = the N x N correlation matrix of the rows of J (Pearson, float64), v its
eigenvalues, k = 1e-5:

    score = - sum over eigenvalues of ( log(v + k) + 1 / (v + k) )

Since log(u) + 1/u >= 1 with equality at u = 1, the score is <= -N and is highest when the samples'
Jacobians are uncorrelated: higher is better (the reference's sign, SamsungLabs/zero-cost-nas
``jacob_cov`` and NASLib ``jacov``, taken as is). Data: the actor's images (labels unused). A Jacobian row
that is constant (e.g. all zero: the output does not depend on the input) makes C undefined: the score
is then NaN, as the reference's NaN on its caught error. Eigenvalues come from ``eigvalsh`` (C is
symmetric), where the reference used a general ``eig``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import register

K = 1e-5


def jacob_cov_score(jacobian: torch.Tensor, k: float = K) -> float:
    """The score of a Jacobian (N, ...): -sum(log(v + k) + 1/(v + k)) over the eigenvalues v of its
    row correlation matrix; NaN where that matrix is undefined."""
    rows = jacobian.reshape(jacobian.shape[0], -1).double()
    corr = torch.corrcoef(rows)
    if not bool(torch.isfinite(corr).all()):
        return math.nan
    v = torch.linalg.eigvalsh(corr)
    return float(-(torch.log(v + k) + 1.0 / (v + k)).sum().item())


@register("jacob_cov")
def make(samples: int | None = None):
    """Option ``samples``: use only the first ``samples`` images of the batch (None = all). The score's
    scale and its ranking depend on N; NASLib's peer table used smaller batches than GradSign's 64."""
    if samples is not None and int(samples) < 2:
        raise ValueError(f"jacob_cov needs samples >= 2, got {samples}")

    def jacob_cov(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        net.train()
        if samples is not None:
            inputs = inputs[: int(samples)]
        with torch.enable_grad():
            x = inputs.detach().clone().requires_grad_(True)
            (jacobian,) = torch.autograd.grad(net(x).sum(), x)
        return jacob_cov_score(jacobian)

    return jacob_cov
