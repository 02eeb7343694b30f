"""One driver per run folder: a live holder refuses a second driver at once; a dead one blocks nothing."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from conftest import REPO, small_overrides
from gradsign.pipeline.common.lock import LOCK_NAME, RunFolderBusy, hold_run_folder, read_holder


def test_a_held_folder_is_refused_in_process_and_freed_on_release(tmp_path):
    first = hold_run_folder(tmp_path / "run", heartbeat_s=0.1)
    with pytest.raises(RunFolderBusy) as busy:
        hold_run_folder(tmp_path / "run")
    since = first.record["since"]
    assert f"host {socket.gethostname()}, pid {os.getpid()}, since {since}" in str(busy.value)
    time.sleep(0.35)  # the heartbeat rewrites the record in place; the record stays one JSON line
    on_disk = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
    assert on_disk["since"] == since and on_disk["pid"] == os.getpid()
    first.release()
    first.release()  # idempotent
    second = hold_run_folder(tmp_path / "run")
    del second  # a lost RunLock (a run() that raised) frees the folder when it is collected
    gc.collect()
    hold_run_folder(tmp_path / "run").release()


def test_a_deleted_lock_file_is_noticed(tmp_path):
    """Deleting driver.lock is the documented way out of a lock that outlived a lost node (NFS)."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).write_text("not a record\n")
    assert read_holder(tmp_path / "run") is None  # a torn or foreign file is not a holder record
    lock = hold_run_folder(tmp_path / "run", heartbeat_s=0)
    assert read_holder(tmp_path / "run")["pid"] == os.getpid()
    lock.release()


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gradsign", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.ray
def test_live_driver_refuses_a_second_one_and_a_killed_one_blocks_nothing(tmp_path, data_dir, ray_cluster):
    gcs = ray_cluster.get_runtime_context().gcs_address  # drivers connect to the session's cluster
    run_dir = tmp_path / "run"
    sets = small_overrides(tmp_path, data_dir, "sample.size=40", "sample.seed=3", f"ray.address={gcs}")
    args = ["score", "configs/nb201-cifar10.yaml", *sum((["--set", s] for s in sets), [])]

    holder = _cli(*args, "--set", "ray.num_actors=1")
    try:
        deadline = time.monotonic() + 120
        while (read_holder(run_dir) or {}).get("pid") != holder.pid or not (run_dir / "config.yaml").exists():
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline, "the first driver never took the run folder"
            time.sleep(0.1)
        record = read_holder(run_dir)
        config_written = (run_dir / "config.yaml").stat().st_mtime_ns

        t0 = time.perf_counter()
        second = _cli(*args)
        out, err = second.communicate(timeout=120)
        refused_in = time.perf_counter() - t0
        assert second.returncode == 2, err
        assert holder.poll() is None, "the second driver waited for the first instead of being refused"
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert (f"is held by another driver: host {socket.gethostname()}, pid {holder.pid}, "
                f"since {record['since']}") in err
        assert (run_dir / "config.yaml").stat().st_mtime_ns == config_written  # the refused driver wrote nothing

        while not list((run_dir / "scores").glob("part-*.parquet")):
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline + 120, "the first driver made no progress"
            time.sleep(0.1)
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # dies holding the folder: its record stays, its lock does not
        holder.communicate()
    assert read_holder(run_dir)["pid"] == holder.pid
    committed = len(list((run_dir / "scores").glob("part-*.parquet")))

    rerun = _cli(*args)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["archs"]["scored"] == 40 and summary["shards_resumed"] == committed >= 1
    ids = pq.read_table(run_dir / "scores").column("arch_id").to_pylist()
    assert len(ids) == len(set(ids)) == 40  # every arch once
    assert read_holder(run_dir)["pid"] == rerun.pid
    print(f"\n[lock] second driver refused in {refused_in:.1f} s (process start to exit)")


def test_report_beside_a_running_driver_is_refused_and_writes_nothing(tmp_path):
    """``gradsign report`` takes the folder's lock as a driver does: while a driver holds the folder, a report
    is refused at once (one line, exit 2) and writes nothing, so it cannot leave a partial summary beside
    the driver's final write."""
    import subprocess
    import sys

    from gradsign.pipeline.common.lock import hold_run_folder

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("name: held\n")
    lock = hold_run_folder(run_dir)  # this process plays the running driver
    try:
        out = subprocess.run([sys.executable, "-m", "gradsign", "report", str(run_dir)], capture_output=True,
                             text=True, timeout=120)
    finally:
        lock.release()
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "is held by another driver" in out.stderr, out.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "driver.lock"]
