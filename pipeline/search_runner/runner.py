"""The search runner: config -> benchmark + score tables -> independent search runs over Ray -> outputs.

Outputs in ``output/``: ``config.yaml`` (resolved), ``runs.parquet`` (one row per run),
``trajectories.parquet`` (one row per query), ``summary.json``, ``report.md``, ``plots/search.png``.

One search per folder, and a folder always describes the results it holds: a search holds the folder's
``driver.lock`` (``pipeline/common/lock.py``, the lock of ``gradsign score``; a second search on the same
folder is refused with one message) and computes every result in memory; only then does it remove the
previous ``config.yaml`` and then the previous results, write each result atomically and ``config.yaml``
last. So a ``config.yaml`` is only ever beside the results of that config: a search interrupted while it
computes leaves the previous search's folder as it was, one interrupted while it writes leaves a folder
without ``config.yaml`` (no finished search: rerun it).

Determinism: a run is a pure function of (tables, variant, params, budget, seed, run index); runs are cut
into tasks of ``ray.runs_per_task`` by the config alone, and results are assembled in (variant, run) order,
so the outputs are identical for any number of workers (``ray.num_workers``: tasks in flight at once; 0 =
run in this process without Ray). Wall time and worker counts go to ``summary.json`` only.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gradsign import search
from gradsign import spaces
from gradsign.search.published import GRADSIGN_GAIN, OPTIMUM, PUBLISHED, PUBLISHED_BUDGET, ROBOT
from gradsign.spaces.ground_truth import GroundTruthError, check_one_meaning, read_table, select_rows

from gradsign.pipeline.search_runner import config as search_config
from gradsign.pipeline.common.layered import ConfigError
from gradsign.pipeline.common import run_folder
from gradsign.pipeline.common.atomic import write_atomic, write_text_atomic
from gradsign.pipeline.common.lock import hold_run_folder
from gradsign.pipeline.common import interrupt


class SearchInterrupted(KeyboardInterrupt):
    """A search stopped by Ctrl-C or SIGTERM (Ray shut down first): ``committed`` of ``shards`` tasks had
    finished; no result was written. Searches are not resumed: the same command runs it again."""

    def __init__(self, run_dir: Path, committed: int, shards: int):
        super().__init__(f"{committed} of {shards} tasks finished")
        self.run_dir, self.committed, self.shards = run_dir, committed, shards


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


# ----------------------------------------------------------------------------------------------------
# Variants and tasks


def variants(cfg: dict) -> list[search.Variant]:
    """Every (algorithm, proxy, charge) the config asks for, in report order."""
    warm = cfg["warm_start"]["path"] is not None
    out = []
    for algorithm in cfg["algorithm"]:
        if cfg["proxy"] is None or cfg["compare_vanilla"]:
            out.append(search.Variant(algorithm, None, warm=warm))
        for proxy in cfg["proxy"] or ():
            out.append(search.Variant(algorithm, proxy, cfg["proposals"], None, warm))
            if cfg["charge_proxy"] is not None:
                out.append(search.Variant(algorithm, proxy, cfg["proposals"], cfg["charge_proxy"], warm))
    return out


@dataclass(frozen=True)
class Task:
    variant_index: int
    runs: tuple[int, ...]


def tasks(cfg: dict, n_variants: int) -> list[Task]:
    size = cfg["ray"]["runs_per_task"]
    return [Task(v, tuple(range(start, min(start + size, cfg["runs"]))))
            for v in range(n_variants) for start in range(0, cfg["runs"], size)]


def run_task(space_name: str, bench: search.Benchmark, scores: dict, variant: search.Variant, params: dict,
             budget: float, seed: int, runs: tuple[int, ...], warm: tuple[int, ...]) -> tuple[list[dict], dict]:
    """The runs of one task (pure): their rows and their trajectories as column arrays."""
    space = search.get_space(space_name)
    proxy = scores[variant.proxy] if variant.proxy is not None else None
    rows, parts = [], []
    for run in runs:
        outcome = search.run_one(space, bench, proxy, variant, params, budget, seed, run, warm)
        rows.append(outcome.row)
        n = outcome.archs.size
        parts.append({"run": np.full(n, run, np.int64), "step": np.arange(n, dtype=np.int64),
                      "arch_id": outcome.archs, "validation": outcome.valids,
                      "simulated_seconds": outcome.times, "best_validation": outcome.best_valid,
                      "best_test": outcome.best_test})
    traj = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    return rows, traj


def _start_ray(cfg: dict) -> bool:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return False
    if cfg["ray"]["address"] is None and "RAY_ADDRESS" not in os.environ:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", num_cpus=cfg["ray"]["num_workers"], include_dashboard=False,
                 logging_level="warning", object_store_memory=cfg["ray"]["object_store_mb"] * 2**20)
    else:
        ray.init(address=cfg["ray"]["address"], logging_level="warning")
    interrupt.reinstall()  # ray.init replaced the CLI's SIGTERM handler with its own
    return True


def _execute(cfg, space_name, bench, scores, all_variants, all_tasks, params_of, warm, progress) -> list:
    """Results of every task, indexed like ``all_tasks``."""
    budget, seed = float(cfg["budget_seconds"]), cfg["seed"]

    def args(task: Task):
        v = all_variants[task.variant_index]
        return v, params_of(v), task.runs

    results: list = [None] * len(all_tasks)
    if cfg["ray"]["num_workers"] == 0:
        try:
            for k, task in enumerate(all_tasks):
                v, p, runs = args(task)
                results[k] = run_task(space_name, bench, scores, v, p, budget, seed, runs, warm)
                progress(k + 1)
        except KeyboardInterrupt:
            raise SearchInterrupted(Path(cfg["output"]), sum(r is not None for r in results), len(all_tasks)) from None
        return results
    import ray

    started = _start_ray(cfg)
    in_flight: dict = {}
    try:
        remote = ray.remote(num_cpus=1)(run_task)
        bench_ref, scores_ref = ray.put(bench), ray.put(scores)
        pending = list(range(len(all_tasks)))
        done = 0
        while pending or in_flight:
            while pending and len(in_flight) < cfg["ray"]["num_workers"]:
                k = pending.pop(0)
                v, p, runs = args(all_tasks[k])
                in_flight[remote.remote(space_name, bench_ref, scores_ref, v, p, budget, seed, runs, warm)] = k
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            k = in_flight.pop(ready[0])
            results[k] = ray.get(ready[0])
            done += 1
            progress(done)
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: stop the tasks in flight (also on a cluster we joined)
        for ref in in_flight:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished or gone
                pass
        raise SearchInterrupted(Path(cfg["output"]), sum(r is not None for r in results), len(all_tasks)) from None
    finally:
        if started:
            ray.shutdown()
    return results


# ----------------------------------------------------------------------------------------------------
# Outputs


def _stats(values: np.ndarray) -> dict:
    values = values[np.isfinite(values)]
    n = int(values.size)
    if n == 0:
        return {"mean": None, "std": None, "se": None, "n": 0}
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    return {"mean": float(values.mean()), "std": std, "se": std / math.sqrt(n), "n": n}


def _summary(cfg, all_variants, runs_table: pa.Table, scores, wall, datasets) -> dict:
    per = {}
    labels = runs_table.column("variant").to_numpy(zero_copy_only=False)
    for v in all_variants:
        mask = labels == v.label
        def col(name):
            return runs_table.column(name).to_numpy(zero_copy_only=False)[mask].astype(float)

        entry = {
            "algorithm": v.algorithm, "proxy": v.proxy, "proposals": v.proposals if v.proxy else None,
            "charge_proxy": v.charge, "warm_start": v.warm, "runs": int(mask.sum()),
            "validation": _stats(col("pick_valid")),
            "test": {d: _stats(col(f"{d}_test")) for d in datasets},
            "queries": _stats(col("queries")),
            "simulated_seconds": _stats(col("simulated_seconds")),
            "proxy_seconds": _stats(col("proxy_seconds")),
        }
        early = int(runs_table.column("ended_early").to_numpy(zero_copy_only=False)[mask].sum())
        if early:  # only BOHB with a finite 'iterations' cap can stop before its budget; absent = 0
            entry["ended_early"] = early
        base = search.LABELS[v.algorithm]
        if v.proxy is None and not v.warm and base in PUBLISHED and cfg["budget_seconds"] == PUBLISHED_BUDGET:
            entry["published"] = {d: {"mean": m, "std": s} for d, (m, s) in PUBLISHED[base].items()}
        per[v.label] = entry
    coverage = {name: {"scored": s.coverage, "of": int(s.values.size), "source": s.source,
                       "seconds": s.seconds is not None} for name, s in scores.items()}
    return {"variants": per, "scores": coverage, "budget_seconds": cfg["budget_seconds"], "runs": cfg["runs"],
            "seed": cfg["seed"], "wall_seconds": wall, "num_workers": cfg["ray"]["num_workers"],
            "runs_per_task": cfg["ray"]["runs_per_task"], "optimum": OPTIMUM, "robot_reference": ROBOT,
            "gradsign_paper_gain": GRADSIGN_GAIN}


def _fmt(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{stat['mean']:.2f} +- {stat['std']:.2f}"


def _report(cfg: dict, summary: dict, datasets: list[str], plot: str | None) -> str:
    names = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet16-120": "ImageNet16-120"}
    head = [names.get(d, d) for d in datasets]
    lines = [f"# Search: {cfg['name']}", "",
             f"Space {cfg['space']}; signal `{cfg['benchmark']['search']['valid']}`, each query charged "
             + " + ".join(f"`{c}`" for c in search_config.cost_columns(cfg['benchmark']['search']['cost']))
             + f" simulated seconds; budget {cfg['budget_seconds']:g} s; "
             f"{cfg['runs']} runs per row (seed {cfg['seed']}); the pick reported with its final test accuracy "
             f"(`{Path(cfg['benchmark']['final']['path']).name}`). Mean +- std over runs (standard error = "
             "std / sqrt(runs)); published: NB201 paper, 500 runs"
             + (" (shown at its 12,000 s budget only)." if cfg["budget_seconds"] != PUBLISHED_BUDGET else "."), ""]
    for name, cov in summary["scores"].items():
        lines.append(f"- proxy `{name}`: {cov['scored']:,} of {cov['of']:,} archs scored (`{cov['source']}`); "
                     "G-variants rank an arch without a score below every scored one.")
    if cfg["charge_proxy"] is not None:
        lines.append("- `charged` rows: the proxy's cost is charged to the budget: "
                     + ("each arch's measured scoring seconds" if cfg["charge_proxy"] == "measured"
                        else f"{cfg['charge_proxy']} s per scored arch")
                     + ", once per arch per run, with the query it led to.")
    early = {label: e["ended_early"] for label, e in summary["variants"].items() if e.get("ended_early")}
    if early:
        lines.append(f"- ended early (BOHB's `iterations` cap {cfg['bohb']['iterations']} reached before the budget): "
                     + ", ".join(f"{label} {n} of {cfg['runs']} runs" for label, n in early.items()) + ".")
    if cfg["warm_start"]["path"]:
        lines.append(f"- warm start: the first {cfg['warm_start']['count']} archs of `{cfg['warm_start']['path']}` "
                     "are queried first.")
    lines += ["", "| variant | runs | " + " | ".join(head) + " | queries | proxy s | published |",
              "|---|---|" + "---|" * len(head) + "---|---|---|"]
    for label, e in summary["variants"].items():
        pub = e.get("published")
        pub_text = (" / ".join(f"{pub[d]['mean']:.2f} +- {pub[d]['std']:.2f}" for d in datasets if d in pub)
                    if pub else "")
        lines.append(f"| {label} | {e['runs']} | " + " | ".join(_fmt(e["test"].get(d)) for d in datasets)
                     + f" | {e['queries']['mean']:.1f} | {e['proxy_seconds']['mean']:.0f} | {pub_text} |")
    lines.append("| optimum | | " + " | ".join(f"{OPTIMUM.get(d, float('nan')):.2f}" for d in datasets) + " | | | |")
    lines.append("| RoBoT (ICLR 2024, 20 queries) | | "
                 + " | ".join(f"{ROBOT.get(d, float('nan')):.2f}" for d in datasets) + " | | | |")
    gains = []
    for label, e in summary["variants"].items():
        if e["proxy"] is None:
            continue
        base = next((b for b in summary["variants"].values() if b["algorithm"] == e["algorithm"]
                     and b["proxy"] is None and b["warm_start"] == e["warm_start"]), None)
        if base:
            diffs = [e["test"][d]["mean"] - base["test"][d]["mean"] for d in datasets
                     if e["test"][d]["mean"] is not None and base["test"][d]["mean"] is not None]
            gains.append(f"| {label} | " + " | ".join(f"{x:+.2f}" for x in diffs) + " |")
    if gains:
        lines += ["", "Gain over the vanilla algorithm on the same seeds (GradSign paper: up to "
                  + " / ".join(f"{GRADSIGN_GAIN[d]:+.1f}" for d in datasets if d in GRADSIGN_GAIN) + "):", "",
                  "| variant | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)] + gains
    if plot:
        lines += ["", f"![test accuracy of the pick so far (the best by validation accuracy; it can dip) against "
                  f"simulated time]({plot})"]
    lines += ["", f"Wall time {summary['wall_seconds']:.1f} s with {summary['num_workers']} workers "
              f"({summary['runs_per_task']} runs per task).", ""]
    return "\n".join(lines)


def _plot(cfg, all_variants, traj: pa.Table, out: Path, final_name: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    budget = float(cfg["budget_seconds"])
    grid = np.linspace(0, budget, 241)
    labels = traj.column("variant").to_numpy(zero_copy_only=False)
    run = traj.column("run").to_numpy()
    times = traj.column("simulated_seconds").to_numpy()
    best = traj.column(f"best_{final_name}_test").to_numpy()
    algorithms = list(dict.fromkeys(v.algorithm for v in all_variants))
    fig, axes = plt.subplots(1, len(algorithms), figsize=(4.2 * len(algorithms), 3.6), dpi=110, squeeze=False)
    for ax, algorithm in zip(axes[0], algorithms):
        for v in (v for v in all_variants if v.algorithm == algorithm):
            mask = labels == v.label
            r, t, b = run[mask], times[mask], best[mask]
            curves = []
            for k in np.unique(r):
                sel = r == k
                pos = np.searchsorted(t[sel], grid, side="right") - 1
                curves.append(np.where(pos >= 0, b[sel][np.maximum(pos, 0)], np.nan))
            if curves:
                stack = np.vstack(curves)
                counts = np.isfinite(stack).sum(axis=0)
                # only where every run has queried something (earlier, the mean is over the lucky runs)
                mean = np.where(counts == stack.shape[0], np.nansum(stack, axis=0) / np.maximum(counts, 1), np.nan)
                ax.plot(grid, mean, label=v.label)
        ax.set_title(search.LABELS[algorithm])
        ax.set_xlabel("simulated seconds")
        # the test accuracy of the arch picked so far (the best by the search signal, validation accuracy):
        # not a running maximum of test accuracy, so it can go down when a better-validating arch tests worse
        ax.set_ylabel(f"{final_name} test acc. of the\nbest-by-validation pick (%)", fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.mkdir(exist_ok=True)
    tmp = out / ".search.png.tmp"
    fig.savefig(tmp, format="png")
    os.replace(tmp, out / "search.png")
    plt.close(fig)
    return "plots/search.png"


def _plot_queries(all_variants, traj: pa.Table, out: Path, final_name: str) -> str | None:
    """``plots/queries.png``: per variant, the pick's test accuracy against the number of queries."""
    from gradsign.pipeline.outputs import plots

    if plots.pyplot() is None:
        return None
    labels = traj.column("variant").to_numpy(zero_copy_only=False)
    run = traj.column("run").to_numpy()
    step = traj.column("step").to_numpy()
    best = traj.column(f"best_{final_name}_test").to_numpy()
    curves = []
    for v in all_variants:
        mask = labels == v.label
        r, s, b = run[mask], step[mask], best[mask]
        per_run = [b[r == k][np.argsort(s[r == k])] for k in np.unique(r)]
        curves.append(plots.QueryCurve(v.label, v.algorithm, [c[np.isfinite(c)] for c in per_run]))
    plots.search_queries(curves, search.LABELS, out / "queries.png", f"{final_name} test accuracy")
    return "plots/queries.png"


def _runs_schema(datasets: list[str]) -> pa.Schema:
    fields = [("variant", pa.string()), ("algorithm", pa.string()), ("proxy", pa.string()),
              ("proposals", pa.int64()), ("charge_proxy", pa.string()), ("warm_start", pa.bool_()),
              ("run", pa.int64()), ("seed", pa.int64()), ("pick_arch_id", pa.int64()), ("pick_valid", pa.float64()),
              *[(f"{d}_test", pa.float64()) for d in datasets], ("queries", pa.int64()),
              ("distinct_archs", pa.int64()), ("simulated_seconds", pa.float64()), ("proxy_seconds", pa.float64()),
              ("ended_early", pa.bool_())]
    return pa.schema(fields)


# What a search writes into its folder. ``config.yaml`` is written last and removed first, so a folder that
# holds a ``config.yaml`` holds exactly the results of that config; a folder without one holds no finished
# search (an interrupted one: rerun it).
RESULT_FILES = ("runs.parquet", "trajectories.parquet", "summary.json", "report.md", "plots/search.png",
                "plots/queries.png")


def _check_output(out: Path, cfg: dict) -> None:
    """Refuse an output folder that is a ``gradsign score`` run folder (its config.yaml is not ours)."""
    if (out / "scores").is_dir() or (out / "shards").is_dir():
        raise ConfigError(f"output {out} is a `gradsign score` run folder (it has scores/ or shards/); "
                          "set 'output' to a folder of its own")


def _clear_results(out: Path) -> None:
    """Remove a previous search's outputs (``config.yaml`` first) and any half-written temporaries."""
    (out / "config.yaml").unlink(missing_ok=True)
    for name in RESULT_FILES:
        (out / name).unlink(missing_ok=True)
    for sub in (out, out / "plots"):
        for tmp in sub.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


@dataclass
class SearchResult:
    output: Path
    summary: dict


def run(cfg: dict) -> SearchResult:
    """Run every variant x run of ``cfg`` and write the output folder."""
    started = time.perf_counter()
    space_impl = spaces.get(cfg["space"])
    try:
        search.get_space(cfg["space"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    bench = load_benchmark(cfg, space_impl)
    scores = load_scores(cfg["scores"], cfg["proxy"], space_impl) if cfg["proxy"] else {}
    if cfg["charge_proxy"] == "measured":
        for name, s in scores.items():
            if s.seconds is None:
                raise ScoreTableError(f"charge_proxy 'measured' needs a 'seconds' column in {cfg['scores']}")
    warm = tuple(load_warm(cfg["warm_start"]["path"], cfg["warm_start"]["count"], space_impl)) \
        if cfg["warm_start"]["path"] else ()
    all_variants = variants(cfg)
    all_tasks = tasks(cfg, len(all_variants))
    out = Path(cfg["output"])
    _check_output(out, cfg)
    lock = hold_run_folder(out)  # one search per folder: a second one is refused here, before any change
    try:
        return _run_held(cfg, out, started, space_impl, bench, scores, warm, all_variants, all_tasks)
    finally:
        lock.release()


def _run_held(cfg, out, started, space_impl, bench, scores, warm, all_variants, all_tasks) -> SearchResult:

    def params_of(v: search.Variant) -> dict:
        return dict(cfg.get(v.algorithm, {}))

    def progress(done: int) -> None:
        if cfg["progress"]:
            print(f"\rsearch: {done}/{len(all_tasks)} tasks", end="" if done < len(all_tasks) else "\n",
                  file=sys.stderr, flush=True)

    results = _execute(cfg, cfg["space"], bench, scores, all_variants, all_tasks, params_of, warm, progress)
    rows = [row for task_rows, _ in results for row in task_rows]
    runs_table = pa.Table.from_pylist(rows, schema=_runs_schema(list(cfg["benchmark"]["final"]["columns"])))
    names = np.asarray([space_impl.arch(i) for i in range(len(space_impl))], dtype=object)
    first = next(iter(cfg["benchmark"]["final"]["columns"]))
    traj_parts = []
    for task, (_, traj) in zip(all_tasks, results):
        if not traj:
            continue
        n = traj["run"].size
        traj_parts.append(pa.table({
            "variant": pa.array([all_variants[task.variant_index].label] * n, pa.string()),
            **{k: traj[k] for k in ("run", "step", "arch_id")},
            "arch": pa.array(names[traj["arch_id"]], pa.string()),
            **{k: traj[k] for k in ("validation", "simulated_seconds", "best_validation")},
            f"best_{first}_test": traj["best_test"],
        }))
    traj_table = pa.concat_tables(traj_parts)
    pick_names = [names[i] if i >= 0 else None for i in runs_table.column("pick_arch_id").to_pylist()]
    runs_table = runs_table.add_column(runs_table.column_names.index("pick_arch_id") + 1, "pick_arch",
                                       pa.array(pick_names, pa.string()))
    _clear_results(out)  # only now, with every result in memory: an interrupted search left the old folder whole
    write_atomic(runs_table, out / "runs.parquet")
    write_atomic(traj_table, out / "trajectories.parquet")
    datasets = list(cfg["benchmark"]["final"]["columns"])
    wall = time.perf_counter() - started
    summary = _summary(cfg, all_variants, runs_table, scores, wall, datasets)
    plot = _plot(cfg, all_variants, traj_table, out / "plots", datasets[0])
    queries_plot = _plot_queries(all_variants, traj_table, out / "plots", datasets[0])
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomic(out / "report.md", _report(cfg, summary, datasets, plot)
                      + (f"![the pick's test accuracy against queries]({queries_plot})\n" if queries_plot else ""))
    write_text_atomic(out / "config.yaml", search_config.dump(cfg))  # last: it marks the folder complete
    return SearchResult(out, summary)


def main_search(config: str, overrides: list[str]) -> int:
    """``gradsign search``: 0 done, 2 bad input (one message naming the problem)."""
    try:
        cfg = search_config.precheck(search_config.resolve(config, overrides))
        result = run(cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"gradsign: error: {exc}", file=sys.stderr)
        return 2
    print(f"search folder: {result.output}")
    for label, e in result.summary["variants"].items():
        tests = " / ".join(_fmt(s) for s in e["test"].values())
        print(f"{label}: {tests} ({e['runs']} runs, {e['queries']['mean']:.1f} queries)")
    print(f"wall {result.summary['wall_seconds']:.1f} s")
    return 0
