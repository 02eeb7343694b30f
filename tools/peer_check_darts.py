"""``python -m tools.peer_check --space darts``: our proxies against the NASLib NB301 peer table.

The peer table is ``nb301_naslib_725.jsonl`` (NAS-Bench-Suite-Zero's ``zc_nasbench301``: 725 DARTS cells,
CIFAR-10). Its ``val_accuracy`` is the NAS-Bench-301 **surrogate model's prediction**, not a trained
network's accuracy: every "rho(val)" printed here is a correlation with that prediction.

The peer built NASLib's NB301 network (C=32, 8 cells) with DARTS's search-phase ops (BatchNorm inside ops
non-affine, a BatchNorm after every pooling op) and scored one batch of 32 CIFAR-10 images; ``--bn peer``
(default) builds the same network (``DartsSpace.peer()``: its params and flops equal the peer's on all 725
rows), ``--bn trained`` the network NAS-Bench-301 trained (affine BN, no BN after pools). The batch defaults
to the peer's 32; jacob_cov uses the whole batch, as the peer.
Each cell is built as the scorer builds it (``torch.manual_seed(arch_seed(seed, canonical arch))`` then the
space's build), a fresh network for every proxy. The peer stores synflow as a log: rank correlations are
unaffected. ``--pick random`` scores a seeded sample of rows instead of the first ``--cells``; after every cell
the values so far go to ``--json``'s ``.partial.json``, so a long CPU run cut short still leaves numbers
(``--from-partial FILE`` prints the summary of those rows).

    python -m tools.peer_check --space darts --cells 100 \\
        --proxies synflow,snip,grad_norm,naswot,jacob_cov,gradsign,params --json out.json
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

from gradsign.actors import proxies
from gradsign.actors.scorer import arch_seed
from tools.peer_check_nb101 import kendall
from tools.peer_common import fmt, load_inputs, print_table, summarise
from gradsign.spaces.darts import DartsSpace

PEER_FILE = "nb301_naslib_725.jsonl"


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pick(rows: list[dict], cells: int, how: str, seed: int) -> list[dict]:
    if not 1 <= cells <= len(rows):
        raise SystemExit(f"--cells must be in [1, {len(rows)}], got {cells}")
    if how == "first":
        return rows[:cells]
    chosen = np.random.default_rng(seed).choice(len(rows), size=cells, replace=False)
    return [rows[i] for i in sorted(chosen)]


def score_rows(space: DartsSpace, rows: list[dict], names: Sequence[str], inputs, targets, seed: int,
               device: torch.device, partial: Path | None = None) -> tuple[dict, dict]:
    """{proxy: [value per row]} and {proxy: seconds}; every proxy on a fresh seeded network."""
    fns = {name: proxies.get(name) for name in names}
    values: dict[str, list[float]] = {name: [] for name in names}
    seconds = {name: 0.0 for name in names}
    start = time.perf_counter()
    for i, row in enumerate(rows):
        canonical = space.canonical(row)
        for name, fn in fns.items():
            torch.manual_seed(arch_seed(seed, canonical))
            net = space.build(canonical, 10).to(device)
            t = time.perf_counter()
            try:
                value = float(fn(net, inputs, targets))
            except Exception as exc:  # reported and left out, not fatal
                print(f"  {name} failed on row {row.get('index', i)}: {type(exc).__name__}: {exc}", file=sys.stderr)
                value = math.nan
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[name] += time.perf_counter() - t
            values[name].append(value)
        print(f"  {i + 1}/{len(rows)} cells, {time.perf_counter() - start:.0f} s", file=sys.stderr)
        if partial is not None:
            partial.write_text(json.dumps({"rows": [r.get("index", j) for j, r in enumerate(rows[:i + 1])],
                                           "values": values, "seconds": seconds}, allow_nan=True))
    return values, seconds


def main(args, names: list[str], device: torch.device) -> int:
    path = args.jsonl or args.data_dir / PEER_FILE
    rows = pick(read_rows(path), args.cells if args.cells is not None else 725, args.pick, args.pick_seed)
    bn = getattr(args, "bn", None) or "peer"
    space = DartsSpace() if bn == "trained" else DartsSpace.peer()
    batch = args.batch
    inputs, targets, fingerprint = load_inputs(args.data_dir, "cifar10", batch, args.seed, device)
    print(f"darts (NB301): {len(rows)} rows ({args.pick}), BN in ops {bn}, batch {batch} ({fingerprint}), "
          f"seed {args.seed}, {device}, {torch.get_num_threads()} threads", file=sys.stderr)
    if getattr(args, "from_partial", None) is not None:  # a run cut short: its rows and values so far
        done = json.loads(args.from_partial.read_text())
        by_index = {r.get("index"): r for r in read_rows(path)}
        rows = [by_index[i] for i in done["rows"]]
        names = [n for n in names if n in done["values"]]
        values = {n: [math.nan if v is None else float(v) for v in done["values"][n][:len(rows)]] for n in names}
        seconds = done["seconds"]
    else:
        partial = args.json.with_suffix(".partial.json") if args.json else None
        values, seconds = score_rows(space, rows, names, inputs, targets, args.seed, device, partial)
    summary = summarise(rows, names, values, seconds)
    accuracy = [float(r["val_accuracy"]) for r in rows]
    for name in names:
        entry = summary[name]
        entry["kendall_val_accuracy"] = kendall(values[name], accuracy)
        column = entry["peer_column"]
        if column is not None:
            entry["peer_kendall_val_accuracy"] = kendall([float(r[column]) for r in rows], accuracy)
        if name in ("params", "flops") and name in rows[0]:
            entry["exact_rows"] = int(sum(1 for a, r in zip(values[name], rows)
                                          if abs(a - float(r[name])) <= 1e-6 * max(1.0, abs(float(r[name])))))
    print(f"darts (NAS-Bench-301 space) cifar10: {len(rows)} rows of {path.name}, BN in ops {bn}, batch {batch}, "
          f"seed {args.seed}, device {device}")
    print("val = the NAS-Bench-301 surrogate's predicted validation accuracy (not a trained network)")
    print_table(summary, False)
    print(f"\n{'proxy':<10}{'tau(val)':>10}{'peer tau(val)':>15}{'exact rows':>12}")
    for name, e in summary.items():
        print(f"{name:<10}{fmt(e['kendall_val_accuracy']):>10}{fmt(e.get('peer_kendall_val_accuracy')):>15}"
              f"{str(e.get('exact_rows', '-')):>12}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": len(rows), "indices": [r.get("index") for r in rows], "bn": bn,
                                         "batch": batch, "seed": args.seed, "device": str(device),
                                         "data_fingerprint": fingerprint, "proxies": summary, "values": values},
                                        indent=1, allow_nan=True))
    return 0
