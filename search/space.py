"""Search spaces as the algorithms see them: fixed-length vectors of categorical choices.

The NAS algorithms in this package never parse arch strings: they work on ``arch_id`` integers and, where
they need the structure (REINFORCE's policy, BOHB's density model, REA's mutation), on the vector of
choices that the id encodes. For NB201 that vector is the 6 edges' op indices in arch-string order, and
``arch_id`` is those digits read in base 5, first edge most significant - exactly ``spaces.nb201``'s
canonical order, so ids index the same tables the rest of the project uses.

Invariants: ``decode(encode(i)) == i`` for every id; ``random`` draws every id with equal probability;
``mutate(i)`` differs from ``i`` in exactly one variable.
"""

from __future__ import annotations

import numpy as np

from gradsign.spaces import nb201


class NB201Choices:
    """NB201 cells as 6 edges x 5 ops. Mutation follows the NB201 searches' own rule (see ``mutate``)."""

    name = "nb201"
    num_vars = nb201.NUM_EDGES
    num_choices = len(nb201.OPS)
    size = nb201.SIZE
    # (target node, source node) of each edge, in arch-string order.
    edges: tuple[tuple[int, int], ...] = tuple((j, i) for j in range(1, nb201.NUM_NODES) for i in range(j))

    def __init__(self) -> None:
        self._weights = self.num_choices ** np.arange(self.num_vars - 1, -1, -1)

    def encode(self, arch_id: int) -> np.ndarray:
        """The op index of each edge (int64 vector of ``num_vars``)."""
        return (int(arch_id) // self._weights) % self.num_choices

    def encode_many(self, arch_ids: np.ndarray) -> np.ndarray:
        return (np.asarray(arch_ids, np.int64)[:, None] // self._weights[None, :]) % self.num_choices

    def decode(self, choices) -> int:
        return int(np.dot(np.asarray(choices, np.int64), self._weights))

    def random(self, rng: np.random.Generator) -> int:
        """A uniformly random cell (each edge's op uniform and independent)."""
        return int(rng.integers(self.size))

    def mutate(self, arch_id: int, rng: np.random.Generator) -> int:
        """Change one edge's op to another op, drawn as the NB201 searches draw it.

        The target node is uniform over nodes 1..3, then the edge uniform over that node's inputs, then the
        new op uniform over the 4 other ops (so edge 1<-0 is picked with probability 1/3, each edge into
        node 3 with 1/9).
        """
        node = int(rng.integers(1, len(self.edges) // 2 + 1))  # nodes 1..3
        edge = node * (node - 1) // 2 + int(rng.integers(node))
        choices = self.encode(arch_id)
        new = int(rng.integers(self.num_choices - 1))
        choices[edge] = new if new < choices[edge] else new + 1
        return self.decode(choices)


_SPACES = {"nb201": NB201Choices}


def get(name: str) -> NB201Choices:
    try:
        return _SPACES[name]()
    except KeyError:
        raise ValueError(f"no search algorithms for space {name!r}; supported: {', '.join(sorted(_SPACES))}") from None
