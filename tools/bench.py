"""Benchmarks kept with the project: ``python -m tools.bench gradsign|cohort|throughput [options]``.

``cohort``: the same NB201 cells are scored by the per-cell path (build each network from its seed, the
hooks engine per cell) and, per cohort of K of them, by the cohort engine (replay the cells' draws into
one module, one pass); it prints cells/s of both, their ratio, milliseconds per cell of building vs
scoring on each path (where building bounds the rate), and the largest relative difference between the
two paths' scores. On the CPU it times the process's CPU time (so that other jobs on a shared machine do
not bias one path against the other; run it with ``--threads 1``), on a GPU wall time.

``throughput`` (``tools/throughput.py``): archs/s of real ``gradsign score`` runs through Ray, per
actor count (GPU utilisation and memory per actor on a GPU). ``gradsign``, below:

For the same K random cells of one space (``--space nb201``, default, or ``nb101``) and the same real
batch, in one run, it times per cell:
  floor  one ordinary batched forward+backward at batch N (BatchNorm in batch mode, mean loss)
  loop   the per-sample loop engine (N backward passes at batch 1: the reference's way)
  hooks  the production engine (one batched pass per chunk, per-sample grads in hooks)
  hooks-hostprobe  the same, with its one-sample probe run on a CPU copy of the net (timed: probe + engine)
  func   the torch.func vmap(grad) engine
and prints per-cell medians, the ratios hooks/floor and loop/hooks, peak memory, and each cell's
agreement with the loop (relative difference; exact zeros must coincide). Speed belongs here, never in
a timed test: every ratio is measured in one run on one machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gradsign import spaces
from gradsign.actors.per_sample import probe_network, sign_sums
from gradsign.actors.scorer import arch_seed, set_precision

from tools import throughput
from gradsign.pipeline.driver.data import dataset_info, load_batch
from tools.opcount import count_ops


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _floor(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    net.train()
    F.cross_entropy(net(x), y).backward()


def _peak_mb(device: torch.device) -> float:
    """CUDA: peak allocated during that engine's timings. CPU: the process's peak RSS so far (it only grows,
    so on the CPU it bounds every engine run before it, not one engine alone)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(setup, fn, device: torch.device, repeats: int) -> float:
    """Best of ``repeats`` timings of ``fn(setup())``; building the input (a fresh net) is not timed."""
    best = []
    for _ in range(repeats):
        arg = setup()
        _sync(device)
        start = time.perf_counter()
        fn(arg)
        _sync(device)
        best.append(time.perf_counter() - start)
    return min(best)


def bench_gradsign(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    set_precision("tf32" if args.tf32 else "fp32")  # the scorer's setting: fp32 unless asked
    info = dataset_info(args.dataset)
    batch = load_batch(args.data, info.name, args.batch, seed=0)
    x_host = torch.from_numpy(batch.images)
    x = x_host.to(device)
    y = torch.from_numpy(batch.labels).to(device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if args.space == "nb101":  # arch(i) needs the table of all graphs: from the user's cache folder
        from gradsign.pipeline.driver.space_cache import get_space

        space = get_space("nb101")
    else:
        space = spaces.get(args.space)
    ids = space.sample_ids(args.cells, args.seed)
    engines = [e for e in args.engines.split(",") if e]

    def fresh(arch: str) -> torch.nn.Module:
        torch.manual_seed(arch_seed(args.seed, arch))
        net = space.build(arch, info.num_classes).to(device)
        return net.to(memory_format=torch.channels_last) if args.channels_last else net

    def fresh_pair(arch: str) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The net on the CPU (for a host probe) and an identical copy on the device."""
        torch.manual_seed(arch_seed(args.seed, arch))
        host = space.build(arch, info.num_classes)
        net = copy.deepcopy(host).to(device)
        return host, (net.to(memory_format=torch.channels_last) if args.channels_last else net)

    rows = []
    for arch_id in ids:
        arch = space.arch(arch_id)
        row = {"arch_id": arch_id, "arch": arch}
        # warm-up per cell (first-touch allocations, cudnn autotune) outside the timings
        _floor(fresh(arch), x, y)
        _sync(device)
        built = time.perf_counter()
        fresh(arch)
        _sync(device)
        row["build"] = time.perf_counter() - built  # net construction on the CPU + copy to the device
        row["floor"] = _timed(lambda: fresh(arch), lambda net: _floor(net, x, y), device, args.repeats)
        if args.count_ops:  # one more, untimed run under the op counter
            net = fresh(arch)
            row["floor_ops"] = count_ops(lambda: _floor(net, x, y), device)[1].device
        for engine in engines:
            result = {}
            host_probe = engine == "hooks-hostprobe"

            def go(arg):
                net, probe = arg, None
                if host_probe:
                    host, net = arg
                    probe = probe_network(host, x_host)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                    result["sums"] = sign_sums(net, x, y, engine="hooks" if host_probe else engine,
                                               chunk_size=args.chunk_size, conv_method=args.conv_method,
                                               probe=probe)

            def setup():
                return fresh_pair(arch) if host_probe else fresh(arch)

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            row[engine] = _timed(setup, go, device, args.repeats if engine != "loop" else 1)
            row[f"{engine}_score"] = result["sums"].score()
            row[f"{engine}_peak_mb"] = _peak_mb(device)
            if args.count_ops and engine != "loop":
                arg = setup()
                _, ops = count_ops(lambda: go(arg) or result["sums"].score(), device)
                row[f"{engine}_ops"] = ops.device
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                          if k != "arch"}), file=sys.stderr)
    return summarise(rows, engines, args)


def summarise(rows: list[dict], engines: list[str], args) -> dict:
    med = {k: statistics.median(r[k] for r in rows) for k in ["build", "floor", *engines]}
    out = {"space": args.space, "device": args.device, "threads": torch.get_num_threads(), "batch": args.batch,
           "cells": len(rows),
           "median_seconds": med, "channels_last": args.channels_last, "tf32": args.tf32, "bf16": args.bf16,
           "conv_method": args.conv_method,
           "rows": rows}
    if "hooks" in engines:
        out["hooks_over_floor"] = med["hooks"] / med["floor"]
    if "loop" in engines and "hooks" in engines:
        out["loop_over_hooks"] = med["loop"] / med["hooks"]
    if "loop" in engines:
        for engine in engines:
            if engine == "loop":
                continue
            rel = []
            zeros_agree = True
            for r in rows:
                a, b = r["loop_score"], r[f"{engine}_score"]
                zeros_agree &= (a == 0) == (b == 0)
                rel.append(0.0 if a == b else abs(a - b) / max(abs(a), 1e-12))
            out[f"{engine}_vs_loop"] = {"max_rel_diff": max(rel), "zeros_identical": zeros_agree}
    out["peak_mb"] = {e: max(r[f"{e}_peak_mb"] for r in rows) for e in engines}
    if rows and "floor_ops" in rows[0]:
        out["median_device_ops"] = {k: statistics.median(r[f"{k}_ops"] for r in rows)
                                    for k in ["floor", *engines] if f"{k}_ops" in rows[0]}
    return out


def print_table(summary: dict, engines: list[str]) -> None:
    med = summary["median_seconds"]
    print(f"space {summary.get('space', 'nb201')}, device {summary['device']}, {summary['threads']} threads, "
          f"batch {summary['batch']}, "
          f"{summary['cells']} cells (median seconds per cell)")
    ops = summary.get("median_device_ops", {})

    def ops_cell(k: str) -> str:
        return f"{ops[k]:>12.0f}" if k in ops else f"{'':>12}"

    header = f"{'engine':<16}{'median s':>10}{'x floor':>9}{'peak MB':>10}"
    print(header + (f"{'device ops':>12}" if ops else ""))
    print(f"{'build':<16}{med['build']:>10.4f}{med['build'] / med['floor']:>9.2f}{'':>10}")
    print(f"{'floor':<16}{med['floor']:>10.4f}{1.0:>9.2f}{'':>10}" + (ops_cell("floor") if ops else ""))
    for e in engines:
        print(f"{e:<16}{med[e]:>10.4f}{med[e] / med['floor']:>9.2f}{summary['peak_mb'][e]:>10.0f}"
              + (ops_cell(e) if ops else ""))
    if "loop_over_hooks" in summary:
        print(f"loop / hooks = {summary['loop_over_hooks']:.2f}x faster")
    for e in engines:
        if f"{e}_vs_loop" in summary:
            agree = summary[f"{e}_vs_loop"]
            print(f"{e} vs loop: max relative difference {agree['max_rel_diff']:.2e}, "
                  f"exact zeros identical: {agree['zeros_identical']}")


def bench_cohort(args: argparse.Namespace) -> dict:
    """Per-cell engine vs cohort engine on the same cells, interleaved in one run (see ``cohort`` below)."""
    from gradsign.actors.cohort import check_replay, cohort_scores

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    set_precision("fp32")
    info = dataset_info(args.dataset)
    batch = load_batch(args.data, info.name, args.batch, seed=0)
    x = torch.from_numpy(batch.images).to(device)
    y = torch.from_numpy(batch.labels).to(device)
    space = spaces.get("nb201")
    sizes = [int(k) for k in args.sizes.split(",") if k]
    archs = [space.arch(i) for i in space.sample_ids(args.cells, args.seed)]
    seeds = [arch_seed(args.seed, a) for a in archs]
    check_replay(space, archs[0], seeds[0], info.num_classes)
    # warm-up outside the timings (first-touch allocations, lazy initialisation, cudnn autotune)
    cohort_scores(space.build_cohort(archs[:2], info.num_classes, seeds=seeds[:2]).to(device), x, y,
                  memory_budget_mb=args.memory_mb)
    clock = time.process_time if device.type == "cpu" else time.perf_counter

    def timed(fn):
        _sync(device)
        t0 = clock()
        out = fn()
        _sync(device)
        return out, clock() - t0

    # the per-cell path once per cell, as the scorer runs it: build the network on the CPU, move it, score it
    single, build, engine = [], [], []
    for arch, seed in zip(archs, seeds):
        torch.manual_seed(seed)
        net, seconds = timed(lambda: space.build(arch, info.num_classes).to(device))
        build.append(seconds)
        value, seconds = timed(lambda: sign_sums(net, x, y).score())
        single.append(value)
        engine.append(seconds)
    print(json.dumps({"per_cell_build_s": round(sum(build), 3), "per_cell_engine_s": round(sum(engine), 3)}),
          file=sys.stderr, flush=True)
    # the cohort path per cohort of K: replay the cells' draws into one module, move it, one pass
    rows = []
    for size in sizes:
        for start in range(0, len(archs), size):
            part = slice(start, start + size)
            net, t_build = timed(
                lambda: space.build_cohort(archs[part], info.num_classes, seeds=seeds[part]).to(device))
            together, t_engine = timed(lambda: cohort_scores(net, x, y, memory_budget_mb=args.memory_mb))
            row = {"size": size, "cells": len(together), "per_cell_build": sum(build[part]),
                   "per_cell_engine": sum(engine[part]), "cohort_build": t_build, "cohort_engine": t_engine,
                   "max_rel_diff": max((0.0 if a == b else abs(a - b) / max(abs(a), 1e-12))
                                       for a, b in zip(single[part], together)),
                   "zeros_identical": all((a == 0) == (b == 0) for a, b in zip(single[part], together))}
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                  file=sys.stderr, flush=True)
    summary = {"space": "nb201", "device": args.device, "threads": torch.get_num_threads(), "batch": args.batch,
               "cells": len(archs), "memory_mb": args.memory_mb,
               "clock": "process CPU time" if device.type == "cpu" else "wall time", "sizes": {}}
    for size in sizes:
        mine = [r for r in rows if r["size"] == size]
        cells = sum(r["cells"] for r in mine)
        tot = {k: sum(r[k] for r in mine)
               for k in ("per_cell_build", "per_cell_engine", "cohort_build", "cohort_engine")}
        per_cell_s = (tot["per_cell_build"] + tot["per_cell_engine"]) / cells
        cohort_s = (tot["cohort_build"] + tot["cohort_engine"]) / cells
        summary["sizes"][size] = {
            "cells": cells,
            "per_cell_cells_per_s": 1 / per_cell_s, "cohort_cells_per_s": 1 / cohort_s,
            "cohort_over_per_cell": per_cell_s / cohort_s,
            "ms_per_cell": {k: 1000 * v / cells for k, v in tot.items()},
            "max_rel_diff": max(r["max_rel_diff"] for r in mine),
            "zeros_identical": all(r["zeros_identical"] for r in mine)}
    return summary


def print_cohort(summary: dict) -> None:
    print(f"NB201 cohort engine vs per-cell engine: device {summary['device']}, {summary['threads']} threads, "
          f"batch {summary['batch']}, {summary['cells']} cells (the same cells, one run; {summary['clock']})")
    print(f"{'K':>4} {'per-cell/s':>11} {'cohort/s':>9} {'ratio':>6} | ms per cell: {'build':>7} {'engine':>7}"
          f" | {'cohort build':>12} {'engine':>7} | {'max rel diff':>12} zeros")
    for size, s in summary["sizes"].items():
        ms = s["ms_per_cell"]
        print(f"{size:>4} {s['per_cell_cells_per_s']:>11.2f} {s['cohort_cells_per_s']:>9.2f} "
              f"{s['cohort_over_per_cell']:>6.2f} | {'':>13}{ms['per_cell_build']:>7.1f} {ms['per_cell_engine']:>7.1f}"
              f" | {ms['cohort_build']:>12.1f} {ms['cohort_engine']:>7.1f} | {s['max_rel_diff']:>12.2e} "
              f"{s['zeros_identical']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench")
    sub = parser.add_subparsers(dest="what", required=True)
    g = sub.add_parser("gradsign", help="GradSign engines against the batched forward+backward floor")
    g.add_argument("--cells", type=int, default=8)
    g.add_argument("--space", default="nb201", help="nb201 | nb101 (random cells of that space)")
    g.add_argument("--batch", type=int, default=64)
    g.add_argument("--device", default="cpu")
    g.add_argument("--threads", type=int, default=2)
    g.add_argument("--engines", default="loop,hooks,func")
    g.add_argument("--chunk-size", type=int, default=None)
    g.add_argument("--conv-method", default="auto", help="hooks engine: auto | grouped | unfold")
    g.add_argument("--repeats", type=int, default=3, help="timings per cell (min taken); loop runs once")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--dataset", default="cifar10")
    g.add_argument("--data", default=str(Path("..") / "shared" / "data" / "cifar10_train_1000.npz"))
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--tf32", action="store_true", help="allow TF32 matmuls/convolutions (CUDA)")
    g.add_argument("--bf16", action="store_true", help="run the engines under bf16 autocast")
    g.add_argument("--count-ops", action="store_true",
                   help="also count, per cell, the aten operations that do device work (tools/opcount.py)")
    g.add_argument("--json", help="also write the summary here")
    c = sub.add_parser("cohort", help="NB201 cohort engine at cohort sizes K vs the per-cell engine, same cells")
    c.add_argument("--cells", type=int, default=32, help="cells (the same for every K; a multiple of each K)")
    c.add_argument("--sizes", default="8,32", help="comma-separated cohort sizes K")
    c.add_argument("--batch", type=int, default=64)
    c.add_argument("--device", default="cpu")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--memory-mb", type=int, default=4096, help="per chunk of a cohort's pass")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--dataset", default="cifar10")
    c.add_argument("--data", default=str(Path("..") / "shared" / "data" / "cifar10_train_1000.npz"))
    c.add_argument("--json", help="also write the summary here")
    throughput.add_parser(sub)
    args = parser.parse_args(argv)
    if args.what == "throughput":
        summary = throughput.bench_throughput(args)
    elif args.what == "cohort":
        summary = bench_cohort(args)
        print_cohort(summary)
    else:
        summary = bench_gradsign(args)
        print_table(summary, [e for e in args.engines.split(",") if e])
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
