"""Spaces plug in as proxies do: a space defined in the tests, scored through the CLI and real Ray."""

import json

import pyarrow.parquet as pq
import pytest

from gradsign import spaces
from gradsign.pipeline import cli


def test_registry_names_and_errors():
    assert {"nb101", "nb201"} <= set(spaces.names())
    with pytest.raises(ValueError, match="unknown space 'nope'; valid spaces: .*nb101.*nb201"):
        spaces.get("nope")
    with pytest.raises(ValueError, match="cannot import space module 'no_such_module'"):
        spaces.get("no_such_module:Space")
    with pytest.raises(ValueError, match="has no 'Missing'"):
        spaces.get("toy_space:Missing")
    with pytest.raises(ValueError, match="registered twice"):
        spaces.register("nb201")(lambda: None)


def test_every_space_has_key_and_key_column():
    nb201, nb101 = spaces.get("nb201"), spaces.get("nb101")
    arch = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    assert nb201.key(" " + arch) == arch and nb201.key_column is None
    assert nb101.key_column == "hash" and len(nb101.key("conv3x3~0|output~1")) == 32
    toy = spaces.get("toy_space:ToySpace")  # the module:Name form needs no plugins entry
    assert toy.key("c8-d2") == "c8-d2" and toy.key_column is None and len(toy) == 8
    assert list(toy)[:3] == ["c4-d1", "c4-d2", "c8-d1"] and toy.sample_ids(3, 0) == sorted(toy.sample_ids(3, 0))


@pytest.mark.ray
@pytest.mark.parametrize("how", ["plugins", "path"])
def test_a_plugin_space_scores_through_the_cli_and_ray(tmp_path, data_dir, ray_cluster, how, capsys):
    truth = tmp_path / "toy_truth.csv"
    truth.write_text("arch,acc\n" + "".join(f"c{w}-d{d},{w * d}\n" for w in (4, 8, 16, 32) for d in (1, 2)))
    space = ["space=toy", "plugins=[toy_space]"] if how == "plugins" else ["space=toy_space:ToySpace"]
    sets = [*space, f"data.path={data_dir}/cifar10_train_1000.npz", "data.batch_size=8", "sample.size=null",
            "proxies=[gradsign, params]", f"ground_truth.path={truth}", "ground_truth.column=acc", "shard_size=3",
            "topk=4", "progress=false", "ray.object_store_mb=128", f"output={tmp_path / 'run'}"]
    argv = ["score", "configs/nb201-cifar10-smoke.yaml"]
    for s in sets:
        argv += ["--set", s]
    assert cli.main(argv) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["archs"] == {"requested": 8, "scored": 8, "failed": 0, "missing": 0}
    assert summary["proxies"]["params"]["n"] == 8 and summary["proxies"]["params"]["spearman"] > 0.9
    table = pq.read_table(tmp_path / "run" / "scores").sort_by("arch_id")
    assert table.column("arch").to_pylist() == list(spaces.get("toy_space:ToySpace"))
    top = pq.read_table(tmp_path / "run" / "topk.parquet")
    assert top.column("acc").to_pylist()[0] is not None and "hash" not in top.column_names
    assert cli.main(["report", str(tmp_path / "run")]) == 0  # recompute finds the plugin space again
