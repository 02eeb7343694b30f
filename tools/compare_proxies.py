"""One comparison of zero-cost proxies on the same cells: ``python -m tools.compare_proxies TABLE``.

Joins the score columns of several run folders (or result tables) of one space on ``arch_id``, keeping only
the cells every source scored, adds the population-level columns (the AZ-NAS rank aggregate over exactly
these cells) and the rank-average ensembles asked for, writes one Parquet table, and prints one Markdown
table: per column, Spearman and Kendall against the ground truth with a bootstrap 95% interval, rho(score,
params), and n.

Invariants:
- a cell enters a column's statistics where that column is not NaN (a failed proxy) and the ground truth is
  finite; -inf/+inf scores rank as extremes (as the reducer's ``reference`` correlations count them);
- the bootstrap resamples cells with replacement (``BOOTSTRAP`` resamples, numpy seed 0): the percentile
  interval of each statistic, the same resamples for every column of a table, so intervals of two columns
  are comparable;
- an ensemble ``p1+p2`` is the mean of its members' percentile ranks (``pipeline.outputs.ranking``), the same
  rule ``gradsign candidates --by p1,p2`` uses; higher is better for every column.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy import stats

from gradsign import spaces
from gradsign.actors.proxies import az_nas
from gradsign.pipeline.outputs import ranking
from gradsign.pipeline.outputs.results_table import build as run_table
from gradsign.spaces import ground_truth as gt_loader

BOOTSTRAP = 1000
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Source:
    """Columns taken from one run folder or result table: {column there: column in the comparison}."""

    path: str
    columns: dict[str, str]
    # partial: a run that may not have scored every cell (stopped to be resumed): its columns are filled where
    # it has the cell and NaN elsewhere (left out of that column's statistics); it never narrows the table
    partial: bool = False


@dataclass
class Spec:
    space: str
    sources: list[Source]
    truth_path: str
    truth_column: str
    ensembles: list[list[str]] = field(default_factory=list)
    extra_truth: dict[str, str] = field(default_factory=dict)  # more ground-truth columns of the same table
    where: dict | None = None
    # also correlate per row of the ground-truth table, each row taking its cell's scores (NB101 peer tables
    # hold several rows per graph: one per training seed; a peer that counts rows correlates so)
    per_row: bool = False


def _read(path: str) -> pa.Table:
    p = Path(path)
    return run_table(p) if p.is_dir() else pq.read_table(p)


def joined(spec: Spec) -> pa.Table:
    """arch_id, arch, official_index and every source's columns over the cells all (non-partial) sources
    scored; a partial source's columns are NaN where it lacks the cell."""
    merged: dict[int, dict] = {}
    order: list[int] | None = None
    for source in sorted(spec.sources, key=lambda s: s.partial):
        if source.partial and not Path(source.path).is_file() and not list(Path(source.path).glob("scores/part-*")):
            print(f"note: {source.path} has no scores yet: its columns are all NaN")
            table = pa.table({"arch_id": pa.array([], pa.int64()), "arch": pa.array([], pa.string())})
        else:
            table = _read(source.path)
        if "error" in table.column_names:
            table = table.filter(pc.is_null(table.column("error")))
        ids = table.column("arch_id").to_pylist()
        rows = {i: r for i, r in zip(ids, table.select([c for c in ("arch", "official_index", *source.columns)
                                                         if c in table.column_names]).to_pylist())}
        if source.partial:
            if order is None:
                raise ValueError(f"{source.path}: a partial source needs a complete source before it")
            for i in order:
                for here in source.columns.values():
                    merged[i].setdefault(here, math.nan)
        else:
            order = sorted(set(rows) if order is None else set(order) & set(rows))
        for i in [i for i in order if i in rows]:
            target = merged.setdefault(i, {"arch_id": i, "arch": rows[i]["arch"],
                                           "official_index": rows[i].get("official_index")})
            if target["arch"] != rows[i]["arch"]:
                raise ValueError(f"{source.path}: arch_id {i} is {rows[i]['arch']!r}, elsewhere {target['arch']!r}")
            for there, here in source.columns.items():
                if there not in rows[i]:  # a column this source does not have (the map lists every proxy)
                    continue
                value = rows[i][there]
                target[here] = math.nan if value is None else float(value)
    assert order is not None
    return pa.Table.from_pylist([merged[i] for i in order])


def with_population_columns(table: pa.Table) -> pa.Table:
    """The AZ-NAS aggregate over exactly this table's cells, when its components are there."""
    if all(c in table.column_names for c in tuple(az_nas.COLUMNS.values())):
        columns = {c: table.column(c).to_numpy(zero_copy_only=False) for c in tuple(az_nas.COLUMNS.values())}
        table = table.append_column("az_nas", pa.array(az_nas.aggregate(columns), pa.float64()))
    return table


def ensemble_name(members: Sequence[str]) -> str:
    return "+".join(members)


def with_ensembles(table: pa.Table, ensembles: list[list[str]]) -> pa.Table:
    for members in ensembles:
        values = {m: table.column(m).to_numpy(zero_copy_only=False).astype(float) for m in members}
        usable = {m: np.isfinite(v) for m, v in values.items()}
        table = table.append_column(ensemble_name(members),
                                    pa.array(ranking.rank_average(values, usable, members), pa.float64()))
    return table


def truth_of(table: pa.Table, spec: Spec, column: str) -> np.ndarray:
    space = spaces.get(spec.space)
    truth = gt_loader.load(spec.truth_path, column, space, spec.where)
    return np.asarray([truth.values.get(spaces.key(space, a), math.nan) for a in table.column("arch").to_pylist()])


def per_row(table: pa.Table, spec: Spec, column: str) -> tuple[pa.Table, np.ndarray]:
    """The table repeated per row of the ground-truth file (rows of cells it lacks dropped), and each row's
    own value, nothing averaged."""
    space = spaces.get(spec.space)
    position = {spaces.key(space, a): i for i, a in enumerate(table.column("arch").to_pylist())}
    rows = [(position[k], v) for k, v in gt_loader.row_values(spec.truth_path, column, space) if k in position]
    return table.take(pa.array([i for i, _ in rows], pa.int64())), np.asarray([v for _, v in rows])


def correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman and Kendall over the cells where ``x`` is not NaN and ``y`` is finite; -inf/+inf scores rank
    as the extremes they are (a proxy's -inf marks a degenerate network, e.g. an all-``none`` cell)."""
    keep = ~np.isnan(x) & np.isfinite(y)
    if keep.sum() < 3:
        return math.nan, math.nan
    ranks = stats.rankdata(x[keep])
    return (float(stats.spearmanr(ranks, y[keep]).statistic),
            float(stats.kendalltau(ranks, y[keep]).statistic))


def bootstrap(x: np.ndarray, y: np.ndarray, resamples: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile 95% intervals of (Spearman, Kendall) over ``resamples`` (rows of cell indices)."""
    rho, tau = [], []
    for idx in resamples:
        r, t = correlations(x[idx], y[idx])
        rho.append(r)
        tau.append(t)
    q = lambda v: (float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5)))  # noqa: E731
    return q(rho), q(tau)


def statistics(table: pa.Table, truth: np.ndarray, columns: Sequence[str], params: np.ndarray | None,
               resamples: int = BOOTSTRAP) -> list[dict]:
    rng = np.random.default_rng(0)
    index = rng.integers(0, table.num_rows, size=(resamples, table.num_rows))
    out = []
    for name in columns:
        x = table.column(name).to_numpy(zero_copy_only=False).astype(float)
        rho, tau = correlations(x, truth)
        (rlo, rhi), (tlo, thi) = bootstrap(x, truth, index)
        row = {"column": name, "n": int((~np.isnan(x) & np.isfinite(truth)).sum()), "spearman": rho,
               "spearman_lo": rlo, "spearman_hi": rhi, "kendall": tau, "kendall_lo": tlo, "kendall_hi": thi,
               "rho_params": correlations(x, params)[0] if params is not None else math.nan}
        out.append(row)
    return out


def markdown(rows: list[dict], published: dict[str, str] | None = None) -> str:
    published = published or {}
    lines = ["| column | n | Spearman [95% CI] | Kendall [95% CI] | rho(score, params) | published |",
             "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -(r["spearman"] if math.isfinite(r["spearman"]) else -9)):
        lines.append(f"| `{r['column']}` | {r['n']} "
                     f"| {r['spearman']:.3f} [{r['spearman_lo']:.3f}, {r['spearman_hi']:.3f}]"
                     f" | {r['kendall']:.3f} [{r['kendall_lo']:.3f}, {r['kendall_hi']:.3f}] | {r['rho_params']:.3f}"
                     f" | {published.get(r['column'], '')} |")
    return "\n".join(lines)


def best_ensembles(table: pa.Table, truth: np.ndarray, candidates: Sequence[str], sizes=(2, 3), keep: int = 3
                   ) -> list[tuple[float, list[str]]]:
    """The ``keep`` rank-average ensembles of ``candidates`` (pairs and triples) with the highest Spearman
    on ``table`` (in-sample: the caller says so where it reports them)."""
    import itertools

    scored = []
    values = {c: table.column(c).to_numpy(zero_copy_only=False).astype(float) for c in candidates}
    usable = {c: np.isfinite(v) for c, v in values.items()}
    for size in sizes:
        for members in itertools.combinations(candidates, size):
            rho, _ = correlations(ranking.rank_average(values, usable, members), truth)
            scored.append((rho, list(members)))
    scored.sort(key=lambda t: -t[0])
    return scored[:keep]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", help="one of: " + ", ".join(sorted(SPECS)))
    parser.add_argument("--out", default=None, help="the Parquet file (default: results/proxies/TABLE.parquet)")
    parser.add_argument("--ensembles", default="", help="ensembles to add, e.g. 'az_nas+naswot,meco+zico'")
    parser.add_argument("--search-ensembles", action="store_true", help="print the best pairs/triples (in-sample)")
    args = parser.parse_args(argv)
    spec = SPECS[args.table]()
    table = with_population_columns(joined(spec))
    ensembles = [e.split("+") for e in args.ensembles.split(",") if e] + spec.ensembles
    table = with_ensembles(table, ensembles)
    out = Path(args.out or REPO / "results" / "proxies" / f"{args.table}.parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="zstd")
    print(f"{out}: {table.num_rows} rows, columns {table.column_names}")
    proxy_columns = [c for c in table.column_names if c not in ("arch_id", "arch", "official_index")]
    params = table.column("params").to_numpy(zero_copy_only=False) if "params" in table.column_names else None
    for label, column in {spec.truth_column: spec.truth_column, **spec.extra_truth}.items():
        truth = truth_of(table, spec, column)
        print(f"\n### against `{column}`\n")
        print(markdown(statistics(table, truth, proxy_columns, params), PUBLISHED.get((args.table, column))))
        if args.search_ensembles:
            singles = [c for c in proxy_columns if "+" not in c]
            for rho, members in best_ensembles(table, truth, singles):
                print(f"ensemble {ensemble_name(members)}: Spearman {rho:.4f} (in-sample)")
            # chosen on half the cells (even rows), judged on the other half: what the choice is worth
            even = np.arange(table.num_rows) % 2 == 0
            half = table.filter(pa.array(even))
            (rho, members), = best_ensembles(half, truth[even], singles, keep=1)
            other = table.filter(pa.array(~even))
            values = {m: other.column(m).to_numpy(zero_copy_only=False).astype(float) for m in members}
            usable = {m: np.isfinite(v) for m, v in values.items()}
            held, _ = correlations(ranking.rank_average(values, usable, members), truth[~even])
            print(f"chosen on the even rows: {ensemble_name(members)} (Spearman {rho:.4f} there), "
                  f"{held:.4f} on the odd rows")
        if spec.per_row:
            rows, values = per_row(table, spec, column)
            row_params = rows.column("params").to_numpy(zero_copy_only=False) if params is not None else None
            print(f"\n### against `{column}`, per row of {Path(spec.truth_path).name} ({rows.num_rows} rows, "
                  "each taking its cell's scores; the bootstrap resamples rows)\n")
            print(markdown(statistics(rows, values, proxy_columns, row_params), PUBLISHED.get((args.table, column))))
    return 0


# ------------------------------------------------------------------------------------------- the tables
DATA = "${GRADSIGN_DATA:-../shared/data}"


def _data(name: str) -> str:
    import os

    return str(Path(os.environ.get("GRADSIGN_DATA", REPO.parent / "shared" / "data")) / name)


RUNS = Path(__import__("os").environ.get("GRADSIGN_RUNS", "/work/runs"))
NEW = {"gradsign": "gradsign_bn_batch", "zico": "zico", "meco": "meco", "meco_opt": "meco_opt", "swap": "swap",
       "swap_reg": "swap_reg", "az_nas_expressivity": "az_nas_expressivity",
       "az_nas_progressivity": "az_nas_progressivity", "az_nas_trainability": "az_nas_trainability",
       "flops": "flops", "params": "params", "naswot": "naswot", "grad_norm": "grad_norm", "snip": "snip",
       "grasp": "grasp", "fisher": "fisher", "synflow": "synflow", "jacob_cov": "jacob_cov"}


def _nb201(dataset: str) -> Spec:
    whole_space = REPO / "results" / "nb201" / f"gradsign-{dataset}.parquet"
    return Spec("nb201", [Source(str(whole_space), {"gradsign": "gradsign"}),
                          Source(str(RUNS / f"proxies-nb201-{dataset}-1000"), NEW)],
                _data("nb201_accuracy.csv"), {"cifar10": "cifar10_test", "cifar100": "cifar100_test",
                                              "imagenet16-120": "imagenet16_120_test"}[dataset])


SPECS = {
    "nb201-cifar10": lambda: _nb201("cifar10"),
    "nb201-cifar100": lambda: _nb201("cifar100"),
    "nb201-imagenet16-120": lambda: _nb201("imagenet16-120"),
    "nb301-725": lambda: Spec("darts", [
        Source(str(REPO / "results" / "darts" / "nb301-725-gradsign-naswot-params.parquet"),
               {"gradsign": "gradsign", "naswot": "naswot", "params": "params"}),
        Source(str(RUNS / "proxies-nb301-725"), NEW)], _data("nb301_naslib_725.jsonl"), "val_accuracy"),
    "nb101-500": lambda: Spec("nb101", [Source(str(RUNS / "proxies-nb101-500"), {**NEW, "gradsign": "gradsign"}),
                                        Source(str(RUNS / "proxies-nb101-500-bn-batch"),
                                               {"gradsign": "gradsign_bn_batch"}, partial=True)],
                              _data("nb101_naslib_500.jsonl"), "val_accuracy", per_row=True),
}

PUBLISHED = {
    ("nb201-cifar10", "cifar10_test"): {"az_nas": "0.913", "meco": "0.894", "swap": "0.810", "zico": "0.784",
                                        "gradsign": "0.765 (paper) / 0.808 (whole space here)"},
    ("nb201-cifar100", "cifar100_test"): {"az_nas": "0.900", "meco": "0.883", "swap": "0.820", "zico": "0.813",
                                          "gradsign": "0.793"},
    ("nb201-imagenet16-120", "imagenet16_120_test"): {"az_nas": "0.886", "meco": "0.845", "swap": "0.774",
                                                      "zico": "0.804", "gradsign": "0.783"},
    ("nb101-500", "val_accuracy"): {"az_nas": "0.54 (L-SWAG Table 1, 1,000 nets)",
                                    "zico": "0.63 (ZiCo Fig. 3, whole space)",
                                    "naswot": "0.31 (Suite-Zero, 1,000)", "synflow": "0.37 (zero-cost-nas, whole)",
                                    "params": "0.43 (ZiCo) / 0.37 (Suite-Zero)",
                                    "flops": "0.44 (ZiCo) / 0.36 (Suite-Zero)"},
    ("nb301-725", "val_accuracy"): {"az_nas": "~0.70 (other sample)", "meco": "~0.70 (other sample)",
                                    "naswot": "0.47 (Suite-Zero, 1,000 cells)", "params": "0.46 (Suite-Zero)"},
}

if __name__ == "__main__":
    raise SystemExit(main())
