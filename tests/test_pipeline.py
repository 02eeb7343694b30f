"""End to end under a real local Ray cluster, with real Parquet files and real data."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from conftest import small_config
from gradsign.pipeline.outputs import compare
from gradsign.pipeline.driver.run import RunFolderError, recompute, run

pytestmark = pytest.mark.ray


def scores(run_dir):
    table = pq.read_table(run_dir / "scores").sort_by("arch_id")
    return table.column("arch_id").to_pylist(), table.column("gradsign").to_pylist()


def test_end_to_end_writes_every_file(tmp_path, data_dir, ray_cluster):
    result = run(small_config(tmp_path, data_dir))
    d = result.run_dir
    for name in ("config.yaml", "summary.json", "topk.parquet", "topk.jsonl", "report.md", "plots/gradsign.png"):
        assert (d / name).is_file(), name
    assert sorted(p.name for p in (d / "shards").iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]
    assert sorted(p.name for p in (d / "scores").iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]
    shard = pq.read_table(d / "shards" / "part-00000.parquet")
    assert shard.schema.names == ["arch_id", "arch"] and str(shard.schema.field("arch_id").type) == "int64"
    table = pq.read_table(d / "scores")
    assert {"arch_id", "arch", "gradsign", "seconds", "error"} <= set(table.column_names)
    assert table.num_rows == 12 and table.column("error").null_count == 12
    summary = json.loads((d / "summary.json").read_text())
    assert summary["archs"] == {"requested": 12, "scored": 12, "failed": 0, "missing": 0}
    g = summary["proxies"]["gradsign"]
    assert g["n"] == 12 and -1 <= g["spearman"] <= 1 and -1 <= g["kendall"] <= 1
    assert summary["wall_seconds"] > 0 and summary["archs_per_second"] > 0
    top = pq.read_table(d / "topk.parquet")
    assert top.column("rank").to_pylist() == [1, 2, 3, 4, 5]
    values = top.column("gradsign").to_pylist()
    assert values == sorted(values, reverse=True) and values[0] == max(scores(d)[1])
    assert len((d / "topk.jsonl").read_text().splitlines()) == 5
    assert "| gradsign |" in (d / "report.md").read_text()
    assert result.complete

    # resume: drop one committed shard; the rerun scores only that shard and gets the same numbers
    before = scores(d)
    (d / "scores" / "part-00001.parquet").unlink()
    again = run(small_config(tmp_path, data_dir))
    assert again.summary["archs_this_run"] == 4 and again.summary["shards_resumed"] == 2
    assert scores(d) == before
    # a truncated score file left by a crash is detected and redone
    path = d / "scores" / "part-00002.parquet"
    path.write_bytes(path.read_bytes()[:100])
    again = run(small_config(tmp_path, data_dir))
    assert again.summary["archs_this_run"] == 4 and scores(d) == before

    # report recomputes from stored scores alone
    (d / "summary.json").unlink()
    assert recompute(d)["proxies"]["gradsign"]["spearman"] == pytest.approx(g["spearman"])
    # and the cross-run comparison table reads it
    text = compare.table(compare.load([d, d]))
    assert text.count(f"{g['spearman']:.3f}") == 2 and text.splitlines()[2].startswith("| gradsign |")


def test_one_or_two_actors_give_identical_scores(tmp_path, data_dir, ray_cluster):
    one = run(small_config(tmp_path / "a", data_dir, ray__num_actors=1, shard_size=5))
    two = run(small_config(tmp_path / "b", data_dir, ray__num_actors=2, shard_size=3))
    assert scores(one.run_dir) == scores(two.run_dir)


def test_resume_refuses_a_different_config(tmp_path, data_dir, ray_cluster):
    run(small_config(tmp_path, data_dir, sample__size=3))
    with pytest.raises(RunFolderError, match="differs in: sample"):
        run(small_config(tmp_path, data_dir, sample__size=4))


def test_cli_bad_input_is_one_message_and_exit_2(tmp_path, data_dir):
    cmd = [sys.executable, "-m", "gradsign", "score", "configs/nb201-cifar10-smoke.yaml",
           "--set", f"output={tmp_path / 'bad'}"]
    for extra, words in [(["--set", "proxies=[nope]"], "unknown proxy 'nope'"),
                         (["--set", "dataset=mnist"], "unknown dataset"),
                         (["--set", "space=nb999"], "unknown space"),
                         (["--set", "data.path=/nonexistent.npz"], "data file not found"),
                         (["--set", "sampel.size=3"], "unknown config key 'sampel'")]:
        done = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert words in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "bad" / "summary.json").exists()
