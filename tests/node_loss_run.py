"""A worker node lost in the middle of a run, on a real multi-node Ray cluster on this machine.

Started by ``tests/test_node_loss.py`` in a process of its own (``ray.init`` is once per process), and
usable by hand: ``python tests/node_loss_run.py DATA_DIR OUT_DIR [ARCHS]``.

A head and one worker node, separate raylets on 127.0.0.1 with one CPU each, so the run's two
one-CPU actors sit one on each node. Once the first shard is committed and the worker node's actor is
busy with a shard, the worker node is removed (its raylet and actor processes killed, no grace); once
``REJOIN_AFTER`` more shards are committed (or ``REJOIN_DEADLINE_S`` has passed without them: a stalled
dispatcher), a new worker node joins. Then a
clean run of the same cells on the same cluster. Prints one JSON line: the figures and both runs'
scores, for the test to judge.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from support.processes import cmdline, descendants

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep every node on 127.0.0.1
TEMP = tempfile.mkdtemp(prefix="rgnl", dir="/tmp")  # short (Ray's socket paths must fit) and our own:
os.environ["RAY_TMPDIR"] = TEMP  # Ray writes its ray_current_cluster file here, not in /tmp/ray
os.makedirs(os.path.join(TEMP, "ray"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REJOIN_AFTER = 3  # commits after the loss before a node joins again: more than one actor's queue holds
REJOIN_DEADLINE_S = 120.0
NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20}


def overrides(data_dir: Path, out: Path, archs: int, *extra: str) -> list[str]:
    return [f"data.path={data_dir}/cifar10_train_1000.npz", "data.batch_size=8", f"sample.size={archs}",
            "sample.seed=11", f"ground_truth.path={data_dir}/nb201_accuracy.csv", "ground_truth.column=cifar10_test",
            "shard_size=2", "topk=5", "progress=false", "ray.num_actors=2", "ray.num_cpus_per_actor=1",
            "ray.in_flight_per_actor=2", "ray.actor_start_timeout_s=120",
            "ray.shard_timeout={initial_s: 60, min_s: 15, factor: 20}", f"output={out}", *extra]


class NodeKiller(threading.Thread):
    """Removes ``worker`` once the first shard of ``scores`` is committed and the worker's actor is busy with a
    shard; records commit times; lets a new worker node join after ``REJOIN_AFTER`` more commits (or the
    deadline)."""

    def __init__(self, cluster, worker, scores: Path):
        super().__init__(daemon=True)
        self.cluster, self.worker, self.scores = cluster, worker, scores
        self.commits: list[float] = []  # monotonic time each shard's score file was first seen
        self.death = self.death_wall = self.rejoined = self.rejoined_by = None
        self.error: str | None = None  # the removal failed
        self.rejoin_error: str | None = None  # the new node could not start (e.g. a machine overloaded)

    def _worker_actor_busy(self) -> bool:
        """Whether a scorer actor on the worker node is running a method (its process title, below the
        node's raylet, is ``ray::Scorer.<method>``)."""
        raylet = self.worker.all_processes["raylet"][0].process.pid
        return any(cmdline(pid).startswith("ray::Scorer.") for pid in descendants(raylet))

    def _poll(self) -> None:
        count = len(list(self.scores.glob("part-*.parquet"))) if self.scores.is_dir() else 0
        now = time.monotonic()
        self.commits.extend([now] * (count - len(self.commits)))

    def run(self) -> None:
        try:
            start = time.monotonic()
            # the first commit, and the worker node's actor busy with a shard: its loss is then a death in
            # flight (on a loaded machine the head's actor may commit before the other one has started)
            while (not self.commits or not self._worker_actor_busy()) and time.monotonic() - start < 300:
                self._poll()
                time.sleep(0.02)
            self.cluster.remove_node(self.worker, allow_graceful=False)
            self.death, self.death_wall = time.monotonic(), time.time()
            seen = len(self.commits)
            while len(self.commits) < seen + REJOIN_AFTER and time.monotonic() - self.death < REJOIN_DEADLINE_S:
                self._poll()
                time.sleep(0.02)
            # a node started outside the main thread may not register signal handlers: this one is
            # ended by cluster.shutdown() in main()'s finally (and by the test, by process id, if killed)
            self.rejoined_by = "commits" if len(self.commits) >= seen + REJOIN_AFTER else "deadline"
            self.cluster._shutdown_at_exit = False
            try:
                self.cluster.add_node(**NODE)
                self.rejoined = time.monotonic()
            except Exception as exc:
                self.rejoin_error = repr(exc)
            while time.monotonic() - self.death < 600 and not (self.scores.parent / "summary.json").exists():
                self._poll()
                time.sleep(0.02)
        except Exception as exc:  # reported in the JSON line
            self.error = repr(exc)


def main(data_dir: Path, out_dir: Path, archs: int) -> dict:
    import pyarrow.parquet as pq
    import ray
    from ray.cluster_utils import Cluster

    from gradsign.pipeline.driver.config import resolve
    from gradsign.pipeline.driver.run import run

    began = time.monotonic()
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False, "temp_dir": TEMP})
        worker = cluster.add_node(**NODE)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="warning")
        up = time.monotonic() - began
        lossy = resolve("configs/nb201-cifar10.yaml", overrides(
            data_dir, out_dir / "lossy", archs, "plugins=[faulty_proxies]", "proxies=[gradsign, sleeps]",
            "proxy_options={sleeps: {seconds: 0.3}}"))
        killer = NodeKiller(cluster, worker, out_dir / "lossy" / "scores")
        killer.start()
        t0 = time.monotonic()
        summary = run(lossy).summary
        wall = time.monotonic() - t0
        killer.join(timeout=60)
        clean = run(resolve("configs/nb201-cifar10.yaml", overrides(data_dir, out_dir / "clean", archs))).summary
        read = lambda name: pq.read_table(out_dir / name / "scores").sort_by("arch_id")  # noqa: E731
        # commit times: the score files' modification times (each is written, then renamed into place)
        stamps = sorted(f.stat().st_mtime for f in (out_dir / "lossy" / "scores").glob("part-*.parquet"))
        after = [t for t in stamps if killer.death_wall is not None and t > killer.death_wall]
        gaps = [b - a for a, b in zip([killer.death_wall, *after], after)] if after else []
        return {
            "nodes": 2, "archs": archs, "cluster_up_s": round(up, 1), "wall_s": round(wall, 1),
            "killer_error": killer.error,
            "rejoin_error": killer.rejoin_error,
            "death_to_next_commit_s": round(after[0] - killer.death_wall, 2) if after else None,
            "longest_gap_after_death_s": round(max(gaps), 2) if gaps else None,
            "rejoin_after_death_s": round(killer.rejoined - killer.death, 2) if killer.rejoined else None,
            "rejoined_by": killer.rejoined_by,
            "commits_before_death": len(stamps) - len(after),
            "events": summary["dispatch_events"], "archs_summary": summary["archs"],
            "lossy": {k: read("lossy").column(k).to_pylist() for k in ("arch_id", "gradsign", "error")},
            "clean": {k: read("clean").column(k).to_pylist() for k in ("arch_id", "gradsign", "error")},
            "clean_archs_summary": clean["archs"],
        }
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(TEMP, ignore_errors=True)


if __name__ == "__main__":
    figures = main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 20)
    print(json.dumps(figures))
