"""ZiCo (Li, Yang, Bhardwaj & Marculescu, "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on
Gradients", ICLR 2023).

The actor's batch of N labelled images is cut, in order, into S = ``splits`` equal parts of N/S images.
For part s, g_s = the gradient of the mean cross-entropy of the network's logits on that part w.r.t. the
weight of every Conv2d and Linear (biases and BatchNorm parameters are not scored; a frozen weight is
made trainable and scored, as by the other gradient proxies here), one forward and backward pass per
part, in training mode (BatchNorm normalises with the part's own batch statistics).
For each such layer l, over its weight entries k whose standard deviation across the S parts is not
zero,

    mean_k = (1/S) sum_s |g_sk|,    std_k = sqrt((1/S) sum_s (g_sk - (1/S) sum_s g_sk)^2)   (ddof 0)
    Z_l    = sum_k mean_k / std_k

and

    score = sum over layers with Z_l != 0 of ln(Z_l)

(natural log; a layer where no entry has a nonzero std, e.g. one with no or identical gradients in every
part, is left out). Higher is better (the paper's sign: a larger mean and smaller spread of the gradients
predict faster, better training). A network in which every layer is left out scores 0.0, the authors'
empty sum; it is not the lowest possible score (ln Z_l < 0 when Z_l < 1).

Options: ``splits`` (S, default 2). The batch must split into S equal parts: N divisible by S and
S >= 2 (one part has no spread: every std would be 0); anything else is refused with a ValueError before
the network runs. Parts of one image work where the network's BatchNorm layers see more than one value
per channel (Conv2d feature maps); BatchNorm1d on a part of one image fails in torch.

Non-finite gradient entries: an entry with a non-finite g_sk in any part is left out of its layer's
sum, and their count is carried on the returned ``Score`` (``nonfinite``), which flags the row.

The authors' code (SLDGroup/ZiCo ``ZeroShotProxy/compute_zico.py``, ``getzico``/``caculate_zico``):
- one gradient sample is one *mini-batch* of the train loader: ``zero_grad``, forward, mean
  ``nn.CrossEntropyLoss``, ``backward``, read ``weight.grad`` of every ``nn.Conv2d``/``nn.Linear`` (Linear
  is included); ``evolution_search.py`` takes ``--maxbatch 2`` batches (default) of ``--batch_size``
  (128 in their ImageNet scripts). Two batches of B equal two parts of one batch of 2B here.
- per layer ``np.std(axis=0)`` (ddof 0), the entries with ``np.nonzero(std)``, ``np.sum(mean|g| / std)``,
  ``np.log`` (natural log), the layer skipped where that sum is 0; the layer logs are summed. Here the
  same, in float64 from the float32 gradients (the authors: float32 numpy), so values agree to float32
  rounding, not bit for bit.
- training mode, PyTorch default initialisation, real images (ImageNet in the paper's search).
- a layer whose weight gets no gradient crashes the original (``.grad`` is None); here it is left out,
  as the ports that check for it (AZ-NAS's) do. A weight shared by two modules counts once per module,
  as the authors' per-module loop counts it.
- non-finite gradients make the authors' score NaN; here they are left out and counted (above).

The one-batch-split-in-two protocol (``splits=2``) is that of the zero-cost-nas-style ports (e.g. the MeCo
authors' ``foresight/pruners/measures/zico.py``, which hard-codes ``split_data = 2``). Those ports differ
from this module in two ways: their parts are ``inputs[s*N//S:(s+1)*N//S]`` (unequal when S does not
divide N; here refused), and they do not clear gradients between the parts, so their second "sample" is
the accumulated g_1 + g_2 rather than g_2. This module follows the authors' per-batch samples (each g_s
from its part alone).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import weighted_layers
from .base import Score, register

DEFAULT_SPLITS = 2


def check_splits(splits: object) -> int:
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 2:
        raise ValueError(f"zico needs splits >= 2 (an integer: the std of one gradient sample is 0), "
                         f"got {splits!r}")
    return splits


def part_size(batch: int, splits: int) -> int:
    """The images per part; refuses a batch that does not split into ``splits`` equal non-empty parts."""
    if batch < splits or batch % splits:
        raise ValueError(
            f"zico cannot split a batch of {batch} into {splits} equal parts of >= 1 image: use a batch size "
            f"that is a multiple of {splits} (zico option splits={splits})"
        )
    return batch // splits


def part_gradients(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, splits: int,
                   weights: list[torch.Tensor]) -> list[list[torch.Tensor | None]]:
    """[part][layer] -> dL_part/dW (None where the weight gets no gradient), train mode, one pass a part."""
    size = part_size(inputs.shape[0], splits)
    net.train()
    out = []
    with torch.enable_grad():
        for w in weights:
            w.requires_grad_(True)
        for s in range(splits):
            part = slice(s * size, (s + 1) * size)
            loss = F.cross_entropy(net(inputs[part]), targets[part])
            grads = torch.autograd.grad(loss, weights, allow_unused=True)
            out.append([None if g is None else g.detach() for g in grads])
    return out


def layer_sum(samples: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Z_l = sum over entries with nonzero std of mean|g| / std (float64, ddof 0) over the finite entries,
    and how many entries were left out for a non-finite gradient (both as tensors: no device sync)."""
    g = torch.stack([s.reshape(-1) for s in samples]).double()  # (S, entries)
    finite = torch.isfinite(g).all(0)
    g = torch.where(finite, g, torch.zeros((), dtype=g.dtype, device=g.device))
    std = (g - g.mean(0)).square().mean(0).sqrt()
    keep = finite & (std != 0)
    ratio = g.abs().mean(0) / torch.where(keep, std, torch.ones((), dtype=g.dtype, device=g.device))
    return torch.where(keep, ratio, torch.zeros((), dtype=g.dtype, device=g.device)).sum(), (~finite).sum()


@register("zico")
def make(splits: int = DEFAULT_SPLITS):
    """Option ``splits``: the number of equal parts the batch is cut into, one gradient sample each
    (default 2; the batch size must be a multiple of it)."""
    splits = check_splits(splits)

    def zico(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Score:
        part_size(inputs.shape[0], splits)  # refuse before any work
        weights = [m.weight for _, m in weighted_layers(net)]
        if not weights:
            return Score(0.0)
        parts = part_gradients(net, inputs, targets, splits, weights)
        sums, dropped = [], []
        for layer in range(len(weights)):
            samples = [parts[s][layer] for s in range(splits)]
            if any(g is None for g in samples):
                continue  # no gradient reaches this weight
            z, bad = layer_sum(samples)
            sums.append(z)
            dropped.append(bad)
        if not sums:
            return Score(0.0)
        z = torch.stack(sums)
        logs = torch.where(z != 0, torch.log(torch.where(z != 0, z, torch.ones_like(z))), torch.zeros_like(z))
        return Score(float(logs.sum().item()), nonfinite=int(torch.stack(dropped).sum().item()))

    return zico
