"""The NAS-Bench-201 network of a cell (torch). Module structure and parameter shapes follow the
benchmark's own (NB201 ``TinyNetwork`` with ``InferCell``), so parameter counts match the published ones.

Kept apart from ``spaces.nb201`` (the cell codec) so that code that only names cells (the search stage,
the official-file converter) never imports torch.
"""

from __future__ import annotations

import torch
from torch import nn

from .nb201 import OPS, ArchError, Cell


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros shaped like its input (gradient to the input is exactly zero)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(op: str, channels: int) -> nn.Module:
    if op == "none":
        return Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0)
    if op == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ArchError(f"unknown op {op!r}; valid ops: {', '.join(OPS)}")


class InferCell(nn.Module):
    def __init__(self, cell: Cell, channels: int):
        super().__init__()
        self.inputs = cell.node_inputs()
        self.edges = nn.ModuleList(make_op(op, channels) for node in self.inputs for op, _ in node)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        k = 0
        for node in self.inputs:
            total = None
            for _, src in node:
                out = self.edges[k](nodes[src])
                total = out if total is None else total + out
                k += 1
            nodes.append(total)
        return nodes[-1]


class ResidualReduction(nn.Module):
    """The benchmark's ResNet basic block with stride 2 between stages."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, 1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    def __init__(self, cell: Cell, num_classes: int, channels: int = 16, cells_per_stage: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        layers: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(c, c * 2))
                c *= 2
            layers.extend(InferCell(cell, c) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def feature_modules(self) -> list[nn.Module]:
        """The modules whose outputs end the network's blocks, in forward order: the stem, then every cell
        and residual reduction block (17 at 5 cells a stage). AZ-NAS's NB201 feature list: the stem output
        and every cell's output, reduction blocks included; the head is not a block."""
        return [self.stem, *self.cells]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.cells(self.stem(x)))
        return self.classifier(self.pool(out).flatten(1))
