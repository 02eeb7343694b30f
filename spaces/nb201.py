"""NAS-Bench-201: cells, their canonical order, and the network at initialisation.

A cell is a DAG on 4 nodes; node j (j = 1..3) sums one op applied to each earlier node, so there are
6 edges, each carrying one of 5 ops: 5**6 = 15,625 cells. Its arch string is the benchmark's own
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: group j lists the ops into node j from nodes 0..j-1.

Canonical order (``arch_id``): read the 6 edges in arch-string order, each as a base-5 digit (its op's
index in ``OPS``), the first edge the most significant digit. So arch_id 0 is the all-``none`` cell and
arch_id 15,624 the all-``avg_pool_3x3`` cell. The official benchmark index is data, not a rule: it is
carried as a column by the ground-truth loader, never derived.

The network (C=16, N=5, as in the benchmark): stem Conv3x3 + BN; three stages of 5 cells at 16, 32, 64
channels with a residual reduction block between stages; head BN, ReLU, global average pool, Linear.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_NODES = 4
NUM_EDGES = 6  # (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2)
SIZE = len(OPS) ** NUM_EDGES

_EDGE_RE = re.compile(r"^([a-z0-9_]+)~(\d+)$")


class ArchError(ValueError):
    """An arch string or id that is not a NAS-Bench-201 cell; the message says what is wrong."""


@dataclass(frozen=True)
class Cell:
    """One NB201 cell. Invariant: ``ops`` has 6 entries, each in ``OPS``, in arch-string edge order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ops) != NUM_EDGES:
            raise ArchError(f"a NB201 cell has {NUM_EDGES} edges, got {len(self.ops)}")
        for op in self.ops:
            if op not in OPS:
                raise ArchError(f"unknown op {op!r}; valid ops: {', '.join(OPS)}")

    @classmethod
    def parse(cls, arch: str) -> "Cell":
        """Parse ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, naming the first thing that is wrong."""
        if not isinstance(arch, str):
            raise ArchError(f"an arch string must be a str, got {type(arch).__name__}")
        text = arch.strip()
        groups = text.split("+")
        if len(groups) != NUM_NODES - 1:
            raise ArchError(
                f"malformed NB201 arch {arch!r}: expected {NUM_NODES - 1} '+'-separated node groups, "
                f"got {len(groups)}"
            )
        ops: list[str] = []
        for node, group in enumerate(groups, start=1):
            if not (group.startswith("|") and group.endswith("|")) or len(group) < 2:
                raise ArchError(f"malformed NB201 arch {arch!r}: node {node} group {group!r} must be '|...|'")
            edges = group[1:-1].split("|")
            if len(edges) != node:
                raise ArchError(
                    f"malformed NB201 arch {arch!r}: node {node} must have {node} inputs, got {len(edges)}"
                )
            for expected_src, edge in enumerate(edges):
                match = _EDGE_RE.match(edge)
                if not match:
                    raise ArchError(f"malformed NB201 arch {arch!r}: edge {edge!r} is not 'op~input'")
                op, src = match.group(1), int(match.group(2))
                if src != expected_src:
                    raise ArchError(
                        f"malformed NB201 arch {arch!r}: edge {edge!r} into node {node} "
                        f"should come from node {expected_src}"
                    )
                if op not in OPS:
                    raise ArchError(f"malformed NB201 arch {arch!r}: unknown op {op!r}; valid ops: {', '.join(OPS)}")
                ops.append(op)
        return cls(tuple(ops))

    @classmethod
    def from_id(cls, arch_id: int) -> "Cell":
        if not 0 <= int(arch_id) < SIZE:
            raise ArchError(f"NB201 arch_id must be in [0, {SIZE}), got {arch_id}")
        digits = []
        rest = int(arch_id)
        for _ in range(NUM_EDGES):
            rest, digit = divmod(rest, len(OPS))
            digits.append(OPS[digit])
        return cls(tuple(reversed(digits)))

    @property
    def arch_id(self) -> int:
        value = 0
        for op in self.ops:
            value = value * len(OPS) + OPS.index(op)
        return value

    def __str__(self) -> str:
        groups, k = [], 0
        for node in range(1, NUM_NODES):
            groups.append("|" + "|".join(f"{self.ops[k + src]}~{src}" for src in range(node)) + "|")
            k += node
        return "+".join(groups)

    def node_inputs(self) -> list[list[tuple[str, int]]]:
        """For nodes 1..3: the (op, source node) pairs summed into it."""
        out, k = [], 0
        for node in range(1, NUM_NODES):
            out.append([(self.ops[k + src], src) for src in range(node)])
            k += node
        return out


def canonical(arch: str) -> str:
    """The canonical spelling of an arch string (whitespace stripped, validated)."""
    return str(Cell.parse(arch))


class NB201Space:
    """The 15,625 NB201 cells. ``iter()`` yields arch strings in canonical (arch_id) order."""

    name = "nb201"

    def __len__(self) -> int:
        return SIZE

    def __iter__(self) -> Iterator[str]:
        for arch_id in range(SIZE):
            yield str(Cell.from_id(arch_id))

    def arch(self, arch_id: int) -> str:
        return str(Cell.from_id(arch_id))

    def arch_id(self, arch: str) -> int:
        return Cell.parse(arch).arch_id

    def canonical(self, arch: str) -> str:
        return canonical(arch)

    key_column = None  # the key is the canonical arch string itself

    def key(self, arch: str) -> str:
        """What ground-truth tables join on: the canonical arch string."""
        return canonical(arch)

    def key_by_id(self, arch_id: int) -> str:
        return self.arch(arch_id)

    def distance_features(self, arch_ids) -> "np.ndarray":
        """Each cell's 6 edge ops as op indices (n x 6, int8, arch-string edge order): the distance of two
        cells (``spaces/distance.py``) is the number of edges whose op differs, 0..6."""
        import numpy as np

        ids = np.asarray(arch_ids, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= SIZE):
            raise ArchError(f"NB201 arch_id must be in [0, {SIZE})")
        weights = len(OPS) ** np.arange(NUM_EDGES - 1, -1, -1)
        return ((ids[:, None] // weights[None, :]) % len(OPS)).astype(np.int8)

    def distance(self, a: str, b: str) -> int:
        """The number of edges whose op differs between cells ``a`` and ``b`` (0..6)."""
        return sum(x != y for x, y in zip(Cell.parse(a).ops, Cell.parse(b).ops))

    def build(self, arch: str, num_classes: int) -> nn.Module:
        """The network at initialisation, drawn from the current torch RNG state (PyTorch defaults)."""
        from .nb201_net import NB201Network  # torch is imported only when a network is built

        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        return NB201Network(Cell.parse(arch), int(num_classes))

    def sample_ids(self, size: int, seed: int) -> Sequence[int]:
        """``size`` distinct arch_ids drawn with ``seed``, sorted (the run order does not matter)."""
        import numpy as np

        if not 0 < size <= SIZE:
            raise ValueError(f"sample.size must be in [1, {SIZE}], got {size}")
        rng = np.random.default_rng(seed)
        return sorted(int(i) for i in rng.choice(SIZE, size=size, replace=False))
