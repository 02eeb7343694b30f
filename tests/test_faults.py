"""Exactly once under failure, with real processes killed under real Ray, and bad input answered clearly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gradsign import spaces
from conftest import REPO, small_config, small_overrides
from support.processes import cmdline, descendants
from gradsign.pipeline.driver.run import run

pytestmark = pytest.mark.ray
SPACE = spaces.get("nb201")


def first_ops(cfg) -> list[str]:
    return [SPACE.arch(i).split("|")[1].split("~")[0]
            for i in SPACE.sample_ids(cfg["sample"]["size"], cfg["sample"]["seed"])]


def table(run_dir: Path):
    return pq.read_table(run_dir / "scores").sort_by("arch_id")


def column(run_dir: Path, name: str) -> list:
    return table(run_dir).column(name).to_pylist()


def cli(*args: str, timeout: float = 300, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gradsign", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def wait_for_scores(run_dir: Path, count: int, proc: subprocess.Popen, limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while len(list((run_dir / "scores").glob("part-*.parquet"))) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "run made no progress"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def clean(tmp_path_factory, data_dir, ray_cluster):
    """Reference scores of a clean run of the 30-cell config the kill tests use."""
    result = run(small_config(tmp_path_factory.mktemp("clean"), data_dir, "sample.size=30", "shard_size=2"))
    assert result.complete
    return column(result.run_dir, "arch_id"), column(result.run_dir, "gradsign")


def test_sigkill_of_a_scorer_actor(tmp_path, data_dir, clean):
    proc = cli("score", "configs/nb201-cifar10.yaml", *sum((["--set", s] for s in small_overrides(
        tmp_path, data_dir, "sample.size=30", "shard_size=2")), []))
    wait_for_scores(tmp_path / "run", 1, proc)
    actors = [p for p in descendants(proc.pid) if cmdline(p).startswith("ray::Scorer")]
    assert actors, "no scorer actor process found"
    os.kill(actors[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    ids = column(tmp_path / "run", "arch_id")
    assert ids == sorted(set(ids)) and len(ids) == 30  # every requested cell exactly once
    assert (ids, column(tmp_path / "run", "gradsign")) == clean


def test_sigkill_of_the_driver_then_rerun(tmp_path, data_dir, clean):
    args = ["score", "configs/nb201-cifar10.yaml", *sum((["--set", s] for s in small_overrides(
        tmp_path, data_dir, "sample.size=30", "shard_size=2")), [])]
    proc = cli(*args, start_new_session=True)
    wait_for_scores(tmp_path / "run", 3, proc)
    victims = [proc.pid, *descendants(proc.pid)]  # the driver and the local cluster it started
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()
    committed = len(list((tmp_path / "run" / "scores").glob("part-*.parquet")))
    assert 3 <= committed < 15 and not (tmp_path / "run" / "summary.json").exists()

    again = cli(*args)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["shards_resumed"] == committed
    assert summary["archs_this_run"] == 30 - 2 * committed
    assert (column(tmp_path / "run", "arch_id"), column(tmp_path / "run", "gradsign")) == clean


def test_failing_cells_are_recorded_and_counted(tmp_path, data_dir, ray_cluster):
    cfg = small_config(tmp_path, data_dir, "plugins=[faulty_proxies]", "proxies=[fails_on_pool_or_1x1]",
                       "sample.size=20")
    ops = first_ops(cfg)
    bad = ops.count("avg_pool_3x3") + ops.count("nor_conv_1x1")
    assert 0 < bad < 20
    result = run(cfg)
    t = table(result.run_dir)
    errors = [e for e in t.column("error").to_pylist() if e]
    assert t.num_rows == 20 and len(errors) == bad
    assert sum("simulated broken op" in e for e in errors) == ops.count("avg_pool_3x3")
    assert sum("OutOfMemoryError" in e for e in errors) == ops.count("nor_conv_1x1")
    assert result.summary["archs"] == {"requested": 20, "scored": 20 - bad, "failed": bad, "missing": 0}
    assert result.summary["proxies"]["fails_on_pool_or_1x1"]["n"] == 20 - bad
    assert not result.complete


def test_a_cell_that_kills_its_actor_is_isolated_not_retried_forever(tmp_path, data_dir, ray_cluster):
    cfg = small_config(tmp_path, data_dir, "plugins=[faulty_proxies]", "proxies=[kills_on_skip]",
                       "sample.size=8", "ray.max_shard_attempts=2", "ray.num_actors=1")
    ops = first_ops(cfg)
    assert 0 < ops.count("skip_connect") < 8
    result = run(cfg)
    t = table(result.run_dir)
    archs, errors = t.column("arch").to_pylist(), t.column("error").to_pylist()
    assert t.num_rows == 8
    for arch, error in zip(archs, errors):
        if arch.startswith("|skip_connect~0|"):
            assert error and "killed its actor" in error
        else:
            assert error is None
    assert result.summary["archs"]["failed"] == ops.count("skip_connect")


def test_nonfinite_rows_are_flagged_excluded_and_counted(tmp_path, data_dir, ray_cluster):
    cfg = small_config(tmp_path, data_dir, "plugins=[faulty_proxies]", "proxies=[nonfinite_on_zero]",
                       "sample.size=20")
    zeros = first_ops(cfg).count("none")
    assert 0 < zeros < 20
    result = run(cfg)
    flags = column(result.run_dir, "nonfinite")
    assert sum(f == "nonfinite_on_zero:7" for f in flags) == zeros
    entry = result.summary["proxies"]["nonfinite_on_zero"]
    assert entry["nonfinite_rows"] == zeros and entry["n"] == 20 - zeros
    assert result.summary["archs"]["failed"] == 0


def test_truncated_shard_is_rewritten(tmp_path, data_dir, ray_cluster):
    cfg = small_config(tmp_path, data_dir, "proxies=[nonfinite_on_zero]", "plugins=[faulty_proxies]")
    first = run(cfg)
    shard = first.run_dir / "shards" / "part-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:50])
    (first.run_dir / "scores" / "part-00001.parquet").unlink()
    (first.run_dir / "scores" / ".part-00001.parquet.x.tmp").write_bytes(b"half")  # a killed writer's
    again = run(small_config(tmp_path, data_dir, "proxies=[nonfinite_on_zero]", "plugins=[faulty_proxies]"))
    assert pq.read_table(shard).num_rows == 4
    assert again.summary["archs_this_run"] == 4 and again.complete
    assert not list((first.run_dir / "scores").glob(".*.tmp"))


def _bad_run(tmp_path, *sets):
    proc = cli("score", "configs/nb201-cifar10-smoke.yaml", "--set", f"output={tmp_path / 'bad'}",
               *sum((["--set", s] for s in sets), []))
    out, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_bad_input_gets_one_message_and_leaves_nothing(tmp_path, data_dir):
    archs = tmp_path / "archs.txt"
    archs.write_text(SPACE.arch(5) + "\n|nor_conv_3x3~0|+|bogus~0|none~1|+|none~0|none~1|none~2|\n")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes((data_dir / "cifar10_train_1000.npz").read_bytes()[:4096])
    cases = [
        (["sample.size=null", f"sample.archs={archs}"], f"{archs}:2: malformed NB201 arch"),
        ([f"data.path={corrupt}"], "corrupt data file"),
        ([f"data.path={data_dir}/imagenet16_120_sample.npz"], "are 16x16 but cifar10 needs 32x32"),
        (["dataset=imagenet16-120"], "are 32x32 but imagenet16-120 needs 16x16"),
        (["ground_truth.column=cifar11_test"], "no column 'cifar11_test'"),
        (["plugins=[no_such_module]"], "cannot import proxy plugin 'no_such_module'"),
        (["proxy_options={gradsign: {engin: loop}}"], "proxy_options.gradsign: "),
        (["proxy_options={gradsign: {engine: magic}}"], "unknown GradSign engine 'magic'"),
    ]
    for sets, words in cases:
        code, err = _bad_run(tmp_path, *sets)
        assert code == 2, (sets, err)
        assert words in err and "Traceback" not in err, (words, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad").exists(), sets


def test_ground_truth_with_missing_cells_reports_them(tmp_path, data_dir, ray_cluster):
    lines = (data_dir / "nb201_accuracy.csv").read_text().splitlines()
    cfg = small_config(tmp_path, data_dir, "proxies=[nonfinite_on_zero]", "plugins=[faulty_proxies]")
    sample = {SPACE.arch(i) for i in SPACE.sample_ids(12, 5)}
    kept = [lines[0]] + [line for line in lines[1:] if line.split(",")[1] not in sample][:100]
    kept += [line for line in lines[1:] if line.split(",")[1] in sample][:9]  # 3 of the 12 left out
    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(kept) + "\n")
    cfg["ground_truth"]["path"] = str(partial)
    result = run(cfg)
    assert result.summary["ground_truth"]["missing"] == 3 and result.summary["ground_truth"]["matched"] == 9
    assert result.complete


def test_connects_to_an_existing_cluster(tmp_path, data_dir):
    port = 6391
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--object-store-memory=100000000",
                             "--node-ip-address=127.0.0.1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        proc = cli("score", "configs/nb201-cifar10.yaml",
                   *sum((["--set", s] for s in small_overrides(tmp_path, data_dir,
                                                                f"ray.address=127.0.0.1:{port}")), []), env=env)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert json.loads((tmp_path / "run" / "summary.json").read_text())["archs"]["scored"] == 12
    finally:
        started = descendants(head.pid)  # `ray stop` would also stop the test session's own cluster
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        for pid in started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
