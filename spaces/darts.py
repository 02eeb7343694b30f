"""The DARTS cell space as NAS-Bench-301 defines it (space ``darts``), with its network settings.

Cells: 4 intermediate nodes, each summing two ops on two *distinct* earlier states, ops from the 7 DARTS
ops without ``none`` (in NASLib's NB301 op order: max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3,
sep_conv_5x5, dil_conv_3x3, dil_conv_5x5), output = all 4 nodes concatenated; a genotype is a normal and
a reduction cell (``spaces.darts_genotype``).

Size, exactly: node j (0-based) has C(2+j, 2) unordered input pairs and 7 x 7 op choices, so a cell has
(1 x 3 x 6 x 10) x 49^4 = 1,037,664,180 canonical forms and the space 1,037,664,180^2 =
1,076,746,950,455,072,400 genotypes (about 1.08e18, below 2^63 = 9.22e18).

``arch_id`` (fits an int64): ``normal_index * 1,037,664,180 + reduce_index``, each cell's index a mixed-radix
number over its nodes (node 0 the most significant digit), a node's digit ``(pair, op_a, op_b)`` with
``pair`` the index of its input pair (a < b) ordered by b then a, and op_a/op_b the ops on a and b. It is a
bijection between canonical genotypes and ``[0, len(space))``.

Sampling (``sample_ids``): NAS-Bench-301's sampler (NASLib ``nasbench301/graph.py``
``sample_random_architecture``) draws, per node and cell, two distinct inputs (``np.random.choice(range(
j + 2), 2, replace=False)``) and an op for each from the 7, independently and uniformly. Each canonical
node is drawn by exactly two of those ordered draws (the two orders), so that sampler is uniform over
canonical genotypes, i.e. over ``arch_id``: here ``size`` distinct ids are drawn uniformly from ``[0,
len(space))`` with ``numpy.random.default_rng(seed)`` (redrawing repeats), sorted.

Network (NAS-Bench-301's training settings): width C=32, 8 cells (reductions at cells 2 and 5), stem to 96
channels, affine BN everywhere. ``DartsSpace.peer()`` builds NASLib's NB301 network (the peer's zero-cost
table), which keeps DARTS's search-phase ops: BN inside ops without affine parameters
(``affine_ops=False``) and a non-affine BN after every pooling op (``pool_bn=True``). Its params equal the
table's on all 725 rows, and so do its flops (torchstat rules, ``flops`` proxy); without the pooling BN the
flops fall short by exactly the pooling ops' output elements.

Tables: rows join on the canonical arch string (``key``); ``from_record`` reads rows with ``normal`` /
``reduce`` (and optional ``concat``), as the NAS-Bench-301 725-cell table has them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from .base import Space
from .darts_genotype import (Genotype, GenotypeError, Rules, cell_from_index, cell_index, cell_size,
                             gradsign_signal)

if TYPE_CHECKING:
    from torch import nn

DARTS_OPS: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                              "dil_conv_3x3", "dil_conv_5x5")
DARTS_RULES = Rules(DARTS_OPS, nodes=4, distinct_inputs=True, concat="all")
CELL_SIZE = cell_size(DARTS_RULES)
SIZE = CELL_SIZE * CELL_SIZE
NB301_WIDTH = 32
NB301_DEPTH = 8


class DartsSpace(Space):
    """The NAS-Bench-301 DARTS space; arch strings are canonical ``Genotype.to_text()`` strings."""

    name = "darts"
    key_column = None
    record_fields = ("normal", "reduce")
    rules = DARTS_RULES

    def __init__(self, width: int = NB301_WIDTH, depth: int = NB301_DEPTH, affine_ops: bool = True,
                 pool_bn: bool = False):
        self.width, self.depth = int(width), int(depth)
        self.affine_ops, self.pool_bn = bool(affine_ops), bool(pool_bn)

    @classmethod
    def peer(cls) -> "DartsSpace":
        """The network of NASLib's NB301 zero-cost table: DARTS search-phase ops (BN in ops non-affine, a
        BN after every pooling op); its params and flops equal the table's."""
        return cls(affine_ops=False, pool_bn=True)

    def __len__(self) -> int:
        return SIZE

    def genotype(self, arch) -> Genotype:
        """The genotype of an arch string, a DARTS ``Genotype(...)`` text or a ``{normal, reduce}`` record."""
        if isinstance(arch, Mapping):
            return Genotype.from_record(arch, self.rules)
        return Genotype.parse(arch, self.rules)

    def arch(self, arch_id: int) -> str:
        i = int(arch_id)
        if not 0 <= i < SIZE:
            raise GenotypeError(f"darts arch_id must be in [0, {SIZE}), got {arch_id}")
        normal, reduce = divmod(i, CELL_SIZE)
        return Genotype(cell_from_index(normal, self.rules, "normal"),
                        cell_from_index(reduce, self.rules, "reduce")).to_text()

    def arch_id(self, arch) -> int:
        g = self.genotype(arch)
        return cell_index(g.normal, self.rules) * CELL_SIZE + cell_index(g.reduce, self.rules)

    def canonical(self, arch) -> str:
        return self.genotype(arch).to_text()

    def key(self, arch) -> str:
        return self.canonical(arch)

    def key_by_id(self, arch_id: int) -> str:
        return self.arch(arch_id)

    def from_record(self, record: Mapping) -> str:
        """Canonical arch of a table row: its ``arch``, or its ``normal``/``reduce`` pairs."""
        if record.get("arch") is not None:
            return self.canonical(record["arch"])
        return self.canonical(record)

    def genotype_text(self, arch) -> str:
        """The DARTS ``Genotype(normal=..., normal_concat=..., reduce=..., reduce_concat=...)`` text."""
        return self.genotype(arch).darts_text()

    def gradsign_signal(self, arch) -> bool:
        """False when GradSign's per-sample gradients of this arch's network are all float rounding noise
        (``darts_genotype.gradsign_signal``: no pooling op feeds the last cell's output; always False for
        ``peer()``'s network, whose pools end in BN)."""
        return gradsign_signal(self.genotype(arch), self.depth, self.pool_bn)

    def build(self, arch, num_classes: int) -> nn.Module:
        """The network at initialisation, drawn from the current torch RNG state."""
        from .darts_net import DartsNetwork  # torch only when a network is built

        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        return DartsNetwork(self.genotype(arch), self.width, self.depth, int(num_classes), self.affine_ops,
                            pool_bn=self.pool_bn)

    def distance_features(self, arch_ids) -> np.ndarray:
        """Distance codes (``spaces/distance.py``): per canonical ``(op, input)`` pair of both cells, its op
        index and its input, 32 integers; the distance of two genotypes is the number of those that differ
        (0..32; a node whose pairs are written in the other order is the same node)."""
        rows = []
        for arch_id in np.asarray(arch_ids, np.int64).tolist():
            g = self.genotype(self.arch(arch_id))
            rows.append([v for cell in (g.normal, g.reduce) for op, src in cell.pairs
                         for v in (self.rules.ops.index(op), src)])
        return np.asarray(rows, np.int64).reshape(len(rows), 32)

    def sample_ids(self, size: int, seed: int) -> Sequence[int]:
        """``size`` distinct arch_ids, uniform over the space (see the module docstring), sorted."""
        if not 0 < int(size) <= SIZE:
            raise ValueError(f"sample.size must be in [1, {SIZE}], got {size}")
        rng = np.random.default_rng(seed)
        ids: set[int] = set()
        while len(ids) < size:
            ids.update(int(i) for i in rng.integers(0, SIZE, size=int(size) - len(ids), dtype=np.int64))
        return sorted(ids)
