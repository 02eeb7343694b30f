"""The reducer: score rows (Arrow) -> counts, correlations against ground truth, top-k candidates.

Invariants: a row counts as scored when its ``error`` is null; a proxy's value enters correlations and
the top-k only when it is finite, its gradients had no non-finite entries (``nonfinite`` column), and
(for correlations) the arch has a ground-truth value. Higher scores rank first for every proxy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

from spaces.ground_truth import GroundTruth

KEPT_COLUMNS = ("arch_id", "arch", "nonfinite", "seconds", "error")


def flagged(nonfinite: str | None, proxy: str) -> bool:
    """Whether a row's ``nonfinite`` text (``name:count,...``) names ``proxy``."""
    return bool(nonfinite) and any(part.split(":", 1)[0] == proxy for part in nonfinite.split(","))


@dataclass
class Reducer:
    proxy_names: Sequence[str]
    ground_truth: GroundTruth | None = None
    topk: int = 50
    topk_by: str | None = None
    _tables: list[pa.Table] = field(default_factory=list)
    scored: int = 0
    failed: int = 0

    def add(self, table: pa.Table) -> None:
        """Take one shard's score rows (only the columns the reduction needs are kept)."""
        keep = [c for c in (*KEPT_COLUMNS, *self.proxy_names) if c in table.column_names]
        table = table.select(keep)
        ok_rows = table.column("error").null_count
        self.scored += ok_rows
        self.failed += table.num_rows - ok_rows
        self._tables.append(table)

    def table(self) -> pa.Table:
        if not self._tables:
            return pa.table({c: pa.array([], pa.int64() if c == "arch_id" else pa.string()) for c in KEPT_COLUMNS})
        merged = pa.concat_tables(self._tables).combine_chunks()
        self._tables = [merged]
        return merged

    @staticmethod
    def _no_error(table: pa.Table) -> np.ndarray:
        return np.asarray([e is None for e in table.column("error").to_pylist()], bool)

    @staticmethod
    def _nonfinite(table: pa.Table, proxy: str) -> np.ndarray:
        """Rows whose value for ``proxy`` is NaN/inf or whose gradients had non-finite entries."""
        values = table.column(proxy).to_numpy(zero_copy_only=False).astype(np.float64)
        flags = np.asarray([flagged(f, proxy) for f in table.column("nonfinite").to_pylist()], bool)
        return ~np.isfinite(values) | flags

    def _usable(self, table: pa.Table, proxy: str) -> np.ndarray:
        return self._no_error(table) & ~self._nonfinite(table, proxy)

    def correlations(self, table: pa.Table) -> dict[str, dict]:
        out: dict[str, dict] = {}
        archs = table.column("arch").to_pylist()
        truth = None
        if self.ground_truth is not None:
            truth = np.asarray([self.ground_truth.values.get(a, math.nan) for a in archs], np.float64)
        for proxy in self.proxy_names:
            values = table.column(proxy).to_numpy(zero_copy_only=False).astype(np.float64)
            usable = self._usable(table, proxy)
            entry: dict = {
                "valid": int(usable.sum()),
                "nonfinite_rows": int((self._no_error(table) & self._nonfinite(table, proxy)).sum()),
            }
            if truth is not None:
                has_truth = np.isfinite(truth)
                both = usable & has_truth
                entry["n"] = int(both.sum())
                entry["missing_ground_truth"] = int((usable & ~has_truth).sum())
                if both.sum() >= 3 and np.ptp(values[both]) > 0:
                    entry["spearman"] = float(stats.spearmanr(values[both], truth[both]).statistic)
                    entry["kendall"] = float(stats.kendalltau(values[both], truth[both]).statistic)
                else:
                    entry["spearman"] = entry["kendall"] = None
            out[proxy] = entry
        return out

    def top(self, table: pa.Table) -> pa.Table:
        """The ``topk`` best archs by ``topk_by`` (default: the first proxy), with rank and all scores."""
        by = self.topk_by or self.proxy_names[0]
        usable = self._usable(table, by)
        candidates = table.filter(pa.array(usable))
        order = np.argsort(-candidates.column(by).to_numpy(zero_copy_only=False), kind="stable")
        best = candidates.take(pa.array(order[: self.topk], pa.int64()))
        columns = {"rank": pa.array(np.arange(1, best.num_rows + 1), pa.int64()),
                   "arch_id": best.column("arch_id"), "arch": best.column("arch")}
        for proxy in self.proxy_names:
            columns[proxy] = best.column(proxy)
        if self.ground_truth is not None:
            archs = best.column("arch").to_pylist()
            columns["official_index"] = pa.array([self.ground_truth.official_index.get(a) for a in archs], pa.int64())
            columns[self.ground_truth.column] = pa.array([self.ground_truth.values.get(a) for a in archs], pa.float64())
        return pa.table(columns)


def read_scores(scores_dir: Path) -> pa.Table | None:
    """Every committed score file of a run folder, concatenated (None when there is none)."""
    parts = sorted(scores_dir.glob("part-*.parquet"))
    if not parts:
        return None
    return pa.concat_tables(pq.read_table(p) for p in parts)
