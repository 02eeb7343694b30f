"""NAS-Bench-101: the 423,624 unique cells, their official hashes, and the network at initialisation.

Arch strings, specs, pruning, the hash and the representative spec live in ``nb101_spec``; the whole-space
enumeration in ``nb101_enum``. Here:

- canonical order (``arch_id``): ascending official hash, i.e. the key order of the official generator's
  output file (``generate_graphs.py`` dumps its JSON with sorted keys) and the index zero-cost-nas's NB101
  script iterates. arch_id 0 is ``00005c142e6f48ac74fdcf73e3439874``;
- ``canonical(arch)``: the arch string of the graph's representative (the spec the official generator
  meets first, which is the spec the benchmark trained and stores as ``module_adjacency``/
  ``module_operations``); any spelling of the same graph (another vertex order, extra vertices that
  pruning removes, long op names) gives the same canonical string. It needs no table;
- ``key(arch)``: the official graph hash; ``key_column = "hash"``: shards, scores and top-k carry it;
- ``arch(arch_id)`` / ``arch_id(arch)`` / iteration need the table of all graphs: built on first use
  (``enumerate_graphs``, about half a minute), or handed over with ``attach_table`` (the pipeline keeps a
  validated copy in the user's cache folder, ``pipeline/driver/space_cache.py``);
- ``build(arch, num_classes)``: ``nasbench_pytorch.model.Network`` (as ``nb101_net.NB101Network``, which
  only adds ``feature_modules()``: the stem and the 9 cells) of the representative spec with the
  benchmark's settings (stem 128 channels, 3 stacks x 3 cells, 3x3 stem conv, the library's own weight
  initialisation), with its ``Placeholder`` modules (each a dummy scalar ``nn.Parameter`` used by no
  computation) replaced by ``nn.Identity`` and each cell's empty ``dev_param`` turned into a buffer, so
  ``net.parameters()`` is exactly the Conv2d/BatchNorm/Linear weights: the official trainable parameter
  count (2,694,282 for the notebook's cell). ``nasbench_pytorch.datasets`` (torchvision) is never imported.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from typing import TYPE_CHECKING

import numpy as np

from .base import Space
from .nb101_enum import COUNTS_BY_VERTICES, SIZE, GraphTable, enumerate_graphs
from .nb101_spec import OPS, Spec, SpecError, as_spec, format_arch, parse_arch, spec_from_code

if TYPE_CHECKING:  # torch is imported only when a network is built
    from torch import nn

STEM_CHANNELS = 128
NUM_STACKS = 3
MODULES_PER_STACK = 3


def _strip_placeholders(net: nn.Module) -> nn.Module:
    """Replace every ``Placeholder`` (identity forward, dummy parameter) by ``nn.Identity`` and turn
    the empty ``dev_param`` parameters into buffers: afterwards every parameter is a real weight."""
    import torch
    from nasbench_pytorch.model.model import Cell, Placeholder
    from torch import nn

    for module in list(net.modules()):
        for name, child in list(module._modules.items()):
            if isinstance(child, Placeholder):
                module._modules[name] = nn.Identity()
        if isinstance(module, Cell) and "dev_param" in module._parameters:
            del module._parameters["dev_param"]
            module.register_buffer("dev_param", torch.empty(0), persistent=False)
    return net


def build_network(spec: Spec, num_classes: int, stem_channels: int = STEM_CHANNELS) -> nn.Module:
    """The NB101 network of ``spec`` (as given: callers pass the representative) at initialisation."""
    from .nb101_net import NB101Network  # nasbench_pytorch's Network with feature_modules()

    matrix = np.asarray(spec.matrix, dtype=np.int64)
    net = NB101Network((matrix, list(spec.ops)), num_labels=int(num_classes), in_channels=3,
                       stem_out_channels=stem_channels, num_stacks=NUM_STACKS,
                       num_modules_per_stack=MODULES_PER_STACK)
    return _strip_placeholders(net)


class NB101Space(Space):
    """The 423,624 NB101 graphs. ``iter()`` yields canonical arch strings in arch_id (hash) order."""

    name = "nb101"
    key_column = "hash"
    ops = OPS
    counts_by_vertices = COUNTS_BY_VERTICES

    def __init__(self, table: GraphTable | None = None):
        self._table: GraphTable | None = None
        if table is not None:
            self.attach_table(table)

    # --- the table of all graphs -------------------------------------------------------------------

    def attach_table(self, table: GraphTable) -> None:
        """Use ``table`` (validated here) instead of enumerating the space."""
        table.validate()
        self._table = table

    @property
    def has_table(self) -> bool:
        return self._table is not None

    @property
    def table(self) -> GraphTable:
        if self._table is None:
            self._table = enumerate_graphs()
        return self._table

    # --- the protocol ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return SIZE

    def arch(self, arch_id: int) -> str:
        return format_arch(self.spec_by_id(arch_id))

    def spec_by_id(self, arch_id: int) -> Spec:
        i = int(arch_id)
        if not 0 <= i < SIZE:
            raise SpecError(f"NB101 arch_id must be in [0, {SIZE}), got {arch_id}")
        t = self.table
        return spec_from_code(int(t.vertices[i]), int(t.bits[i]), int(t.labels[i]))

    def arch_id(self, arch) -> int:
        spec = as_spec(arch)
        index = self.table.index_of(spec.hash())
        if index is None:  # every valid spec is in the space: this would be a bug, not bad input
            raise RuntimeError(f"valid NB101 spec {format_arch(spec)!r} has no arch_id")
        return index

    def spec(self, arch) -> Spec:
        """The representative spec of an arch string, Spec, ``(matrix, ops)`` or ``{"matrix", "ops"}``."""
        return as_spec(arch).representative()

    def canonical(self, arch) -> str:
        return format_arch(self.spec(arch))

    def key(self, arch) -> str:
        return as_spec(arch).hash()

    def key_by_id(self, arch_id: int) -> str:
        if not 0 <= int(arch_id) < SIZE:
            raise SpecError(f"NB101 arch_id must be in [0, {SIZE}), got {arch_id}")
        return self.table.hashes[int(arch_id)].decode()

    def from_record(self, record: Mapping) -> str:
        """Canonical arch of a table row: its ``arch`` string, or its ``matrix`` and ``ops``."""
        if "arch" in record and record["arch"] is not None:
            return self.canonical(record["arch"])
        return self.canonical(as_spec(dict(record)))

    def distance_features(self, arch_ids) -> np.ndarray:
        """The distance codes (``spaces/distance.py``) of each arch's representative spec: ``distance_codes``."""
        ids = np.asarray(arch_ids, np.int64)
        out = np.zeros((ids.size, DISTANCE_CODES), np.int8)
        for row, arch_id in enumerate(ids.tolist()):
            out[row] = distance_codes(self.spec_by_id(arch_id))
        return out

    def distance(self, a, b) -> int:
        """The stand-in distance of ``distance_features`` between two archs (any spelling)."""
        from .distance import distance

        return distance(self, a, b)

    def build(self, arch, num_classes: int) -> nn.Module:
        """The network at initialisation, drawn from the current torch RNG state."""
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        return build_network(self.spec(arch), int(num_classes))

    def sample_ids(self, size: int, seed: int) -> Sequence[int]:
        return super().sample_ids(size, seed)


DISTANCE_CODES = 26  # 21 adjacency bits of 7 slots + 5 interior ops


def distance_codes(spec: Spec) -> np.ndarray:
    """NB101's distance (a documented stand-in for a graph edit distance): the spec laid out on 7 vertex
    slots (input in slot 0, the interior vertices in slots 1.. in the spec's order, the output in slot 6),
    coded as its 21 upper-triangular adjacency bits followed by the op of each of the 5 interior slots
    (``OPS`` index, or 3 for an empty slot); two archs' distance is the number of these 26 codes that differ.
    Given representative specs (one per graph), the distance is 0 exactly for the same graph. It is not
    minimised over vertex relabellings: it counts edge flips and op changes of the laid-out specs, an
    upper bound on their graph edit distance, not the true minimum."""
    v = spec.num_vertices
    slot = [*range(v - 1), 6]  # vertex -> slot
    adjacency = np.zeros((7, 7), np.int8)
    adjacency[np.ix_(slot, slot)] = np.asarray(spec.matrix, np.int8)
    ops = np.full(5, len(OPS), np.int8)
    ops[: v - 2] = [OPS.index(op) for op in spec.ops[1:-1]]
    return np.concatenate([adjacency[np.triu_indices(7, 1)], ops])


def trainable_parameters(net: nn.Module) -> int:
    """Parameters of the Conv2d, BatchNorm and Linear layers: what the official count includes."""
    from torch import nn

    kinds = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)
    return sum(p.numel() for m in net.modules() if isinstance(m, kinds) for p in m.parameters(recurse=False))


__all__ = ["NB101Space", "Spec", "SpecError", "build_network", "parse_arch", "format_arch", "trainable_parameters"]
