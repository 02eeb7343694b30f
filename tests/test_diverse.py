"""Diverse top-k and rank-average ensembles: the rule, the distances, and real runs.

The rule is checked against a plain reference written here from the issue's words (best first, then the
best remaining arch at least d from every listed arch, ties by arch_id), over real NB201 cells with many
tied scores; the run tests are small real runs through Ray (1 and 2 actors) and ``gradsign report``.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from conftest import small_config
from gradsign import spaces
from gradsign.pipeline import cli
from gradsign.pipeline.driver.config import SCORE_KEYS, ConfigError
from gradsign.pipeline.outputs import ranking
from gradsign.pipeline.outputs.candidates import table_topk
from gradsign.pipeline.outputs.reducer import Columns, Reducer
from gradsign.spaces.distance import DistanceError, distance
from gradsign.spaces.nb101 import distance_codes
from gradsign.spaces.nb101_spec import Spec

NB201 = spaces.get("nb201")


def reference_list(space, ids, values, count, d):
    """The issue's rule, written the slow obvious way on arch strings."""
    order = sorted(range(len(ids)), key=lambda k: (-values[k], ids[k]))
    listed, nearest = [], []
    for k in order:
        arch = space.arch(int(ids[k]))
        gaps = [space.distance(arch, space.arch(int(ids[j]))) for j in listed]
        if all(g >= d for g in gaps):
            listed.append(k)
            nearest.append(min(gaps) if gaps else None)
        if len(listed) == count:
            break
    return [int(ids[k]) for k in listed], nearest


def columns(ids, **proxies):
    ids = np.asarray(ids, np.int64)
    values = {p: np.asarray(v, float) for p, v in proxies.items()}
    return Columns(ids, np.ones(ids.size, bool), values, {p: np.isfinite(v) for p, v in values.items()},
                   np.full(ids.size, np.nan))


def test_nb201_distance_counts_edges_whose_op_differs():
    a = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    b = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    c = "|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
    assert NB201.distance(a, a) == 0 and NB201.distance(a, b) == 1 and NB201.distance(b, c) == 3
    assert NB201.distance(c, b) == 3 and distance(NB201, a, c) == 4
    assert NB201.distance(NB201.arch(0), NB201.arch(len(NB201) - 1)) == 6
    rng = np.random.default_rng(0)
    ids = rng.integers(len(NB201), size=(200, 2))
    feats = NB201.distance_features(ids.ravel()).reshape(200, 2, 6)
    assert [int((f[0] != f[1]).sum()) for f in feats] == [NB201.distance(NB201.arch(i), NB201.arch(j)) for i, j in ids]


def test_nb101_stand_in_distance_counts_edge_flips_and_op_changes():
    chain = Spec.from_matrix([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv3x3-bn-relu", "output"])
    skip = Spec.from_matrix([[0, 1, 1], [0, 0, 1], [0, 0, 0]], ["input", "conv3x3-bn-relu", "output"])
    pool = Spec.from_matrix([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "maxpool3x3", "output"])
    longer = Spec.from_matrix([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]],
                              ["input", "conv3x3-bn-relu", "conv1x1-bn-relu", "output"])

    def d(x, y):
        return int((distance_codes(x) != distance_codes(y)).sum())

    assert d(chain, chain) == 0 and d(chain, skip) == 1 and d(chain, pool) == 1 and d(skip, pool) == 2
    # 1->out removed, 1->2 and 2->out added, slot 2 gains an op: 4 codes
    assert d(chain, longer) == 4 == d(longer, chain)


def test_a_space_without_a_distance_is_one_clear_error(tmp_path, data_dir):
    import toy_space  # noqa: F401  (registers the "toy" space, which defines no distance)

    toy = spaces.get("toy")
    with pytest.raises(DistanceError, match="'toy' defines no distance"):
        ranking.diverse(toy, np.arange(3), 2, 1)
    cfg = small_config(tmp_path, data_dir, "space=toy", "plugins=[toy_space]", "ground_truth.path=null",
                       "ground_truth.column=null", "sample.size=6", topk_min_distance=1)
    from gradsign.pipeline.driver.run import prepare

    with pytest.raises(ConfigError, match="defines no distance"):
        prepare(cfg)


def test_diverse_rule_order_ties_and_distances():
    rng = np.random.default_rng(3)
    ids = rng.choice(len(NB201), size=600, replace=False)
    values = rng.integers(0, 40, size=ids.size).astype(float)  # many ties: arch_id must break them
    for d in (0, 1, 2, 3, 4, 5):
        top = Reducer(["p"], NB201, topk=12, topk_min_distance=d).top(columns(ids, p=values))
        expected, nearest = reference_list(NB201, ids, values, 12, d)
        assert top.column("arch_id").to_pylist() == expected, d
        assert top.column("distance").to_pylist() == nearest
        assert top.column("rank").to_pylist() == list(range(1, len(expected) + 1))
    plain = Reducer(["p"], NB201, topk=12).top(columns(ids, p=values))
    assert "distance" not in plain.column_names  # off by default: the list keeps its old columns
    assert plain.column("arch_id").to_pylist() == reference_list(NB201, ids, values, 12, 1)[0]
    # at d = 6 every listed cell differs from every other on all edges: at most 5 (one per op)
    wide = Reducer(["p"], NB201, topk=12, topk_min_distance=6).top(columns(np.arange(len(NB201)),
                                                                            p=np.zeros(len(NB201))))
    assert wide.column("arch_id").to_pylist() == [0, 3906, 7812, 11718, 15624]


def test_rank_average_is_defined_by_ranks_with_ties_and_gaps():
    ids = [10, 11, 12, 13, 14]
    a = [3.0, 1.0, 2.0, 2.0, 5.0]
    b = [1.0, 2.0, 3.0, np.nan, 4.0]
    top = Reducer(["a", "b"], NB201, topk=5, topk_by=["a", "b"]).top(columns(ids, a=a, b=b))
    # ranks of a (ties averaged) / 5: 4/5, 1/5, 2.5/5, -, 5/5; of b / 4: 1/4, 2/4, 3/4, -, 4/4
    assert top.column("arch_id").to_pylist() == [14, 12, 10, 11]  # 13 has no b: left out
    assert top.column("a+b").to_pylist() == pytest.approx([1.0, (0.5 + 0.75) / 2, (0.8 + 0.25) / 2, (0.2 + 0.5) / 2])
    # a tie in the average goes to the lower arch_id
    tied = Reducer(["a", "b"], NB201, topk=2, topk_by=["a", "b"]).top(columns([7, 5], a=[1.0, 2.0], b=[2.0, 1.0]))
    assert tied.column("arch_id").to_pylist() == [5, 7]
    # proxies that share no arch give nothing
    none = Reducer(["a", "b"], NB201, topk=3, topk_by=["a", "b"]).top(columns([1, 2], a=[1.0, np.nan], b=[np.nan, 1.0]))
    assert none.num_rows == 0


def test_candidates_from_score_tables_join_proxies_from_two_files(tmp_path, capsys):
    rng = np.random.default_rng(1)
    ids = rng.choice(len(NB201), size=300, replace=False)
    g, n = rng.normal(size=ids.size), rng.normal(size=ids.size)
    pa_csv = __import__("pyarrow.csv", fromlist=["write_csv"])
    pa_csv.write_csv(pa.table({"arch": [NB201.arch(int(i)) for i in ids], "g": g}), tmp_path / "g.csv")
    pa_csv.write_csv(pa.table({"arch_id": ids[:200], "n": n[:200]}), tmp_path / "n.csv")
    top, scores = table_topk([tmp_path / "g.csv", tmp_path / "n.csv"], NB201, ["g", "n"], 8, 3)
    # each proxy ranked over its own usable values (g: 300, n: 200); the average only where both are
    n_all = np.concatenate([n[:200], np.full(100, np.nan)])
    expect = (ranking.percentile_ranks(g, np.ones(300, bool)) + ranking.percentile_ranks(n_all, np.isfinite(n_all))) / 2
    from scipy import stats
    assert ranking.percentile_ranks(g, np.ones(300, bool)) == pytest.approx(stats.rankdata(g) / 300)
    assert top.column("arch_id").to_pylist() == reference_list(NB201, ids[:200], expect[:200], 8, 3)[0]
    assert scores.num_rows == 300 and int(np.isfinite(scores.column("g+n").to_numpy()).sum()) == 200
    out = tmp_path / "list.jsonl"
    code = cli.main(["candidates", str(tmp_path / "g.csv"),
                    str(tmp_path / "n.csv"), "--space", "nb201", "--by", "g", "n", "--count", "8",
                    "--min-distance", "3", "-o", str(out)])
    assert code == 0 and "8 candidates" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["arch"] for r in rows] == top.column("arch").to_pylist() and rows[0]["distance"] is None


def test_topk_keys_are_not_score_keys():
    assert "topk_min_distance" not in SCORE_KEYS and "topk_by" not in SCORE_KEYS


@pytest.mark.ray
def test_real_runs_give_one_list_for_any_actor_count_and_report_recomputes_it(tmp_path, data_dir, ray_cluster, capsys):
    from gradsign.pipeline.driver.run import run

    keys = dict(proxies="[gradsign,params]", topk_by="[gradsign,params]", topk_min_distance=2, topk=5, sample__size=8)
    one = run(small_config(tmp_path / "a", data_dir, ray__num_actors=1, shard_size=5, **keys))
    two = run(small_config(tmp_path / "b", data_dir, ray__num_actors=2, shard_size=3, **keys))
    first = (one.run_dir / "topk.jsonl").read_text()
    assert first == (two.run_dir / "topk.jsonl").read_text()
    rows = [json.loads(line) for line in first.splitlines()]
    assert rows and rows[0]["distance"] is None and all(r["distance"] >= 2 for r in rows[1:])
    archs = [r["arch"] for r in rows]
    assert all(NB201.distance(x, y) >= 2 for i, x in enumerate(archs) for y in archs[:i])
    assert [r["gradsign+params"] for r in rows] == sorted((r["gradsign+params"] for r in rows), reverse=True)
    # the same list from the stored scores, by `gradsign report` (nothing rescored), rerun: identical
    again = tmp_path / "again.jsonl"
    assert cli.main(["report", str(one.run_dir), "--topk-distance", "2", "--topk-by", "gradsign", "params",
                     "-o", str(again)]) == 0
    assert again.read_text() == first
    rerun = run(small_config(tmp_path / "a", data_dir, ray__num_actors=1, shard_size=5, **keys))
    assert (rerun.run_dir / "topk.jsonl").read_text() == first
    # another d: written beside, the run's own list untouched
    assert cli.main(["report", str(one.run_dir), "--topk-distance", "4"]) == 0
    wide = [json.loads(line) for line in (one.run_dir / "topk-d4.jsonl").read_text().splitlines()]
    assert (one.run_dir / "topk-d4.parquet").is_file() and (one.run_dir / "topk.jsonl").read_text() == first
    assert wide[0]["arch"] == archs[0] and all(r["distance"] >= 4 for r in wide[1:])
