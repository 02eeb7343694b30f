"""NDS spaces and ``gradsign truth nds``: small files written in the published NDS format (both layouts),
records that must be refused, the table as arch list and ground truth."""

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gradsign import spaces
from gradsign.pipeline.cli import main as cli_main
from gradsign.pipeline.driver.shards import read_arch_list
from gradsign.pipeline.official.nds import TruthFileError, convert
from gradsign.spaces import ground_truth
from gradsign.spaces.darts_genotype import GenotypeError
from gradsign.spaces.nds import NDSSpace

from test_darts_genotype import AMOEBA, DARTS_V2, NASNET, PNAS

ENAS_CELL = [["sep_conv_3x3", 1], ["skip_connect", 1], ["sep_conv_5x5", 0], ["avg_pool_3x3", 1],
             ["max_pool_3x3", 0], ["sep_conv_3x3", 2], ["skip_connect", 3], ["sep_conv_5x5", 1],
             ["avg_pool_3x3", 4], ["sep_conv_3x3", 0]]
ENAS = {"normal": ENAS_CELL, "normal_concat": [5, 6], "reduce": ENAS_CELL, "reduce_concat": [5, 6]}


def record(genotype, width=8, depth=5, errors=(60.0, 30.0, 12.5), best=11.0, job=1, **over):
    rec = {"net": {"genotype": {k: [list(p) if isinstance(p, tuple) else p for p in v] for k, v in genotype.items()},
                   "width": width, "depth": depth, "aux": True, "drop_prob": 0.2},
           "params": 0.5 + job, "flops": 80.0 + job, "optim": {"base_lr": 0.05, "wd": 5e-4, "max_ep": 3},
           "test_ep_top1": list(errors), "min_test_top1": best, "train_ep_top1": [70.0, 40.0, 20.0],
           "rng_seed": job, "job_id": job}
    rec.update(over)
    return rec


def write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_both_layouts_give_final_and_best_accuracy(tmp_path):
    recs = [record(DARTS_V2, job=1), record(DARTS_V2, job=2, errors=(50.0, 14.0), best=13.0),
            record(DARTS_V2, width=16, job=3)]
    _, flat = convert(write(tmp_path / "DARTS.json", recs))
    _, split = convert(write(tmp_path / "DARTS_fix-w-d.json", {"top": recs[:1], "mid": recs[1:]}))
    assert flat.column("arch").to_pylist() == split.column("arch").to_pylist()
    assert split.column("part").to_pylist() == ["top", "mid", "mid"] and flat.column("part").to_pylist() == [None] * 3
    assert flat.column("index").to_pylist() == [0, 1, 2]
    assert flat.column("test_accuracy_final").to_pylist() == [87.5, 86.0, 87.5]  # 100 - last epoch's error
    assert flat.column("test_accuracy_best").to_pylist() == [89.0, 87.0, 89.0]  # 100 - min_test_top1
    assert flat.column("params").to_pylist() == [1.5, 2.5, 3.5] and flat.column("flops").to_pylist()[0] == 81.0
    assert flat.column("width").to_pylist() == [8, 8, 16] and set(flat.column("depth").to_pylist()) == {5}
    archs = flat.column("arch").to_pylist()
    assert archs[0] == archs[1] != archs[2] and archs[0].startswith("width=8;depth=5;normal=")


@pytest.mark.parametrize("stem, genotype", [("ENAS", ENAS), ("Amoeba", AMOEBA), ("NASNet", NASNET), ("PNAS", PNAS)])
def test_published_genotypes_convert_in_their_space(tmp_path, stem, genotype):
    name, table = convert(write(tmp_path / f"{stem}.json", [record(genotype)]))
    assert name == f"nds-{stem.lower()}"
    space = spaces.get(name)
    arch = table.column("arch")[0].as_py()
    assert space.canonical(arch) == arch
    assert space.parse(arch)[2].darts_text().startswith("Genotype(normal=[")


@pytest.mark.parametrize("bad, message", [
    (lambda r: r.pop("net"), r"record mid\[1\] \(job_id 9\): no 'net' object"),
    (lambda r: r["net"]["genotype"]["normal"].__setitem__(0, ["conv_9x9", 0]), r"mid\[1\].*unknown op 'conv_9x9'"),
    (lambda r: r.update(test_ep_top1=[]), r"mid\[1\].*test_ep_top1 must be a non-empty list"),
    (lambda r: r.update(min_test_top1=130.0), r"mid\[1\].*min_test_top1 130.0 is outside"),
    (lambda r: r.update(params="big"), r"mid\[1\].*params must be a finite number"),
    (lambda r: r["net"].update(depth=0), r"mid\[1\].*depth must be a positive int"),
    (lambda r: r["net"]["genotype"].update(normal_concat=[2, 3]), r"mid\[1\].*concat must be \[2, 3, 4, 5\]"),
])
def test_a_bad_record_is_one_error_naming_it(tmp_path, bad, message):
    rec = record(DARTS_V2, job=9)
    bad(rec)
    path = write(tmp_path / "DARTS.json", {"top": [record(DARTS_V2)], "mid": [record(DARTS_V2), rec]})
    with pytest.raises(TruthFileError, match=message):
        convert(path)
    out = tmp_path / "t.parquet"
    assert cli_main(["truth", "nds", str(path), "-o", str(out)]) == 2 and not out.exists()


def test_files_that_are_refused(tmp_path):
    with pytest.raises(TruthFileError, match="ImageNet NDS file"):
        convert(write(tmp_path / "DARTS_in.json", [record(DARTS_V2)]))
    with pytest.raises(TruthFileError, match="cannot tell the NDS space"):
        convert(write(tmp_path / "mine.json", [record(DARTS_V2)]))
    assert convert(write(tmp_path / "mine.json", [record(DARTS_V2)]), "nds-darts")[0] == "nds-darts"
    with pytest.raises(TruthFileError, match=r"expected a list of records or \{'top'"):
        convert(write(tmp_path / "DARTS.json", {"best": []}))
    with pytest.raises(TruthFileError, match="not JSON"):
        (tmp_path / "PNAS.json").write_text("[{")
        convert(tmp_path / "PNAS.json")


def test_table_feeds_arch_list_and_ground_truth(tmp_path, capsys):
    recs = [record(DARTS_V2, job=1), record(DARTS_V2, job=2, errors=(50.0, 14.0), best=13.0),
            record(DARTS_V2, width=16, job=3)]
    out = tmp_path / "darts.parquet"
    assert cli_main(["truth", "nds", str(write(tmp_path / "DARTS.json", recs)), "-o", str(out)]) == 0
    assert "3 records (list), 2 distinct archs" in capsys.readouterr().out
    space = spaces.get("nds-darts")
    ids = read_arch_list(out, space)
    assert len(ids) == 2 and all(0 <= i < len(space) for i in ids)
    archs = pq.read_table(out).column("arch").to_pylist()
    assert {space.arch(i) for i in ids} == set(archs)
    gt = ground_truth.load(out, "test_accuracy_final", space)
    assert gt.values[archs[0]] == pytest.approx((87.5 + 86.0) / 2) and gt.counts[archs[0]] == 2
    assert ground_truth.load(out, "test_accuracy_best", space).values[archs[2]] == pytest.approx(89.0)
    with pytest.raises(GenotypeError, match="was not met in this process"):
        NDSSpace("nds-darts").arch(ids[0])  # a fresh instance has not read the table


def test_nds_network_is_the_darts_network():
    space = spaces.get("nds-darts")
    arch = space.canonical({"genotype": DARTS_V2, "width": 16, "depth": 8})
    net = space.build(arch, 10)
    assert sum(p.numel() for p in net.parameters()) == 246_106  # DARTS_V2 at C=16, 8 cells
    with pytest.raises(ValueError, match="sample.size is not supported"):
        space.sample_ids(5, 0)


def test_nds_config_shards_the_tables_archs(tmp_path, data_dir):
    """configs/nds-darts-cifar10.yaml reads the converted table: one shard row per distinct arch."""
    from gradsign.pipeline.driver.config import resolve
    from gradsign.pipeline.driver.shards import iter_shards

    recs = [record(DARTS_V2, job=1), record(DARTS_V2, job=2), record(DARTS_V2, width=16, job=3)]
    out = tmp_path / "DARTS.parquet"
    _, table = convert(write(tmp_path / "DARTS.json", recs))
    pq.write_table(table, out)
    cfg = resolve("configs/nds-darts-cifar10.yaml", [f"data.path={data_dir}/cifar10_train_1000.npz",
                                                    f"sample.archs={out}", f"ground_truth.path={out}",
                                                    f"output={tmp_path / 'run'}"])
    space = spaces.get(cfg["space"])
    shards = list(iter_shards(cfg, space))
    assert len(shards) == 1
    shard = shards[0][1]
    assert sorted(shard.column("arch").to_pylist()) == sorted(set(table.column("arch").to_pylist()))
    assert [space.arch_id(a) for a in shard.column("arch").to_pylist()] == shard.column("arch_id").to_pylist()


def test_the_documented_two_record_example_converts(tmp_path):
    """docs/spaces.md's NDS input format: its JSON example is a valid NDS file with the values it states."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "spaces.md").read_text()
    block = re.search(r"## The NDS input format.*?```json\n(.*?)```", page, re.S).group(1)
    path = tmp_path / "DARTS.json"
    path.write_text(block)
    name, table = convert(path)
    rows = table.to_pylist()
    assert name == "nds-darts" and len(rows) == 2
    assert [(r["width"], r["depth"]) for r in rows] == [(16, 8), (24, 12)]
    assert [r["test_accuracy_final"] for r in rows] == pytest.approx([91.9, 88.4])
    assert [r["test_accuracy_best"] for r in rows] == pytest.approx([92.1, 88.8])
    assert rows[0]["arch"].startswith("width=16;depth=8;normal=") and rows[0]["job_id"] == "101"
    assert [r["params"] for r in rows] == [0.246, 0.612] and rows[1]["rng_seed"] == 2
    for field in ("net.genotype", "net.width", "net.depth", "test_ep_top1", "min_test_top1", "params", "flops"):
        assert f"`{field}" in page, field
