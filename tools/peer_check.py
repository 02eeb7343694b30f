"""Peer agreement of the baseline zero-cost proxies on NAS-Bench-201.

Scores the first (or a seeded sample of) ``--cells`` architectures of one dataset in the NASLib peer
table (``naslib_zc_nb201.csv``: NAS-Bench-Suite-Zero) with our proxies and prints, per proxy, the
Spearman rho against the peer's column for the same proxy and against the table's ``val_accuracy``
(with the peer column's own rho on the same cells for comparison), and for params/flops the largest
relative difference from the peer value. ``--seed2`` reruns everything with a second seed (weights, and
the data batch unless ``--data-seed`` pins it) and prints the rho between the two runs per proxy: the
noise floor a proxy's peer agreement can be read against (grasp and fisher are the noisy ones).

Each network is built exactly as the scorer builds it: ``torch.manual_seed(arch_seed(seed, arch))`` then
``space.build``, a fresh network for every proxy. Run it small on a CPU (``--cells 30``); a full check is
a GPU job.

    python -m tools.peer_check --dataset cifar10 --cells 200 --batch 64 --proxies all --seed 0

Or read the scores of pipeline runs instead of computing them (``--run-dir``; ``--run-dir2`` a second run
with another seed for the noise floor): the cells are the peer rows the run scored.

    python -m tools.peer_check --dataset cifar10 --run-dir runs/table-cifar10 --run-dir2 runs/noise

NAS-Bench-101 (``--space nb101``): the peer table is ``nb101_naslib_500.jsonl`` (CIFAR-10, 500 rows with
``matrix``/``ops``, 292 distinct graphs after pruning). Each distinct network is scored once and its
scores are given to every row that builds it. ``--build representative`` (default) builds the benchmark's
network of each graph (the spec the official generator met first, which the benchmark trained: official
parameter counts); ``--build given`` builds each row's pruned spec in its own vertex order, as the peer
did (vertex order changes how channels are split, so a few rows' params/flops differ between the two).
Correlations with ``val_accuracy`` are printed over the rows (as the peer computed them) and over the
distinct graphs (accuracy averaged per hash). ``--jacob-samples 32`` scores jacob_cov on the first 32
images, the peer's batch.

    python -m tools.peer_check --space nb101 --cells 500 --batch 64 --proxies all,gradsign --jacob-samples 32

DARTS / NAS-Bench-301 (``--space darts``): the 725 rows of ``nb301_naslib_725.jsonl``, batch 32, the peer's
non-affine BN in ops (``--bn``); see ``peer_check_darts.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from gradsign import spaces
from gradsign.actors import proxies
from gradsign.actors.scorer import arch_seed
from tools.peer_common import DEFAULT_DATA, load_inputs, parse_proxies, print_table, summarise
from gradsign.pipeline.driver.data import dataset_info

CSV_NAME = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16-120": "imagenet16_120"}


def read_peer_rows(path: Path, dataset: str) -> list[dict]:
    """The peer table's rows for ``dataset`` (any alias ``dataset_info`` accepts), in file order."""
    name = CSV_NAME[dataset_info(dataset).name]
    with open(path, newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["dataset"] == name]
    if not rows:
        raise SystemExit(f"no rows for dataset {name!r} in {path}")
    return rows


def pick_rows(rows: list[dict], cells: int, pick: str, pick_seed: int) -> list[dict]:
    if not 1 <= cells <= len(rows):
        raise SystemExit(f"--cells must be in [1, {len(rows)}], got {cells}")
    if pick == "first":
        return rows[:cells]
    chosen = np.random.default_rng(pick_seed).choice(len(rows), size=cells, replace=False)
    return [rows[i] for i in sorted(chosen)]


def score_cells(archs: Sequence[str], names: Sequence[str], num_classes: int, inputs: torch.Tensor,
                targets: torch.Tensor, seed: int, device: torch.device, label: str = "") -> tuple[dict, dict]:
    """{proxy: [value per arch]} and {proxy: seconds}, each value on a fresh seeded network."""
    space = spaces.get("nb201")
    fns = {name: proxies.get(name) for name in names}
    values: dict[str, list[float]] = {name: [] for name in names}
    seconds = {name: 0.0 for name in names}
    start = time.perf_counter()
    for i, arch in enumerate(archs):
        canonical = space.canonical(arch)
        for name, fn in fns.items():
            torch.manual_seed(arch_seed(seed, canonical))
            net = space.build(canonical, num_classes).to(device)
            t = time.perf_counter()
            try:
                value = float(fn(net, inputs, targets))
            except Exception as exc:  # one failing proxy/cell is reported and left out, not fatal
                print(f"  {name} failed on {canonical}: {type(exc).__name__}: {exc}", file=sys.stderr)
                value = math.nan
            seconds[name] += time.perf_counter() - t
            values[name].append(value)
        if (i + 1) % 10 == 0 or i + 1 == len(archs):
            print(f"  {label}{i + 1}/{len(archs)} cells, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return values, seconds


def values_from_run(run_dir: Path, rows: list[dict], names: Sequence[str] | None = None) -> tuple[list[dict], dict]:
    """The peer rows a run folder scored (peer order) and {proxy: [value per row]} from its score files."""
    import pyarrow.parquet as pq

    table = pq.read_table(run_dir / "scores")
    space = spaces.get("nb201")
    columns = [c for c in table.column_names if c not in ("arch_id", "arch", "nonfinite", "seconds", "error")]
    names = [n for n in (names or columns) if n in columns]
    errors = table.column("error").to_pylist()
    by_arch = {arch: i for i, arch in enumerate(table.column("arch").to_pylist()) if errors[i] is None}
    kept = [r for r in rows if space.canonical(r["arch"]) in by_arch]
    index = [by_arch[space.canonical(r["arch"])] for r in kept]
    values = {}
    for name in names:
        column = table.column(name).to_pylist()
        values[name] = [math.nan if column[i] is None else float(column[i]) for i in index]
    return kept, values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.peer_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--space", choices=("nb201", "nb101", "darts"), default="nb201",
                   help="nb201: naslib_zc_nb201.csv; nb101: nb101_naslib_500.jsonl; darts: nb301_naslib_725.jsonl "
                        "(CIFAR-10; see peer_check_darts.py)")
    p.add_argument("--from-partial", type=Path, default=None,
                   help="darts: summarise the rows a cut-short run left in its .partial.json instead of scoring")
    p.add_argument("--bn", choices=("peer", "trained"), default=None,
                   help="darts: BN inside ops non-affine as the peer (default), or affine as NB301 trained")
    p.add_argument("--dataset", default="cifar10", help="cifar10 | cifar100 | imagenet16_120 (or imagenet16-120)")
    p.add_argument("--cells", type=int, default=None, help="how many peer rows to score (default nb201 200, nb101 500)")
    p.add_argument("--build", choices=("representative", "given"), default="representative",
                   help="nb101: build each graph's benchmark spec, or each row's spec in its own vertex order")
    p.add_argument("--jsonl", type=Path, default=None,
                   help="nb101 peer table (default DATA_DIR/nb101_naslib_500.jsonl)")
    p.add_argument("--jacob-samples", type=int, default=None,
                   help="nb101: jacob_cov on the first N images (the peer: 32)")
    p.add_argument("--pick", choices=("first", "random"), default="first",
                   help="the first --cells rows of the dataset, or a sample drawn with --pick-seed")
    p.add_argument("--pick-seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=None, help="data batch size (default 64; darts: 32, the peer's)")
    p.add_argument("--proxies", default="all", help="comma-separated names; 'all' = the nine baselines")
    p.add_argument("--seed", type=int, default=0, help="run seed (weights via arch_seed; data unless --data-seed)")
    p.add_argument("--seed2", type=int, default=None, help="rerun with this seed; print rho between the runs")
    p.add_argument("--data-seed", type=int, default=None, help="pin the data batch seed for both runs")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when visible)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder with the shared data files")
    p.add_argument("--csv", type=Path, default=None, help="peer table (default DATA_DIR/naslib_zc_nb201.csv)")
    p.add_argument("--json", type=Path, default=None, help="write the results (and raw values) here")
    p.add_argument("--run-dir", type=Path, default=None, help="take the scores from this run folder")
    p.add_argument("--run-dir2", type=Path, default=None, help="with --run-dir: a second run (another seed)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = parse_proxies(args.proxies)
    if args.batch is None:
        args.batch = 32 if args.space == "darts" else 64
    if args.space == "darts":
        from tools.peer_check_darts import main as darts_main

        return darts_main(args, names, device)
    if args.space == "nb101":
        from tools.peer_check_nb101 import main as nb101_main

        return nb101_main(args, names, device)
    if args.cells is None:
        args.cells = 200
    info = dataset_info(args.dataset)
    csv_path = args.csv or args.data_dir / "naslib_zc_nb201.csv"
    if args.run_dir is not None:
        rows, values = values_from_run(args.run_dir, read_peer_rows(csv_path, info.name))
        values2 = None
        if args.run_dir2 is not None:
            rows2, second = values_from_run(args.run_dir2, rows)
            keep = {r["arch"] for r in rows2}
            pick = [i for i, r in enumerate(rows) if r["arch"] in keep]
            rows = [rows[i] for i in pick]
            values = {k: [v[i] for i in pick] for k, v in values.items()}
            values2 = {k: second.get(k, [math.nan] * len(rows)) for k in values}
        zero = {name: 0.0 for name in values}
        summary = summarise(rows, list(values), values, zero, values2)
        print(f"dataset {info.name}, {len(rows)} peer cells scored in {args.run_dir}"
              + (f" and {args.run_dir2}" if args.run_dir2 else ""))
        print_table(summary, values2 is not None)
        if args.json:
            args.json.write_text(json.dumps({"dataset": info.name, "run_dir": str(args.run_dir),
                                             "proxies": summary}, indent=1, allow_nan=True))
        return 0
    rows = pick_rows(read_peer_rows(csv_path, info.name), args.cells, args.pick, args.pick_seed)
    archs = [r["arch"] for r in rows]

    runs = []
    for seed in [args.seed] + ([args.seed2] if args.seed2 is not None else []):
        data_seed = args.data_seed if args.data_seed is not None else seed
        inputs, targets, fingerprint = load_inputs(args.data_dir, info.name, args.batch, data_seed, device)
        print(f"{info.name}: {len(archs)} cells, batch {args.batch} (data seed {data_seed}, {fingerprint}), "
              f"seed {seed}, {device}", file=sys.stderr)
        values, seconds = score_cells(archs, names, info.num_classes, inputs, targets, seed, device,
                                      label=f"seed {seed}: ")
        runs.append({"seed": seed, "data_seed": data_seed, "data_fingerprint": fingerprint,
                     "values": values, "seconds": seconds})

    summary = summarise(rows, names, runs[0]["values"], runs[0]["seconds"],
                        runs[1]["values"] if len(runs) > 1 else None)
    print(f"dataset {info.name}, cells {len(rows)} ({args.pick}), batch {args.batch}, seed {args.seed}"
          + (f", seed2 {args.seed2}" if args.seed2 is not None else "") + f", device {device}")
    print_table(summary, len(runs) > 1)
    if args.json:
        out = {"dataset": info.name, "cells": len(rows), "pick": args.pick, "pick_seed": args.pick_seed,
               "batch": args.batch, "device": str(device), "threads": torch.get_num_threads(),
               "proxies": summary, "archs": archs,
               "runs": [{k: v for k, v in run.items()} for run in runs]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, allow_nan=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
