"""Run outputs from stored scores: summary.json, topk.parquet/.jsonl, report.md, plots/*.png.

``write_outputs`` is all a finished run and ``gradsign report RUN_DIR`` both call, so a report can always
be recomputed from the committed score files alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa

from gradsign.pipeline.outputs import plots
from gradsign.pipeline.outputs.reducer import Columns, Reducer
from gradsign.pipeline.common.atomic import write_atomic, write_text_atomic
from gradsign.pipeline.common import interrupt

# Spearman rho over all 15,625 NB201 cells, 200-epoch test accuracy (GradSign paper, ICLR 2022, and the
# zero-cost-nas peers it compares with on CIFAR-10). Keyed by (space, dataset, proxy).
PUBLISHED_SPEARMAN: dict[tuple[str, str, str], float] = {
    ("nb201", "cifar10", "gradsign"): 0.765,
    ("nb201", "cifar100", "gradsign"): 0.793,
    ("nb201", "imagenet16-120", "gradsign"): 0.783,
    ("nb201", "cifar10", "synflow"): 0.737,
    ("nb201", "cifar10", "jacob_cov"): 0.731,
    ("nb201", "cifar10", "snip"): 0.596,
    ("nb201", "cifar10", "grad_norm"): 0.594,
    ("nb201", "cifar10", "grasp"): 0.514,
    ("nb201", "cifar10", "fisher"): 0.360,
    # zero-cost-nas over all 423,624 NB101 cells, |Spearman rho| against the 108-epoch accuracy
    ("nb101", "cifar10", "grad_norm"): 0.198,
    ("nb101", "cifar10", "snip"): 0.164,
    ("nb101", "cifar10", "grasp"): 0.448,
    ("nb101", "cifar10", "fisher"): 0.257,
    ("nb101", "cifar10", "synflow"): 0.372,
    ("nb101", "cifar10", "jacob_cov"): 0.378,
}


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def strict(obj):
    """``obj`` with every NaN/inf float replaced by None: JSON that strict parsers accept."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def dumps(obj, **kwargs) -> str:
    return json.dumps(strict(obj), allow_nan=False, **kwargs)


def _write_json(path: Path, obj) -> None:
    write_text_atomic(path, dumps(obj, indent=2, sort_keys=False) + "\n")


def _plots(cols: Columns, reducer: Reducer, out: Path, cfg: dict, correlations: dict) -> list[str]:
    """Rank of score against rank of accuracy per proxy (``pipeline/outputs/plots.py``): one file per
    proxy, and ``plots/proxies.png`` with one panel per proxy when the run has several; file names made."""
    if reducer.ground_truth is None or cols.arch_id.size == 0 or plots.pyplot() is None:
        return []
    from gradsign.pipeline.common.datasets import DataError, dataset_info

    try:
        classes = dataset_info(cfg["dataset"]).num_classes
    except DataError:
        classes = None
    truth = cols.truth
    chance = plots.chance_level(truth, classes)
    label = reducer.ground_truth.column
    panels, made = [], []
    for proxy in reducer.names:
        keep = cols.usable[proxy] & np.isfinite(truth)  # the cells rho and tau are computed over
        if keep.sum() < 2:
            continue
        entry = correlations.get(proxy, {})
        panel = plots.Panel(proxy, cols.values[proxy][keep], truth[keep], entry.get("spearman"),
                            entry.get("kendall"), chance)
        panels.append(panel)
        plots.score_figure([panel], out / f"{proxy}.png", label)
        made.append(f"plots/{proxy}.png")
    if len(panels) > 1:
        plots.score_figure(panels, out / "proxies.png", label,
                           heading=f"{cfg['space']} / {cfg['dataset']}: {len(panels)} proxies against {label}")
        made.insert(0, "plots/proxies.png")
    return made


def write_outputs(run_dir: Path, cfg: dict, reducer: Reducer, facts: dict) -> dict:
    """Write every derived file of ``run_dir``; return the summary. The files of one pass land together: a
    CLI's SIGINT/SIGTERM that comes meanwhile waits until the last is written (``interrupt.writing``)."""
    with interrupt.writing():
        return _write_outputs(run_dir, cfg, reducer, facts)


def _write_outputs(run_dir: Path, cfg: dict, reducer: Reducer, facts: dict) -> dict:
    cols = reducer.columns()
    correlations = reducer.correlations(cols)
    summary = {
        "name": cfg["name"],
        "space": cfg["space"],
        "dataset": cfg["dataset"],
        "archs": {"requested": facts["requested"], "scored": reducer.scored, "failed": reducer.failed,
                  "missing": max(0, facts["requested"] - reducer.scored - reducer.failed)},
        "proxies": correlations,
        "ground_truth": None if reducer.ground_truth is None else {
            "path": cfg["ground_truth"]["path"], "column": cfg["ground_truth"]["column"],
            "where": cfg["ground_truth"].get("where"),
            "matched": int(np.isfinite(cols.truth).sum()), "missing": int((~np.isfinite(cols.truth)).sum()),
            # the join: rows sharing a key (e.g. NB101 specs that prune to one graph) are averaged
            "table_rows": reducer.ground_truth.rows, "table_keys": len(reducer.ground_truth.values),
            "averaged_keys": reducer.ground_truth.averaged_keys,
        },
        # what a recompute without the earlier summary still knows of the batch: its config
        "data": {"source": cfg["data"]["path"], "batch_size": cfg["data"]["batch_size"],
                 "seed": cfg["data"]["seed"]},
        **{k: v for k, v in facts.items() if k != "requested"},
        "first_errors": reducer.first_errors,
    }
    signal = reducer.signal_split(cols)
    if signal is not None:
        summary["gradsign_signal"] = signal
    top = reducer.top(cols)
    write_atomic(top, run_dir / "topk.parquet")
    write_text_atomic(run_dir / "topk.jsonl", "".join(dumps(row) + "\n" for row in top.to_pylist()))
    summary["plots"] = _plots(cols, reducer, run_dir / "plots", cfg, correlations)
    _write_json(run_dir / "summary.json", summary)
    write_text_atomic(run_dir / "report.md", render_markdown(summary, top, cfg))
    return summary


def _topk_rule(cfg: dict) -> str:
    """One sentence on how a non-default top-k was made (``ranking.py``)."""
    by = cfg.get("topk_by")
    text = (f"Ranked by the rank average of {', '.join(by)} (column `{'+'.join(by)}`)" if isinstance(by, list)
            else f"Ranked by {by or 'the first proxy'}")
    d = cfg.get("topk_min_distance")
    if d is not None:
        text += (f"; diverse: each listed arch at least {d} from every earlier one (`distance`: to the nearest "
                 "earlier row)")
    return text + "."


def render_markdown(summary: dict, top: pa.Table, cfg: dict) -> str:
    archs = summary["archs"]
    lines = [
        f"# GradSign run `{summary['name']}`",
        "",
        f"Space `{summary['space']}`, dataset `{summary['dataset']}`, batch {cfg['data']['batch_size']} "
        f"(seed {cfg['data']['seed']}) from `{cfg['data']['path']}`, run seed {cfg['seed']}.",
        "",
        f"Architectures: {archs['requested']} requested, {archs['scored']} scored, {archs['failed']} failed"
        + (f", {archs['missing']} missing" if archs["missing"] else "") + ".",
    ]
    if summary.get("wall_seconds") is not None:
        lines.append(f"Wall time {summary['wall_seconds']:.1f} s for {summary.get('archs_this_run', 0)} archs "
                     f"scored in this invocation ({fmt(summary.get('archs_per_second'), 2)} archs/s) on "
                     f"{summary.get('num_actors', '?')} actor(s): {', '.join(summary.get('devices', []))}.")
    lines += ["", "## Rank correlation with ground truth", ""]
    gt = summary.get("ground_truth")
    if gt is None:
        lines.append("No ground truth configured (set `ground_truth.path` and `ground_truth.column`).")
    else:
        join = ""
        if gt.get("averaged_keys"):
            join = (f" The table's {gt['table_rows']} rows hold {gt['table_keys']} keys; {gt['averaged_keys']} "
                    "keys had several rows, averaged.")
        lines += [f"Against `{gt['column']}` of `{gt['path']}`.{join} Rho and tau leave out rows whose gradients "
                  "had non-finite entries (and non-finite values); the reference columns keep them as the "
                  "reference code counts them (finite-entry sums, -inf ranked last).", "",
                  "| proxy | Spearman rho | Kendall tau | n | published rho (whole space) | non-finite rows "
                  "| rho (reference counting) | n (reference) |",
                  "|---|---|---|---|---|---|---|---|"]
        for proxy, entry in summary["proxies"].items():
            published = PUBLISHED_SPEARMAN.get((summary["space"], summary["dataset"], proxy))
            reference = entry.get("reference") or {}
            lines.append(f"| {proxy} | {fmt(entry.get('spearman'))} | {fmt(entry.get('kendall'))} | "
                         f"{entry.get('n', 0)} | {fmt(published)} | {entry['nonfinite_rows']} | "
                         f"{fmt(reference.get('spearman'))} | {reference.get('n', 0)} |")
    shown = (summary.get("plots", [])[:1] if "plots/proxies.png" in summary.get("plots", [])
             else summary.get("plots", []))
    for plot in shown:  # several proxies: their panels in one figure (the single files stay in plots/)
        lines += ["", f"![{plot}]({plot})"]
    lines += _signal_lines(summary.get("gradsign_signal"))
    if top.num_rows:
        lines += ["", f"## Top {min(10, top.num_rows)} of {top.num_rows} candidates (`topk.parquet`)", ""]
        if isinstance(cfg.get("topk_by"), list) or cfg.get("topk_min_distance") is not None:
            lines += [_topk_rule(cfg), ""]
        cols = [c for c in top.column_names]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for row in top.slice(0, 10).to_pylist():
            cells = [fmt(row[c], 2) if isinstance(row[c], float) else str(row[c]) for c in cols]
            cells = [f"`{cell}`".replace("|", "\\|") if c == "arch" else cell for c, cell in zip(cols, cells)]
            lines.append("| " + " | ".join(cells) + " |")
    if summary.get("first_errors"):
        lines += ["", "## Errors (first few)", ""] + [f"- {e}" for e in summary["first_errors"]]
    return "\n".join(lines) + "\n"


def _signal_lines(signal: dict | None) -> list[str]:
    """The report's section on archs whose GradSign scores count weights (DARTS-style spaces)."""
    if signal is None:
        return []
    total = signal["with_signal"] + signal["without_signal"]
    lines = ["", "## GradSign's per-sample signal", "",
             f"{signal['without_signal']} of {total} scored archs have no pooling op feeding their last cell's "
             "output: at batch size 1 every weight gradient of their networks is float rounding noise, so their "
             "GradSign scores count weights (close to E|sum of N random signs| per weight) rather than measure "
             "agreement. Top-k rows say which in `gradsign_signal`; docs/spaces.md has the reason."]
    if "with_signal_correlation" in signal:
        lines += ["", "| GradSign on | Spearman rho | Kendall tau | n |", "|---|---|---|---|"]
        for name, label in (("with_signal", "archs with the signal"), ("without_signal", "archs without")):
            c = signal[f"{name}_correlation"]
            lines.append(f"| {label} | {fmt(c.get('spearman'))} | {fmt(c.get('kendall'))} | {c['n']} |")
    return lines
