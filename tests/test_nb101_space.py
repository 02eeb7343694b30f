"""The whole NAS-Bench-101 space (enumerated once per test session, ~30-60 s), its cache, and a small
NB101 run through real Ray with ground truth joined on the hash."""

import json
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from gradsign import spaces
from gradsign.pipeline.driver import space_cache
from gradsign.pipeline.driver.run import recompute, run
from gradsign.spaces.nb101_enum import (CHECKSUM, COUNTS_BY_VERTICES, SIZE, EnumerationError, GraphTable,
                                        enumerate_graphs)
from gradsign.spaces.nb101_spec import Spec

FIRST_HASH = "00005c142e6f48ac74fdcf73e3439874"  # the official data set's first hash (NNI example)


pytestmark = pytest.mark.slow  # the module's fixture enumerates the 423,624 graphs (30-60 s on one core)


@pytest.fixture(scope="module")
def table():
    start = time.perf_counter()
    t = enumerate_graphs()
    print(f"\nNB101 enumeration: {time.perf_counter() - start:.1f} s")
    return t


@pytest.fixture(scope="module")
def space(table):
    s = spaces.get("nb101")
    s.attach_table(table)
    return s


@pytest.fixture(scope="module")
def rows(data_dir):
    return [json.loads(line) for line in (data_dir / "nb101_naslib_500.jsonl").read_text().splitlines()]


def test_enumeration_is_the_official_space(table, rows):
    assert len(table) == SIZE == 423_624
    counts = dict(zip(*np.unique(table.vertices, return_counts=True)))
    assert {int(k): int(v) for k, v in counts.items()} == COUNTS_BY_VERTICES
    assert COUNTS_BY_VERTICES == {2: 1, 3: 6, 4: 84, 5: 2_441, 6: 62_010, 7: 359_082}
    assert table.checksum() == CHECKSUM
    assert table.hashes[0].decode() == FIRST_HASH
    # every graph of the peer table is in the space
    assert all(table.index_of(Spec.from_matrix(r["matrix"], r["ops"]).hash()) is not None for r in rows)


def test_arch_ids_round_trip_and_representatives(space, table):
    rng = np.random.default_rng(0)
    for arch_id in rng.choice(SIZE, size=150, replace=False).tolist() + [0, SIZE - 1]:
        arch = space.arch(arch_id)
        assert space.arch_id(arch) == arch_id
        assert space.canonical(arch) == arch  # the stored spec is the first-seen one
        assert space.key(arch) == space.key_by_id(arch_id) == table.hashes[arch_id].decode()
    assert space.arch_id("conv3x3~0|maxpool3x3~1|conv3x3~2|conv3x3~0|conv1x1~0,3,4|output~2,5") == 0
    with pytest.raises(ValueError, match="arch_id must be in"):
        space.arch(SIZE)


def test_cache_round_trip_and_tampering(table, tmp_path, monkeypatch):
    path = tmp_path / space_cache.FILE_NAME
    space_cache.save_table(table, path)
    back = space_cache.read_table(path)
    assert back.checksum() == CHECKSUM and np.array_equal(back.hashes, table.hashes)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached table was rebuilt instead of read")

    monkeypatch.setattr(space_cache, "enumerate_graphs", no_rebuild)
    assert len(space_cache.nb101_table(tmp_path, verbose=False)) == SIZE  # read, not rebuilt
    monkeypatch.undo()
    swapped = GraphTable(table.hashes, table.vertices, table.bits, table.labels.copy())
    swapped.labels[[0, 1]] = swapped.labels[[1, 0]]
    with pytest.raises(EnumerationError, match="checksum"):
        swapped.validate()
    import pyarrow as pa

    arrow = pq.read_table(path)
    bad = arrow.set_column(3, "labels", pa.array(swapped.labels, pa.int16()))
    pq.write_table(bad, path)  # metadata kept, content changed
    with pytest.raises(EnumerationError, match="checksum"):
        space_cache.read_table(path)


@pytest.mark.ray
def test_small_nb101_run_through_ray_joins_on_the_hash(tmp_path, data_dir, space, rows, ray_cluster):
    from gradsign.pipeline.driver.config import resolve

    # 8 rows of the peer table: rows 0..6 and a later row that prunes to the same graph as one of them
    hashes = [Spec.from_matrix(r["matrix"], r["ops"]).hash() for r in rows]
    dup = next(i for i in range(7, len(rows)) if hashes[i] in hashes[:7])
    listing = tmp_path / "eight.jsonl"
    chosen = [*range(7), dup]
    graphs = {hashes[i] for i in chosen}
    assert len(graphs) < len(chosen)
    listing.write_text("".join(json.dumps(rows[i]) + "\n" for i in chosen))
    cfg = resolve("configs/nb101-cifar10-naslib500.yaml", [
        f"data.path={data_dir}/cifar10_train_1000.npz", "data.batch_size=8", f"sample.archs={listing}",
        f"ground_truth.path={data_dir}/nb101_naslib_500.jsonl", "proxies=[gradsign, params]", "shard_size=4",
        "topk=5", "progress=false", "ray.object_store_mb=128", f"output={tmp_path / 'run'}"])
    result = run(cfg)
    d = result.run_dir
    summary = json.loads((d / "summary.json").read_text())
    n = len(graphs)  # rows that prune to one graph are scored once
    assert summary["archs"] == {"requested": n, "scored": n, "failed": 0, "missing": 0}
    gt = summary["ground_truth"]
    assert (gt["table_rows"], gt["table_keys"], gt["averaged_keys"], gt["matched"]) == (500, 292, 48, n)
    assert summary["proxies"]["gradsign"]["n"] == n
    shard = pq.read_table(d / "shards" / "part-00000.parquet")
    assert shard.column_names == ["arch_id", "arch", "hash"]
    scores = pq.read_table(d / "scores").sort_by("arch_id")
    assert scores.column_names[:3] == ["arch_id", "arch", "hash"]
    assert scores.column("hash").to_pylist() == [space.key(a) for a in scores.column("arch").to_pylist()]
    assert set(scores.column("hash").to_pylist()) == graphs
    params = dict(zip(scores.column("hash").to_pylist(), scores.column("params").to_pylist()))
    assert params[hashes[0]] == pytest.approx(rows[0]["params"], abs=1e-9)  # row 0 is its own representative
    top = pq.read_table(d / "topk.parquet")
    assert "hash" in top.column_names and top.column("val_accuracy").null_count == 0
    group = [float(r["val_accuracy"]) for r, h in zip(rows, hashes) if h == hashes[dup]]
    truth = dict(zip(top.column("hash").to_pylist(), top.column("val_accuracy").to_pylist()))
    if hashes[dup] in truth:
        assert truth[hashes[dup]] == pytest.approx(np.mean(group))  # mean per hash
    again = recompute(d)
    assert again["proxies"]["gradsign"]["spearman"] == summary["proxies"]["gradsign"]["spearman"]
