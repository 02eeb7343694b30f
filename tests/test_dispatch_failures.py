"""Failures cost only what failed, dispatch charges only the guilty, outputs any reader accepts."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import faulty_proxies  # noqa: F401  (registers the misbehaving proxies in this process too)
from gradsign import spaces
from conftest import small_config
from gradsign.pipeline.driver.dispatch import ActorStartError
from gradsign.pipeline.outputs.reducer import Reducer
from gradsign.pipeline.outputs.report import write_outputs
from gradsign.pipeline.driver.run import run
from gradsign.pipeline.common.atomic import write_atomic
from gradsign.spaces.ground_truth import GroundTruth, load as load_truth

SPACE = spaces.get("nb201")
PLUGIN = ["plugins=[faulty_proxies]"]


def scores(run_dir: Path) -> dict:
    return pq.read_table(run_dir / "scores").sort_by("arch_id").to_pydict()


def first_ops(cfg) -> list[str]:
    return [SPACE.arch(i).split("|")[1].split("~")[0]
            for i in SPACE.sample_ids(cfg["sample"]["size"], cfg["sample"]["seed"])]


# -- 1. a failure costs only the failing proxy's value, and a rerun retries it ----------------------------

@pytest.mark.ray
def test_a_failing_proxy_costs_only_its_own_value(tmp_path, data_dir, ray_cluster):
    cfg = small_config(tmp_path, data_dir, *PLUGIN, "proxies=[params, fails_on_pool_or_1x1]")
    run(cfg)
    rows = scores(Path(cfg["output"]))
    failing = [op in ("avg_pool_3x3", "nor_conv_1x1") for op in first_ops(cfg)]
    assert any(failing) and not all(failing)
    for bad, params, other, error in zip(failing, rows["params"], rows["fails_on_pool_or_1x1"], rows["error"]):
        assert math.isfinite(params)  # the healthy proxy keeps its value on every row
        assert math.isnan(other) == bad
        assert (error is not None) == bad and (not bad or error.startswith("fails_on_pool_or_1x1: "))
    summary = json.loads((Path(cfg["output"]) / "summary.json").read_text())
    assert summary["proxies"]["params"]["valid"] == len(failing)
    assert summary["proxies"]["fails_on_pool_or_1x1"]["failed"] == sum(failing)


@pytest.mark.ray
def test_a_rerun_retries_failed_rows_unless_told_to_keep_them(tmp_path, data_dir, ray_cluster):
    marker = tmp_path / "flaky"
    marker.write_text("on")
    flaky = [*PLUGIN, "proxies=[flaky_while_marker]", f"proxy_options={{flaky_while_marker: {{marker: {marker}}}}}"]
    first = run(small_config(tmp_path, data_dir, *flaky)).summary
    assert first["archs"]["failed"] == 12
    marker.unlink()  # the transient cause is gone
    kept = run(small_config(tmp_path, data_dir, *flaky, "retry_failed=false"))
    assert kept.summary["archs"]["failed"] == 12 and kept.summary["archs_this_run"] == 0
    again = run(small_config(tmp_path, data_dir, *flaky))
    assert again.summary["failed_rows_retried"] == 12
    assert again.summary["archs"] == {"requested": 12, "scored": 12, "failed": 0, "missing": 0}
    assert all(math.isfinite(v) for v in scores(again.run_dir)["flaky_while_marker"])


def test_out_of_memory_is_retried_with_smaller_chunks_before_it_is_recorded(cifar10_batch):
    from gradsign.actors.scorer import Scorer

    images, labels = cifar10_batch
    arch = SPACE.arch(SPACE.sample_ids(1, 0)[0])
    rows = {"arch_id": [SPACE.arch_id(arch)], "arch": [arch]}
    fits = Scorer("nb201", ["oom_above_budget"], images.numpy(), labels.numpy(), 10, seed=0, device="cpu",
                  plugins=["faulty_proxies"])(rows).to_pydict()
    assert fits["error"] == [None] and fits["oom_above_budget"][0] > 0  # 2048 -> 1024 -> 512 MB: fits
    never = Scorer("nb201", ["oom_above_budget"], images.numpy(), labels.numpy(), 10, seed=0, device="cpu",
                   plugins=["faulty_proxies"], proxy_options={"oom_above_budget": {"limit_mb": 1}})(rows).to_pydict()
    assert math.isnan(never["oom_above_budget"][0]) and "OutOfMemoryError" in never["error"][0]


# -- 2. dispatch -----------------------------------------------------------------------------------------

@pytest.mark.ray
def test_only_the_shard_that_was_running_is_charged_for_a_death(tmp_path, data_dir, ray_cluster):
    # sample seed 29: first ops none, skip | 1x1, 1x1 | 1x1, pool; shard 0 kills its actor each time, and
    # shard 1 waits behind it on the same actor: it must be scored whole, never split.
    cfg = small_config(tmp_path, data_dir, *PLUGIN, "proxies=[kills_on_skip]", "sample.size=6", "sample.seed=29",
                       "shard_size=2", "ray.num_actors=1", "ray.in_flight_per_actor=2", "ray.max_shard_attempts=2")
    assert first_ops(cfg)[:2] == ["none", "skip_connect"]
    summary = run(cfg).summary
    splits = [e for e in summary["dispatch_events"] if "split" in e]
    assert splits == [splits[0]] and splits[0].startswith("shard 0 split")
    rows = scores(Path(cfg["output"]))
    assert [e is not None for e in rows["error"]] == [False, True, False, False, False, False]
    assert "killed its actor" in rows["error"][1]


@pytest.mark.ray
def test_an_exception_escaping_the_scorer_is_retried_then_recorded_not_fatal(tmp_path, data_dir, ray_cluster):
    cfg = small_config(tmp_path, data_dir, *PLUGIN, "proxies=[escapes_on_pool]", "sample.size=6",
                       "sample.seed=29", "shard_size=2", "ray.max_shard_attempts=2")
    summary = run(cfg).summary
    rows = scores(Path(cfg["output"]))
    assert summary["archs"]["failed"] == 2  # the shard holding the pool cell, after 2 attempts
    assert all("SimulatedCrash" in e for e in rows["error"][4:]) and rows["error"][:4] == [None] * 4


@pytest.mark.ray
def test_a_hanging_arch_is_stopped_by_the_time_limit_and_recorded(tmp_path, data_dir, ray_cluster):
    cfg = small_config(tmp_path, data_dir, *PLUGIN, "proxies=[hangs_on_pool]", "sample.size=6", "sample.seed=29",
                       "shard_size=2", "ray.num_actors=1", "ray.max_shard_attempts=1",
                       "ray.shard_timeout={initial_s: 8, min_s: 4, factor: 20}")
    start = time.monotonic()
    summary = run(cfg).summary
    assert time.monotonic() - start < 120
    rows = scores(Path(cfg["output"]))
    assert [e is not None for e in rows["error"]] == [False] * 5 + [True]
    assert "TimedOut" in rows["error"][5]
    assert summary["archs"]["scored"] == 5


@pytest.mark.ray
def test_no_actor_can_start_fails_fast_with_a_clear_message(tmp_path, data_dir, ray_cluster):
    cfg = small_config(tmp_path, data_dir, "ray.num_gpus_per_actor=1", "ray.actor_start_timeout_s=3")
    start = time.monotonic()
    with pytest.raises(ActorStartError, match="no scorer actor could start: not started within 3 s"):
        run(cfg)
    assert time.monotonic() - start < 60


@pytest.mark.ray
def test_the_liveness_probe_does_not_queue_behind_work(data_dir, ray_cluster, cifar10_batch):
    from gradsign.pipeline.driver.config import resolve
    from gradsign.pipeline.driver.run import _make_actor

    images, labels = cifar10_batch
    cfg = resolve("configs/nb201-cifar10.yaml", ["plugins=[faulty_proxies]", "proxies=[sleeps]",
                                                 "proxy_options={sleeps: {seconds: 3}}", "ray.num_actors=1"])
    actor = _make_actor(cfg, ray_cluster.put(images.numpy()), ray_cluster.put(labels.numpy()), 10)
    try:
        ray_cluster.get(actor.device_name.options(concurrency_group="probe").remote(), timeout=60)
        archs = [SPACE.arch(i) for i in (1, 2, 3)]
        busy = actor.__call__.remote({"arch_id": [1, 2, 3], "arch": archs})  # ~9 s of work
        time.sleep(0.5)
        ray_cluster.get(actor.device_name.options(concurrency_group="probe").remote(), timeout=5)
        done, _ = ray_cluster.wait([busy], timeout=0)
        assert not done  # the probe answered while the work was still running, not after it
        assert ray_cluster.get(busy).num_rows == 3
    finally:
        ray_cluster.kill(actor)


# -- 5-9. outputs ----------------------------------------------------------------------------------------

def score_table(ids, values, proxy="p", nonfinite=None):
    n = len(ids)
    return pa.table({"arch_id": pa.array(ids, pa.int64()), "arch": [SPACE.arch(i) for i in ids],
                     proxy: pa.array(values, pa.float64()), "nonfinite": pa.array(nonfinite or [None] * n, pa.string()),
                     "seconds": [0.1] * n, "error": pa.nulls(n, pa.string())})


def test_top_k_ties_are_broken_by_arch_id_whatever_the_commit_order():
    a, b = score_table([7, 3], [5.0, 5.0]), score_table([9, 1, 4], [5.0, 2.0, 5.0])
    tops = []
    for order in ((a, b), (b, a)):
        reducer = Reducer(["p"], SPACE, None, topk=3)
        for t in order:
            reducer.add(t)
        tops.append(reducer.top(reducer.columns()).column("arch_id").to_pylist())
    assert tops[0] == tops[1] == [3, 4, 7]


def test_run_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(score_table([1], [1.0]), tmp_path / "a.parquet")
        os.umask(0o002)
        write_atomic(score_table([1], [1.0]), tmp_path / "b.parquet")
    finally:
        os.umask(old)
    assert (tmp_path / "a.parquet").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.parquet").stat().st_mode & 0o777 == 0o664


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def _truth_for(ids, values) -> GroundTruth:
    return GroundTruth("acc", {SPACE.arch(i): v for i, v in zip(ids, values)}, {})


def test_outputs_are_strict_json_and_non_finite_rows_are_reported_both_ways(tmp_path):
    from gradsign.pipeline.driver.config import resolve

    ids = [1, 2, 3, 4, 5, 6]
    values = [1.0, 2.0, 3.0, 4.0, 5.0, -math.inf]  # naswot-like: the worst cell is -inf
    truth = [10.0, 20.0, 30.0, 40.0, 50.0, 5.0]
    reducer = Reducer(["p"], SPACE, _truth_for(ids, truth), topk=6)
    reducer.add(score_table(ids, values, nonfinite=[None, None, "p:3", None, None, None]))
    cfg = resolve("configs/nb201-cifar10.yaml", [f"output={tmp_path}"])
    summary = write_outputs(tmp_path, cfg, reducer, {"requested": 6})
    stored = _strict((tmp_path / "summary.json").read_text())
    for line in (tmp_path / "topk.jsonl").read_text().splitlines():
        _strict(line)
    entry = stored["proxies"]["p"]
    assert entry["n"] == 4 and entry["spearman"] == pytest.approx(1.0)  # flagged and -inf rows left out
    assert entry["reference"]["n"] == 6 and entry["reference"]["spearman"] == pytest.approx(1.0)
    assert summary["proxies"]["p"]["nonfinite_rows"] == 2
    # a constant ground truth: Spearman undefined -> null, not NaN
    reducer = Reducer(["p"], SPACE, _truth_for(ids, [1.0] * 6), topk=6)
    reducer.add(score_table(ids, [1.0, 2.0, 3.0, 4.0, 5.0, math.nan]))
    write_outputs(tmp_path, cfg, reducer, {"requested": 6})
    assert _strict((tmp_path / "summary.json").read_text())["proxies"]["p"]["spearman"] is None
    assert "| rho (reference counting) |" in (tmp_path / "report.md").read_text()


def test_duplicate_ground_truth_rows_are_averaged_and_counted(tmp_path):
    arch = SPACE.arch(5)
    table = tmp_path / "per_seed.csv"
    table.write_text(f"arch,acc\n{arch},90.0\n{arch},92.0\n{SPACE.arch(6)},80.0\n")
    truth = load_truth(table, "acc", SPACE)
    assert truth.values[arch] == pytest.approx(91.0) and truth.counts[arch] == 2 and truth.averaged_keys == 1


@pytest.mark.ray
def test_config_is_written_atomically_and_left_temporaries_are_removed(tmp_path, data_dir, ray_cluster):
    cfg = small_config(tmp_path, data_dir)
    run_dir = Path(cfg["output"])
    run_dir.mkdir(parents=True)
    (run_dir / ".config.yaml.x1.tmp").write_text("name: half-writ")  # a writer killed mid-write
    run(cfg)
    assert not list(run_dir.glob(".*.tmp"))
    run(small_config(tmp_path, data_dir))  # the stored config reads back: the folder resumes
    assert np.all(np.isfinite(scores(run_dir)["gradsign"]))
