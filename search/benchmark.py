"""The simulated-training oracle and the proxy score tables, as arrays indexed by ``arch_id``.

Protocol of the NB201 paper's searches (held here as data, not read from files: the runner in
``pipeline/`` loads the tables): a query of an architecture returns its CIFAR-10 12-epoch validation
accuracy and costs its 12-epoch training time in simulated seconds; the pick of a run is reported with its
200-epoch test accuracy on each final dataset.

Invariants: ``valid`` and ``cost`` are finite for every arch of the space and ``cost > 0`` (so every
search ends within its budget); ``final`` arrays have the space's length (NaN where unknown).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FINAL_DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "imagenet16-120")


class BenchmarkError(ValueError):
    """A benchmark or score table that cannot drive a search; the message says what is wrong."""


@dataclass(frozen=True)
class Benchmark:
    valid: np.ndarray  # search signal per arch_id (e.g. CIFAR-10 12-epoch validation accuracy, %)
    cost: np.ndarray  # simulated seconds charged per query (e.g. 12-epoch training time)
    final: dict[str, np.ndarray]  # reported accuracy of a pick per dataset (200-epoch test accuracy, %)

    def __post_init__(self) -> None:
        n = self.valid.shape[0]
        if self.cost.shape != (n,):
            raise BenchmarkError(f"benchmark cost has {self.cost.shape[0]} entries, validation {n}")
        bad = ~np.isfinite(self.valid) | ~np.isfinite(self.cost)
        if bad.any():
            raise BenchmarkError(f"benchmark lacks a validation accuracy or a cost for {int(bad.sum())} archs "
                                 f"(first arch_id {int(np.flatnonzero(bad)[0])}): every arch must be queryable")
        if (self.cost <= 0).any():
            raise BenchmarkError(f"benchmark cost must be > 0 seconds; arch_id {int(np.argmin(self.cost))} "
                                 f"costs {float(self.cost.min())}")
        for name, values in self.final.items():
            if values.shape != (n,):
                raise BenchmarkError(f"final accuracy {name!r} has {values.shape[0]} entries, expected {n}")

    def __len__(self) -> int:
        return int(self.valid.shape[0])


@dataclass(frozen=True)
class ProxyScores:
    """One proxy's scores per arch_id (higher is better; NaN = no score) and, where known, the measured
    seconds it took to score each arch (NaN = unknown)."""

    name: str
    values: np.ndarray
    seconds: np.ndarray | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def coverage(self) -> int:
        return int(np.isfinite(self.values).sum())
