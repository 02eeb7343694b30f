"""Official NAS-Bench-201 files -> the compact table (pipeline.truth), without the real 4.7 GB file.

Each test writes a small file in the official format with the nas_201_api package's own classes
(``support.nb201_synth``), with known numbers, and reads it back through the converter; the documented
NASBench201API call of every column is evaluated on the same file and must give the same value.
"""

from __future__ import annotations

import bz2
import os
import pickle
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from gradsign.pipeline.official import register_readers
from gradsign import spaces
from gradsign.pipeline.official import nb201 as truth
from gradsign.pipeline.cli import main as cli_main
from gradsign.pipeline.official.nb201 import COLUMNS, TruthFileError
from support.nb201_synth import CellSpec, benchmark_dict, save
from gradsign.spaces import ground_truth

register_readers()  # spaces.ground_truth reads official .pth files

SPACE = spaces.get("nb201")
ARCHS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
]
SPLITS = ("cifar10-valid", "cifar10", "cifar100", "ImageNet16-120")
BASE = {("cifar10-valid", "x-valid"): 80.0, ("cifar10-valid", "ori-test"): 81.0, ("cifar10", "ori-test"): 90.0,
        ("cifar100", "x-valid"): 60.0, ("cifar100", "x-test"): 61.0, ("cifar100", "ori-test"): 62.0,
        ("ImageNet16-120", "x-valid"): 30.0, ("ImageNet16-120", "x-test"): 31.0,
        ("ImageNet16-120", "ori-test"): 32.0}
BUMP = {777: 0.0, 888: 0.5, 999: 1.0}
PARAMS = {"cifar10-valid": 1.0, "cifar10": 1.0, "cifar100": 1.1, "ImageNet16-120": 1.2}


def value(index, hp, dataset, seed, what, epoch):
    """Known numbers: the last epoch's accuracy is BASE + index + seed bump (- 20 at 12 epochs); earlier
    epochs read 1.0, so reading the wrong epoch shows."""
    last = epoch == hp - 1
    if what in ("params", "flops"):
        return PARAMS[dataset] + index + (0.0 if what == "params" else 100.0)
    if what == "latency":
        return 0.01
    if what == "train_time":
        return 2.0 + index + BUMP[seed]
    if what.endswith("_time"):
        return 0.5 + BUMP[seed]
    if what.endswith("_loss") or what in ("train", "train5"):
        return 1.0
    return BASE[(dataset, what)] + index + BUMP[seed] - (20.0 if hp == 12 else 0.0) if last else 1.0


def cells(layout="v1_1"):
    less = ({"cifar10-valid": (777, 888), "cifar10": (777,), "cifar100": (777,), "ImageNet16-120": (777,)}
            if layout == "v1_1" else {"cifar10-valid": (777, 888)})
    seeds = [(777, 888), (777,), (777, 888, 999)]
    # official indexes 0, 1, 3 (index 2 in meta_archs is not evaluated, as a file may have)
    return [CellSpec(i, a, {200: {s: sd for s in SPLITS}, 12: less}) for i, a, sd in zip((0, 1, 3), ARCHS, seeds)]


def write(path: Path, layout="v1_1", legacy=True, val=value) -> Path:
    save(benchmark_dict(cells(layout), val, size=5), path, legacy=legacy)
    return path


@pytest.fixture
def pth(tmp_path):
    return write(tmp_path / "NAS-Bench-201-v1_1-096897.pth")


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-stream", "zip"])
def test_known_numbers(tmp_path, legacy):
    path = write(tmp_path / "bench.pth", legacy=legacy)
    conv = truth.convert(path)
    assert (conv.layout, conv.cells, conv.space_size) == ("v1_1", 3, 5)
    rows = {r["index"]: r for r in conv.table.to_pylist()}
    assert sorted(rows) == [0, 1, 3]
    assert [rows[i]["arch"] for i in (0, 1, 3)] == ARCHS
    r0, r1, r3 = rows[0], rows[1], rows[3]
    assert r0["cifar10_valid"] == pytest.approx(80.25)            # cifar10-valid x-valid, mean of 80.0, 80.5
    assert r0["cifar10_test"] == pytest.approx(90.25)             # cifar10 ori-test
    assert r3["cifar100_valid"] == pytest.approx(63.5)            # 60 + 3 + mean(0, .5, 1)
    assert r3["cifar100_test"] == pytest.approx(64.5)             # x-test, not ori-test (65.5)
    assert r1["imagenet16_120_valid"] == pytest.approx(31.0)
    assert r1["imagenet16_120_test"] == pytest.approx(32.0)
    assert r0["cifar10_valid_12ep"] == pytest.approx(60.25)       # 12 epochs: cifar10-valid x-valid
    assert r3["cifar100_valid_12ep"] == pytest.approx(43.0)
    assert r0["cifar10_train_seconds_12ep"] == pytest.approx(12 * 2.25)   # 12 epochs x mean(2.0, 2.5)
    assert r3["imagenet16_120_train_seconds_12ep"] == pytest.approx(12 * 5.0)
    assert r0["cifar10_valid_seconds_12ep"] == pytest.approx(0.75)        # one pass, mean over seeds
    assert r3["imagenet16_120_params"] == pytest.approx(4.2)
    assert r3["cifar100_flops"] == pytest.approx(104.1)
    assert (r0["cifar10_trials"], r1["cifar100_trials"], r3["imagenet16_120_trials"]) == (2, 1, 3)
    assert all(v is not None for r in rows.values() for v in r.values())


def test_every_column_is_the_documented_api_call(pth):
    """Each column equals what its documented NASBench201API call returns on the same file."""
    from nas_201_api import NASBench201API

    api = NASBench201API(str(pth), verbose=False)
    table = truth.convert(pth).table.to_pylist()
    assert len(table) == len(api.evaluated_indexes)
    for row in table:
        i = row["index"]
        assert api.query_index_by_arch(row["arch"]) == i and api[i] == row["arch"]
        for col in COLUMNS:
            expected = eval(col.api_call(), {"api": api, "i": i})  # noqa: S307 - our own strings
            assert row[col.name] == pytest.approx(float(expected), rel=1e-12), (col.name, col.api_call())


def test_v1_0_layout_leaves_missing_12_epoch_splits_null(tmp_path):
    conv = truth.convert(write(tmp_path / "NAS-Bench-201-v1_0-e61699.pth", layout="v1_0"))
    assert conv.layout == "v1_0"
    row = conv.table.to_pylist()[0]
    assert row["cifar10_valid_12ep"] == pytest.approx(60.25)
    assert row["cifar100_valid_12ep"] is None and row["imagenet16_120_train_seconds_12ep"] is None
    assert row["cifar100_test"] == pytest.approx(61.25)


def test_cli_writes_table_with_provenance(pth, tmp_path, capsys):
    out = tmp_path / "nb201.parquet"
    assert cli_main(["truth", "nb201", str(pth), "-o", str(out)]) == 0
    assert "v1_1 layout, 3 of 5 cells" in capsys.readouterr().out
    meta = truth.table_metadata(out)
    assert meta["official_name"] == "v1_1" and meta["layout"] == "v1_1" and meta["cells"] == 3
    assert meta["fingerprint"] == truth.fingerprint(pth)
    assert "get_more_info(i, 'cifar10', hp='200', is_random=False)['test-accuracy']" in meta["columns"]["cifar10_test"]
    assert pq.read_table(out).num_rows == 3


def test_pth_as_ground_truth_is_converted_once_and_again_when_changed(tmp_path):
    pth = write(tmp_path / "bench.pth")
    truth_a = ground_truth.load(pth, "cifar10_test", SPACE)
    assert truth_a.values[ARCHS[2]] == pytest.approx(93.5) and truth_a.official_index[ARCHS[2]] == 3
    cached = list(tmp_path.glob("bench.pth.gradsign-*.parquet"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert ground_truth.load(pth, "cifar100_test", SPACE).values[ARCHS[0]] == pytest.approx(61.25)
    assert cached[0].stat().st_mtime_ns == stamp  # read from the cache, not converted again

    write(pth, val=lambda *a: value(*a) + (5.0 if a[4] == "ori-test" else 0.0))  # the file changes
    assert ground_truth.load(pth, "cifar10_test", SPACE).values[ARCHS[2]] == pytest.approx(98.5)
    now = list(tmp_path.glob("bench.pth.gradsign-*.parquet"))
    assert len(now) == 1 and now[0] != cached[0]  # reconverted; the stale table removed


def test_cache_candidates_and_user_cache(tmp_path, monkeypatch):
    pth = write(tmp_path / "b.pth")
    monkeypatch.setenv("GRADSIGN_CACHE", str(tmp_path / "cache"))
    near, user = truth.cache_candidates(pth)
    assert near.parent == pth.resolve().parent and user.parent == tmp_path / "cache"
    assert truth.fingerprint(pth) in near.name and truth.fingerprint(pth) in user.name


def test_load_benchmark_from_pth_and_from_a_shipped_csv(pth, data_dir):
    bench = truth.load_benchmark(pth)
    assert list(bench["arch_id"]) == sorted(SPACE.arch_id(a) for a in ARCHS)
    assert [SPACE.arch_id(a) for a in bench["arch"]] == list(bench["arch_id"])
    assert bench["index"].dtype == np.int64 and bench["cifar10_test"].dtype == np.float64
    k = list(bench["arch"]).index(ARCHS[1])
    assert bench["index"][k] == 1 and bench["imagenet16_120_test"][k] == pytest.approx(32.0)

    hp12 = truth.load_benchmark(data_dir / "nb201_cifar10_hp12.csv")
    assert np.array_equal(hp12["arch_id"], np.arange(15625))  # complete table: row i is arch_id i
    best = int(np.argmax(hp12["cifar10_valid_12ep"]))
    assert hp12["index"][best] == 13714 and hp12["cifar10_valid_12ep"][best] == pytest.approx(84.892)


def test_null_becomes_nan_in_load_benchmark(tmp_path):
    bench = truth.load_benchmark(write(tmp_path / "v10.pth", layout="v1_0"))
    assert np.isnan(bench["cifar100_valid_12ep"]).all() and not np.isnan(bench["cifar10_valid_12ep"]).any()


# ----------------------------------------------------------------------------------------------- bad files


def _truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-stream", "zip"])
@pytest.mark.parametrize("fraction", [0.5, 0.999])
def test_truncated_file(tmp_path, legacy, fraction):
    path = _truncate(write(tmp_path / "t.pth", legacy=legacy), fraction)
    with pytest.raises(TruthFileError, match="truncated"):
        truth.convert(path)


def test_empty_file(tmp_path):
    (tmp_path / "e.pth").write_bytes(b"")
    with pytest.raises(TruthFileError, match="empty"):
        truth.convert(tmp_path / "e.pth")


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("index,arch\n0,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|\n"),
     "not a NAS-Bench-201 benchmark file .not a torch.save file"),
    (lambda p: p.write_bytes(pickle.dumps({"meta_archs": []}, protocol=2)), "plain pickle, not a torch.save"),
    (lambda p: torch.save({"conv.weight": torch.zeros(2, 2)}, p), "not a NAS-Bench-201 benchmark file: it has keys"),
    (lambda p: torch.save([1, 2, 3], p), "holds a list"),
], ids=["text", "plain-pickle", "weights", "list"])
def test_not_a_benchmark_file(tmp_path, make, message):
    path = tmp_path / "x.pth"
    make(path)
    with pytest.raises(TruthFileError, match=message):
        truth.convert(path)


def test_wrong_version_nats_layout(tmp_path):
    obj = benchmark_dict(cells(), value, size=5)
    obj["arch2infos"] = {i: {"12": e["less"], "200": e["full"]} for i, e in obj["arch2infos"].items()}
    save(obj, tmp_path / "nats.pth")
    with pytest.raises(TruthFileError,
                       match=r"wrong version: arch2infos\[0\] has \['12', '200'\] \(keyed by epochs, as NATS-Bench"):
        truth.convert(tmp_path / "nats.pth")


def test_wrong_version_archive_file_and_bz2(tmp_path):
    entry = benchmark_dict(cells(), value, size=5)["arch2infos"][0]
    save(entry, tmp_path / "000000-FULL.pth")
    with pytest.raises(TruthFileError, match="one architecture's file from the NAS-Bench-201 archive"):
        truth.convert(tmp_path / "000000-FULL.pth")
    (tmp_path / "nats.pickle.pbz2").write_bytes(bz2.compress(pickle.dumps({"a": 1})))
    with pytest.raises(TruthFileError, match="wrong benchmark version/format"):
        truth.convert(tmp_path / "nats.pickle.pbz2")


def test_wrong_version_epochs_and_not_nb201_archs(tmp_path):
    obj = benchmark_dict(cells(), value, size=5)
    first = obj["arch2infos"][0]
    first["less"], first["full"] = first["full"], first["less"]
    save(obj, tmp_path / "swapped.pth")
    with pytest.raises(TruthFileError, match="wrong version: cell 0 has \\[200\\]-epoch results"):
        truth.convert(tmp_path / "swapped.pth")
    obj = benchmark_dict(cells(), value, size=5)
    obj["meta_archs"][4] = "64:32:16:8:8"  # a NATS size-space arch
    save(obj, tmp_path / "sss.pth")
    with pytest.raises(TruthFileError, match=r"meta_archs\[4\] is not a NAS-Bench-201 cell"):
        truth.convert(tmp_path / "sss.pth")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch gradsign-owned",))


def test_code_in_the_pickle_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"meta_archs": [], "arch2infos": {}, "evaluated_indexes": [], "x": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(TruthFileError, match=r"asks to unpickle (posix|os)\.system.*--trust-pickle"):
        truth.convert(tmp_path / "evil.pth")
    assert not (tmp_path / "gradsign-owned").exists()


def test_cli_bad_file_exit_2_one_message(tmp_path, capsys):
    path = _truncate(write(tmp_path / "t.pth"), 0.5)
    assert cli_main(["truth", "nb201", str(path), "-o", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradsign: error: ") and "truncated" in err and err.count("\n") == 1
    assert not (tmp_path / "o.parquet").exists()
    with pytest.raises(ground_truth.GroundTruthError, match="truncated"):
        ground_truth.load(path, "cifar10_test", SPACE)


def test_columns_markdown_names_every_column():
    text = truth.columns_markdown()
    assert all(f"`{c.name}`" in text for c in COLUMNS)
