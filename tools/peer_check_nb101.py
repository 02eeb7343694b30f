"""``python -m tools.peer_check --space nb101``: our proxies against the NASLib NB101 peer table.

See ``tools/peer_check.py`` for the options. Rows are the first ``--cells`` of
``nb101_naslib_500.jsonl``; every distinct network is scored once (at the seed the pipeline would use:
``arch_seed(seed, canonical arch)``) and its scores go to every row that builds it.

Two noise figures say how far a proxy's peer agreement can be read (printed per proxy):

- ``peer self rho``: the peer's own agreement with itself, the Spearman rho between its values on the
  first and the second row of every graph that has several rows (48 graphs in the 500). The peer drew a
  fresh augmented batch and fresh weights per row, so two rows of one graph differ only by that noise; no
  deterministic score of the graph can agree with the peer's column much better than this (jacov: 0.48,
  synflow/snip/grad_norm >= 0.96).
- ``--seed2 S``: our own run again at seed S (weights and, unless ``--data-seed`` pins it, the batch);
  ``rho(seed,seed2)`` per proxy over the rows.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import stats

from gradsign import spaces
from gradsign.actors import proxies
from gradsign.actors.scorer import arch_seed
from gradsign.spaces.nb101 import build_network
from gradsign.spaces.nb101_spec import Spec, format_arch

from tools.peer_common import fmt, load_inputs, print_table, spearman, summarise

PEER_FILE = "nb101_naslib_500.jsonl"


def read_all_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_rows(path: Path, cells: int) -> list[dict]:
    rows = read_all_rows(path)
    if not 1 <= cells <= len(rows):
        raise SystemExit(f"--cells must be in [1, {len(rows)}], got {cells}")
    return rows[:cells]


def row_networks(rows: list[dict], build: str) -> tuple[list[str], list[str], dict[str, tuple[Spec, str]]]:
    """Per row: its graph hash and its network id; per network id: (spec to build, canonical arch)."""
    space = spaces.get("nb101")
    hashes, net_ids, nets = [], [], {}
    for row in rows:
        spec = Spec.from_matrix(row["matrix"], row["ops"])
        rep = spec.representative()
        chosen = rep if build == "representative" else spec
        net_id = format_arch(chosen)
        hashes.append(spec.hash())
        net_ids.append(net_id)
        nets.setdefault(net_id, (chosen, space.canonical(rep)))
    return hashes, net_ids, nets


def score_networks(nets: dict[str, tuple[Spec, str]], names: Sequence[str], options: dict, inputs, targets,
                   seed: int, device: torch.device, partial: Path | None = None
                   ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """{proxy: {network id: value}} and {proxy: seconds}; every 20 networks the values so far are written
    to ``partial`` (if given), so a run cut short still leaves its numbers."""
    fns = {name: proxies.get(name, **options.get(name, {})) for name in names}
    values: dict[str, dict[str, float]] = {name: {} for name in names}
    seconds = {name: 0.0 for name in names}
    start = time.perf_counter()
    for i, (net_id, (spec, canonical)) in enumerate(nets.items()):
        for name, fn in fns.items():
            torch.manual_seed(arch_seed(seed, canonical))
            net = build_network(spec, 10).to(device)
            t = time.perf_counter()
            try:
                value = float(fn(net, inputs, targets))
            except Exception as exc:  # reported and left out, not fatal
                print(f"  {name} failed on {net_id}: {type(exc).__name__}: {exc}", file=sys.stderr)
                value = math.nan
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[name] += time.perf_counter() - t
            values[name][net_id] = value
        if (i + 1) % 10 == 0 or i + 1 == len(nets):
            print(f"  {i + 1}/{len(nets)} networks, {time.perf_counter() - start:.0f} s", file=sys.stderr)
        if partial is not None and ((i + 1) % 20 == 0 or i + 1 == len(nets)):
            partial.write_text(json.dumps({"values": values, "seconds": seconds}, allow_nan=True))
    return values, seconds


def values_from_run(run_dir: Path, hashes: list[str], names: Sequence[str] | None) -> dict[str, list[float]]:
    """Per proxy, the run's score of each row's graph (joined on the ``hash`` column); NaN if absent."""
    import pyarrow.parquet as pq

    table = pq.read_table(run_dir / "scores")
    errors = table.column("error").to_pylist()
    by_hash = {h: i for i, h in enumerate(table.column("hash").to_pylist()) if errors[i] is None}
    skip = ("arch_id", "arch", "hash", "nonfinite", "seconds", "error")
    columns = [c for c in table.column_names if c not in skip]
    out = {}
    for name in [n for n in (names or columns) if n in columns]:
        column = table.column(name).to_pylist()
        out[name] = [float(column[by_hash[h]]) if h in by_hash and column[by_hash[h]] is not None else math.nan
                     for h in hashes]
    return out


def peer_repeatability(rows: list[dict], hashes: list[str], column: str) -> tuple[float | None, int]:
    """Spearman rho between the peer's ``column`` on the first and the second row (file order) of every
    graph with several rows, and how many such graphs had both values finite; (None, n) if n < 3."""
    groups: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        groups.setdefault(h, []).append(i)
    first, second = [], []
    for members in groups.values():
        if len(members) > 1:
            first.append(float(rows[members[0]][column]))
            second.append(float(rows[members[1]][column]))
    return spearman(first, second)


def _pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    return a[both], b[both]


def kendall(x, y) -> float | None:
    a, b = _pairs(x, y)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(stats.kendalltau(a, b).statistic)


def per_graph(hashes: list[str], score: list[float], accuracy: list[float]) -> tuple[list[float], list[float]]:
    """One point per distinct graph: its score and its mean accuracy over the rows of that hash."""
    acc: dict[str, list[float]] = {}
    sc: dict[str, float] = {}
    for h, s, a in zip(hashes, score, accuracy):
        acc.setdefault(h, []).append(a)
        sc.setdefault(h, s)
    keys = list(acc)
    return [sc[k] for k in keys], [float(np.mean(acc[k])) for k in keys]


def main(args, names: list[str], device: torch.device) -> int:
    path = args.jsonl or args.data_dir / PEER_FILE
    rows = read_rows(path, args.cells if args.cells is not None else 500)
    hashes, net_ids, nets = row_networks(rows, args.build)
    options = {"jacob_cov": {"samples": args.jacob_samples}} if args.jacob_samples else {}
    info = {"rows": len(rows), "graphs": len(set(hashes)), "networks": len(nets), "build": args.build,
            "batch": args.batch, "seed": args.seed, "seed2": args.seed2, "device": str(device),
            "jacob_samples": args.jacob_samples}
    values2 = None
    if args.run_dir is not None:
        values = values_from_run(args.run_dir, hashes, None)
        names = list(values)
        seconds = {name: 0.0 for name in names}
    else:
        runs = []
        for seed in [args.seed] + ([args.seed2] if args.seed2 is not None else []):
            data_seed = args.data_seed if args.data_seed is not None else seed
            inputs, targets, fingerprint = load_inputs(args.data_dir, "cifar10", args.batch, data_seed, device)
            info.setdefault("data_fingerprints", []).append(fingerprint)
            print(f"nb101: {len(rows)} rows, {len(set(hashes))} graphs, {len(nets)} networks ({args.build}), "
                  f"batch {args.batch} (data seed {data_seed}), seed {seed}, {device}", file=sys.stderr)
            partial = args.json.with_suffix(f".seed{seed}.partial.json") if args.json else None
            by_net, secs = score_networks(nets, names, options, inputs, targets, seed, device, partial)
            runs.append(({name: [by_net[name][n] for n in net_ids] for name in names}, secs))
        (values, seconds), values2 = runs[0], (runs[1][0] if len(runs) > 1 else None)
    summary = summarise(rows, names, values, seconds, values2)
    all_rows = read_all_rows(path)
    all_hashes = [Spec.from_matrix(r["matrix"], r["ops"]).hash() for r in all_rows]
    for name in names:  # over the whole table: a property of the peer's column, not of the rows checked
        column = summary[name]["peer_column"]
        summary[name]["peer_self_rho"], summary[name]["peer_self_n"] = (
            peer_repeatability(all_rows, all_hashes, column) if column is not None else (None, 0))
    accuracy = [float(r["val_accuracy"]) for r in rows]
    for name in names:
        entry = summary[name]
        entry["seconds_per_network"] = entry["seconds_per_cell"] * len(rows) / max(1, len(nets))
        entry["kendall_val_accuracy"] = kendall(values[name], accuracy)
        gs, ga = per_graph(hashes, values[name], accuracy)
        entry["rho_val_graphs"], entry["n_graphs"] = spearman(gs, ga)
        entry["kendall_val_graphs"] = kendall(gs, ga)
        if name in ("params", "flops") and name in rows[0]:
            peer = [float(r[name]) for r in rows]
            entry["exact_rows"] = int(sum(1 for a, b in zip(values[name], peer)
                                          if abs(a - b) <= 1e-6 * max(1.0, abs(b))))
    print(f"nb101 cifar10: {info['rows']} rows ({info['graphs']} graphs, {info['networks']} networks built "
          f"'{args.build}'), batch {args.batch}, seed {args.seed}"
          + (f", seed2 {args.seed2}" if args.seed2 is not None else "") + f", device {device}")
    print_table(summary, values2 is not None)
    print("\npeer self rho: the peer's first vs second row of each graph with several rows in the whole table")
    for name, e in summary.items():
        print(f"{name:<10}{fmt(e['peer_self_rho']):>8}  ({e['peer_self_n']} graphs)")
    print("\nagainst val_accuracy: rows (as the peer) and distinct graphs (accuracy averaged per hash)")
    print(f"{'proxy':<10}{'rho rows':>10}{'tau rows':>10}{'rho graphs':>12}{'tau graphs':>12}{'n graphs':>10}"
          f"{'exact rows':>12}")
    for name, e in summary.items():
        print(f"{name:<10}{fmt(e['rho_val_accuracy']):>10}{fmt(e['kendall_val_accuracy']):>10}"
              f"{fmt(e['rho_val_graphs']):>12}{fmt(e['kendall_val_graphs']):>12}{e['n_graphs']:>10}"
              f"{str(e.get('exact_rows', '-')):>12}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**info, "proxies": summary,
                                         "values": {k: v for k, v in values.items()},
                                         "values_seed2": values2}, indent=1, allow_nan=True))
    return 0
