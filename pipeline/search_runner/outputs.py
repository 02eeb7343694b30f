"""The search runner's outputs, computed in memory: summary statistics, ``report.md``, the plots, the runs schema."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from gradsign import search
from gradsign.search.published import GRADSIGN_GAIN, OPTIMUM, PUBLISHED, PUBLISHED_BUDGET, ROBOT

from gradsign.pipeline.search_runner import config as search_config

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
