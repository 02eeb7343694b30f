"""Nothing wrong is committed or trusted.

Verified score files (a file copied over another, a flipped bit), one meaning per ground-truth and
benchmark row, a first time limit that grows with the shard, a full disk as one line, and a sample larger
than its space refused. Real Ray, real Parquet, real shared data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import faulty_proxies  # noqa: F401  (registers the test proxies in this process too)
from conftest import small_config
from gradsign import spaces
from gradsign.pipeline.driver.config import ConfigError
from gradsign.pipeline.driver.run import prepare, run

PLUGIN = ["plugins=[faulty_proxies]"]


# -- 8. a sample larger than its space is refused --------------------------------------------------------

def test_a_sample_larger_than_the_space_is_refused_naming_its_size(tmp_path, data_dir):
    size = len(spaces.get("nb201"))
    cfg = small_config(tmp_path, data_dir, f"sample.size={size + 1}")
    with pytest.raises(ConfigError, match=rf"sample.size {size + 1} is larger than space 'nb201' \({size} archs\)"):
        prepare(cfg)
    assert not (tmp_path / "run").exists()
    prepare(small_config(tmp_path, data_dir, f"sample.size={size}"))  # the whole space, said exactly: fine


# -- 6. the first time limit grows with the shard's rows -------------------------------------------------

@pytest.mark.ray
def test_a_healthy_first_shard_is_not_killed_by_a_per_shard_limit(tmp_path, data_dir, ray_cluster):
    # 6 archs of 0.5 s each in one shard: 3 s of work; initial_s 1 s was the whole shard's limit before
    cfg = small_config(tmp_path, data_dir, *PLUGIN, "proxies=[sleeps]", "proxy_options={sleeps: {seconds: 0.5}}",
                       "sample.size=6", "shard_size=6", "ray.num_actors=1", "ray.max_shard_attempts=1",
                       "ray.shard_timeout={initial_s: 1, min_s: 1, factor: 20}")
    summary = run(cfg).summary
    assert summary["archs"] == {"requested": 6, "scored": 6, "failed": 0, "missing": 0}
    assert not [e for e in summary["dispatch_events"] if "TimedOut" in e], summary["dispatch_events"]


# -- 1. committed score files are verified, never trusted blindly ----------------------------------------

def _gradsign(run_dir: Path) -> dict[int, float]:
    import pyarrow.parquet as pq

    table = pq.read_table(run_dir / "scores")
    return dict(zip(table.column("arch_id").to_pylist(), table.column("gradsign").to_pylist()))


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, data_dir, ray_cluster):
    """One small real run (12 NB201 cells, shards of 4): its config and summary, never modified."""
    base = tmp_path_factory.mktemp("clean")
    result = run(small_config(base, data_dir))
    assert result.complete
    return base, result.summary


def _copy_of(clean_run, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(clean_run[0] / "run", tmp_path / "run")
    (tmp_path / "run" / "driver.lock").unlink(missing_ok=True)
    return tmp_path / "run"


@pytest.mark.ray
def test_a_score_file_copied_over_another_is_rejected_and_scored_again(clean_run, tmp_path, data_dir):
    import subprocess
    import sys

    from gradsign.pipeline.driver.run import recompute

    d = _copy_of(clean_run, tmp_path)
    scores = d / "scores"
    (scores / "part-00001.parquet").write_bytes((scores / "part-00002.parquet").read_bytes())
    # gradsign report refuses, naming the file (exit 2, one message)
    with pytest.raises(ValueError, match=r"part-00001\.parquet"):
        recompute(d)
    done = subprocess.run([sys.executable, "-m", "gradsign", "report", str(d)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "part-00001.parquet" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    # a resume reports it, scores that shard again, and ends equal to the clean run
    summary = run(small_config(tmp_path, data_dir)).summary
    assert summary["score_files_rejected"] == 1 and summary["rejected_files"] == ["part-00001.parquet"]
    assert summary["archs_this_run"] == 4 and summary["archs"]["scored"] == 12
    assert _gradsign(d) == _gradsign(clean_run[0] / "run")
    assert summary["proxies"]["gradsign"]["spearman"] == clean_run[1]["proxies"]["gradsign"]["spearman"]
    assert (d / "rejected" / "part-00001.parquet").is_file()
    again = run(small_config(tmp_path, data_dir)).summary
    assert again["score_files_rejected"] == 0 and again["archs_this_run"] == 0
    assert recompute(d)["proxies"]["gradsign"]["spearman"] == clean_run[1]["proxies"]["gradsign"]["spearman"]


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.ray
@pytest.mark.parametrize("where", ["data page", "footer"])
def test_one_flipped_bit_in_a_committed_file_is_detected(clean_run, tmp_path, where):
    import pyarrow.parquet as pq

    from gradsign.pipeline.driver.run import recompute

    d = _copy_of(clean_run, tmp_path)
    path = d / "scores" / "part-00000.parquet"
    meta = pq.ParquetFile(path).metadata
    if where == "data page":  # the last byte of the gradsign column's values
        column = meta.row_group(0).column(meta.schema.names.index("gradsign"))
        offset = column.data_page_offset + column.total_compressed_size - 1
    else:  # the middle of the Thrift footer (file metadata)
        footer = int.from_bytes(path.read_bytes()[-8:-4], "little")
        offset = path.stat().st_size - 8 - footer // 2
    _flip(path, offset)
    with pytest.raises(ValueError, match=r"part-00000\.parquet"):
        recompute(d)


@pytest.mark.ray
def test_a_folder_written_before_digests_resumes_and_checks_its_archs(clean_run, tmp_path, data_dir):
    import shutil

    d = _copy_of(clean_run, tmp_path)
    shutil.rmtree(d / "digests")  # as a folder made before this change
    (d / "scores" / "part-00002.parquet").write_bytes((d / "scores" / "part-00000.parquet").read_bytes())
    summary = run(small_config(tmp_path, data_dir)).summary
    assert summary["score_files_adopted"] == 2 and summary["score_files_rejected"] == 1
    assert summary["archs_this_run"] == 4 and _gradsign(d) == _gradsign(clean_run[0] / "run")
    assert sorted(p.name for p in (d / "digests").iterdir()) == [f"part-0000{i}.parquet.sha256" for i in range(3)]


# -- 2. ground-truth rows with different meanings are never averaged -------------------------------------

NB201 = spaces.get("nb201")
CELL = "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_1x1~0|nor_conv_1x1~1|none~2|"


def _rows_of(path: Path, arch: str) -> dict[str, float]:
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(path).to_pylist()
    return {r["dataset"]: r["val_accuracy"] for r in table if r["arch"] == arch}


def test_rows_of_one_arch_from_different_datasets_are_refused_not_averaged(data_dir):
    from gradsign.spaces.ground_truth import GroundTruthError, load

    path = data_dir / "naslib_zc_nb201.csv"
    assert len(_rows_of(path, CELL)) == 3  # one cell measured on three datasets (86.06 / 62.02 / 32.2)
    with pytest.raises(GroundTruthError, match=r"different meanings.*dataset = 'cifar10'.*where: \{dataset: "):
        load(path, "val_accuracy", NB201)


def test_where_selects_one_dataset(data_dir):
    from gradsign.spaces.ground_truth import GroundTruthError, load

    path = data_dir / "naslib_zc_nb201.csv"
    rows = _rows_of(path, CELL)
    for dataset, value in rows.items():
        truth = load(path, "val_accuracy", NB201, {"dataset": dataset})
        assert truth.values[NB201.key(CELL)] == value and truth.averaged_keys == 0
    with pytest.raises(GroundTruthError, match=r"no row has dataset = 'cifar-10'.*cifar10, cifar100"):
        load(path, "val_accuracy", NB201, {"dataset": "cifar-10"})
    with pytest.raises(GroundTruthError, match=r"no column 'split'"):
        load(path, "val_accuracy", NB201, {"split": "test"})


def test_ground_truth_where_is_a_config_key_and_reaches_the_summary(tmp_path, data_dir):
    from gradsign.pipeline.driver.config import resolve
    from gradsign.pipeline.driver.identity import content_identity

    cfg = small_config(tmp_path, data_dir, f"ground_truth.path={data_dir}/naslib_zc_nb201.csv",
                       "ground_truth.column=val_accuracy", "ground_truth.where={dataset: cifar10}")
    assert cfg["ground_truth"]["where"] == {"dataset": "cifar10"}
    assert "ground_truth" not in content_identity(cfg, "f" * 16, None)  # truth never decides the scores
    with pytest.raises(ConfigError, match="ground_truth.where"):
        resolve("configs/nb201-cifar10.yaml", [f"data.path={data_dir}/cifar10_train_1000.npz",
                                                "ground_truth.where=cifar10"])


def test_repeats_of_one_measurement_are_still_averaged(tmp_path):
    from gradsign.spaces.ground_truth import load

    path = tmp_path / "seeds.csv"
    path.write_text(f"arch,seed,dataset,acc\n{CELL},777,cifar10,90.0\n{CELL},888,cifar10,92.0\n")
    truth = load(path, "acc", NB201)
    assert truth.values[NB201.key(CELL)] == 91.0 and truth.averaged_keys == 1


@pytest.mark.parametrize("column", ["index", "arch", "hash"])
def test_structural_columns_are_refused_as_the_metric(tmp_path, column):
    from gradsign.spaces.ground_truth import GroundTruthError, load

    path = tmp_path / "t.csv"
    path.write_text(f"index,arch,hash,acc\n5,{CELL},7,90.0\n")
    with pytest.raises(GroundTruthError, match=rf"column '{column}' .*identifies rows, it is not a metric"):
        load(path, column, NB201)


# -- 3. search benchmark tables: repeats averaged, rows of other meanings refused, never last-row-wins ----

def _benchmark_with_duplicate(data_dir: Path, tmp_path: Path, dataset: str, value: float) -> tuple[Path, str, float]:
    """The hp12 table with a ``dataset`` column (``cifar10``) and one more row for its first arch."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(data_dir / "nb201_cifar10_hp12.csv")
    table = table.append_column("dataset", pa.array(["cifar10"] * table.num_rows))
    extra = table.slice(0, 1).to_pylist()[0]
    original = extra["cifar10_valid_12ep"]
    extra.update(cifar10_valid_12ep=value, dataset=dataset)
    table = pa.concat_tables([table, pa.Table.from_pylist([extra], schema=table.schema)])
    path = tmp_path / "bench.csv"
    pacsv.write_csv(table, path)
    return path, extra["arch"], original


def _search_cfg(data_dir: Path, tmp_path: Path, bench: Path, *extra: str) -> dict:
    from gradsign.pipeline.search_runner import config as search_config

    return search_config.resolve("configs/search-nb201-smoke.yaml", [
        f"benchmark.search.path={bench}", f"benchmark.final.path={data_dir}/nb201_accuracy.csv",
        "progress=false", f"output={tmp_path / 'out'}", *extra])


def test_a_repeated_benchmark_row_is_averaged_not_overwritten(data_dir, tmp_path):
    from gradsign.pipeline.search_runner.runner import load_benchmark

    bench, arch, original = _benchmark_with_duplicate(data_dir, tmp_path, "cifar10", 10.0)
    valid = load_benchmark(_search_cfg(data_dir, tmp_path, bench), NB201).valid
    assert valid[NB201.arch_id(arch)] == pytest.approx((original + 10.0) / 2)


def test_benchmark_rows_of_another_dataset_are_refused_unless_selected(data_dir, tmp_path):
    from gradsign.pipeline.search_runner.runner import ScoreTableError, load_benchmark

    bench, arch, original = _benchmark_with_duplicate(data_dir, tmp_path, "cifar100", 10.0)
    with pytest.raises(ScoreTableError, match=r"different meanings.*dataset.*benchmark\.search\.where"):
        load_benchmark(_search_cfg(data_dir, tmp_path, bench), NB201)
    cfg = _search_cfg(data_dir, tmp_path, bench, "benchmark.search.where={dataset: cifar10}")
    assert load_benchmark(cfg, NB201).valid[NB201.arch_id(arch)] == original


# -- 7. a full disk: one line naming the folder and the cause, its own exit status, resumable --------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB tmpfs (root only: skipped elsewhere)."""
    import os
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.ray
def test_a_full_disk_ends_the_run_with_one_line_and_exit_4_and_resumes(small_disk, tmp_path, data_dir, capsys):
    import pyarrow.parquet as pq

    from conftest import small_overrides
    from gradsign.pipeline import cli

    filler = small_disk / "filler.bin"
    sets = small_overrides(tmp_path, data_dir, *PLUGIN, "proxies=[fills_disk]",
                           f"proxy_options={{fills_disk: {{path: {filler}, at_call: 9}}}}",
                           "ray.num_actors=1", "ray.in_flight_per_actor=1", f"output={small_disk / 'run'}")
    argv = ["score", "configs/nb201-cifar10.yaml"] + [a for s in sets for a in ("--set", s)]
    capsys.readouterr()
    assert cli.main(argv) == cli.EXIT_DISK  # the actor filled the disk while scoring the third shard
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert str(small_disk / "run") in err[0] and "No space left on device (ENOSPC)" in err[0]
    run_dir = small_disk / "run"
    committed = sorted(p.name for p in (run_dir / "scores").glob("part-*.parquet"))
    assert committed == ["part-00000.parquet", "part-00001.parquet"]
    assert not list(run_dir.rglob(".*.tmp"))  # no half-written file left behind
    filler.unlink()  # space again: the same command resumes
    assert cli.main(argv) == cli.EXIT_OK  # 4 archs to score: the proxy's ninth call never comes
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["shards_resumed"] == 2 and summary["archs_this_run"] == 4 and summary["score_files_rejected"] == 0
    assert pq.read_table(run_dir / "scores").num_rows == 12
    # a read-only filesystem: `gradsign report` (which rewrites summary and report) says so in one line too
    import subprocess

    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    capsys.readouterr()
    assert cli.main(["report", str(run_dir)]) == cli.EXIT_DISK
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Read-only file system (EROFS)" in err[0] and str(run_dir) in err[0], err
