"""Candidate lists without rescoring: ``gradsign candidates`` and ``gradsign report RUN_DIR --topk-distance``.

A candidate list is the reducer's top-k (``reducer.py``, ranked and thinned by ``ranking.py``), made from
scores already stored:
- from a run folder: its config and committed score files, verified and read exactly as ``gradsign report``
  reads them (``pipeline/common/run_folder.py``; the ground truth with ``ground_truth.where``),
  with ``topk``, ``topk_by`` and ``topk_min_distance`` replaced as asked; the same keys give the same list
  as the run wrote (same columns, same rows);
- from score tables (Parquet/CSV with ``arch`` or ``arch_id`` and proxy columns; ``error`` and ``nonfinite``
  honoured when present; a run folder counts as a table of its committed scores): each proxy is read from
  the first source that has its column, joined on arch_id, so GradSign from one file and NASWOT from
  another make one ensemble.
Nothing here writes into a run folder except the list file it is asked for (the run's own ``topk.jsonl``
stays what its config made).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gradsign import spaces
from gradsign.pipeline.common import interrupt
from gradsign.pipeline.common.layered import ConfigError, check_output_file
from gradsign.pipeline.outputs import ranking
from gradsign.pipeline.outputs.reducer import Columns, Reducer, flagged
from gradsign.spaces import distance as space_distance
from gradsign.spaces.ground_truth import GroundTruthError, read_table


DEFAULT_SPACE = "nb201"  # the space of score tables when neither --space nor a run folder says


def check_topk(cfg: dict, space) -> None:
    """A run config's top-k keys against its proxies and space: one ConfigError naming the problem."""
    try:
        from gradsign.actors.proxies import population_scores

        names = [*cfg["proxies"], *(p.name for p in population_scores(cfg["proxies"]))]
        ranking.ranking_names(cfg["topk_by"], names)
        if cfg.get("topk_min_distance") is not None:
            space_distance.require(space)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _override(cfg: dict, count: int | None, by, min_distance: int | None) -> dict:
    if count is not None:
        cfg["topk"] = count
    if by is not None:
        cfg["topk_by"] = by if isinstance(by, str) else by[0] if len(by) == 1 else list(by)
    if min_distance is not None:
        cfg["topk_min_distance"] = min_distance
    return cfg


def run_topk(run_dir: str | Path, count: int | None = None, by=None, min_distance: int | None = None) -> pa.Table:
    """The top-k of a run folder from its committed scores, its config's top-k keys replaced by the
    arguments given (None keeps the config's)."""
    from gradsign.actors import proxies as proxy_registry
    from gradsign.pipeline.common.run_folder import Reader, score_schema
    from gradsign.pipeline.driver import config as config_mod
    from gradsign.pipeline.driver.shards import iter_shards
    from gradsign.pipeline.driver.space_cache import get_space

    run_dir = Path(run_dir)
    cfg = config_mod.stored(run_dir)
    _override(cfg, count, by, min_distance)
    config_mod.validate(cfg)
    proxy_registry.load_plugins(cfg["plugins"])
    space = get_space(cfg["space"])
    check_topk(cfg, space)
    truth = config_mod.ground_truth(cfg, space)  # with ground_truth.where, as the run loaded it
    reducer = Reducer(cfg["proxies"], space, truth, cfg["topk"], cfg["topk_by"], cfg["topk_min_distance"])
    reader = Reader(run_dir, score_schema(cfg["proxies"], spaces.key_column(space)))
    for _, table in reader.parts(iter_shards(cfg, space)):  # verified, as `gradsign report` reads them
        if table is not None:
            reducer.add(table)
    if reader.note():
        print(reader.note(), file=sys.stderr)
    return reducer.top(reducer.columns())


def _read_source(path: Path) -> tuple[pa.Table, str]:
    if path.is_dir():
        from gradsign.pipeline.common.run_folder import CONFIG, committed, read_scores

        if not (path / CONFIG).is_file() or not committed(path):
            raise ValueError(f"{path} is a folder but not a run folder with committed scores")
        return read_scores(path), f"run folder {path}"  # verified: ScoreFileError names a file that fails
    try:
        return read_table(path), f"score table {path}"
    except GroundTruthError as exc:
        raise ValueError(str(exc).replace("ground-truth table", "score table")) from None


def _source_ids(table: pa.Table, space, where: str) -> np.ndarray:
    if "arch" in table.column_names:
        ids = []
        for k, arch in enumerate(table.column("arch").to_pylist()):
            try:
                ids.append(space.arch_id(arch))
            except ValueError as exc:
                raise ValueError(f"{where}: row {k}: {exc}") from None
        ids = np.asarray(ids, np.int64)
    elif "arch_id" in table.column_names:
        ids = np.asarray(table.column("arch_id").to_pylist(), np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(space)):
            raise ValueError(f"{where}: arch_id out of range [0, {len(space)})")
    else:
        raise ValueError(f"{where} has neither an 'arch' nor an 'arch_id' column (columns: {table.column_names})")
    if np.unique(ids).size != ids.size:
        raise ValueError(f"{where} lists an arch more than once")
    return ids


def table_columns(sources: Sequence[str | Path], space, proxies: Sequence[str]) -> Columns:
    """The reducer's view of ``proxies`` read from score tables (each from the first source that has it),
    over every arch that any of them scores, in arch_id order. Memory follows the tables, not the space
    (a DARTS space has about 1e18 archs)."""
    found: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # proxy -> (ids, values, usable)
    missing = list(proxies)
    for source in sources:
        if not missing:
            break
        table, where = _read_source(Path(source))
        here = [p for p in missing if p in table.column_names]
        if not here:
            continue
        ids = _source_ids(table, space, where)
        ok = np.ones(ids.size, bool)
        if "error" in table.column_names:
            ok &= np.asarray([e is None for e in table.column("error").to_pylist()], bool)
        flags = table.column("nonfinite").to_pylist() if "nonfinite" in table.column_names else [None] * ids.size
        for proxy in here:
            try:
                v = pc.cast(table.column(proxy), pa.float64()).to_numpy(zero_copy_only=False).astype(float)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValueError(f"{where}: column {proxy!r} is not numeric: {exc}") from None
            keep = ok & np.isfinite(v) & ~np.asarray([flagged(f, proxy) for f in flags], bool)
            found[proxy] = (ids, v, keep)
            missing.remove(proxy)
    if missing:
        raise ValueError(f"no source has a column {missing[0]!r} (sources: {', '.join(map(str, sources))})")
    present = np.unique(np.concatenate([found[p][0][np.isfinite(found[p][1])] for p in proxies]
                                       + [np.zeros(0, np.int64)])).astype(np.int64)
    values, usable = {}, {}
    for p in proxies:
        ids, v, keep = found[p]
        values[p], usable[p] = np.full(present.size, np.nan), np.zeros(present.size, bool)
        if present.size:
            at = np.searchsorted(present, ids)
            hit = (at < present.size) & (present[np.minimum(at, present.size - 1)] == ids)
            values[p][at[hit]], usable[p][at[hit]] = v[hit], keep[hit]
    return Columns(present, np.ones(present.size, bool), values, usable, np.full(present.size, np.nan))


def table_topk(sources: Sequence[str | Path], space, by: Sequence[str], count: int,
               min_distance: int | None = None) -> tuple[pa.Table, pa.Table]:
    """(the top-k by ``by`` from score tables, the joined score table with the ranking column)."""
    names = list(by)
    if min_distance is not None:
        space_distance.require(space)
    cols = table_columns(sources, space, names)
    reducer = Reducer(names, space, None, count, names, min_distance)
    values, usable = ranking.ranking(cols.values, cols.usable, names)
    scores = {"arch_id": pa.array(cols.arch_id, pa.int64()),
              "arch": pa.array([space.arch(int(i)) for i in cols.arch_id], pa.string()),
              **{p: pa.array(np.where(cols.usable[p], cols.values[p], np.nan), pa.float64()) for p in names}}
    if len(names) > 1:
        scores[ranking.ranking_column(names)] = pa.array(np.where(usable, values, np.nan), pa.float64())
    return reducer.top(cols), pa.table(scores)


def write_list(table: pa.Table, path: str | Path) -> None:
    """A candidate list as JSON lines (``.jsonl``: one row a line, as ``topk.jsonl``) or Parquet."""
    from gradsign.pipeline.common.atomic import write_atomic, write_text_atomic
    from gradsign.pipeline.outputs.report import dumps

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        write_atomic(table, path)
    elif path.suffix == ".jsonl":
        write_text_atomic(path, "".join(dumps(row) + "\n" for row in table.to_pylist()))
    else:
        raise ValueError(f"a candidate list is written as .jsonl or .parquet, got {path}")


def _describe(table: pa.Table, count: int, by, min_distance) -> str:
    names = [by] if isinstance(by, str) else list(by or [])
    rule = f"by {ranking.ranking_column(names) if names else 'the first proxy'}"
    if min_distance is not None:
        rule += f", at least {min_distance} apart"
    text = f"{table.num_rows} candidates ({rule})"
    if table.num_rows == 0:
        text += ": no arch has a usable value for every proxy of the ranking"
    elif table.num_rows < count and min_distance is not None:
        text += f": fewer than the {count} asked (no more archs are that far from the ones listed)"
    elif table.num_rows < count:
        text += (f": fewer than the {count} asked (only {table.num_rows} archs have a usable value "
                 "for every proxy of the ranking)")
    return text


def main_candidates(sources: list[str], space_name: str | None, by: list[str] | None, count: int,
                    min_distance: int | None, output: str, scores_out: str | None) -> int:
    """``gradsign candidates``: 0 written, 2 bad input."""
    try:
        if count < 1 or (min_distance is not None and min_distance < 0):
            raise ValueError("--count must be >= 1 and --min-distance >= 0")
        check_output_file(output, "--output")
        if scores_out:
            check_output_file(scores_out, "--scores-out")
        first = Path(sources[0])
        if len(sources) == 1 and first.is_dir() and scores_out is None:
            table = run_topk(first, count, by, min_distance)
        else:
            if space_name is None:  # a run folder's own space, else nb201 (as `gradsign compare`)
                space_name = (_run_space(first) if first.is_dir() else None) or DEFAULT_SPACE
            if not by:
                raise ValueError("--by is required when the sources are score tables (the proxy column(s) to rank by)")
            table, scores = table_topk(sources, spaces.get(space_name), by, count, min_distance)
        with interrupt.writing():  # the list and its scores land together, also on Ctrl-C
            if scores_out:
                write_list(scores, scores_out)
            write_list(table, output)
    except (ValueError, FileNotFoundError) as exc:
        print(f"gradsign: error: {exc}", file=sys.stderr)
        return 2
    print(f"{output}: {_describe(table, count, by, min_distance)}")
    return 0


def _run_space(run_dir: Path) -> str | None:
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else None
    return (cfg or {}).get("space")


def main_report_topk(run_dir: str, count: int | None, by: list[str] | None, min_distance: int | None,
                     output: str | None) -> int:
    """``gradsign report RUN_DIR --topk-distance D [--topk-by P ...] [--topk K] [-o FILE]``: the run's list
    recomputed with other top-k keys, written beside (default ``RUN_DIR/topk-d{D}.jsonl`` and ``.parquet``),
    the run's own outputs untouched."""
    try:
        table = run_topk(run_dir, count, by, min_distance)
        if output is None:
            stem = "topk" + (f"-by-{ranking.ranking_column(by)}" if by else "") + \
                (f"-d{min_distance}" if min_distance is not None else "")
            outputs = [Path(run_dir) / f"{stem}.jsonl", Path(run_dir) / f"{stem}.parquet"]
        else:
            outputs = [Path(output)]
        for path in outputs:
            check_output_file(path, "--output")
        with interrupt.writing():  # both files of the list land together, also on Ctrl-C
            for path in outputs:
                write_list(table, path)
    except (ValueError, FileNotFoundError) as exc:
        print(f"gradsign: error: {exc}", file=sys.stderr)
        return 2
    print(f"{outputs[0]}: {_describe(table, count or table.num_rows or 1, by, min_distance)}")
    return 0
