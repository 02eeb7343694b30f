"""The ``darts`` space (NAS-Bench-301's DARTS space): ids, sampling, the 725-cell table, peer params."""

import json
from collections import Counter

import pytest

from gradsign import spaces
from gradsign.pipeline.driver.shards import ArchListError, read_arch_list
from gradsign.spaces import ground_truth
from gradsign.spaces.darts import CELL_SIZE, DARTS_OPS, SIZE, DartsSpace
from gradsign.spaces.darts_genotype import Genotype, GenotypeError

NB301 = "nb301_naslib_725.jsonl"


@pytest.fixture(scope="module")
def rows(data_dir):
    return [json.loads(line) for line in (data_dir / NB301).read_text().splitlines() if line.strip()]


def test_size_and_ids_round_trip():
    import random

    space = spaces.get("darts")
    assert len(space) == SIZE == 1_076_746_950_455_072_400 == CELL_SIZE ** 2 < 2 ** 63
    rng = random.Random(1)
    for arch_id in [0, 1, SIZE - 1] + [rng.randrange(SIZE) for _ in range(200)]:
        arch = space.arch(arch_id)
        assert space.arch_id(arch) == arch_id
        assert space.canonical(arch) == arch == space.key_by_id(arch_id)
        assert space.arch_id(space.genotype_text(arch)) == arch_id  # the Genotype(...) text reads back
    with pytest.raises(GenotypeError, match="arch_id must be in"):
        space.arch(SIZE)


def test_distance_counts_differing_pairs():
    from gradsign.spaces import distance

    space = spaces.get("darts")
    a = space.arch(123_456_789_012_345)
    g = space.genotype(a).as_record()
    g["reduce"][7] = ["avg_pool_3x3" if g["reduce"][7][0] != "avg_pool_3x3" else "max_pool_3x3", g["reduce"][7][1]]
    b = space.canonical(g)
    assert distance.distance(space, a, a) == 0 and distance.distance(space, a, b) == distance.distance(space, b, a) == 1
    assert space.distance_features([space.arch_id(a)]).shape == (1, 32)


def test_sampling_is_deterministic_distinct_and_uniform():
    space = DartsSpace()
    ids = space.sample_ids(3000, seed=7)
    assert ids == space.sample_ids(3000, seed=7) and ids != space.sample_ids(3000, seed=8)
    assert len(set(ids)) == 3000 and ids == sorted(ids) and 0 <= ids[0] and ids[-1] < SIZE
    # NB301's sampler is uniform over canonical cells: each op ~1/7 on every edge, input pairs of node 3
    # ~1/10 each (C(5, 2) pairs), both cells
    ops, pairs = Counter(), Counter()
    for arch_id in ids:
        g = space.genotype(space.arch(arch_id))
        for cell in (g.normal, g.reduce):
            ops.update(op for op, _ in cell.pairs)
            pairs[(cell.nodes[3][0][1], cell.nodes[3][1][1])] += 1
    assert set(ops) == set(DARTS_OPS) and len(pairs) == 10
    expected_op, expected_pair = 3000 * 2 * 8 / 7, 3000 * 2 / 10
    assert all(abs(n - expected_op) < 0.08 * expected_op for n in ops.values()), ops
    assert all(abs(n - expected_pair) < 0.15 * expected_pair for n in pairs.values()), pairs
    with pytest.raises(ValueError, match="sample.size"):
        space.sample_ids(0, seed=0)


def test_nb301_table_as_arch_list_and_ground_truth(data_dir, rows, tmp_path):
    space = spaces.get("darts")
    ids = read_arch_list(data_dir / NB301, space)
    assert len(ids) == len({space.canonical(r) for r in rows}) == len(rows)
    gt = ground_truth.load(data_dir / NB301, "val_accuracy", space)
    assert len(gt.values) == len(rows)
    first = rows[0]
    assert gt.values[space.key(first)] == pytest.approx(first["val_accuracy"])
    # the same cell written with each node's pairs swapped joins to the same row
    swapped = {"normal": [first["normal"][i ^ 1] for i in range(8)], "reduce": first["reduce"]}
    assert space.key(swapped) == space.key(first)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(first) + "\n" + json.dumps({**first, "normal": first["normal"][:6]}) + "\n")
    with pytest.raises(ArchListError, match=r"bad.jsonl:2: normal: expected 8"):
        read_arch_list(bad, space)


def test_params_and_flops_equal_the_peers_under_its_bn_option(rows):
    """The peer (NASLib's NB301 network) keeps DARTS's search-phase ops: BN in ops non-affine, BN after pools."""
    import torch

    from gradsign.actors import proxies

    space, trained = DartsSpace.peer(), DartsSpace()
    flops = proxies.get("flops")
    image, label = torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long)
    for i, row in enumerate(rows[::29]):  # 25 cells spread over the table
        net = space.build(row, 10)
        count = sum(p.numel() for p in net.parameters())
        assert count == round(row["params"] * 1e6), Genotype.from_record(row, space.rules).to_text()
        if i % 5 == 0:  # 5 of them: flops (one forward pass each)
            assert flops(net, image, label) == pytest.approx(row["flops"], abs=1e-6)
        if i < 3:  # the trained network (affine BN in ops) has more parameters
            assert sum(p.numel() for p in trained.build(row, 10).parameters()) > count


def test_topk_rows_carry_the_genotype_text(data_dir, rows):
    """The reducer's top-k with the ``genotype`` column (DARTS spaces only; NB201 rows unchanged)."""
    import pyarrow as pa

    from gradsign.pipeline.outputs.reducer import Reducer
    from gradsign.pipeline.outputs.reducer import with_space_columns

    space = spaces.get("darts")
    ids = [space.arch_id(r) for r in rows[:5]]
    scores = pa.table({"arch_id": pa.array(ids, pa.int64()), "arch": [space.arch(i) for i in ids],
                       "params": [r["params"] for r in rows[:5]], "nonfinite": [None] * 5, "error": [None] * 5})
    reducer = Reducer(["params"], space, ground_truth.load(data_dir / NB301, "val_accuracy", space), topk=3)
    reducer.add(scores)
    top = with_space_columns(reducer.top(reducer.columns()), space).to_pylist()
    best = sorted(rows[:5], key=lambda r: -r["params"])[:3]
    assert [t["arch_id"] for t in top] == [space.arch_id(r) for r in best]
    for t, r in zip(top, best):
        assert t["genotype"] == Genotype.from_record(r, space.rules).darts_text()
        assert t["val_accuracy"] == pytest.approx(r["val_accuracy"])
    nb201 = spaces.get("nb201")
    plain = pa.table({"rank": [1], "arch_id": [0], "arch": [nb201.arch(0)]})
    assert with_space_columns(plain, nb201) is plain


@pytest.mark.ray
@pytest.mark.slow
def test_small_nb301_run_through_ray_writes_genotypes(tmp_path, data_dir, rows, ray_cluster):
    """4 rows of the 725 through the real pipeline (params only: no forward pass, so it stays cheap):
    ground truth joins on the canonical genotype, top-k rows carry the DARTS Genotype(...) text, and
    ``gradsign report`` in the same process rebuilds them."""
    from gradsign.pipeline.driver.config import resolve
    from gradsign.pipeline.driver.run import recompute, run

    listing = tmp_path / "cells.jsonl"
    listing.write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    cfg = resolve("configs/darts-cifar10-nb301-725.yaml", [
        f"data.path={data_dir}/cifar10_train_1000.npz", "data.batch_size=8", f"sample.archs={listing}",
        f"ground_truth.path={data_dir}/{NB301}", "proxies=[params]", "shard_size=2", "topk=3", "progress=false",
        "ray.object_store_mb=128", "ray.num_actors=1", f"output={tmp_path / 'run'}"])
    result = run(cfg)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["archs"]["scored"] == 4 and summary["ground_truth"]["matched"] == 4
    space = spaces.get("darts")
    top = [json.loads(line) for line in (result.run_dir / "topk.jsonl").read_text().splitlines()]
    assert len(top) == 3
    by_key = {space.key(r): r for r in rows[:4]}
    for row in top:
        source = by_key[row["arch"]]
        assert row["params"] == pytest.approx(sum(p.numel() for p in space.build(row["arch"], 10).parameters()) / 1e6)
        assert row["val_accuracy"] == pytest.approx(source["val_accuracy"])
        assert Genotype.parse(row["genotype"], space.rules) == space.genotype(source)
        assert row["genotype"].startswith("Genotype(normal=[(") and "reduce_concat=[2, 3, 4, 5])" in row["genotype"]
        assert row["arch_id"] == space.arch_id(source)
    recompute(result.run_dir)
    assert [json.loads(line) for line in (result.run_dir / "topk.jsonl").read_text().splitlines()] == top


def test_signal_split_counts_and_candidate_lists_on_darts_scores(tmp_path, data_dir, rows, capsys):
    """The report's split of GradSign by ``gradsign_signal`` (counts agree with the rule, correlations per
    group over the rows that group holds), the top-k's ``gradsign_signal`` column, and ``gradsign
    candidates`` from a DARTS score table (a space of 1e18 archs: memory follows the table) carrying the
    Genotype text."""
    import numpy as np
    import pyarrow as pa

    from gradsign.pipeline import cli
    from gradsign.pipeline.outputs.candidates import table_topk
    from gradsign.pipeline.outputs.reducer import Reducer

    space = spaces.get("darts")
    picked = rows[:60]
    ids = [space.arch_id(r) for r in picked]
    archs = [space.arch(i) for i in ids]
    values = np.random.default_rng(0).normal(size=len(picked))  # stand-in scores: only the bookkeeping is checked
    scores = pa.table({"arch_id": pa.array(ids, pa.int64()), "arch": archs, "gradsign": values,
                       "nonfinite": [None] * len(picked), "error": [None] * len(picked)})
    truth = ground_truth.load(data_dir / NB301, "val_accuracy", space)
    reducer = Reducer(["gradsign"], space, truth, topk=len(picked))
    reducer.add(scores)
    cols = reducer.columns()
    split = reducer.signal_split(cols)
    signal = [space.gradsign_signal(a) for a in archs]
    assert split["with_signal"] == sum(signal) and split["without_signal"] == len(signal) - sum(signal) > 0
    assert split["with_signal_correlation"]["n"] + split["without_signal_correlation"]["n"] == len(picked)
    top = reducer.top(cols).to_pylist()
    assert {(t["arch"], t["gradsign_signal"]) for t in top} == set(zip(archs, signal))
    assert Reducer(["params"], space).signal_split(cols) is None  # no GradSign column, no split

    import pyarrow.csv as pa_csv

    pa_csv.write_csv(scores.select(["arch", "gradsign"]), tmp_path / "s.csv")
    listed, _ = table_topk([tmp_path / "s.csv"], space, ["gradsign"], 5)
    best = np.argsort(-values)[:5]
    assert listed.column("arch").to_pylist() == [archs[k] for k in best]
    assert listed.column("genotype").to_pylist() == [space.genotype_text(archs[k]) for k in best]
    out = tmp_path / "list.jsonl"
    assert cli.main(["candidates", str(tmp_path / "s.csv"), "--space", "darts", "--by", "gradsign",
                     "--count", "5", "-o", str(out)]) == 0
    assert "5 candidates" in capsys.readouterr().out
    assert [json.loads(line)["genotype"] for line in out.read_text().splitlines()] == \
        listed.column("genotype").to_pylist()


def test_signal_check_reports_score_per_weight_by_group(tmp_path, rows, capsys):
    """``tools.signal_check`` on a run folder written here: weights counted as GradSign counts them,
    the ratio per group, and E|sum of N coin flips| exact (checked against enumeration for small N)."""
    import itertools

    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from torch import nn

    from tools import signal_check

    for n in range(1, 9):
        exact = sum(abs(sum(s)) for s in itertools.product((-1, 1), repeat=n)) / 2 ** n
        assert signal_check.coin_flip_agreement(n) == pytest.approx(exact)
    space = spaces.get("darts")
    with_signal = [r for r in rows if space.gradsign_signal(space.from_record(r))][:3]
    without = [r for r in rows if not space.gradsign_signal(space.from_record(r))][:3]
    archs = [space.from_record(r) for r in with_signal + without]
    weights = [sum(m.weight.numel() for m in space.build(a, 10).modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
               for a in archs]
    per_weight = [7.0, 7.5, 8.0, 6.0, 6.0, 6.0]  # stand-in scores: score = per_weight x weights
    run = tmp_path / "run"
    (run / "scores").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"space": "darts", "dataset": "cifar10", "proxies": ["gradsign"],
                                                     "data": {"batch_size": 64}, "ground_truth": {"path": None}}))
    pq.write_table(pa.table({"arch_id": [space.arch_id(a) for a in archs], "arch": archs,
                             "gradsign": [p * w for p, w in zip(per_weight, weights)], "error": [None] * 6}),
                   run / "scores" / "part-00000.parquet")
    assert signal_check.main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "coin flips give 6.358 per weight" in out
    lines = {line[:16].strip(): line[16:].split() for line in out.splitlines()}
    assert lines["with signal"][:6] == ["3", "7.500", "+-", "0.408", "7.000", "8.000"]
    assert lines["without signal"] == ["3", "6.000", "+-", "0.000", "6.000", "6.000", "1.000"]  # a weight count


def test_noise_map_table_study_splits_the_score_by_layer_noise(tmp_path, rows, data_dir, capsys, monkeypatch):
    """``tools.noise_map --table`` on three real NB301 rows (trained network, batch 8): per row the score
    splits into layers with a signal and noise layers (the last cell's conv ops are noise; the stem and the
    first cells are not), and the study prints Spearman / Kendall of the four quantities."""
    import torch

    from tools import noise_map
    from gradsign.pipeline.driver.data import load_batch

    space = spaces.get("darts")
    batch = load_batch(data_dir / "cifar10_train_1000.npz", "cifar10", 8, seed=0)
    x, y = torch.from_numpy(batch.images), torch.from_numpy(batch.labels)
    torch.manual_seed(0)
    layers, fp32, _ = noise_map.layer_noise(space.build(space.from_record(rows[0]), 10), x, y)
    assert sum(layer.score for layer in layers) == fp32
    noise = {layer.name for layer in layers if layer.noise}
    assert any(n.startswith("cells.7.ops.") for n in noise)
    assert not any(n.startswith(("stem", "cells.0.", "cells.1.")) for n in noise)
    table = tmp_path / "three.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    monkeypatch.setenv("GRADSIGN_DATA", str(data_dir))
    assert noise_map.main(["--space", "darts", "--table", str(table), "--cells", "3", "--batch", "8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{table}: 3 rows (sample seed 1), batch 8; noise share of the weights: mean 0.")
    found = {line[:24].strip(): [float(v) for v in line[24:].split()] for line in out[2:]}
    assert list(found) == ["score", "weights", "signal-layer score", "signal-layer weights"]
    assert all(-1 <= v <= 1 for pair in found.values() for v in pair)
