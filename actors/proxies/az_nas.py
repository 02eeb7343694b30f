"""AZ-NAS (Lee & Ham, "AZ-NAS: Assembling Zero-Cost Proxies for Network Architecture Search", CVPR 2024):
the three per-architecture components, and the population-level rank aggregation.

AZ-NAS scores an architecture by four components and ranks a population by the sum of their log
percentile ranks (``aggregate``). Three components are computed here from the feature maps at the ends
of the network's blocks; the fourth, complexity, is the FLOPs count (the existing ``flops`` proxy,
``flops.count_flops``). Registered proxies (one float each): ``az_nas_expressivity``,
``az_nas_progressivity``, ``az_nas_trainability``; ``components`` computes all of them (and complexity)
from one forward/backward pass. Columns for the aggregate: ``COLUMNS``.

Blocks. A network lists its block ends with a method ``feature_modules()`` (modules whose outputs end a
block, in forward order; NB201: the stem and its 17 cells and reduction blocks, as the authors' NB201
code; DARTS/NDS: the stem and every cell; NB101: the stem and the 9 cells). Each listed module must run
exactly once per forward pass and output a 4-d (N, C, H, W) tensor; a network without the method, with
fewer than two block ends, or breaking these rules is refused (ValueError). F_0 .. F_{L-1} are these
outputs for one batch, in training mode (BatchNorm on batch statistics; the authors call
``model.train()``).

Expressivity. For each F_l (N, C, H, W): the N*H*W rows of C channels, centred by their mean; their
covariance S = X^T X / (N*H*W) (divided by the row count, not minus one); its eigenvalues s
(``eigvalsh``); p = s / sum(s); the block's entropy e_l = -sum_i p_i * log(p_i + 1e-8).

    expressivity  = sum over l = 0..L-1 of e_l
    progressivity = min over l = 1..L-1 of (e_l - e_{l-1})

Trainability. For each pair (F_{l-1}, F_l), l = L-1 down to 1: a Rademacher tensor v shaped like F_l
(each entry -1 or +1 with probability 1/2) and u = v^T dF_l/dF_{l-1} (one vector-Jacobian product,
``autograd.grad`` from F_l to F_{l-1} only: a path from F_{l-1} to F_l through an earlier block end is not
part of it). Where F_l has a lower resolution than F_{l-1} by an integer factor r, u is pixel-unshuffled
by r (C_in*r*r channels at F_l's resolution). With P = N*H_out*W_out positions, U (P, C_in') and V
(P, C_out) the per-position channel vectors, M = U^T V / P estimates the block's per-position channel
Jacobian (E[v v^T] = I), and with sigma its largest singular value

    t_l = -sigma - 1 / (sigma + 1e-6) + 2        (at most about 0, at sigma = 1)
    trainability = mean over l of t_l

A block whose u equals v exactly (an identity block: the same shape and every entry equal) gets
t_l = -inf, as the authors' code, so the network's trainability is -inf. A block whose output does not
depend on its input (no gradient path) gets u = 0, sigma = 0, t_l = 2 - 1e6 (the authors' formula at
sigma = 0; their code would raise there). A resolution change that is not an integer downscale is
refused (ValueError).

Non-finite values. As in the authors' code, a component that comes out NaN (e.g. a block whose
features are all zero: 0/0 in p) is returned as -inf, the worst value; -inf also comes from identity
blocks. Nothing here returns NaN; NaN in a score table means the proxy failed on that row.

Sign: every component is higher-is-better, as is FLOPs in AZ-NAS's aggregate (the authors rank FLOPs
ascending: larger networks rank higher, within the search's budget).

The authors' protocol (cvlab-yonsei/AZ-NAS, ``NB201/ZeroShotProxy/compute_az_nas_score.py`` and the
``tss_general.ipynb`` notebook that runs it) and what is done here:

- data: a standard Gaussian input of the batch's shape (``torch.randn``; AZ-NAS is not among the
  notebook's real-input proxies), batch 64 (the NB201 loader's ``batch_size``). Option ``data``:
  ``"random"`` (default, the authors': N(0, 1) of ``inputs``' shape; the images' values are not used) or
  ``"batch"`` (the actor's images). Labels are never used.
- initialisation: the authors re-initialise every network before scoring (``init_model``, method
  ``kaiming_norm_fanin``): Conv2d/Linear weights ~ N(0, 2 / fan_in) (Kaiming normal, fan_in, ReLU gain),
  their biases 0, affine BatchNorm2d/GroupNorm weight 1 and bias 0. Option ``init``: ``"default"``
  (default: the weights as the space built them, PyTorch's default init or the library's own for NB101)
  or ``"authors"`` (that re-initialisation, in place, drawn from the generator below).
- precision: the authors work in float32 throughout; here the covariances, eigenvalues, M and its
  singular values are in float64 (the gradients themselves stay in the network's float32), so that
  round-off in a rank-deficient covariance (eigenvalues a little below 0) does not turn a block's entropy
  into NaN (hence -inf) where float32 happens to. Values differ from float32 ones by round-off only.
- random draws (the Gaussian input, the Rademacher vectors, the ``"authors"`` weights) come from a CPU
  ``torch.Generator`` seeded by SHA-256 of (option ``seed``, the input shape, the bytes of every
  parameter of the network as given, in ``net.parameters()`` order): deterministic in (weights, inputs'
  shape, options), the same on every device, and different for every network (as the authors' fresh
  draws from the global RNG per network) and every run seed (the scorer draws a network's weights from
  its run seed). The draws are in this order: ``"authors"`` weights (``net.modules()`` order), the input,
  then one Rademacher tensor per block pair from the last pair to the first, as the authors.

Cost: ``components`` is one forward pass with gradients and L-1 vector-Jacobian products (together
about one backward pass), plus L small eigen-decompositions and L-1 small SVDs, and a one-image forward
for FLOPs. Each registered proxy recomputes what it needs from scratch: expressivity and progressivity
one forward pass each without gradients, trainability one forward pass with gradients and the products;
scoring all three columns costs about one forward/backward pass plus two forward passes.
"""

from __future__ import annotations

import hashlib
import math
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import register, register_population
from .flops import count_flops

COMPONENTS = ("expressivity", "progressivity", "trainability")
# The score-table column of each AZ-NAS component, complexity included (the existing ``flops`` proxy).
COLUMNS = {"expressivity": "az_nas_expressivity", "progressivity": "az_nas_progressivity",
           "trainability": "az_nas_trainability", "complexity": "flops"}
INITS = ("default", "authors")
DATA = ("random", "batch")
ENTROPY_EPS = 1e-8
SIGMA_EPS = 1e-6


# ------------------------------------------------------------------------------------------ block ends


def feature_modules(net: nn.Module) -> list[nn.Module]:
    """``net.feature_modules()``; ValueError if the network has none or lists fewer than two."""
    method = getattr(net, "feature_modules", None)
    if not callable(method):
        raise ValueError(f"az_nas needs the network's block ends: {type(net).__name__} has no feature_modules() "
                         "method (a space's network lists the modules whose outputs end its blocks)")
    modules = list(method())
    if len(modules) < 2:
        raise ValueError(f"az_nas needs at least two block ends, {type(net).__name__}.feature_modules() "
                         f"lists {len(modules)}")
    return modules


def block_features(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of ``net.feature_modules()`` on one forward pass of ``x`` (in the current grad mode and
    the net's current train/eval mode). Hooks are removed before returning."""
    modules = feature_modules(net)
    outputs: list[list[torch.Tensor]] = [[] for _ in modules]
    order: list[int] = []

    def hook_for(i: int) -> Callable:
        def hook(module: nn.Module, args, output) -> None:
            outputs[i].append(output)
            order.append(i)

        return hook

    handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(modules)]
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    for i, (module, outs) in enumerate(zip(modules, outputs)):
        if len(outs) != 1:
            raise ValueError(f"az_nas: block end {i} ({type(module).__name__}) ran {len(outs)} times in one "
                             "forward pass; each listed module must run exactly once")
        if not isinstance(outs[0], torch.Tensor) or outs[0].dim() != 4:
            raise ValueError(f"az_nas: block end {i} ({type(module).__name__}) must output an (N, C, H, W) "
                             f"tensor, got {getattr(outs[0], 'shape', type(outs[0]).__name__)}")
    if order != sorted(order):
        raise ValueError(f"az_nas: feature_modules() of {type(net).__name__} are not in forward order "
                         f"(they ran in the order {order})")
    return [outs[0] for outs in outputs]


# ---------------------------------------------------------------------------------------- the components


def feature_entropy(feature: torch.Tensor) -> float:
    """e = -sum p log(p + 1e-8), p = the eigenvalues of the channel covariance of ``feature`` (N, C, H, W)
    over its N*H*W positions, normalised to sum 1 (float64)."""
    channels = feature.shape[1]
    rows = feature.detach().movedim(1, -1).reshape(-1, channels).double()
    rows = rows - rows.mean(dim=0, keepdim=True)
    eig = torch.linalg.eigvalsh(rows.T @ rows / rows.shape[0])
    p = eig / eig.sum()
    return float(-(p * torch.log(p + ENTROPY_EPS)).sum().item())


def expressivity_progressivity(entropies: Sequence[float]) -> tuple[float, float]:
    """(sum of the block entropies, min of their increases from one block end to the next)."""
    e = np.asarray(entropies, np.float64)
    return float(e.sum()), float(np.min(e[1:] - e[:-1]))


def _match_resolution(g_in: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """``g_in`` pixel-unshuffled down to ``size`` (H, W) when its resolution is an integer multiple."""
    (hi, wi), (ho, wo) = g_in.shape[2:], size
    if (hi, wi) == (ho, wo):
        return g_in
    r = hi // ho
    if r < 2 or hi != r * ho or wi != r * wo:
        raise ValueError(f"az_nas: a block goes from {hi}x{wi} to {ho}x{wo}, not an integer downscale")
    return F.pixel_unshuffle(g_in, r)


def block_trainability(f_in: torch.Tensor, f_out: torch.Tensor, v: torch.Tensor) -> float:
    """t = -sigma - 1/(sigma + 1e-6) + 2 for the block F_in -> F_out probed with the Rademacher tensor ``v``
    (shaped like ``f_out``); -inf for an identity block (see the module docstring)."""
    g_in = None
    if f_in.requires_grad and f_out.requires_grad:
        (g_in,) = torch.autograd.grad(f_out, f_in, grad_outputs=v, retain_graph=True, allow_unused=True)
    if g_in is None:
        g_in = torch.zeros_like(f_in)
    if g_in.shape == v.shape and torch.equal(g_in, v):
        return -math.inf
    g_in = _match_resolution(g_in, v.shape[2:])
    positions = v.shape[0] * v.shape[2] * v.shape[3]
    u = g_in.movedim(1, -1).reshape(positions, -1).double()
    w = v.movedim(1, -1).reshape(positions, -1).double()
    sigma = float(torch.linalg.svdvals(u.T @ w / positions).max().item())
    return -sigma - 1.0 / (sigma + SIGMA_EPS) + 2.0


def rademacher(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Entries -1.0 or +1.0 with probability 1/2 each (float32, CPU)."""
    return torch.randint(0, 2, tuple(shape), generator=generator).float().mul_(2.0).sub_(1.0)


def trainability(features: Sequence[torch.Tensor], generator: torch.Generator) -> float:
    """Mean of ``block_trainability`` over consecutive block ends, probed from the last pair to the first."""
    scores = []
    for k in reversed(range(1, len(features))):
        f_in, f_out = features[k - 1], features[k]
        v = rademacher(f_out.shape, generator).to(device=f_out.device, dtype=f_out.dtype)
        scores.append(block_trainability(f_in, f_out, v))
    return float(np.mean(scores))


def _worst_if_nan(value: float) -> float:
    return -math.inf if math.isnan(value) else float(value)


# ------------------------------------------------------------------------------- protocol and draws


def draw_generator(net: nn.Module, inputs: torch.Tensor, seed: int) -> torch.Generator:
    """The CPU generator of every random draw (see the module docstring): seeded by SHA-256 of
    (seed, the input shape, the bytes of every parameter)."""
    digest = hashlib.sha256(f"az_nas|{int(seed)}|{tuple(inputs.shape)}".encode())
    for p in net.parameters():
        digest.update(p.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    generator = torch.Generator()
    generator.manual_seed(int.from_bytes(digest.digest()[:8], "little") & (2**63 - 1))
    return generator


def authors_init(net: nn.Module, generator: torch.Generator) -> None:
    """The authors' ``kaiming_norm_fanin`` re-initialisation, in place: Conv2d/Linear weight ~ N(0, 2/fan_in)
    (drawn on the CPU from ``generator``, in ``net.modules()`` order), bias 0; affine BatchNorm2d/GroupNorm
    weight 1, bias 0."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()  # in_channels/groups * kernel, or in_features
                std = nn.init.calculate_gain("relu") / math.sqrt(fan_in)
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()


def check_options(init: str, data: str, seed: int) -> None:
    if init not in INITS:
        raise ValueError(f"unknown az_nas init {init!r}; valid: {', '.join(INITS)}")
    if data not in DATA:
        raise ValueError(f"unknown az_nas data {data!r}; valid: {', '.join(DATA)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"az_nas seed must be an integer, got {seed!r}")


def _features(net: nn.Module, inputs: torch.Tensor, init: str, data: str, seed: int, grad: bool
              ) -> tuple[list[torch.Tensor], torch.Generator]:
    """Block-end features under the protocol (options checked, draws in the documented order)."""
    check_options(init, data, seed)
    feature_modules(net)  # refuse a network without block ends before drawing anything
    generator = draw_generator(net, inputs, seed)
    if init == "authors":
        authors_init(net, generator)
    if data == "random":
        x = torch.randn(tuple(inputs.shape), generator=generator).to(device=inputs.device, dtype=inputs.dtype)
    else:
        x = inputs
    net.train()
    with torch.set_grad_enabled(grad):
        return block_features(net, x), generator


def components(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None, *,
               init: str = "default", data: str = "random", seed: int = 0, complexity: bool = True
               ) -> dict[str, float]:
    """All AZ-NAS components of ``net`` from one forward/backward pass: ``expressivity``, ``progressivity``,
    ``trainability`` and (``complexity=True``) ``complexity``, the forward MFLOPs of one image
    (``flops.count_flops``, torchstat convention: the ``flops`` proxy's value). ``targets`` is unused.
    Changes ``net`` (training mode; re-initialised under ``init="authors"``)."""
    features, generator = _features(net, inputs, init, data, seed, grad=True)
    expressivity, progressivity = expressivity_progressivity([feature_entropy(f) for f in features])
    out = {"expressivity": _worst_if_nan(expressivity), "progressivity": _worst_if_nan(progressivity),
           "trainability": _worst_if_nan(trainability(features, generator))}
    del features
    if complexity:
        out["complexity"] = count_flops(net, inputs[:1]) / 1e6
    return out


# ------------------------------------------------------------------------------------------ aggregate


def aggregate(columns: Mapping[str, Sequence[float]]) -> list[float]:
    """The AZ-NAS score of each row of a population: sum over the given columns of log(rank / n).

    ``columns``: equal-length value lists, one per component (for AZ-NAS: ``COLUMNS.values()``, i.e.
    az_nas_expressivity, az_nas_progressivity, az_nas_trainability, flops), rows aligned. Every column is
    ranked ascending (rank 1 = its smallest value, rank n = its largest: higher values, FLOPs included,
    are better); equal values share their average rank (``scipy.stats.rankdata(method="average")``, the
    authors' call); -inf ranks below and +inf above every finite value, equal infinities tie. n is the
    number of ranked rows. The result is higher-is-better, at most 0 (0 = the top row of every column).

    NaN (a proxy that failed on that row): such a row is left out of every ranking (n counts only the
    rows with no NaN in any column) and its score is NaN. The authors' data has no NaN (their per-arch
    code turns NaN into -inf, as ``components`` does), so on complete columns this is their aggregate
    exactly. Pure: no state, the columns are not changed. ValueError for no columns or unequal lengths.
    """
    from scipy.stats import rankdata

    if not columns:
        raise ValueError("aggregate needs at least one column")
    arrays = {name: np.asarray(values, dtype=np.float64).reshape(-1) for name, values in columns.items()}
    lengths = {name: a.size for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"aggregate needs columns of equal length, got {lengths}")
    size = next(iter(lengths.values()))
    complete = np.ones(size, bool)
    for a in arrays.values():
        complete &= ~np.isnan(a)
    out = np.full(size, math.nan)
    n = int(complete.sum())
    if n:
        total = np.zeros(n)
        for a in arrays.values():  # in the order given: the same float sums on every call
            total += np.log(rankdata(a[complete], method="average") / n)
        out[complete] = total
    return out.tolist()


# ----------------------------------------------------------------------------------- registered proxies


def _make(component: str) -> Callable:
    def make(init: str = "default", data: str = "random", seed: int = 0):
        """Options: ``init`` (default: the weights as built; authors: their Kaiming fan-in re-init),
        ``data`` (random: N(0, 1) of the batch's shape, the authors'; batch: the actor's images), ``seed``
        (mixed into the seed of the random draws)."""
        check_options(init, data, seed)

        if component == "trainability":
            def proxy(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
                features, generator = _features(net, inputs, init, data, seed, grad=True)
                return _worst_if_nan(trainability(features, generator))
        else:
            def proxy(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
                features, _ = _features(net, inputs, init, data, seed, grad=False)
                expressivity, progressivity = expressivity_progressivity([feature_entropy(f) for f in features])
                return _worst_if_nan(expressivity if component == "expressivity" else progressivity)

        proxy.__name__ = proxy.__qualname__ = COLUMNS[component]
        # The three columns come from one pass: a scorer asked for several of them computes the family once
        # per network (``actors.scorer``); alone, each computes only what it needs.
        proxy.family = ("az_nas", init, data, seed)
        proxy.family_values = lambda net, inputs, targets: {
            COLUMNS[k]: v for k, v in components(net, inputs, targets, init=init, data=data, seed=seed,
                                                  complexity=False).items()}
        return proxy

    return make


for _component in COMPONENTS:
    register(COLUMNS[_component])(_make(_component))


register_population("az_nas", tuple(COLUMNS.values()))(aggregate)
