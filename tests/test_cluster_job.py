"""The cluster path for real: a Ray head with its dashboard (the job server) on loopback, `ray job submit`.

What the README's "On a Ray cluster" section tells a user, done here with real processes: `ray start
--head` in a temporary folder on free ports, `ray job submit --working-dir .` of a small `gradsign score`
run until SUCCEEDED, then `ray job stop` of a longer one mid-run and the same job submitted again. The
scores must equal those of a local run of the same config. Everything the test started is ended by
process id (never `ray stop`: it would stop every cluster on the machine, this session's own included).
Needs the cluster extra (`pip install -e '.[cluster]'`: ray[default], whose dashboard holds the job server).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import REPO, small_config, small_overrides
from gradsign.pipeline.common.lock import read_holder
from gradsign.pipeline.driver.run import run

pytestmark = [pytest.mark.cluster, pytest.mark.ray]
RAY = str(Path(sys.executable).parent / "ray")
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # what `ray start` may leave for later ray.init calls
LONG = ["sample.size=48", "sample.seed=7"]  # the job that is stopped mid-run: 12 shards of 4


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (ppid is [1], session [3], start time [19])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _tree(root: int) -> dict[int, str]:
    """pid -> start time of ``root``'s live descendants and of every process in its session."""
    table = {int(p.name): _stat(int(p.name)) for p in Path("/proc").glob("[0-9]*")}
    table = {pid: st for pid, st in table.items() if st}
    children: dict[int, list[int]] = {}
    for pid, st in table.items():
        children.setdefault(int(st[1]), []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    found |= {pid for pid, st in table.items() if int(st[3]) == root}
    return {pid: table[pid][19] for pid in found if pid != root}


def _alive(pid: int, started: str | None = None) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z" and (started is None or st[19] == started)


@dataclass
class Head:
    url: str          # the dashboard / job server, http://127.0.0.1:PORT
    gcs: str          # 127.0.0.1:PORT
    env: dict
    temp_dir: Path
    proc: subprocess.Popen

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, "job", *args], cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def submit(self, job_id: str, sets: list[str], wait: bool = True) -> subprocess.CompletedProcess:
        entry = ["gradsign", "score", "configs/nb201-cifar10.yaml", *sum((["--set", s] for s in sets), [])]
        return self.cli("submit", "--address", self.url, "--submission-id", job_id, "--working-dir", ".",
                        *([] if wait else ["--no-wait"]), "--", *entry)

    def status(self, job_id: str) -> str:
        from ray.job_submission import JobSubmissionClient

        return str(JobSubmissionClient(self.url).get_job_status(job_id).value)


@pytest.fixture(scope="module")
def head():
    """A one-node Ray cluster with its dashboard, on 127.0.0.1 only, free ports, a short temporary folder."""
    try:
        import aiohttp  # noqa: F401  (one of ray[default]'s packages: without them there is no dashboard)
    except ImportError:
        pytest.fail("the cluster test needs the cluster extra: pip install -e '.[cluster]' "
                    "(or deselect it with -m 'not cluster')")
    temp_dir = Path(tempfile.mkdtemp(prefix="rg", dir="/tmp"))  # Ray's socket paths must stay short
    gcs, dash, *more = _free_ports(9)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
           # Ray on Linux replaces 127.0.0.1 by the host's outward address; this keeps every address on loopback
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    env.pop("RAY_ADDRESS", None)
    previous = CURRENT_CLUSTER.read_text() if CURRENT_CLUSTER.is_file() else None
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         f"--dashboard-agent-listen-port={more[0]}", f"--dashboard-agent-grpc-port={more[1]}",
         f"--metrics-export-port={more[2]}", f"--runtime-env-agent-port={more[3]}",
         f"--ray-client-server-port={more[4]}", f"--node-manager-port={more[5]}",
         f"--object-manager-port={more[6]}", "--min-worker-port=0", "--max-worker-port=0",
         "--num-cpus=2", f"--object-store-memory={256 * 2**20}", f"--temp-dir={temp_dir}",
         "--disable-usage-stats"],
        stdout=open(temp_dir / "head.log", "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    h = Head(f"http://127.0.0.1:{dash}", f"127.0.0.1:{gcs}", env, temp_dir, proc)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (temp_dir / "head.log").read_text()
            try:
                with urllib.request.urlopen(f"{h.url}/api/version", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the head's job server did not come up"
            time.sleep(0.5)
        yield h
    finally:
        started = _tree(proc.pid)  # the head, its raylet, workers, job supervisors and job drivers
        proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its node on SIGTERM
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        deadline = time.monotonic() + 20
        while any(_alive(p, s) for p, s in started.items()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid, start in started.items():
            if _alive(pid, start):
                os.kill(pid, signal.SIGKILL)
        if CURRENT_CLUSTER.is_file() and CURRENT_CLUSTER.read_text().strip() == h.gcs:  # ours: put back what was
            if previous is None:
                CURRENT_CLUSTER.unlink()
            else:
                CURRENT_CLUSTER.write_text(previous)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _scores(run_dir: Path) -> tuple[list[int], list[float]]:
    table = pq.read_table(run_dir / "scores").sort_by("arch_id")
    return table.column("arch_id").to_pylist(), table.column("gradsign").to_pylist()


def _complete(run_dir: Path, archs: int) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["archs"] == {"requested": archs, "scored": archs, "failed": 0, "missing": 0}
    for name in ("config.yaml", "topk.parquet", "topk.jsonl", "report.md", "plots/gradsign.png"):
        assert (run_dir / name).is_file(), name
    assert (len(list((run_dir / "shards").glob("part-*.parquet")))
            == len(list((run_dir / "scores").glob("part-*.parquet"))))
    assert not list(run_dir.glob("*/.part-*.tmp"))
    return summary


def test_submit_stop_and_resubmit(head, tmp_path, data_dir, ray_cluster):
    # 1. a small run through the job server, as a user submits it (progress on: the log lines a user sees)
    small = tmp_path / "small"
    sets = small_overrides(small, data_dir, "progress=true")
    t0 = time.perf_counter()
    done = head.submit("gs-small", sets)
    submit_to_succeeded = time.perf_counter() - t0
    assert done.returncode == 0, done.stdout + done.stderr
    assert head.status("gs-small") == "SUCCEEDED"
    log = head.cli("logs", "--address", head.url, "gs-small").stdout
    assert "12/12 archs, 0 failed" in log and "archs: 12 requested, 12 scored, 0 failed" in log, log
    summary = _complete(small / "run", 12)
    record = read_holder(small / "run")  # the job's driver held the folder (and let it go: see below)
    assert record["command"].startswith("gradsign score") and not _alive(record["pid"])
    # the uploaded working dir is the project, not its virtualenv or run folders (.gitignore)
    packages = head.temp_dir / "session_latest" / "runtime_resources" / "working_dir_files"
    uploaded = [u for u in packages.glob("_ray_pkg_*") if u.is_dir()]
    assert uploaded and all((u / "pipeline" / "common" / "lock.py").is_file() for u in uploaded)
    assert not [p for u in uploaded for p in u.iterdir() if p.name in {".venv", "venv", "runs", ".git"}]

    local = run(small_config(tmp_path / "local-small", data_dir))
    assert _scores(small / "run") == _scores(local.run_dir)

    # 2. a longer job, stopped mid-run with `ray job stop`, then submitted again
    long = tmp_path / "long"
    sets = small_overrides(long, data_dir, *LONG, "progress=true")
    started = head.submit("gs-long-1", sets, wait=False)
    assert started.returncode == 0, started.stdout + started.stderr
    scores = long / "run" / "scores"
    deadline = time.monotonic() + 180
    while len(list(scores.glob("part-*.parquet"))) < 2:
        assert head.status("gs-long-1") in ("PENDING", "RUNNING"), \
            head.cli("logs", "--address", head.url, "gs-long-1").stdout
        assert time.monotonic() < deadline, "the long job made no progress"
        time.sleep(0.2)
    driver = read_holder(long / "run")["pid"]
    stopped = head.cli("stop", "--address", head.url, "gs-long-1")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert head.status("gs-long-1") == "STOPPED"
    assert not _alive(driver), "the stopped job's driver is still running"
    committed = len(list(scores.glob("part-*.parquet")))
    assert 2 <= committed < 12 and not (long / "run" / "summary.json").exists(), committed

    again = head.submit("gs-long-2", sets)
    assert again.returncode == 0 and head.status("gs-long-2") == "SUCCEEDED", again.stdout + again.stderr
    summary_long = _complete(long / "run", 48)
    assert summary_long["shards_resumed"] == committed
    assert summary_long["archs_this_run"] == 48 - 4 * committed
    ids, values = _scores(long / "run")
    assert len(ids) == len(set(ids)) == 48  # every arch once
    local_long = run(small_config(tmp_path / "local-long", data_dir, *LONG))
    assert (ids, values) == _scores(local_long.run_dir)

    print(f"\n[cluster] job submit -> SUCCEEDED (12 cells): {submit_to_succeeded:.1f} s; "
          f"driver wall {summary['wall_seconds']:.1f} s; stopped after {committed}/12 shards\n"
          f"{done.stdout}{done.stderr}")
