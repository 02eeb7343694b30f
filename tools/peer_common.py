"""What the peer checks share (``peer_check`` for NB201, ``peer_check_nb101``): the peer tables' column
names, the data files, Spearman over finite pairs, the per-proxy summary and its printed table.

Imported by both checks; imports neither (no cycle).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import stats

from gradsign.actors import proxies
from gradsign.pipeline.driver.data import dataset_info, load_batch

REPO = Path(__file__).resolve().parents[3]
DEFAULT_DATA = REPO.parent / "shared" / "data"
BASELINES = ("grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov", "naswot", "params", "flops")
PEER_COLUMN = {"jacob_cov": "jacov", "naswot": "nwot"}  # others: the same name
SIZE_PROXIES = ("params", "flops")
DATA_FILES = {"cifar10": "cifar10_train_1000.npz", "cifar100": "cifar100_train_468.npz",
              "imagenet16-120": "imagenet16_120_sample.npz"}

def peer_column(proxy: str) -> str:
    return PEER_COLUMN.get(proxy, proxy)


def as_float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def spearman(a: Sequence[float], b: Sequence[float]) -> tuple[float | None, int]:
    """Spearman rho over the pairs where both are finite, and how many pairs that was."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.isfinite(x) & np.isfinite(y)
    n = int(both.sum())
    if n < 3 or np.ptp(x[both]) == 0 or np.ptp(y[both]) == 0:
        return None, n
    return float(stats.spearmanr(x[both], y[both]).statistic), n


def load_inputs(data_dir: Path, dataset: str, batch: int, seed: int, device: torch.device):
    info = dataset_info(dataset)
    data = load_batch(data_dir / DATA_FILES[info.name], info.name, batch, seed)
    return (torch.from_numpy(data.images).to(device), torch.from_numpy(data.labels).to(device), data.fingerprint)


def summarise(rows: list[dict], names: Sequence[str], values: dict, seconds: dict,
              values2: dict | None = None) -> dict:
    accuracy = [as_float(r["val_accuracy"]) for r in rows]
    result = {}
    for name in names:
        ours = values[name]
        column = peer_column(name)
        peer = [as_float(r.get(column)) for r in rows] if column in rows[0] else None
        entry: dict = {"peer_column": column if peer is not None else None,
                       "seconds_per_cell": seconds[name] / max(1, len(rows)),
                       "nonfinite": int(sum(not math.isfinite(v) for v in ours))}
        entry["rho_val_accuracy"], entry["n"] = spearman(ours, accuracy)
        if peer is not None:
            entry["rho_peer"], entry["n_peer"] = spearman(ours, peer)
            entry["peer_rho_val_accuracy"], _ = spearman(peer, accuracy)
            if name in SIZE_PROXIES:
                rel = [abs(a - b) / abs(b) for a, b in zip(ours, peer) if math.isfinite(a) and b]
                entry["max_rel_diff"] = max(rel) if rel else None
        if values2 is not None:
            entry["rho_seed2"], _ = spearman(ours, values2[name])
            entry["rho_val_accuracy_seed2"], _ = spearman(values2[name], accuracy)
        result[name] = entry
    return result


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
    return str(value)


def print_table(summary: dict, seed2: bool) -> None:
    header = ["proxy", "peer col", "rho(peer)", "rho(val)", "peer rho(val)", "n", "max rel diff", "s/cell"]
    if seed2:
        header += ["rho(seed,seed2)", "rho(val) seed2"]
    lines = [header]
    for name, e in summary.items():
        line = [name, fmt(e["peer_column"]), fmt(e.get("rho_peer")), fmt(e["rho_val_accuracy"]),
                fmt(e.get("peer_rho_val_accuracy")), str(e["n"]), fmt(e.get("max_rel_diff"), 2),
                fmt(e["seconds_per_cell"], 2)]
        if seed2:
            line += [fmt(e.get("rho_seed2")), fmt(e.get("rho_val_accuracy_seed2"))]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)))


def parse_proxies(text: str) -> list[str]:
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        for name in (BASELINES if part == "all" else [part] if part else []):
            if name not in names:
                names.append(name)
    unknown = [n for n in names if n not in proxies.names()]
    if unknown or not names:
        raise SystemExit(f"unknown proxies {unknown}; valid: all, {', '.join(proxies.names())}")
    return names
