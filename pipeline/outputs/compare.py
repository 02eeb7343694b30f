"""The paper-style comparison table across runs: proxy x dataset Spearman/Kendall, beside published rho.

``gradsign compare RUN_OR_TABLE [...]`` reads each run folder's ``summary.json`` (one run per dataset, any
proxies), or computes the same correlations from a whole-space score table (``results/nb201/*.parquet``:
``arch``, one float column per proxy, optional ``error`` / ``nonfinite``) against ``--ground-truth``; prints
a Markdown table; ``--output FILE`` also writes it, ``--plot FILE.png`` draws the rho table as a heatmap.

A table's dataset is named as ``DATASET=TABLE`` or read from the end of its file name
(``gradsign-cifar100.parquet``: cifar100); its ground-truth column is ``--column`` with ``{dataset}``
filled in (default ``{dataset}_test``, ``-`` as ``_``: ``imagenet16_120_test``), as in ``nb201_accuracy.csv``.
Correlations of a table are the reducer's (``pipeline/outputs/reducer.py``), so a table and the run folder
it was made from give the same figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from gradsign.pipeline.outputs.report import PUBLISHED_SPEARMAN, fmt

TABLE_SUFFIXES = (".parquet", ".csv")
NOT_PROXIES = {"arch_id", "official_index", "index", "seconds"}


def load(items: list[str | Path], ground_truth: str | Path | None = None, column: str = "{dataset}_test",
         space: str = "nb201") -> list[dict]:
    """One summary per item: a run folder's ``summary.json``, or a score table's correlations."""
    summaries = []
    for item in items:
        dataset, _, rest = str(item).partition("=")
        named = bool(rest) and not Path(item).exists()
        path = Path(rest if named else item)
        if path.is_dir():
            summary_file = path / "summary.json"
            if not summary_file.is_file():
                raise FileNotFoundError(f"{path} has no summary.json (run `gradsign report {path}` first)")
            summaries.append(json.loads(summary_file.read_text()))
        elif path.is_file() and path.suffix in TABLE_SUFFIXES:
            summaries.append(summarise_table(path, dataset if named else None, ground_truth, column, space))
        else:
            raise FileNotFoundError(f"{path} is neither a run folder nor a score table "
                                    f"({', '.join(TABLE_SUFFIXES)})")
    return summaries


def _dataset_of(path: Path) -> str:
    from gradsign.pipeline.common.datasets import DATASETS

    matches = [name for name in DATASETS if path.stem.lower().endswith(name)]
    if not matches:
        raise ValueError(f"cannot tell the dataset of score table {path} from its name; "
                         f"write it as DATASET={path} (one of {', '.join(DATASETS)})")
    return max(matches, key=len)


def summarise_table(path: Path, dataset: str | None, ground_truth: str | Path | None, column: str,
                    space_name: str) -> dict:
    """A summary (the fields ``table`` and ``heatmap`` read) of a whole-space score table."""
    from gradsign import spaces
    from gradsign.pipeline.common.datasets import dataset_info
    from gradsign.pipeline.outputs.reducer import Reducer
    from gradsign.spaces import ground_truth as gt_loader

    if ground_truth is None:
        raise ValueError(f"score table {path}: give the accuracies to compare with: --ground-truth FILE "
                         "(e.g. ../shared/data/nb201_accuracy.csv)")
    dataset = dataset_info(dataset).name if dataset else _dataset_of(path)
    space = spaces.get(space_name)
    table = gt_loader.read_table(path)
    if "arch" not in table.column_names:
        raise ValueError(f"score table {path} has no 'arch' column (columns: {', '.join(table.column_names)})")
    proxies = [f.name for f in table.schema if pa.types.is_floating(f.type) and f.name not in NOT_PROXIES]
    if not proxies:
        raise ValueError(f"score table {path} has no float score column (columns: {', '.join(table.column_names)})")
    try:
        archs = [space.arch(space.arch_id(a)) for a in table.column("arch").to_pylist()]
        ids = [space.arch_id(a) for a in archs]
    except ValueError as exc:
        raise ValueError(f"score table {path}: {exc}") from None
    n = table.num_rows
    rows = {"arch_id": pa.array(ids, pa.int64()), "arch": pa.array(archs, pa.string()),
            **{p: table.column(p).cast(pa.float64()) for p in proxies},
            "nonfinite": table.column("nonfinite") if "nonfinite" in table.column_names else pa.nulls(n, pa.string()),
            "error": table.column("error") if "error" in table.column_names else pa.nulls(n, pa.string())}
    truth_column = column.format(dataset=dataset.replace("-", "_"))
    from gradsign.pipeline.official import register_readers

    register_readers()
    truth = gt_loader.load(ground_truth, truth_column, space)
    reducer = Reducer(proxies, space, truth, topk=0)
    reducer.add(pa.table(rows))
    correlations = reducer.correlations(reducer.columns())
    return {"name": path.stem, "space": space_name, "dataset": dataset, "proxies": correlations,
            "archs": {"requested": n, "scored": reducer.scored, "failed": reducer.failed, "missing": 0},
            "data": {"batch_size": None}, "source": str(path),
            "ground_truth": {"path": str(ground_truth), "column": truth_column}}


def _proxies(summaries: list[dict]) -> list[str]:
    proxies: list[str] = []
    for s in summaries:
        proxies += [p for p in s["proxies"] if p not in proxies]
    return proxies


def run_labels(summaries: list[dict], sep: str = " ") -> list[str]:
    """One distinct label per run: its dataset; with the run's name when two runs share a dataset; with its
    position (#1, #2, ...) when they share the name too."""
    datasets = [s["dataset"] for s in summaries]
    named = [f"{d}{sep}{s.get('name', '')}".rstrip() if datasets.count(d) > 1 else d
             for d, s in zip(datasets, summaries)]
    return [f"{label}{sep}#{j + 1}" if named.count(label) > 1 else label for j, label in enumerate(named)]


def table(summaries: list[dict]) -> str:
    """Rows: proxies (in first-seen order); per run: rho, tau, n, and the published rho where known."""
    proxies = _proxies(summaries)
    header = ["proxy"]
    for label in run_labels(summaries):
        header += [f"{label} rho", "tau", "n", "published rho"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for proxy in proxies:
        cells = [proxy]
        for s in summaries:
            entry = s["proxies"].get(proxy, {})
            published = PUBLISHED_SPEARMAN.get((s["space"], s["dataset"], proxy))
            cells += [fmt(entry.get("spearman")), fmt(entry.get("kendall")), str(entry.get("n", "-")),
                      fmt(published)]
        lines.append("| " + " | ".join(cells) + " |")
    runs = "; ".join(_describe(s) for s in summaries)
    return "\n".join(lines) + f"\n\nRuns: {runs}. Published: Spearman over all 15,625 NB201 cells.\n"


def _describe(s: dict) -> str:
    if s.get("source"):
        return (f"{s['dataset']}: table {s['source']}, {s['archs']['scored']} archs scored, "
                f"against {s['ground_truth']['column']}")
    return f"{s['dataset']}: {s['archs']['scored']} archs scored, batch {s['data']['batch_size']}"


def heatmap(summaries: list[dict], path: Path) -> None:
    """The proxy x run rho table as a heatmap (``pipeline/outputs/plots.py``), written to ``path``."""
    from gradsign.pipeline.outputs import plots

    if plots.pyplot() is None:
        raise ValueError("--plot needs matplotlib (pip install matplotlib)")
    proxies = _proxies(summaries)
    columns = run_labels(summaries, sep="\n")
    rho = np.full((len(proxies), len(summaries)), np.nan)
    published = np.full_like(rho, np.nan)
    for j, s in enumerate(summaries):
        for i, proxy in enumerate(proxies):
            value = s["proxies"].get(proxy, {}).get("spearman")
            rho[i, j] = np.nan if value is None else value
            pub = PUBLISHED_SPEARMAN.get((s["space"], s["dataset"], proxy))
            published[i, j] = np.nan if pub is None else pub
    sizes = ", ".join(f"{s['dataset']} n={max((e.get('n') or 0) for e in s['proxies'].values()):,}" for s in summaries)
    plots.rho_heatmap(proxies, columns, rho, published, Path(path),
                      note=f"{sizes}; paper: published rho over all 15,625 NB201 cells")
