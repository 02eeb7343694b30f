"""The NB101 network class: ``nasbench_pytorch``'s ``Network`` plus the list of its block ends.

Kept apart from ``spaces.nb101`` (the cell codec and the space) so that code that only names cells never
imports torch or nasbench_pytorch; ``spaces.nb101.build_network`` imports it when it builds a network. A
subclass rather than an attribute set on the built network: a method stored on the instance would hold a
reference to the network itself (a cycle that only the garbage collector frees, with the network's
device memory) and would not pickle.
"""

from __future__ import annotations

from nasbench_pytorch.model import Network  # nasbench_pytorch.model only: never .datasets
from nasbench_pytorch.model.model import Cell
from torch import nn


class NB101Network(Network):
    """``nasbench_pytorch.model.Network``, unchanged, with ``feature_modules``."""

    def feature_modules(self) -> list[nn.Module]:
        """The modules whose outputs end the network's blocks, in forward order: the stem (ConvBnRelu),
        then each of the cells (3 stacks x 3); the max-pools between stacks are not blocks, so the block
        after a pool takes the pooled features (the AZ-NAS authors give no NB101 feature list; this is
        their NB201 rule, stem and every cell)."""
        return [self.layers[0], *(m for m in self.layers if isinstance(m, Cell))]
