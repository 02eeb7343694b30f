"""The search runner's inputs: the benchmark oracle, the score tables (run folders read verified), warm-start
lists. Each refusal is one ``ScoreTableError`` or ``GroundTruthError`` naming the file and the problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gradsign import search
from gradsign.spaces.ground_truth import GroundTruthError, check_one_meaning, read_table, select_rows

from gradsign.pipeline.search_runner import config as search_config
from gradsign.pipeline.common import run_folder

class ScoreTableError(ValueError):
    """A score input or candidate list that cannot be used; the message names the file and the problem."""


# ----------------------------------------------------------------------------------------------------
# Inputs


def _ids(table: pa.Table, space, where: str) -> np.ndarray:
    """arch_ids of a table's rows, from ``arch`` (canonicalised) or else ``arch_id``."""
    if "arch" in table.column_names:
        out = []
        for k, arch in enumerate(table.column("arch").to_pylist()):
            try:
                out.append(space.arch_id(arch))
            except ValueError as exc:
                raise ScoreTableError(f"{where}: row {k}: {exc}") from None
        return np.asarray(out, np.int64)
    if "arch_id" in table.column_names:
        ids = np.asarray(table.column("arch_id").to_pylist(), np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(space)):
            raise ScoreTableError(f"{where}: arch_id out of range [0, {len(space)})")
        return ids
    raise ScoreTableError(f"{where} has neither an 'arch' nor an 'arch_id' column (columns: {table.column_names})")


def _column(table: pa.Table, name: str, where: str) -> np.ndarray:
    if name not in table.column_names:
        raise ScoreTableError(f"{where} has no column {name!r}; its columns: {', '.join(table.column_names)}")
    try:
        return pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False).astype(float)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ScoreTableError(f"{where}: column {name!r} is not numeric: {exc}") from None


def _spread(ids: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Values by arch_id; several rows of one arch (repeats of one measurement: ``_one_meaning`` refuses
    the others) give the mean of their finite values, never the last row's."""
    finite = np.isfinite(values)
    sums = np.bincount(ids[finite], weights=values[finite], minlength=size)
    counts = np.bincount(ids[finite], minlength=size)
    out = np.full(size, np.nan)
    out[counts > 0] = sums[counts > 0] / counts[counts > 0]
    return out


def _one_meaning(table: pa.Table, part: dict, space, where: str, key: str) -> tuple[pa.Table, np.ndarray]:
    """The rows ``part["where"]`` selects and their arch_ids; rows of one arch that differ in a label
    column (e.g. ``dataset``) are refused, as in ground-truth tables (``spaces/ground_truth.py``)."""
    try:
        table = select_rows(table, part.get("where"), where)
        ids = _ids(table, space, where)
        check_one_meaning(table, ids.tolist(), "", space, where, describe=lambda i: repr(space.arch(i)))
    except GroundTruthError as exc:
        raise ScoreTableError(f"{exc} (config key {key})") from None
    return table, ids


def _read(path: str | Path, what: str) -> pa.Table:
    try:
        return read_table(path)
    except GroundTruthError as exc:
        raise ScoreTableError(str(exc).replace("ground-truth table", what)) from None


def load_benchmark(cfg: dict, space) -> search.Benchmark:
    """The simulated-training tables, joined on the canonical arch string."""
    s, f = cfg["benchmark"]["search"], cfg["benchmark"]["final"]
    where = f"benchmark table {s['path']}"
    table, ids = _one_meaning(_read(s["path"], "benchmark table"), s, space, where,
                             "benchmark.search.where")
    n = len(space)
    valid = _spread(ids, _column(table, s["valid"], where), n)
    cost = np.zeros(n)
    for name in search_config.cost_columns(s["cost"]):  # a query costs the sum of these columns
        cost = cost + _spread(ids, _column(table, name, where), n)
    where = f"final-accuracy table {f['path']}"
    table, ids = _one_meaning(_read(f["path"], "final-accuracy table"), f, space, where,
                             "benchmark.final.where")
    final = {name: _spread(ids, _column(table, col, where), n) for name, col in f["columns"].items()}
    try:
        return search.Benchmark(valid, cost, final)
    except search.BenchmarkError as exc:
        raise ScoreTableError(f"{s['path']}: {exc}") from None


def _score_files(path: Path) -> tuple[pa.Table, str]:
    if path.is_dir():
        if not (path / run_folder.CONFIG).is_file():
            raise ScoreTableError(f"scores: {path} is a folder but not a run folder (no config.yaml)")
        if not run_folder.committed(path):
            raise ScoreTableError(f"scores: run folder {path} has no committed scores (scores/part-*.parquet)")
        return run_folder.read_scores(path), f"run folder {path}"  # verified, as `gradsign report` reads them
    return _read(path, "score table"), f"score table {path}"


def load_scores(path: str | Path, proxies: list[str], space) -> dict[str, search.ProxyScores]:
    """Each proxy's scores per arch_id (NaN where the table has none, the row failed, or its gradients had
    non-finite entries) and the measured ``seconds`` where the table has that column."""
    table, where = _score_files(Path(path))
    ids = _ids(table, space, where)
    if np.unique(ids).size != ids.size:
        dup = int(ids[np.flatnonzero(np.bincount(ids, minlength=len(space))[ids] > 1)[0]])
        raise ScoreTableError(f"{where} scores arch {space.arch(dup)!r} more than once")
    ok = np.ones(ids.size, bool)
    if "error" in table.column_names:
        ok &= np.asarray([e is None for e in table.column("error").to_pylist()], bool)
    nonfinite = table.column("nonfinite").to_pylist() if "nonfinite" in table.column_names else [None] * ids.size
    seconds = _spread(ids, _column(table, "seconds", where), len(space)) if "seconds" in table.column_names else None
    out = {}
    for proxy in proxies:
        values = _column(table, proxy, where)
        flagged = np.asarray([bool(t) and any(p.split(":", 1)[0] == proxy for p in t.split(",")) for t in nonfinite])
        keep = ok & np.isfinite(values) & ~flagged
        if not keep.any():
            raise ScoreTableError(f"{where}: column {proxy!r} has no usable score")
        out[proxy] = search.ProxyScores(proxy, _spread(ids[keep], values[keep], len(space)), seconds, str(path))
    return out


def load_warm(path: str | Path, count: int, space) -> list[int]:
    """The first ``count`` archs of a candidate list: ``.jsonl`` rows with ``arch`` (ordered by ``rank`` when
    given, as a run's ``topk.jsonl``), a Parquet/CSV with ``arch`` (same), or a text file of arch strings."""
    path = Path(path)
    if not path.is_file():
        raise ScoreTableError(f"warm_start: candidate list not found: {path}")
    where = f"warm_start list {path}"
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ScoreTableError(f"{where}: line {number} is not JSON: {exc}") from None
        if any(not isinstance(r, dict) or "arch" not in r for r in rows):
            raise ScoreTableError(f"{where}: every line needs an 'arch' field")
        table = pa.table({"arch": [r["arch"] for r in rows], "rank": [r.get("rank", k) for k, r in enumerate(rows)]})
    elif path.suffix in (".parquet", ".csv"):
        table = _read(path, "warm_start list")
    else:
        archs = [t.split("#", 1)[0].strip() for t in path.read_text().splitlines()]
        table = pa.table({"arch": [a for a in archs if a]})
    ids = _ids(table, space, where)
    if "rank" in table.column_names:
        ids = ids[np.argsort(_column(table, "rank", where), kind="stable")]
    seen, out = set(), []
    for arch in ids.tolist():
        if arch not in seen:
            seen.add(arch)
            out.append(arch)
    if not out:
        raise ScoreTableError(f"{where} holds no arch")
    return out[:count]
