"""The search runner: config -> benchmark + score tables -> independent search runs over Ray -> outputs.

This module holds the folder protocol and ``main_search``; the inputs (``inputs.py``), the variants and Ray
tasks (``tasks.py``) and the outputs (``outputs.py``) live beside it, and their public names are re-exported
here (``ScoreTableError``, ``load_benchmark``, ``load_scores``, ``load_warm``, ``variants``, ``tasks``).

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
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from gradsign import search
from gradsign import spaces

from gradsign.pipeline.search_runner import config as search_config
from gradsign.pipeline.common.layered import ConfigError
from gradsign.pipeline.common.atomic import write_atomic, write_text_atomic
from gradsign.pipeline.common import interrupt
from gradsign.pipeline.common.lock import hold_run_folder
from gradsign.pipeline.search_runner.inputs import ScoreTableError, load_benchmark, load_scores, load_warm
from gradsign.pipeline.search_runner.outputs import _fmt, _plot, _plot_queries, _report, _runs_schema, _summary
from gradsign.pipeline.search_runner.tasks import SearchInterrupted, Task, _execute, run_task, tasks, variants

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

    try:
        results = _execute(cfg, cfg["space"], bench, scores, all_variants, all_tasks, params_of, warm, progress)
        return _write_results(cfg, out, started, space_impl, scores, all_variants, all_tasks, results)
    except SearchInterrupted:
        raise
    except KeyboardInterrupt as exc:  # after every task finished: while Ray shut down, or the results were written
        raise SearchInterrupted(out, len(all_tasks), len(all_tasks),
                                isinstance(exc, interrupt.StoppedAfterWriting)) from None


def _write_results(cfg, out, started, space_impl, scores, all_variants, all_tasks, results) -> SearchResult:
    """Assemble the results in memory, then replace the folder's previous ones: the removal and every write
    happen inside ``interrupt.writing()``, so a signal meanwhile lets them all land first."""
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
    datasets = list(cfg["benchmark"]["final"]["columns"])
    with interrupt.writing():
        _clear_results(out)  # only now, with every result in memory: an interrupted search left the old folder whole
        write_atomic(runs_table, out / "runs.parquet")
        write_atomic(traj_table, out / "trajectories.parquet")
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


__all__ = ["RESULT_FILES", "ScoreTableError", "SearchInterrupted", "SearchResult", "Task", "load_benchmark",
           "load_scores", "load_warm", "main_search", "run", "run_task", "tasks", "variants"]
