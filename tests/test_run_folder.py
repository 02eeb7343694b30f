"""The run folder (``pipeline/common/run_folder.py``): every reader trusts only verified score files, digests
name their run, every loader of a run's ground truth uses ``where``, and numeric labels are never averaged.

Real runs (12 NB201 cells, shards of 4, against the NASLib table's CIFAR-10 rows), real Parquet files, the
real CLI entry point in this process (``gradsign.pipeline.cli.main``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import small_config
from gradsign import spaces
from gradsign.pipeline import cli
from gradsign.pipeline.common import run_folder
from gradsign.pipeline.common.run_folder import ScoreFileError
from gradsign.pipeline.driver.run import run

NB201 = spaces.get("nb201")
WHERE = ["ground_truth.column=val_accuracy", "ground_truth.where={dataset: cifar10}"]


def _where_run(base: Path, data_dir: Path, *extra: str) -> dict:
    return small_config(base, data_dir, f"ground_truth.path={data_dir}/naslib_zc_nb201.csv", *WHERE, *extra)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir, ray_cluster):
    """Run A: 12 cells, ground truth selected with ``where``. Run B: other content (run seed 1, an arch
    list of A's first shard): its part-00000 scores the same archs as A's, with other numbers."""
    a = tmp_path_factory.mktemp("a")
    assert run(_where_run(a, data_dir)).complete
    archs = pq.read_table(a / "run" / "shards" / "part-00000.parquet").column("arch").to_pylist()
    b = tmp_path_factory.mktemp("b")
    (b / "archs.txt").write_text("\n".join(archs) + "\n")
    assert run(_where_run(b, data_dir, "seed=1", "sample.size=null", f"sample.archs={b / 'archs.txt'}")).complete
    return a / "run", b / "run"


def _copy(src: Path, tmp_path: Path) -> Path:
    shutil.copytree(src, tmp_path / "run")
    (tmp_path / "run" / "driver.lock").unlink(missing_ok=True)
    return tmp_path / "run"


def _cli(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return code, err


def _refused(capsys, argv, name: str, why: str = "failed verification") -> str:
    code, err = _cli(capsys, *argv)
    assert code == 2, (argv, err)
    assert len(err.splitlines()) == 1 and name in err and why in err and "Traceback" not in err, (argv, err)
    return err


def _every_reader_refuses(capsys, d: Path, tmp_path: Path, data_dir: Path, name: str, why: str) -> list[str]:
    """report, candidates (run folder and as a score table), report --topk-distance, search, results table,
    read_run: each refuses ``d`` with one line naming ``name``; nothing is written."""
    from gradsign import read_run
    from gradsign.pipeline.outputs import results_table

    lines = [_refused(capsys, ["report", d], name, why),
             _refused(capsys, ["candidates", d, "-o", tmp_path / "c.jsonl", "--count", 40], name, why),
             _refused(capsys, ["candidates", d, "--space", "nb201", "--by", "gradsign", "-o", tmp_path / "t.jsonl",
                               "--scores-out", tmp_path / "s.parquet"], name, why),
             _refused(capsys, ["report", d, "--topk-distance", 2], name, why),
             _refused(capsys, ["search", "configs/search-nb201-smoke.yaml", "--set", f"scores={d}", "--set",
                               "proxy=gradsign", "--set", f"benchmark.search.path={data_dir}/nb201_cifar10_hp12.csv",
                               "--set", f"benchmark.final.path={data_dir}/nb201_accuracy.csv",
                               "--set", "ray.num_workers=0", "--set", f"output={tmp_path / 'search'}"], name, why)]
    assert results_table.main([str(d), str(tmp_path / "r.parquet")]) == 2
    err = capsys.readouterr().err
    assert name in err and why in err
    with pytest.raises(ScoreFileError, match=rf"{name}.*{why}"):
        read_run(d)
    assert not any((tmp_path / f).exists() for f in ("c.jsonl", "t.jsonl", "s.parquet", "r.parquet", "search"))
    assert not (d / "topk-d2.jsonl").exists()
    return lines


# -- 4. where reaches every loader of the run's ground truth ---------------------------------------------

@pytest.mark.ray
def test_a_run_with_where_gives_its_candidates_and_diverse_topk(runs, tmp_path, capsys):
    a = _copy(runs[0], tmp_path)
    code, err = _cli(capsys, "candidates", a, "-o", tmp_path / "c.jsonl", "--count", 5)
    assert code == 0, err
    listed = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert listed == [json.loads(line) for line in (a / "topk.jsonl").read_text().splitlines()]
    assert all("val_accuracy" in row for row in listed)
    code, err = _cli(capsys, "report", a, "--topk-distance", 2)
    assert code == 0, err
    assert (a / "topk-d2.jsonl").is_file()
    assert _cli(capsys, "report", a)[0] == 0


# -- 1. a score file whose bytes changed is refused by every reader ---------------------------------------

@pytest.mark.ray
def test_a_tampered_score_file_is_refused_by_every_reader(runs, tmp_path, data_dir, capsys):
    d = _copy(runs[0], tmp_path)
    path = d / "scores" / "part-00001.parquet"
    table = pq.read_table(path)
    scaled = pa.compute.multiply(table.column("gradsign"), 1000.0)
    pq.write_table(table.set_column(table.schema.get_field_index("gradsign"), "gradsign", scaled), path)
    _every_reader_refuses(capsys, d, tmp_path, data_dir, "part-00001.parquet", "do not match the sha256")


@pytest.mark.ray
@pytest.mark.parametrize("how", ["bytes cut", "rows dropped"])
def test_a_truncated_score_file_is_refused_not_dropped(runs, tmp_path, capsys, how):
    d = _copy(runs[0], tmp_path)
    path = d / "scores" / "part-00002.parquet"
    if how == "bytes cut":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        pq.write_table(pq.read_table(path).slice(0, 2), path)
    _refused(capsys, ["candidates", d, "-o", tmp_path / "c.jsonl", "--count", 40], "part-00002.parquet",
             "do not match the sha256")
    assert not (tmp_path / "c.jsonl").exists()


# -- 8. a digest names its run: a file and digest from another run are refused ---------------------------

@pytest.mark.ray
def test_a_score_file_and_digest_from_another_run_are_refused_then_rescored(runs, tmp_path, data_dir, capsys):
    a, b = runs
    d = _copy(a, tmp_path)
    for sub in ("scores", "digests"):  # the same archs, the other run's numbers, with their own valid digest
        name = "part-00000.parquet" + (".sha256" if sub == "digests" else "")
        shutil.copyfile(b / sub / name, d / sub / name)
    assert pq.read_table(d / "scores" / "part-00000.parquet").column("arch_id").to_pylist() == \
        pq.read_table(d / "shards" / "part-00000.parquet").column("arch_id").to_pylist()
    _every_reader_refuses(capsys, d, tmp_path, data_dir, "part-00000.parquet", "belongs to run")
    # `gradsign score` sets it aside and scores that shard again: the folder ends equal to run A
    summary = run(_where_run(tmp_path, data_dir)).summary
    assert summary["score_files_rejected"] == 1 and summary["archs_this_run"] == 4
    assert (d / "rejected" / "part-00000.parquet").is_file()
    again, clean = run_folder.read_scores(d), run_folder.read_scores(a)
    assert again.select(["arch_id", "gradsign"]).equals(clean.select(["arch_id", "gradsign"]))


# -- older folders: digests that name no run ------------------------------------------------------------

def _unbind(d: Path, index: int) -> None:
    path = run_folder.digest_path(d, index)
    path.write_text(path.read_text().splitlines()[0] + "\n")  # the format before digests named their run


@pytest.mark.ray
def test_a_folder_of_unbound_digests_is_read_with_a_note_and_score_binds_them(runs, tmp_path, data_dir, capsys):
    d = _copy(runs[0], tmp_path)
    for index in range(3):
        _unbind(d, index)
    code, err = _cli(capsys, "report", d)
    assert code == 0 and "3 score file(s)" in err and "carry no digest naming their run" in err, err
    summary = run(_where_run(tmp_path, data_dir)).summary
    assert summary["score_files_adopted"] == 3 and summary["archs_this_run"] == 0
    run_id = run_folder.folder_run_id(d)
    assert all(run_folder.read_digest(d, i).run == run_id for i in range(3))
    code, err = _cli(capsys, "report", d)
    assert code == 0 and "carry no digest" not in err, err


@pytest.mark.ray
def test_an_unbound_or_missing_digest_in_a_bound_folder_is_refused(runs, tmp_path, data_dir, capsys):
    d = _copy(runs[0], tmp_path)
    _unbind(d, 1)
    _refused(capsys, ["candidates", d, "-o", tmp_path / "c.jsonl"], "part-00001.parquet", "names no run")
    run_folder.digest_path(d, 1).unlink()
    _refused(capsys, ["report", d], "part-00001.parquet", "has no digest")


# -- 3. rows of one cell that differ in a numeric label are refused unless `where` selects one ------------

CELL = "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_1x1~0|nor_conv_1x1~1|none~2|"


@pytest.mark.parametrize("label,values", [("epochs", (12, 200)), ("dataset_id", (10, 100))])
def test_rows_differing_in_a_numeric_label_are_refused_unless_selected(tmp_path, label, values):
    from gradsign.spaces.ground_truth import GroundTruthError, load

    path = tmp_path / "t.csv"
    path.write_text(f"arch,{label},acc\n{CELL},{values[0]},60.0\n{CELL},{values[1]},90.0\n")
    with pytest.raises(GroundTruthError, match=rf"different meanings.*{label} = {values[0]}.*where: \{{{label}: "):
        load(path, "acc", NB201)
    truth = load(path, "acc", NB201, {label: values[1]})
    assert truth.values[NB201.key(CELL)] == 90.0 and truth.averaged_keys == 0


def test_rows_differing_only_in_measurements_or_seed_are_repeats_averaged(tmp_path):
    from gradsign.spaces.ground_truth import load

    path = tmp_path / "t.csv"
    path.write_text(f"arch,seed,train_loss,acc\n{CELL},777,0.25,90.0\n{CELL},888,0.5,92.0\n")
    truth = load(path, "acc", NB201)
    assert truth.values[NB201.key(CELL)] == 91.0 and truth.averaged_keys == 1


@pytest.mark.ray
def test_a_run_refuses_a_numeric_label_it_was_not_told_to_select(tmp_path, data_dir):
    """The run's loader (and with it report, candidates, results tables: ``config.ground_truth``)."""
    import pyarrow.csv as pacsv

    from gradsign.pipeline.driver import config as config_mod

    table = pacsv.read_csv(data_dir / "nb201_accuracy.csv")
    both = pa.concat_tables([table.append_column("epochs", pa.array([200] * table.num_rows)),
                             table.append_column("epochs", pa.array([12] * table.num_rows))])
    path = tmp_path / "epochs.parquet"
    pq.write_table(both, path)
    cfg = small_config(tmp_path, data_dir, f"ground_truth.path={path}")
    with pytest.raises(ValueError, match=r"epochs = 200.*where: \{epochs: 200\}"):
        config_mod.ground_truth(cfg, NB201)
    cfg = small_config(tmp_path, data_dir, f"ground_truth.path={path}", "ground_truth.where={epochs: 200}")
    truth = config_mod.ground_truth(cfg, NB201)
    assert truth.averaged_keys == 0 and truth.rows == table.num_rows


# -- messages: what a short list, a folder with missing files and an unusable ground truth say ------------

@pytest.mark.ray
def test_a_short_list_without_a_distance_says_why_it_is_short(runs, tmp_path, capsys):
    code = cli.main(["candidates", str(runs[0]), "-o", str(tmp_path / "c.jsonl"), "--count", "100"])
    out = capsys.readouterr().out
    assert code == 0 and "fewer than the 100 asked (only 12 archs have a usable value" in out, out
    assert "that far" not in out


@pytest.mark.ray
def test_report_on_a_folder_with_missing_score_files_says_how_many(runs, tmp_path, capsys):
    d = _copy(runs[0], tmp_path)
    run_folder.score_path(d, 1).unlink()
    run_folder.digest_path(d, 1).unlink()
    code, err = _cli(capsys, "report", d)
    assert code == 3 and err.splitlines()[-1] == ("gradsign: 4 of 12 archs have no committed score file yet; "
                                                  f"`gradsign score` with {d / 'config.yaml'} scores them"), err


@pytest.mark.ray
def test_report_warns_when_no_arch_has_a_ground_truth_value(runs, tmp_path, capsys):
    import yaml

    d = _copy(runs[0], tmp_path)
    table = tmp_path / "empty.csv"
    archs = pq.read_table(d / "shards").column("arch").to_pylist()
    table.write_text("arch,acc\n" + "".join(f"{a},\n" for a in archs))  # every value missing
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    cfg["ground_truth"] = {"path": str(table), "column": "acc", "where": None}  # truth never decides scores
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, err = _cli(capsys, "report", d)
    assert code == 0 and err == ("gradsign: warning: no scored arch has a finite value in ground-truth column 'acc' "
                                 f"of {table}: no correlations"), err


@pytest.mark.ray
def test_relative_paths_are_stored_absolute_and_an_older_relative_one_says_where_it_was(runs, tmp_path, data_dir,
                                                                                         capsys, monkeypatch):
    import yaml

    d = _copy(runs[0], tmp_path)
    started_in, elsewhere = tmp_path / "started-in", tmp_path / "elsewhere"
    started_in.mkdir()
    elsewhere.mkdir()
    (started_in / "data").symlink_to(data_dir)
    monkeypatch.chdir(started_in)  # a resume (nothing left to score) given relative paths
    code, err = _cli(capsys, "score", d / "config.yaml", "--set", f"output={d}", "--set",
                     "data.path=data/cifar10_train_1000.npz", "--set", "ground_truth.path=data/naslib_zc_nb201.csv")
    assert code == 0, err
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["data"]["path"] == str(started_in / "data" / "cifar10_train_1000.npz")
    assert cfg["ground_truth"]["path"] == str(started_in / "data" / "naslib_zc_nb201.csv")

    monkeypatch.chdir(elsewhere)  # (the 12 cells are not among the table's 724: a warning, no correlations)
    assert _cli(capsys, "report", d)[0] == 0
    assert _cli(capsys, "candidates", d, "-o", tmp_path / "c.jsonl", "--count", 3)[0] == 0

    cfg["ground_truth"]["path"] = "data/naslib_zc_nb201.csv"  # as folders made before paths were stored absolute
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    for argv in (["report", d], ["candidates", d, "-o", tmp_path / "c2.jsonl"]):
        code, err = _cli(capsys, *argv)
        assert code == 2 and err == (f"gradsign: error: {d / 'config.yaml'} stores ground_truth.path: "
                                     "data/naslib_zc_nb201.csv, a path relative to the directory `gradsign score` "
                                     f"ran in, and it is not found from {elsewhere}: run this command from that "
                                     f"directory, or write the absolute path into {d / 'config.yaml'}"), err
    monkeypatch.chdir(started_in)
    assert _cli(capsys, "report", d)[0] == 0
