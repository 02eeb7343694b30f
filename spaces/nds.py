"""The five NDS cell spaces on CIFAR-10 (Radosavovic et al., "On Network Design Spaces for Visual
Recognition"): ``nds-darts``, ``nds-enas``, ``nds-amoeba``, ``nds-nasnet``, ``nds-pnas``.

An NDS arch is a genotype (``spaces.darts_genotype``) *and* the network's width C and depth (cells),
which vary per record in the NDS files. Its arch string (canonical, round-trips):

    width=16;depth=8;normal=op~i+op~i|...@2,3,4,5;reduce=...@2,3,4,5

Op sets (pycls ``models/nas/genotypes.py``) and cell rules (inputs may repeat in every NDS space: the PNAS
genotype takes state 0 twice):
- ``nds-darts``: the 7 DARTS ops, 4 nodes, all concatenated;
- ``nds-enas``: skip_connect, sep_conv_3x3, sep_conv_5x5, avg_pool_3x3, max_pool_3x3; 5 nodes, the
  record's concat (ENAS concatenates the unused nodes);
- ``nds-amoeba``: ENAS's + sep_conv_7x7, dil_sep_conv_3x3, conv_7x1_1x7; 5 nodes, the record's concat;
- ``nds-nasnet``: 13 ops; 5 nodes, the record's concat;
- ``nds-pnas``: sep_conv_3x3/5x5/7x7, conv_7x1_1x7, skip_connect, avg/max_pool_3x3, dil_conv_3x3; 5 nodes,
  all concatenated.

The network is the DARTS CIFAR network (``spaces.darts_net``, affine BN, no auxiliary head, no drop path,
whatever the record's ``aux``/``drop_prob``: those are training settings).

Ids. These spaces are far larger than 2^63 (NASNet: about 10^33 genotypes before width and depth), so no
int64 index is a bijection. ``arch_id(arch)`` is a 63-bit hash of the canonical string (BLAKE2b, 8 bytes,
modulo 2^63 - 1); ``len(space)`` is 2^63 - 1, the id range. ``arch(arch_id)`` answers for the ids this
process has met through ``arch_id``/``canonical`` (two archs with one id are a loud error, never a silent
merge): NDS spaces score the archs of a table (``sample.archs``: the Parquet table ``gradsign truth nds``
writes), and every pipeline path (a run, ``gradsign report``) reads that list before it asks for an arch.
``sample.size`` (uniform sampling) is refused: the NDS samplers' width/depth ranges are not part of the
files.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

from .base import Space
from .darts import DARTS_OPS
from .darts_genotype import Genotype, GenotypeError, Rules, gradsign_signal

if TYPE_CHECKING:
    from torch import nn

ENAS_OPS = ("skip_connect", "sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")
AMOEBA_OPS = ENAS_OPS[:3] + ("sep_conv_7x7", "avg_pool_3x3", "max_pool_3x3", "dil_sep_conv_3x3", "conv_7x1_1x7")
NASNET_OPS = ("skip_connect", "conv_3x1_1x3", "conv_7x1_1x7", "dil_conv_3x3", "avg_pool_3x3", "max_pool_3x3",
              "max_pool_5x5", "max_pool_7x7", "conv_1x1", "conv_3x3", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7")
PNAS_OPS = ("sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "conv_7x1_1x7", "skip_connect", "avg_pool_3x3",
            "max_pool_3x3", "dil_conv_3x3")

NDS_RULES: dict[str, Rules] = {
    "nds-darts": Rules(DARTS_OPS, nodes=4, concat="all"),
    "nds-enas": Rules(ENAS_OPS, nodes=5, concat="given"),
    "nds-amoeba": Rules(AMOEBA_OPS, nodes=5, concat="given"),
    "nds-nasnet": Rules(NASNET_OPS, nodes=5, concat="given"),
    "nds-pnas": Rules(PNAS_OPS, nodes=5, concat="all"),
}
ID_RANGE = 2 ** 63 - 1  # len() must fit a Py_ssize_t


def hash_id(canonical: str) -> int:
    """The 63-bit id of a canonical arch string."""
    return int.from_bytes(hashlib.blake2b(canonical.encode(), digest_size=8).digest(), "big") % ID_RANGE


class NDSSpace(Space):
    """One NDS space; archs carry width and depth (see the module docstring)."""

    key_column = None
    record_fields = ("genotype", "width", "depth")

    def __init__(self, name: str):
        if name not in NDS_RULES:
            raise ValueError(f"unknown NDS space {name!r}; valid: {', '.join(NDS_RULES)}")
        self.name, self.rules = name, NDS_RULES[name]
        self._by_id: dict[int, str] = {}

    def __len__(self) -> int:
        return ID_RANGE

    def __iter__(self) -> Iterator[str]:
        raise TypeError(f"{self.name} cannot be enumerated: score the archs of an NDS table (sample.archs)")

    # --- parsing -----------------------------------------------------------------------------------

    def parse(self, arch) -> tuple[int, int, Genotype]:
        """(width, depth, genotype) of an arch string, or of a record: an NDS ``net`` record
        (``genotype``, ``width``, ``depth``), a whole NDS record holding one, or a table row with ``arch``."""
        if isinstance(arch, Mapping):
            if arch.get("arch") is not None:
                return self.parse(arch["arch"])
            net = arch["net"] if isinstance(arch.get("net"), Mapping) else arch
            if "genotype" not in net:
                raise GenotypeError(f"an NDS record needs net.genotype, width and depth (fields: {sorted(net)})")
            genotype = net["genotype"]
            return (self._size(net.get("width"), "width"), self._size(net.get("depth"), "depth"),
                    Genotype.parse(genotype, self.rules) if isinstance(genotype, str) else
                    Genotype.from_record(genotype, self.rules))
        if not isinstance(arch, str):
            raise GenotypeError(f"an arch string must be a str, got {type(arch).__name__}")
        fields = arch.strip().split(";", 2)
        if len(fields) != 3 or not fields[0].startswith("width=") or not fields[1].startswith("depth="):
            raise GenotypeError(f"malformed {self.name} arch {arch!r}: "
                                "expected 'width=W;depth=D;normal=...;reduce=...'")
        width = self._size(fields[0][len("width="):], "width")
        depth = self._size(fields[1][len("depth="):], "depth")
        return width, depth, Genotype.parse(fields[2], self.rules)

    @staticmethod
    def _size(value, what: str) -> int:
        try:
            number = int(value)
            if isinstance(value, bool) or number != float(value) or number < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise GenotypeError(f"{what} must be a positive int, got {value!r}") from None
        return number

    # --- the protocol ------------------------------------------------------------------------------

    def canonical(self, arch) -> str:
        width, depth, genotype = self.parse(arch)
        text = f"width={width};depth={depth};{genotype.to_text()}"
        self._remember(text)
        return text

    def _remember(self, canonical: str) -> int:
        arch_id = hash_id(canonical)
        seen = self._by_id.setdefault(arch_id, canonical)
        if seen != canonical:
            raise GenotypeError(f"{self.name}: arch_id collision between {seen!r} and {canonical!r}")
        return arch_id

    def arch_id(self, arch) -> int:
        return self._remember(self.canonical(arch))

    def arch(self, arch_id: int) -> str:
        try:
            return self._by_id[int(arch_id)]
        except KeyError:
            raise GenotypeError(f"{self.name} arch_id {arch_id} was not met in this process: NDS archs come from a "
                                "table (sample.archs), read before ids are looked up") from None

    def key(self, arch) -> str:
        return self.canonical(arch)

    def key_by_id(self, arch_id: int) -> str:
        return self.arch(arch_id)

    def from_record(self, record: Mapping) -> str:
        return self.canonical(record)

    def genotype_text(self, arch) -> str:
        return self.parse(arch)[2].darts_text()

    def gradsign_signal(self, arch) -> bool:
        """False when GradSign's per-sample gradients of this arch's network are all float rounding noise
        (``darts_genotype.gradsign_signal``)."""
        _, depth, genotype = self.parse(arch)
        return gradsign_signal(genotype, depth)

    def build(self, arch, num_classes: int) -> nn.Module:
        from .darts_net import DartsNetwork

        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        width, depth, genotype = self.parse(arch)
        return DartsNetwork(genotype, width, depth, int(num_classes))

    def sample_ids(self, size: int, seed: int) -> Sequence[int]:
        raise ValueError(f"{self.name}: sample.size is not supported (the NDS samplers' width/depth ranges are not in "
                         "the files); give sample.archs, the table of `gradsign truth nds`")


def factory(name: str):
    """A registry factory for one NDS space."""

    def make() -> NDSSpace:
        return NDSSpace(name)

    make.__name__ = f"make_{name.replace('-', '_')}"
    return make
