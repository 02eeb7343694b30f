"""MeCo (Jiang, Wang & Bie, "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via Minimum
Eigenvalue of Correlation", NeurIPS 2023) and its optimised variant MeCo_opt.

One forward pass, without gradients, in training mode (BatchNorm uses the statistics of what is
forwarded), of the first ``samples`` images of the actor's batch (default 1: one image). A forward hook
on *every* module of the network (``net.modules()``: leaves, containers such as Sequential or a cell, and
the root) sees each output; an output that is a tensor of at least 3 dims (N, C, ...) gives the feature
matrix of the first image

    F = output[0] reshaped to (C, P)        (C channels as rows, P = the positions H*W as columns)

and R = the C x C Pearson correlation matrix of its rows (``torch.corrcoef``), with every NaN or
infinite entry set to 0 (a constant channel, e.g. all zero after a ReLU, gives a zero row and column,
its diagonal included; a map with one position, P = 1, gives the zero matrix). Its layer value is

    meco: lambda_min(R)
    opt:  lambda_min(R_8) * C / 8, R_8 = the correlation matrix of 8 channels drawn at random without
          replacement from the C (C <= 8: all C channels and a factor of 1, i.e. the meco value)

and score = the sum of the layer values over every hook call, non-finite values left out. A module called
twice adds twice; a container whose output is its last child's adds that matrix again, as in the authors'
code. Higher is better (the paper's sign: a larger minimum eigenvalue, i.e. less correlated channels,
predicts faster convergence and better generalisation). One channel (C = 1): R = [1] (or [0] for a
constant channel), so the value is 1 (or 0).

``variant`` (the option that picks the proxy): ``"meco"`` (default) or ``"opt"`` (MeCo_opt). opt changes
only the per-layer value: instead of all C channels it correlates 8 of them, chosen at random, and
rescales the minimum eigenvalue by C/8 (cheaper: an 8 x 8 eigenproblem per layer); hooks, data and
the sum are the same. The 8 channels come from a ``torch.Generator`` seeded with ``seed`` (default 0)
at every call, one ``randperm(C)[:8]`` per contributing hook call in forward order, so the score depends
only on (weights, inputs, seed). ``samples``: the number of images forwarded (None = the whole batch);
the features are always the first image's, the others only enter through BatchNorm's batch statistics.

Refused with a ValueError: a network none of whose modules outputs a tensor of >= 3 dims (an MLP on flat
inputs has no feature maps to correlate), and ``samples`` / ``variant`` / ``seed`` of the wrong kind.

The authors' code (HamsterMimi/MeCo, read at its January 2024 head): ``correlation/NAS_Bench_201.py``
``get_score`` (the NB201 correlation experiment, measures ``meco`` and ``meco_opt``), and the
zero-cost-nas measure ``foresight/pruners/measures/meco.py`` in two copies (``correlation/foresight``,
used by the NB101 correlation script, and ``zero-cost-nas/foresight``, used by their search pipelines):
- hooks: ``register_forward_hook`` on every module of ``named_modules()``; the hook takes
  ``data_output[0].detach()``, reshapes it to ``(shape[0], -1)``, ``torch.corrcoef``, NaN and inf set to
  0, ``torch.linalg.eig`` and the minimum real part; opt: ``random.sample(range(n), 8)`` rows (Python's
  unseeded ``random``, so not reproducible) and ``* n / 8``. The values are summed after dropping NaN and
  inf. Here: the same per output, in float64 with ``eigvalsh`` (R is symmetric, so its eigenvalues are
  real and equal ``eig``'s up to rounding; the authors: float32 ``corrcoef`` and ``eig``), so values agree
  to float32 rounding (measured on three NB201 cells, CIFAR-10 image: scores 7.6 to 31.7, differences
  1e-6 to 2e-5). A rank-deficient R (no more positions than channels, e.g. the 8 x 8 maps of 64
  channels in NB201's last stage) has lambda_min = 0 up to rounding, float64's here, float32's (of either
  sign) in the authors' code.
- data: ``NAS_Bench_201.py`` forwards one real training image (``--batch_size 1`` default, CIFAR at 32 x
  32), the fresh network in training mode, default initialisation; so does this module by default
  (``samples=1``). The ``zero-cost-nas`` copy forwards the whole batch it is given and takes sample 0 of
  each output (``samples=None`` here). The ``correlation/foresight`` copy ignores its data and forwards
  one ``torch.randn(1, 3, 64, 64)`` image (the abstract's "one random data"); a random input is not
  offered here: the actor's batch is the data. Labels are never used.
- outputs of fewer than 3 dims (a Linear's (N, K), the logits of the root module): the authors' hook
  correlates the K values of sample 0 as K rows of one column each, all NaN, zeroed, so they add exactly
  0 (meco, K >= 2); they are skipped here, which equals that (and avoids the authors' crashes for K = 1,
  and in opt for K < 8). Outputs that are not tensors (tuples, lists, dicts, None) are skipped; the
  authors' hook would take the tuple's first element, a whole batched tensor, and correlate its samples.
  One-channel maps and opt on maps of fewer than 8 channels crash the authors' code; their values here
  are stated above.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import register

VARIANTS = ("meco", "opt")
OPT_CHANNELS = 8


def feature_matrix(output: object) -> torch.Tensor | None:
    """The first sample's (C, positions) matrix of a module output, float64; None for outputs skipped."""
    if not isinstance(output, torch.Tensor) or output.dim() < 3:
        return None
    first = output[0].detach()
    return first.reshape(first.shape[0], -1).double()


def min_correlation_eigenvalue(rows: torch.Tensor) -> torch.Tensor:
    """lambda_min of the Pearson correlation matrix of ``rows`` (C, P), NaN/inf entries set to 0 first."""
    c, positions = rows.shape
    if positions < 2:  # every correlation is undefined (NaN), so R is the zero matrix
        return torch.zeros((), dtype=rows.dtype, device=rows.device)
    corr = torch.corrcoef(rows).reshape(c, c)  # corrcoef of one row is a 0-d tensor
    corr = torch.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)
    return torch.linalg.eigvalsh(corr)[0]


def opt_value(rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """MeCo_opt's layer value: lambda_min over OPT_CHANNELS random channels, times C / OPT_CHANNELS."""
    c = rows.shape[0]
    if c <= OPT_CHANNELS:
        return min_correlation_eigenvalue(rows)
    pick = torch.randperm(c, generator=generator)[:OPT_CHANNELS].to(rows.device)
    return min_correlation_eigenvalue(rows[pick]) * (c / OPT_CHANNELS)


def check_options(variant: object, samples: object, seed: object) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown meco variant {variant!r}; valid variants: {', '.join(VARIANTS)}")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise ValueError(f"meco option samples must be an integer >= 1 or None (the whole batch), got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"meco option seed must be an integer, got {seed!r}")


@register("meco")
def make(variant: str = "meco", samples: int | None = 1, seed: int = 0):
    """Options: ``variant`` (meco | opt: 8 random channels per layer, lambda_min rescaled by C/8),
    ``samples`` (images forwarded, default 1; None = the whole batch; features of the first image only),
    ``seed`` (opt's channel draws)."""
    check_options(variant, samples, seed)

    def meco(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        if inputs.shape[0] < 1:
            raise ValueError("meco needs at least one image")
        generator = torch.Generator().manual_seed(seed)
        values: list[torch.Tensor] = []

        def hook(module: nn.Module, args, output) -> None:
            rows = feature_matrix(output)
            if rows is not None:
                values.append(min_correlation_eigenvalue(rows) if variant == "meco" else opt_value(rows, generator))

        net.train()
        handles = [m.register_forward_hook(hook) for m in net.modules()]
        try:
            with torch.no_grad():
                net(inputs if samples is None else inputs[:samples])
        finally:
            for h in handles:
                h.remove()
        if not values:
            raise ValueError("meco needs feature maps: no module of this network outputs a tensor of >= 3 dims "
                             "(N, C, ...), so there is no channel correlation to take")
        v = torch.stack(values)
        return float(v[torch.isfinite(v)].sum().item())

    return meco


@register("meco_opt")
def make_opt(samples: int | None = 1, seed: int = 0):
    """MeCo_opt under its own name, so that one run can score both variants: ``meco`` with
    ``variant="opt"`` (same options otherwise)."""
    return make(variant="opt", samples=samples, seed=seed)
