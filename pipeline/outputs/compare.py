"""The paper-style comparison table across runs: proxy x dataset Spearman/Kendall, beside published rho.

``gradsign compare RUN_DIR [RUN_DIR ...]`` reads each run's ``summary.json`` (one run per dataset, any
proxies) and prints a Markdown table; ``--output FILE`` also writes it.
"""

from __future__ import annotations

import json
from pathlib import Path

from gradsign.pipeline.outputs.report import PUBLISHED_SPEARMAN, fmt


def load(run_dirs: list[Path]) -> list[dict]:
    summaries = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "summary.json"
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} has no summary.json (run `gradsign report {run_dir}` first)")
        summaries.append(json.loads(path.read_text()))
    return summaries


def table(summaries: list[dict]) -> str:
    """Rows: proxies (in first-seen order); per run: rho, tau, n, and the published rho where known."""
    proxies: list[str] = []
    for s in summaries:
        proxies += [p for p in s["proxies"] if p not in proxies]
    header = ["proxy"]
    for s in summaries:
        header += [f"{s['dataset']} rho", "tau", "n", "published rho"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for proxy in proxies:
        cells = [proxy]
        for s in summaries:
            entry = s["proxies"].get(proxy, {})
            published = PUBLISHED_SPEARMAN.get((s["space"], s["dataset"], proxy))
            cells += [fmt(entry.get("spearman")), fmt(entry.get("kendall")), str(entry.get("n", "-")),
                      fmt(published)]
        lines.append("| " + " | ".join(cells) + " |")
    runs = "; ".join(f"{s['dataset']}: {s['archs']['scored']} archs scored, batch {s['data']['batch_size']}"
                     for s in summaries)
    return "\n".join(lines) + f"\n\nRuns: {runs}. Published: Spearman over all 15,625 NB201 cells.\n"
