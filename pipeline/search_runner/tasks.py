"""The search runner's work: the variants a config asks for, their runs cut into tasks, and the tasks run over
Ray (or in this process), results assembled in (variant, run) order."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradsign import search

from gradsign.pipeline.common import interrupt

class SearchInterrupted(KeyboardInterrupt):
    """A search stopped by Ctrl-C or SIGTERM (Ray shut down first): ``committed`` of ``shards`` tasks had
    finished. ``written`` False: no result was written and the folder is as it was before the search;
    True: the signal came while the results were written, and every file of them landed before the stop.
    Searches are not resumed: the same command runs it again."""

    def __init__(self, run_dir: Path, committed: int, shards: int, written: bool = False):
        super().__init__(f"{committed} of {shards} tasks finished")
        self.run_dir, self.committed, self.shards, self.written = run_dir, committed, shards, written


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
            with interrupt.ray_shutdown_guarded():  # ray.shutdown restores the default SIGTERM action
                ray.shutdown()
    return results
