"""flops: forward FLOPs of the network for ONE input image of the batch's shape, in millions (float).

Counted by forward hooks on one image (``inputs[:1]``) in eval mode, without gradients. Convention
``torchstat`` (default): the counting rules of the torchstat code inside tensorwatch, which NASLib used
for the ``flops`` column of NAS-Bench-Suite-Zero (the peer data), so that every NB201 row there is
reproduced exactly:

- Conv2d: multiply-accumulates, out_h * out_w * kh * kw * C_in * C_out / groups, plus C_out * out_h *
  out_w when it has a bias;
- Linear: multiply-accumulates, (input elements / in_features) * in_features * out_features (no bias);
- BatchNorm2d: input elements, times 2 when affine;
- ReLU, ReLU6, PReLU, ELU, LeakyReLU: input elements;
- AvgPool2d / MaxPool2d: output elements * kh * kw;
- AdaptiveAvgPool2d / AdaptiveMaxPool2d: per output cell, channels * (rows + 1) * (cols + 1) of its
  input window (torchstat's rule);
- Upsample: output elements; everything else (Identity, element-wise sums, NB201's Zero op): 0.

This is more than conv/linear MACs: for the first CIFAR-10 row of the peer table (88.307392) the
conv MACs are 86.4256 M and BatchNorm, ReLU, pooling and the classifier make up the rest; every one of
the 2,173 NB201 rows there (CIFAR-10/100 at 32x32, ImageNet16-120 at 16x16) is matched exactly.

Every call of a module counts (torchstat kept only the last call of a module called several times; NB201
calls each module once). Convention ``macs``: Conv2d and Linear multiply-accumulates only (no bias
additions, nothing else).
BatchNorm mode: eval (only shapes matter). Data: the shape of one image (labels unused). Sign: the raw
count, higher is better (the usual size baseline).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import register

CONVENTIONS = ("torchstat", "macs")
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.PReLU, nn.ELU, nn.LeakyReLU)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv(m: nn.Conv2d, x: torch.Tensor, y: torch.Tensor, bias: bool = True) -> int:
    kh, kw = m.kernel_size
    positions = y.shape[0] * y.shape[2] * y.shape[3]
    flops = kh * kw * m.in_channels * (m.out_channels // m.groups) * positions
    if bias and m.bias is not None:
        flops += m.out_channels * positions
    return flops


def _linear(m: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> int:
    return (x.numel() // m.in_features) * m.in_features * m.out_features


def _adaptive_pool(x: torch.Tensor, y: torch.Tensor) -> int:
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    cells = 0
    for i in range(oh):
        rows = math.ceil((i + 1) * h / oh) - math.floor(i * h / oh)
        for j in range(ow):
            cols = math.ceil((j + 1) * w / ow) - math.floor(j * w / ow)
            cells += (rows + 1) * (cols + 1)
    return n * c * cells


def module_flops(m: nn.Module, x: torch.Tensor, y: torch.Tensor, convention: str = "torchstat") -> int:
    """FLOPs of one call of ``m`` with input ``x`` and output ``y`` under ``convention``."""
    if isinstance(m, nn.Conv2d):
        return _conv(m, x, y, bias=convention == "torchstat")
    if isinstance(m, nn.Linear):
        return _linear(m, x, y)
    if convention == "macs":
        return 0
    if isinstance(m, nn.BatchNorm2d):
        return x.numel() * (2 if m.affine else 1)
    if isinstance(m, _ACTIVATIONS):
        return x.numel()
    if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
        kh, kw = _pair(m.kernel_size)
        return y.numel() * kh * kw
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return _adaptive_pool(x, y)
    if isinstance(m, nn.Upsample):
        return y.numel()
    return 0


def count_flops(net: nn.Module, example: torch.Tensor, convention: str = "torchstat") -> int:
    """Forward FLOPs of ``net`` on ``example`` (one image, (1, C, H, W); only its shape matters)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown flops convention {convention!r}; valid: {', '.join(CONVENTIONS)}")
    total = 0

    def hook(module: nn.Module, args, output) -> None:
        nonlocal total
        if args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
            total += module_flops(module, args[0], output, convention)

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros_like(example))
    finally:
        for h in handles:
            h.remove()
    return total


@register("flops")
def make(convention: str = "torchstat"):
    """Options: ``convention`` (torchstat: the peer data's counting rules; macs: Conv2d/Linear MACs only)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown flops convention {convention!r}; valid: {', '.join(CONVENTIONS)}")

    def flops(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        return count_flops(net, inputs[:1], convention) / 1e6

    return flops
