"""The DARTS-style CIFAR network of a genotype (torch): DARTS ``NetworkCIFAR``, as NDS and NAS-Bench-301 use it.

Structure (written from the DARTS paper and code, quark0/darts ``cnn/model.py``/``operations.py``, and the
NDS op additions in pycls ``models/nas/operations.py``):
- stem: Conv3x3(3 -> 3C) + BN;
- ``depth`` cells; the cells at ``depth // 3`` and ``2 * depth // 3`` are reduction cells (channels doubled,
  ops on the two cell inputs have stride 2); the others are normal cells;
- each cell preprocesses its two inputs to C channels: the previous cell's output by ReLU-Conv1x1-BN, the
  one before by ReLU-Conv1x1-BN too, or by FactorizedReduce when the previous cell was a reduction (so the
  one before it has twice the resolution);
- node j sums two ops on two earlier states; the output concatenates the ``concat`` states, so the next
  cell sees ``len(concat) * C`` channels;
- global average pool, Linear.

Ops (C channels in and out; ``stride`` 2 only on a reduction cell's inputs 0/1): ``sep_conv_kxk`` is two
stacked ReLU-dwconv(k)-pwconv-BN blocks, the first carrying the stride; ``dil_conv_kxk`` one such block with
dilation 2; ``dil_sep_conv_3x3`` the two-block form with dilation 2; ``conv_1x1``/``conv_3x3`` ReLU-conv-BN;
``conv_kx1_1xk`` ReLU, a 1xk then a kx1 conv, BN; pools with stride (avg without padded zeros); and
``skip_connect`` is the identity, or FactorizedReduce (two stride-2 1x1 convs, one shifted by a pixel,
concatenated, BN) in a reduction cell.

``affine_ops=False`` builds the BN layers inside the ops without affine parameters, and ``pool_bn=True``
follows every pooling op by a BN: together they are the ops of DARTS's search network, which NASLib's
NAS-Bench-301 network keeps (the peer's zero-cost table: its params equal ours under ``affine_ops=False``,
and its flops equal ours when the pooling ops' BN is counted too). The stem and preprocessing BN stay
affine. The default is the network NAS-Bench-301 and NDS trained (affine BN, no BN after pools).

Left out on purpose, because scoring is not training: drop path (random per forward pass, so a score
would depend on the RNG draw instead of only on arch, batch and seed; at evaluation DARTS turns it off
too) and the auxiliary head (a second classifier whose loss DARTS adds during training; GradSign is
defined on the network's one loss, and the head's weights would enter every parameter-based proxy).
"""

from __future__ import annotations

import torch
from torch import nn

from .darts_genotype import Cell, Genotype, GenotypeError, reduction_cells

STEM_MULTIPLIER = 3


def _bn(c: int, affine: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, affine=affine)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
                         _bn(c_out, affine))


def _sep_block(c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool):
    return [nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            _bn(c_out, affine)]


class SepConv(nn.Sequential):
    """Two depthwise-separable blocks; the first carries the stride."""

    def __init__(self, c: int, kernel: int, stride: int, dilation: int = 1, affine: bool = True):
        pad = dilation * (kernel - 1) // 2
        super().__init__(*_sep_block(c, c, kernel, stride, pad, dilation, affine),
                         *_sep_block(c, c, kernel, 1, pad, dilation, affine))


class DilConv(nn.Sequential):
    """One dilated depthwise-separable block."""

    def __init__(self, c: int, kernel: int, stride: int, dilation: int = 2, affine: bool = True):
        super().__init__(*_sep_block(c, c, kernel, stride, dilation * (kernel - 1) // 2, dilation, affine))


class FactorizedConv(nn.Sequential):
    """ReLU, a 1xk conv, a kx1 conv (stride split between them), BN."""

    def __init__(self, c: int, k: int, stride: int, affine: bool = True):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c, c, (1, k), stride=(1, stride), padding=(0, k // 2), bias=False),
                         nn.Conv2d(c, c, (k, 1), stride=(stride, 1), padding=(k // 2, 0), bias=False),
                         _bn(c, affine))


class FactorizedReduce(nn.Module):
    """Halve the resolution: two stride-2 1x1 convs, the second on the input shifted by one pixel."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = _bn(c_out, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]  # same size as x, odd sizes included
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def make_op(name: str, c: int, stride: int, affine: bool = True, pool_bn: bool = False) -> nn.Module:
    """The op ``name`` on ``c`` channels; a GenotypeError for a name no NDS space has. ``pool_bn``: a
    pooling op is followed by BN (as in DARTS's search network)."""
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name.startswith(("max_pool_", "avg_pool_")):
        k = {"max_pool_3x3": 3, "max_pool_5x5": 5, "max_pool_7x7": 7, "avg_pool_3x3": 3}.get(name)
        if k is not None:
            if name.startswith("max"):
                pool = nn.MaxPool2d(k, stride=stride, padding=k // 2)
            else:
                pool = nn.AvgPool2d(k, stride=stride, padding=k // 2, count_include_pad=False)
            return nn.Sequential(pool, _bn(c, affine)) if pool_bn else pool
    builders = {
        "sep_conv_3x3": lambda: SepConv(c, 3, stride, 1, affine),
        "sep_conv_5x5": lambda: SepConv(c, 5, stride, 1, affine),
        "sep_conv_7x7": lambda: SepConv(c, 7, stride, 1, affine),
        "dil_conv_3x3": lambda: DilConv(c, 3, stride, 2, affine),
        "dil_conv_5x5": lambda: DilConv(c, 5, stride, 2, affine),
        "dil_sep_conv_3x3": lambda: SepConv(c, 3, stride, 2, affine),
        "conv_1x1": lambda: ReLUConvBN(c, c, 1, stride, 0, affine),
        "conv_3x3": lambda: ReLUConvBN(c, c, 3, stride, 1, affine),
        "conv_3x1_1x3": lambda: FactorizedConv(c, 3, stride, affine),
        "conv_7x1_1x7": lambda: FactorizedConv(c, 7, stride, affine),
    }
    if name not in builders:
        raise GenotypeError(f"no network op {name!r}; known ops: {', '.join(sorted(OP_NAMES))}")
    return builders[name]()


OP_NAMES = frozenset({"skip_connect", "max_pool_3x3", "max_pool_5x5", "max_pool_7x7", "avg_pool_3x3",
                      "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "dil_conv_3x3", "dil_conv_5x5",
                      "dil_sep_conv_3x3", "conv_1x1", "conv_3x3", "conv_3x1_1x3", "conv_7x1_1x7"})


class DartsCell(nn.Module):
    def __init__(self, cell: Cell, c_prev_prev: int, c_prev: int, c: int, reduction: bool, reduction_prev: bool,
                 affine_ops: bool = True, pool_bn: bool = False):
        super().__init__()
        self.preprocess0 = FactorizedReduce(c_prev_prev, c) if reduction_prev else ReLUConvBN(c_prev_prev, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0)
        self.inputs = [src for _, src in cell.pairs]
        self.concat = list(cell.concat)
        self.ops = nn.ModuleList(make_op(op, c, 2 if reduction and src < 2 else 1, affine_ops, pool_bn)
                                 for op, src in cell.pairs)
        self.out_channels = len(self.concat) * c

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for j in range(len(self.inputs) // 2):
            a, b = 2 * j, 2 * j + 1
            states.append(self.ops[a](states[self.inputs[a]]) + self.ops[b](states[self.inputs[b]]))
        return torch.cat([states[i] for i in self.concat], dim=1)


class DartsNetwork(nn.Module):
    """DARTS ``NetworkCIFAR`` (no auxiliary head, no drop path): see the module docstring."""

    def __init__(self, genotype: Genotype, width: int, depth: int, num_classes: int, affine_ops: bool = True,
                 in_channels: int = 3, pool_bn: bool = False):
        super().__init__()
        if width < 1 or depth < 1 or num_classes < 1:
            raise ValueError(f"width, depth and num_classes must be >= 1, got {width}, {depth}, {num_classes}")
        c_curr = STEM_MULTIPLIER * width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, width
        self.reductions = list(reduction_cells(depth))
        cells, reduction_prev = [], False
        for i in range(depth):
            reduction = i in self.reductions
            if reduction:
                c_curr *= 2
            cell = DartsCell(genotype.reduce if reduction else genotype.normal, c_prev_prev, c_prev, c_curr,
                             reduction, reduction_prev, affine_ops, pool_bn)
            cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.out_channels
        self.cells = nn.ModuleList(cells)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def feature_modules(self) -> list[nn.Module]:
        """The modules whose outputs end the network's blocks, in forward order: the stem, then each cell
        (normal and reduction), as for NB201 (the AZ-NAS authors give no DARTS feature list)."""
        return [self.stem, *self.cells]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.pool(s1).flatten(1))
