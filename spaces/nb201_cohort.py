"""K NAS-Bench-201 networks as one module: the cells stacked on the channel dimension (torch).

``NB201Cohort(cells, num_classes)`` is the networks of K cells side by side. Every activation at stage
width C holds K blocks of C channels, block k belonging to cell k; every weighted layer holds K blocks of
output rows. Invariants:

- no operation mixes the channels of two cells: the stem convolution reads the shared input image and
  writes each cell's own block, every other convolution is grouped by cell (``groups`` = the cells it
  serves), BatchNorm is per channel, pooling and ReLU are per channel, and the classifier is a grouped 1x1
  convolution (one Linear per cell, block-diagonal). So cell k's logits, ``net(x)[:, k]``, are those of
  ``space.build(cell k)`` and the gradient of cell k's own loss reaches only cell k's rows;
- each edge position applies every op that some cell uses there to exactly the cells that use it (their
  channels gathered with ``index_select``, the results put back in cell order): no op is computed for a
  cell that does not use it, and a node sums its edges in the order ``InferCell`` does, so each cell's
  activations are its own network's, up to the rounding of batched kernels;
- weight rows of cell k hold exactly the values ``space.build`` draws for it: ``init_from_seeds`` replays
  build's draws (a generator seeded as ``torch.manual_seed(seed)`` seeds the global one, the same layers in
  the same order with the same shapes and bounds; checked bit for bit against ``space.build`` in the tests
  and, once per process, by the cohort engine), ``init_from_nets`` copies them from built networks;
- ``owners()`` maps each weighted module to the cell of each of its output rows (what splits the sign sums
  of one pass into K scores).

The cohort is made on the meta device and then given storage, so no weight is drawn twice; BatchNorm
parameters take their defaults (weight 1, bias 0), as in a freshly built network.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import init

from .nb201 import NUM_NODES, OPS, Cell
from .nb201_net import Zero

STEM_CHANNELS = 16
META = torch.device("meta")  # layers are made without storage (no draw wasted), then given it
CELLS_PER_STAGE = 5


def _relu_conv_bn(channels: int, groups: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    """``ReLUConvBN`` for ``groups`` cells at once (each cell: ``channels`` in, ``channels`` out)."""
    width = channels * groups
    return nn.Sequential(nn.ReLU(inplace=False),
                         nn.Conv2d(width, width, kernel, stride=stride, padding=padding, bias=False, groups=groups,
                                   device=META),
                         nn.BatchNorm2d(width, device=META))


def _op(op: str, channels: int, groups: int) -> nn.Module:
    if op == "none":
        return Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return _relu_conv_bn(channels, groups, 1, 1, 0)
    if op == "nor_conv_3x3":
        return _relu_conv_bn(channels, groups, 3, 1, 1)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown op {op!r}")


class CohortEdge(nn.Module):
    """One edge position of K cells: ``ops[k]`` applied to cell k's channels, for every k.

    ``branches[i]`` applies ``branch_ops[i]`` to the cells ``branch_cells[i]``. The input's channels are
    put in branch order with one ``index_select``, split into the branches' parts (views), and the
    branches' outputs concatenated and put back in cell order with a second one (two gathers per edge,
    whatever K); with a single branch (every cell uses the same op) nothing is gathered."""

    def __init__(self, ops: Sequence[str], channels: int):
        super().__init__()
        self.channels = channels
        self.branch_ops = [op for op in OPS if op in ops]
        self.branch_cells = [[k for k, o in enumerate(ops) if o == op] for op in self.branch_ops]
        self.branches = nn.ModuleList(_op(op, channels, len(cells))
                                      for op, cells in zip(self.branch_ops, self.branch_cells))
        self.widths = [len(cells) * channels for cells in self.branch_cells]
        self.single = len(self.branch_ops) == 1
        if not self.single:
            order = [k * channels + c for cells in self.branch_cells for k in cells for c in range(channels)]
            inverse = [0] * len(order)
            for position, channel in enumerate(order):
                inverse[channel] = position
            self._lists = (order, inverse)
            self.register_buffer("order", torch.empty(len(order), dtype=torch.long, device=META))
            self.register_buffer("inverse", torch.empty(len(order), dtype=torch.long, device=META))

    def fill_indices(self) -> None:
        """Write the gather indices (after the module got storage)."""
        if not self.single:
            self.order.copy_(torch.tensor(self._lists[0], dtype=torch.long))
            self.inverse.copy_(torch.tensor(self._lists[1], dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.single:
            return self.branches[0](x)
        parts = x.index_select(1, self.order).split(self.widths, 1)
        return torch.cat([branch(part) for branch, part in zip(self.branches, parts)], 1).index_select(1, self.inverse)

    def conv_rows(self, k: int) -> tuple[nn.Conv2d, slice] | None:
        """Cell k's convolution on this edge and its rows there (None: its op has no weight)."""
        for op, cells, branch in zip(self.branch_ops, self.branch_cells, self.branches):
            if k in cells:
                if not op.startswith("nor_conv"):
                    return None
                r = cells.index(k)
                return branch[1], slice(r * self.channels, (r + 1) * self.channels)
        raise AssertionError(f"cell {k} has no op on this edge")


class CohortCell(nn.Module):
    """One cell position of K cells (``InferCell`` for each)."""

    def __init__(self, cells: Sequence[Cell], channels: int):
        super().__init__()
        self.inputs = cells[0].node_inputs()  # the sources are the same for every cell; only the ops differ
        edges = len([1 for node in self.inputs for _ in node])
        self.edges = nn.ModuleList(CohortEdge([c.ops[e] for c in cells], channels) for e in range(edges))

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


class CohortReduction(nn.Module):
    """``ResidualReduction`` for K cells (every cell has the same one)."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.conv_a = nn.Sequential(nn.ReLU(inplace=False),
                                    nn.Conv2d(c_in * groups, c_out * groups, 3, stride=2, padding=1, bias=False,
                                              groups=groups, device=META),
                                    nn.BatchNorm2d(c_out * groups, device=META))
        self.conv_b = _relu_conv_bn(c_out, groups, 3, 1, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
                                        nn.Conv2d(c_in * groups, c_out * groups, 1, bias=False, groups=groups,
                                                  device=META))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Cohort(nn.Module):
    """The NB201 networks (C=16, N=5) of ``cells`` side by side; ``forward(x)`` -> (N, K, num_classes)."""

    def __init__(self, cells: Sequence[Cell], num_classes: int):
        super().__init__()
        if not cells:
            raise ValueError("a cohort needs at least one cell")
        self.cell_list = list(cells)
        self.size = k = len(cells)
        self.num_classes = int(num_classes)
        c = STEM_CHANNELS
        self.stem = nn.Sequential(nn.Conv2d(3, c * k, 3, padding=1, bias=False, device=META),
                                  nn.BatchNorm2d(c * k, device=META))
        layers: list[nn.Module] = []
        for stage in range(3):
            if stage > 0:
                layers.append(CohortReduction(c, c * 2, k))
                c *= 2
            layers.extend(CohortCell(self.cell_list, c) for _ in range(CELLS_PER_STAGE))
        self.cells = nn.Sequential(*layers)
        self.channels = c
        self.head = nn.Sequential(nn.BatchNorm2d(c * k, device=META), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Conv2d(c * k, self.num_classes * k, 1, groups=k, bias=True, device=META)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.head(self.cells(self.stem(x))))
        return self.classifier(out).view(x.shape[0], self.size, self.num_classes)

    # -- the cells' layers, in the order space.build creates them -------------------------------------------
    def cell_rows(self, k: int) -> list[tuple[nn.Conv2d, slice]]:
        """(module, cell k's output rows in it) of cell k's Conv2d/Linear layers, in ``NB201Network``'s order
        of construction (= its ``named_modules`` order); the last is the classifier (its Linear, with bias)."""
        out: list[tuple[nn.Conv2d, slice]] = []
        c = STEM_CHANNELS
        out.append((self.stem[0], slice(k * c, (k + 1) * c)))
        for layer in self.cells:
            if isinstance(layer, CohortReduction):
                c_out = layer.conv_b[1].out_channels // self.size
                r = slice(k * c_out, (k + 1) * c_out)
                out += [(layer.conv_a[1], r), (layer.conv_b[1], r), (layer.downsample[1], r)]
            else:
                for edge in layer.edges:
                    found = edge.conv_rows(k)
                    if found is not None:
                        out.append(found)
        out.append((self.classifier, slice(k * self.num_classes, (k + 1) * self.num_classes)))
        return out

    def cell_layers(self, k: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(weight rows, bias rows or None) of cell k's layers, in ``cell_rows`` order (views: writable)."""
        return [(m.weight[r], m.bias[r] if m.bias is not None else None) for m, r in self.cell_rows(k)]

    def owners(self) -> dict[str, torch.Tensor]:
        """Weighted module name -> the cell (0..K-1) of each of its output rows (a long tensor)."""
        names = {id(m): name for name, m in self.named_modules()}
        owner: dict[str, list[int]] = {}
        for k in range(self.size):
            for m, r in self.cell_rows(k):
                rows = owner.setdefault(names[id(m)], [-1] * m.out_channels)
                rows[r] = [k] * (r.stop - r.start)
        if any(-1 in rows for rows in owner.values()):
            raise AssertionError("a weight row that belongs to no cell")
        return {name: torch.tensor(rows, dtype=torch.long) for name, rows in owner.items()}

    # -- initialisation --------------------------------------------------------------------------------
    def reset_static(self) -> None:
        """What needs no random draw: BatchNorm parameters and statistics at their defaults, gather indices."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.reset_parameters()
                elif isinstance(m, CohortEdge):
                    m.fill_indices()

    @torch.no_grad()
    def init_from_seeds(self, seeds: Sequence[int]) -> None:
        """Cell k's weights as ``torch.manual_seed(seeds[k]); space.build(cell k)`` draws them."""
        if len(seeds) != self.size:
            raise ValueError(f"{len(seeds)} seeds for a cohort of {self.size} cells")
        for k, seed in enumerate(seeds):
            generator = torch.Generator().manual_seed(int(seed))  # the global CPU generator's type and stream
            for weight, bias in self.cell_layers(k):
                init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)  # as Conv2d/Linear reset
                if bias is not None:
                    fan_in = weight[0].numel()
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                    init.uniform_(bias, -bound, bound, generator=generator)

    @torch.no_grad()
    def init_from_nets(self, nets: Sequence[nn.Module]) -> None:
        """Cell k's weights copied from ``nets[k]`` (built by ``space.build`` for cell k)."""
        if len(nets) != self.size:
            raise ValueError(f"{len(nets)} networks for a cohort of {self.size} cells")
        for k, net in enumerate(nets):
            source = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
            layers = self.cell_layers(k)
            if len(source) != len(layers):
                raise ValueError(f"network {k} has {len(source)} weighted layers, cell {k} of the cohort {len(layers)}")
            for m, (weight, bias) in zip(source, layers):
                weight.copy_(m.weight.detach().reshape(weight.shape))
                if bias is not None:
                    bias.copy_(m.bias.detach())


def build_cohort(archs: Sequence[str], num_classes: int, seeds: Sequence[int] | None = None,
                 nets: Sequence[nn.Module] | None = None) -> NB201Cohort:
    """The cohort of ``archs`` on the CPU, its weights drawn from ``seeds`` (replaying ``space.build``) or
    copied from ``nets``: exactly one of the two."""
    if (seeds is None) == (nets is None):
        raise ValueError("give the cells' seeds or their built networks, not both or neither")
    cells = [Cell.parse(a) for a in archs]
    if len(cells[0].node_inputs()) != NUM_NODES - 1:
        raise AssertionError("unexpected NB201 cell structure")
    net = NB201Cohort(cells, num_classes).to_empty(device="cpu")
    net.reset_static()
    if seeds is not None:
        net.init_from_seeds(seeds)
    else:
        net.init_from_nets(nets)
    return net
