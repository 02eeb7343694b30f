"""The reducer: score rows (Arrow) -> counts, correlations against ground truth, top-k candidates.

Invariants: a row counts as scored when its ``error`` is null (a row whose one proxy failed counts as
failed, yet its other proxies' values are used); a proxy's value enters correlations and the top-k only
when it is finite and its gradients had no non-finite entries (``nonfinite`` column), and enters
correlations only when the arch has a ground-truth value. Higher scores rank first for every proxy; ties
are broken by ``arch_id`` (lower first), so the top-k never depends on the order shards were committed.
``topk_by`` may list several proxies (their rank average, ``ranking.py``), and ``topk_min_distance`` makes
the top-k diverse (``ranking.py``); both only change which rows are listed, never a score. Left at their
defaults (one proxy, no distance) the top-k has exactly the columns it always had; an ensemble adds its
column (``p1+p2``), a distance adds ``distance`` (to the nearest earlier row; null for rank 1).
Correlations are also reported as the reference implementations count them (``reference``): rows flagged
non-finite keep their finite-sum value (the reference's ``nansum``) and -inf/+inf values are ranked (last /
first); only NaN values (failed proxies) are left out.
Population scores (``actors.proxies.population_scores``: AZ-NAS's rank aggregate) are added by ``columns()``
over every row taken so far whose inputs are all usable: a value is relative to the population scored so far
(a partial run's values change as it grows; a resumed run's are recomputed over all committed rows); they
enter correlations and the top-k as any proxy does, and never a score file.
Only numbers are kept per row (arch_id, one float per proxy, flags, the ground-truth value), so the
reducer's memory is a few bytes per arch per proxy however large the space; arch strings are looked up
again for the top-k rows alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa
from scipy import stats

from gradsign.pipeline.outputs import ranking
from gradsign.spaces.ground_truth import GroundTruth

MAX_ERRORS_KEPT = 5


def flagged(nonfinite: str | None, proxy: str) -> bool:
    """Whether a row's ``nonfinite`` text (``name:count,...``) names ``proxy``."""
    return bool(nonfinite) and any(part.split(":", 1)[0] == proxy for part in nonfinite.split(","))


@dataclass
class Columns:
    """The reducer's numeric view of all rows it took."""

    arch_id: np.ndarray
    ok: np.ndarray  # no error
    values: dict[str, np.ndarray]
    usable: dict[str, np.ndarray]  # finite, not flagged
    truth: np.ndarray  # NaN where no ground truth


@dataclass
class Reducer:
    proxy_names: Sequence[str]
    space: object
    ground_truth: GroundTruth | None = None
    topk: int = 50
    topk_by: str | list[str] | None = None
    topk_min_distance: int | None = None
    scored: int = 0
    failed: int = 0
    first_errors: list[str] = field(default_factory=list)
    _parts: list[dict[str, np.ndarray]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """Every column the reducer reports: the run's proxies, then the population scores they make."""
        from gradsign.actors.proxies import population_scores

        return [*self.proxy_names, *(p.name for p in population_scores(self.proxy_names))]

    def add(self, table: pa.Table) -> None:
        """Take one shard's score rows."""
        errors = table.column("error").to_pylist()
        ok = np.asarray([e is None for e in errors], bool)
        self.scored += int(ok.sum())
        self.failed += int((~ok).sum())
        for e in errors:
            if e is not None and len(self.first_errors) < MAX_ERRORS_KEPT:
                self.first_errors.append(e.splitlines()[0])
        flags = table.column("nonfinite").to_pylist()
        part: dict[str, np.ndarray] = {
            "arch_id": table.column("arch_id").to_numpy().astype(np.int64),
            "ok": ok,
        }
        for proxy in self.proxy_names:
            values = table.column(proxy).to_numpy(zero_copy_only=False).astype(np.float64)
            bad = np.asarray([flagged(f, proxy) for f in flags], bool) | ~np.isfinite(values)
            part[f"v:{proxy}"] = values
            part[f"u:{proxy}"] = ~bad
        if self.ground_truth is not None:
            lookup = self.ground_truth.values
            part["truth"] = np.asarray([lookup.get(k, math.nan) for k in self._keys(table)], np.float64)
        else:
            part["truth"] = np.full(table.num_rows, math.nan)
        self._parts.append(part)

    def _keys(self, table: pa.Table) -> list:
        """The ground-truth join key of each row: the key column (NB101 ``hash``) when the space has one,
        else the arch string (canonical in run files)."""
        column = getattr(self.space, "key_column", None)
        if column is None:
            return table.column("arch").to_pylist()
        if column in table.column_names:
            return table.column(column).to_pylist()
        return [self.space.key(a) for a in table.column("arch").to_pylist()]

    def columns(self) -> Columns:
        if len(self._parts) > 1:  # merge once, keep one part
            self._parts = [{k: np.concatenate([p[k] for p in self._parts]) for k in self._parts[0]}]
        if not self._parts:
            empty = np.zeros(0)
            return Columns(empty.astype(np.int64), empty.astype(bool), {p: empty for p in self.names},
                           {p: empty.astype(bool) for p in self.names}, empty)
        p = self._parts[0]
        cols = Columns(p["arch_id"], p["ok"], {n: p[f"v:{n}"] for n in self.proxy_names},
                       {n: p[f"u:{n}"] for n in self.proxy_names}, p["truth"])
        return with_population_scores(cols, self.proxy_names)

    def correlations(self, cols: Columns) -> dict[str, dict]:
        out: dict[str, dict] = {}
        has_truth = np.isfinite(cols.truth)
        for proxy in self.names:
            values, usable = cols.values[proxy], cols.usable[proxy]
            failed = np.isnan(values)
            entry: dict = {"valid": int(usable.sum()), "failed": int(failed.sum()),
                           "nonfinite_rows": int((~failed & ~usable).sum())}
            if self.ground_truth is not None:
                entry["n"] = int((usable & has_truth).sum())
                entry["missing_ground_truth"] = int((usable & ~has_truth).sum())
                entry.update(_rank_correlations(values, cols.truth, usable & has_truth))
                entry["reference"] = {"n": int((~failed & has_truth).sum()),
                                      **_rank_correlations(values, cols.truth, ~failed & has_truth)}
            out[proxy] = entry
        return out

    def signal_split(self, cols: Columns) -> dict | None:
        """Where the space can build networks that leave GradSign without a per-sample signal
        (``space.gradsign_signal(arch)``: DARTS-style cells, see ``spaces/darts_genotype.py``) and GradSign is
        scored: how many scored archs have the signal and how many have none (their scores count weights), and
        with ground truth GradSign's correlations within each group. None otherwise."""
        check = getattr(self.space, "gradsign_signal", None)
        if not callable(check) or "gradsign" not in self.proxy_names:
            return None
        signal = np.zeros(len(cols.arch_id), bool)
        for i in np.flatnonzero(cols.ok):
            signal[i] = check(self.space.arch(int(cols.arch_id[i])))
        out: dict = {"with_signal": int((cols.ok & signal).sum()), "without_signal": int((cols.ok & ~signal).sum())}
        if self.ground_truth is not None:
            usable = cols.usable["gradsign"] & np.isfinite(cols.truth)
            for name, group in (("with_signal", signal), ("without_signal", ~signal)):
                keep = usable & group
                out[f"{name}_correlation"] = {"n": int(keep.sum()),
                                              **_rank_correlations(cols.values["gradsign"], cols.truth, keep)}
        return out

    def top(self, cols: Columns) -> pa.Table:
        """The ``topk`` best archs by ``topk_by`` (default: the first proxy; a list: their rank average),
        diverse when ``topk_min_distance`` is set, with rank and all scores."""
        names = ranking.ranking_names(self.topk_by, self.names)
        values, usable = ranking.ranking(cols.values, cols.usable, names)
        # best first; equal values by arch_id, so a run and a later report give the same list
        order = ranking.best_first(cols.arch_id, values, usable)
        nearest = None
        if self.topk_min_distance is None:
            order = order[: self.topk]
        else:
            kept, nearest = ranking.diverse(self.space, cols.arch_id[order], self.topk, self.topk_min_distance)
            order = order[kept]
        ids = cols.arch_id[order]
        archs = [self.space.arch(int(i)) for i in ids]
        columns = {"rank": pa.array(np.arange(1, len(order) + 1), pa.int64()),
                   "arch_id": pa.array(ids, pa.int64()), "arch": pa.array(archs, pa.string())}
        key_column = getattr(self.space, "key_column", None)
        by_id = getattr(self.space, "key_by_id", None)
        keys = archs if key_column is None else [by_id(int(i)) if by_id else self.space.key(a)
                                                 for i, a in zip(ids, archs)]
        if key_column is not None:
            columns[key_column] = pa.array(keys, pa.string())
        for proxy in self.names:
            columns[proxy] = pa.array(cols.values[proxy][order], pa.float64())
        if len(names) > 1:
            columns[ranking.ranking_column(names)] = pa.array(values[order], pa.float64())
        if nearest is not None:
            columns["distance"] = pa.array(nearest, pa.int64())
        if self.ground_truth is not None:
            columns["official_index"] = pa.array([self.ground_truth.official_index.get(k) for k in keys], pa.int64())
            truth = cols.truth[order]
            columns[self.ground_truth.column] = pa.array([None if math.isnan(t) else float(t) for t in truth],
                                                         pa.float64())
        return with_space_columns(pa.table(columns), self.space)


def with_population_scores(cols: Columns, proxy_names: Sequence[str]) -> Columns:
    """``cols`` with each population score that ``proxy_names`` make, computed over the rows that have no
    error and a value for every input (the others get NaN, not usable). An input of -inf/+inf is a value: it
    ranks as the extreme it is (AZ-NAS marks degenerate networks with -inf, and its authors rank them last)."""
    from gradsign.actors.proxies import population_scores

    for score in population_scores(proxy_names):
        members = cols.ok.copy()
        for name in score.inputs:
            members &= ~np.isnan(cols.values[name])
        values = np.full(cols.arch_id.size, math.nan)
        if members.any():
            values[members] = score.compute({n: cols.values[n][members] for n in score.inputs})
        cols.values[score.name] = values
        cols.usable[score.name] = members & np.isfinite(values)
    return cols


def with_space_columns(top: pa.Table, space) -> pa.Table:
    """``top`` with what DARTS-style spaces add to a candidate row: ``genotype``, the DARTS
    ``Genotype(...)`` text a DARTS training script takes (when the space has ``genotype_text(arch)``), and
    ``gradsign_signal`` beside a ``gradsign`` column (when the space has ``gradsign_signal(arch)``: False
    marks an arch whose GradSign score counts weights, see ``spaces/darts_genotype.py``). Other spaces' rows
    are returned unchanged."""
    archs = top.column("arch").to_pylist() if "arch" in top.column_names else None
    text = getattr(space, "genotype_text", None)
    if archs is not None and callable(text) and "genotype" not in top.column_names:
        top = top.append_column("genotype", pa.array([text(a) for a in archs], pa.string()))
    signal = getattr(space, "gradsign_signal", None)
    if (archs is not None and callable(signal) and "gradsign" in top.column_names
            and "gradsign_signal" not in top.column_names):
        top = top.append_column("gradsign_signal", pa.array([bool(signal(a)) for a in archs], pa.bool_()))
    return top


def _rank_correlations(values: np.ndarray, truth: np.ndarray, keep: np.ndarray) -> dict:
    """Spearman and Kendall of ``values`` against ``truth`` over ``keep`` (None when undefined: fewer than
    3 rows, or constant values or truth). Infinite values rank as the extremes they are."""
    x, y = values[keep], truth[keep]
    if keep.sum() < 3 or len(np.unique(x)) < 2 or len(np.unique(y)) < 2:
        return {"spearman": None, "kendall": None}
    x = stats.rankdata(x)  # ranks: +-inf become ordinary extreme ranks
    return {"spearman": float(stats.spearmanr(x, y).statistic), "kendall": float(stats.kendalltau(x, y).statistic)}
