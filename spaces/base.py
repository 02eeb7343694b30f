"""What a search space is to the pipeline: the protocol, and a base class with the generic parts.

A space (contract; ``spaces/__init__.py`` has the whole list) is an object with:

- ``name`` (str) and ``len(space)``: the number of architectures;
- iteration over arch strings in canonical order, and ``arch(arch_id)`` / ``arch_id(arch)`` between an
  arch string and its position ``0 <= arch_id < len(space)`` in that order;
- ``canonical(arch)``: the one spelling of an architecture that the space scores (equal architectures,
  however written, have equal canonical strings; the scorer seeds each network from it);
- ``key(arch)``: what ground-truth tables join on (the canonical string unless the benchmark has its
  own key, e.g. NAS-Bench-101's graph hash); ``key_column``: ``None`` when the key is the canonical
  string, else the name of the column that carries it in shards, scores and top-k (e.g. ``"hash"``);
- ``build(arch, num_classes) -> torch.nn.Module``: the network at initialisation, drawn from the current
  torch RNG state; every parameter it holds must be a real weight (proxies count and score them all);
- ``sample_ids(size, seed)``: ``size`` distinct arch_ids drawn with ``seed``, sorted;
- optionally ``from_record(mapping) -> arch``: an arch string from a table row without an ``arch`` field
  (NB101 rows carry ``matrix`` and ``ops``), and ``key_by_id(arch_id)``: a fast ``key(arch(arch_id))``.

Invalid input is one ``ValueError`` (subclass) naming the problem. ``Space`` below supplies iteration,
``sample_ids``, ``canonical`` (identity), ``key`` (= canonical) and ``key_by_id``; a subclass gives
``name``, ``__len__``, ``arch``, ``arch_id`` and ``build``.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


class Space:
    """Generic parts of a space; see the module docstring for the protocol."""

    name: str = "space"
    key_column: str | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def arch(self, arch_id: int) -> str:
        raise NotImplementedError

    def arch_id(self, arch: str) -> int:
        raise NotImplementedError

    def build(self, arch: str, num_classes: int):
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        for arch_id in range(len(self)):
            yield self.arch(arch_id)

    def canonical(self, arch: str) -> str:
        return self.arch(self.arch_id(arch))

    def key(self, arch: str) -> str:
        return self.canonical(arch)

    def key_by_id(self, arch_id: int) -> str:
        return self.key(self.arch(arch_id))

    def sample_ids(self, size: int, seed: int) -> Sequence[int]:
        """``size`` distinct arch_ids drawn with ``seed``, sorted (the run order does not matter)."""
        n = len(self)
        if not 0 < size <= n:
            raise ValueError(f"sample.size must be in [1, {n}], got {size}")
        rng = np.random.default_rng(seed)
        return sorted(int(i) for i in rng.choice(n, size=size, replace=False))
