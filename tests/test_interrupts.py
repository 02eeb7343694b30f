"""Ctrl-C and SIGTERM to real `gradsign score` / `gradsign search` processes: one line on stderr, exit status
130 / 143, no traceback, no Ray process left behind, and a run folder the same command resumes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import REPO, small_overrides
from support.processes import cmdline, descendants

pytestmark = pytest.mark.ray


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_stray_driver():
    """A failed test leaves no driver (nor the local cluster in its process group) running."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    # a session of its own, as a terminal's foreground job: Ctrl-C reaches the whole process group
    proc = subprocess.Popen([sys.executable, "-m", "gradsign", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=None if env is None else {**os.environ, **env})
    STARTED.append(proc)
    return proc


def committed(run_dir: Path) -> int:
    return len(list((run_dir / "scores").glob("part-*.parquet")))


def wait_until(condition, proc: subprocess.Popen, what: str, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert proc.poll() is None, (what, proc.communicate())
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def group_gone(pgid: int, limit: float = 30) -> bool:
    """Whether every process of the group (the driver and the Ray cluster it started) has ended."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def resources_freed(ray, limit: float = 60) -> bool:
    """Whether every CPU of the session's cluster is free again (the driver's actors or tasks are gone)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) == ray.cluster_resources().get("CPU"):
            return True
        time.sleep(0.2)
    return False


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def running_task(pid: int) -> bool:
    """Whether a Ray worker below ``pid`` (its own cluster's) is executing a search task (its process title)."""
    return any(cmdline(child).startswith("ray::run_task") for child in descendants(pid))


def test_sigint_then_sigterm_then_the_same_command_finishes_every_arch_once(tmp_path, data_dir, ray_cluster):
    run_dir = tmp_path / "run"
    args = ["score", "configs/nb201-cifar10.yaml", *sum((["--set", s] for s in small_overrides(
        tmp_path, data_dir, "sample.size=20", "shard_size=2")), [])]  # 10 shards
    # the first driver starts its own local cluster; the others join the session's (faster to start)
    joined = [*args, "--set", f"ray.address={ray_cluster.get_runtime_context().gcs_address}"]

    # Ctrl-C as a terminal delivers it: SIGINT to the whole foreground process group
    first = cli(*args)
    wait_until(lambda: committed(run_dir) >= 1, first, "the first commit")
    os.killpg(first.pid, signal.SIGINT)
    _, err = first.communicate(timeout=180)
    after_first = committed(run_dir)
    assert first.returncode == 130, err
    assert one_line(err) == (f"gradsign: interrupted (SIGINT): {after_first} of 10 shards committed in {run_dir}; "
                             "rerun the same command to resume")
    assert 1 <= after_first < 10 and not (run_dir / "summary.json").exists()
    assert group_gone(first.pid), "a Ray process outlived the interrupted driver"

    # SIGTERM to the driver alone (`kill PID`, a job manager stopping it), while it resumes on a cluster
    second = cli(*joined)
    wait_until(lambda: committed(run_dir) > after_first, second, "a commit of the resumed run")
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=180)
    after_second = committed(run_dir)
    assert second.returncode == 143, err
    assert one_line(err) == (f"gradsign: interrupted (SIGTERM): {after_second} of 10 shards committed in {run_dir}; "
                             "rerun the same command to resume")
    assert after_first < after_second < 10 and not (run_dir / "summary.json").exists()
    assert resources_freed(ray_cluster), "the terminated driver's actors still hold the cluster's CPUs"

    third = cli(*joined)
    _, err = third.communicate(timeout=300)
    assert third.returncode == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["archs"] == {"requested": 20, "scored": 20, "failed": 0, "missing": 0}
    assert summary["shards_resumed"] == after_second and summary["archs_this_run"] == 20 - 2 * after_second
    assert summary["proxies"]["gradsign"]["n"] == 20
    ids = pq.read_table(run_dir / "scores").column("arch_id").to_pylist()
    assert len(ids) == len(set(ids)) == 20  # every arch scored exactly once
    assert not list(run_dir.rglob(".*.tmp"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_search_stops_with_one_line_and_no_results(tmp_path, data_dir, signum, ray_cluster):
    out = tmp_path / "search"
    sets = [f"scores={data_dir}/nb201_naswot_cifar10.csv", f"benchmark.search.path={data_dir}/nb201_cifar10_hp12.csv",
            f"benchmark.final.path={data_dir}/nb201_accuracy.csv", "progress=false", f"output={out}",
            "runs=400", "budget_seconds=200000", "ray.runs_per_task=2"]  # 800 tasks: minutes; stopped in seconds
    if signum == signal.SIGTERM:  # SIGINT: its own cluster, Ctrl-C to the group; SIGTERM: the session's cluster
        sets.append(f"ray.address={ray_cluster.get_runtime_context().gcs_address}")
    proc = cli("search", "configs/search-nb201-smoke.yaml", *sum((["--set", s] for s in sets), []))
    if signum == signal.SIGINT:
        wait_until(lambda: running_task(proc.pid), proc, "a search task to run")
    else:
        wait_until(lambda: ray_cluster.available_resources().get("CPU", 0) < 2, proc, "a search task to run")
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    line = one_line(err)
    name = signal.Signals(signum).name
    match = re.fullmatch(rf"gradsign: interrupted \({name}\): (\d+) of (\d+) tasks finished in {re.escape(str(out))}; "
                         r"no results written \(the folder is as it was\); "
                         r"rerun the same command to run the search again", line)
    assert match and int(match.group(1)) < int(match.group(2)) == 4 * 200, line  # 4 variants x 400 runs / 2
    for name in ("runs.parquet", "trajectories.parquet", "summary.json", "report.md"):  # not a finished search
        assert not (out / name).exists(), name
    if signum == signal.SIGINT:
        assert group_gone(proc.pid), "a Ray process outlived the interrupted search"
    else:
        assert resources_freed(ray_cluster), "the interrupted search's tasks still hold the cluster's CPUs"


def test_a_signal_in_the_output_phase_lets_summary_and_topk_land_together(tmp_path, data_dir, ray_cluster):
    """After scoring, the driver has shut Ray down (which puts the default SIGTERM action back) and writes
    its outputs; the plugin ``slow_outputs`` holds it there. SIGTERM (``ray job stop``) then, and SIGINT to a
    ``report`` in the same phase: every output of the pass lands, then one line and 143 / 130."""
    run_dir, marker = tmp_path / "run", tmp_path / "outputs-started"
    sets = small_overrides(tmp_path, data_dir, "sample.size=8", "shard_size=4", "proxies=[params]",
                           "plugins=[slow_outputs]", f"ray.address={ray_cluster.get_runtime_context().gcs_address}")
    slow = {"GRADSIGN_TEST_OUTPUTS_MARKER": str(marker)}
    score = ["score", "configs/nb201-cifar10.yaml", *sum((["--set", s] for s in sets), [])]

    driver = cli(*score, env=slow)
    wait_until(marker.exists, driver, "the output phase of the run")
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 143, (driver.returncode, err)  # -15 (killed by the signal) without the fix
    assert one_line(err) == (f"gradsign: interrupted (SIGTERM): 2 of 2 shards committed in {run_dir}; its summary, "
                             "top-k and report were written whole before stopping")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["archs"] == {"requested": 8, "scored": 8, "failed": 0, "missing": 0}
    assert summary["proxies"]["waits_for_a_signal"]["n"] == 8
    topk = (run_dir / "topk.jsonl").read_text()
    assert len(topk.splitlines()) == 5 and (run_dir / "report.md").is_file()

    for name in ("summary.json", "topk.jsonl", "topk.parquet", "report.md"):
        (run_dir / name).unlink()
    marker.unlink()
    report = cli("report", str(run_dir), env=slow)
    wait_until(marker.exists, report, "the output phase of the report")
    os.killpg(report.pid, signal.SIGINT)
    _, err = report.communicate(timeout=120)
    assert report.returncode == 130, (report.returncode, err)  # a traceback without the fix
    assert one_line(err) == (f"gradsign: interrupted (SIGINT): finished writing the summary, top-k and report of "
                             f"{run_dir} before stopping (each file whole)")
    again = json.loads((run_dir / "summary.json").read_text())
    assert again["archs"] == summary["archs"] and again["proxies"] == summary["proxies"]
    assert (run_dir / "topk.jsonl").read_text() == topk
    assert (run_dir / "topk.parquet").is_file() and (run_dir / "report.md").is_file()
    assert not list(run_dir.rglob(".*.tmp"))
