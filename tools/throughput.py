"""Throughput of ``gradsign score`` through real Ray actors: ``python -m tools.bench throughput``.

For each actor count in ``--actors`` it runs one real ``gradsign score`` (a subprocess: its own local Ray
cluster, its own run folder) over the same sample of cells, and reports side by side:

- ``e2e``: archs scored / the driver's wall time (Ray start, actor start and CUDA init included);
- ``steady``: archs committed between the first and the last shard commit / the time between them
  (read from the score files' modification times), the rate a long run settles at;
- GPU utilisation (mean of ``nvidia-smi`` samples taken while shards were being committed) and GPU memory
  per actor (the largest ``used_memory`` each actor process reached, averaged over the actors).

Every row scores the same cells with the same seeds, so the rows also check one another: the score
columns must be equal across rows (``max_rel_diff_vs_first``), whatever the number of actors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq


class GpuSampler:
    """Polls ``nvidia-smi`` in a thread: (time, utilisation %, memory MiB) and per-process memory."""

    def __init__(self, period: float = 0.5):
        self.period = period
        self.samples: list[tuple[float, float, float]] = []
        self.process_mib: dict[int, float] = {}
        self.available = shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "GpuSampler":
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.available:
            self._thread.join(timeout=5)

    @staticmethod
    def _query(args: list[str]) -> list[list[str]]:
        out = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=10).stdout
        return [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for util, mem in self._query(["--query-gpu=utilization.gpu,memory.used"])[:1]:
                    self.samples.append((time.time(), float(util), float(mem)))
                for pid, mem in self._query(["--query-compute-apps=pid,used_memory"]):
                    self.process_mib[int(pid)] = max(self.process_mib.get(int(pid), 0.0), float(mem))
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self._stop.wait(self.period)

    def utilisation(self, start: float, end: float) -> float | None:
        window = [u for t, u, _ in self.samples if start <= t <= end]
        return sum(window) / len(window) if window else None


def _steady_rate(scores_dir: Path) -> tuple[int, float | None, float | None, float | None]:
    """(rows committed, steady archs/s, first commit time, last commit time) from the score files."""
    commits = []
    for path in scores_dir.glob("part-*.parquet"):
        commits.append((path.stat().st_mtime, pq.read_metadata(path).num_rows))
    commits.sort()
    rows = sum(n for _, n in commits)
    if len(commits) < 2:
        return rows, None, None, None
    first, last = commits[0][0], commits[-1][0]
    after_first = sum(n for _, n in commits[1:])
    return rows, (after_first / (last - first) if last > first else None), first, last


def _scores(scores_dir: Path, proxy: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for path in scores_dir.glob("part-*.parquet"):
        table = pq.read_table(path, columns=["arch_id", proxy]).to_pydict()
        out.update(zip(table["arch_id"], table[proxy]))
    return out


def _run_driver(command: list[str], max_seconds: float | None) -> tuple[int | str, str]:
    """Run one driver; past ``max_seconds`` interrupt it (Ctrl-C: it shuts its Ray cluster down), then
    kill its whole process group, so no actor of this row holds the GPU during the next."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max_seconds)
        return proc.returncode, out[-2000:]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        return "timeout", (out or "")[-2000:]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of that driver's local cluster
        except ProcessLookupError:
            pass


def run_row(args: argparse.Namespace, actors: int, out_dir: Path) -> dict:
    gpus = args.gpus_per_actor if args.gpus_per_actor is not None else (1.0 / actors if args.gpu else 0)
    run_dir = out_dir / f"actors-{actors}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    sets = [f"sample.size={args.sample}", f"sample.seed={args.sample_seed}", f"data.batch_size={args.batch}",
            f"ray.num_actors={actors}", f"ray.num_gpus_per_actor={gpus}",
            f"ray.num_cpus_per_actor={args.cpus_per_actor}", f"shard_size={args.shard_size}",
            f"ray.in_flight_per_actor={args.in_flight}", f"output={run_dir}", "progress=false",
            *args.set]
    command = [sys.executable, "-m", "gradsign", "score", args.config]
    for s in sets:
        command += ["--set", s]
    with GpuSampler() as gpu:
        start = time.time()
        returncode, tail = _run_driver(command, args.max_seconds)
        wall = time.time() - start
    rows, steady, first, last = _steady_rate(run_dir / "scores")
    util = gpu.utilisation(first, last) if first is not None else None
    actor_mib = [m for m in gpu.process_mib.values() if m > 0]
    peak_used = max((m for _, _, m in gpu.samples), default=None)
    return {
        "actors": actors, "gpus_per_actor": gpus, "cpus_per_actor": args.cpus_per_actor,
        "returncode": returncode, "archs": rows, "wall_seconds": wall,
        "e2e_archs_per_second": rows / wall if wall > 0 else None, "steady_archs_per_second": steady,
        "gpu_util_percent": util, "gpu_mib_per_actor": (sum(actor_mib) / len(actor_mib)) if actor_mib else None,
        "gpu_processes": len(actor_mib), "gpu_mib_used_peak": peak_used, "run_dir": str(run_dir),
        "log_tail": tail if returncode not in (0, 3) else tail[-300:],
    }


def print_table(rows: list[dict]) -> None:
    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    print(f"{'actors':>6} {'gpu/actor':>9} {'cpu/actor':>9} {'archs':>6} {'wall s':>7} {'e2e/s':>7} "
          f"{'steady/s':>9} {'x 1st':>6} {'GPU %':>6} {'MiB/actor':>9} {'rc':>7}")
    base = rows[0]["steady_archs_per_second"] if rows else None
    for r in rows:
        ratio = r["steady_archs_per_second"] / base if base and r["steady_archs_per_second"] else None
        print(f"{r['actors']:>6} {f(r['gpus_per_actor'], '.3f'):>9} {f(r['cpus_per_actor'], 'g'):>9} "
              f"{r['archs']:>6} {f(r['wall_seconds'], '.1f'):>7} {f(r['e2e_archs_per_second'], '.2f'):>7} "
              f"{f(r['steady_archs_per_second'], '.2f'):>9} {f(ratio, '.2f'):>6} "
              f"{f(r['gpu_util_percent'], '.0f'):>6} {f(r['gpu_mib_per_actor'], '.0f'):>9} {str(r['returncode']):>7}")


def bench_throughput(args: argparse.Namespace) -> dict:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for actors in [int(a) for a in args.actors.split(",") if a]:
        row = run_row(args, actors, out_dir)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "log_tail"}), file=sys.stderr, flush=True)
        if row["returncode"] not in (0, 3, "timeout"):
            print(row["log_tail"], file=sys.stderr)
    # Same cells, same seeds: every row must hold the same scores as the first.
    first = _scores(Path(rows[0]["run_dir"]) / "scores", args.proxy) if rows else {}
    for row in rows:
        other = _scores(Path(row["run_dir"]) / "scores", args.proxy)
        common = [k for k in other if k in first]
        diffs = [abs(other[k] - first[k]) / max(abs(first[k]), 1e-12) for k in common if first[k] == first[k]]
        row["compared_with_first"] = len(common)
        row["max_rel_diff_vs_first"] = max(diffs) if diffs else None
    summary = {"config": args.config, "sample": args.sample, "batch": args.batch, "rows": rows,
               "host_cpus": os.cpu_count()}
    print_table(rows)
    for row in rows:
        print(f"actors {row['actors']}: {row['compared_with_first']} cells compared with the first row, "
              f"max relative difference {row['max_rel_diff_vs_first']}")
    return summary


def add_parser(sub) -> None:
    t = sub.add_parser("throughput", help="archs/s of `gradsign score` through real Ray actors, per actor count")
    t.add_argument("--config", default="configs/nb201-cifar10.yaml")
    t.add_argument("--actors", default="1,2,4,8", help="comma-separated actor counts, one run each")
    t.add_argument("--gpu", action="store_true", help="GPU actors: num_gpus_per_actor = 1/actors unless given")
    t.add_argument("--gpus-per-actor", type=float, default=None)
    t.add_argument("--cpus-per-actor", type=float, default=1)
    t.add_argument("--sample", type=int, default=2000, help="cells (the same sample for every row)")
    t.add_argument("--sample-seed", type=int, default=0)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--shard-size", type=int, default=25)
    t.add_argument("--in-flight", type=int, default=2)
    t.add_argument("--proxy", default="gradsign")
    t.add_argument("--max-seconds", type=float, default=None, help="stop a row after this long (rate still read)")
    t.add_argument("--out", default="runs/throughput")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    t.add_argument("--json", help="also write the summary here")
