"""tools.compare_proxies: the join keeps only cells every source scored and refuses disagreeing archs; the
bootstrap interval brackets the estimate and collapses for a perfect ranking; ensembles are rank averages."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gradsign import spaces
from tools import compare_proxies as cp


def _table(path, ids, column, values, archs=None):
    space = spaces.get("nb201")
    archs = archs or [space.arch(i) for i in ids]
    pq.write_table(pa.table({"arch_id": pa.array(ids, pa.int64()), "arch": archs, column: values,
                             "error": pa.array([None] * len(ids), pa.string())}), path)
    return str(path)


def test_join_keeps_the_cells_every_source_scored(tmp_path):
    a = _table(tmp_path / "a.parquet", [1, 2, 3, 4], "gradsign", [1.0, 2.0, 3.0, 4.0])
    b = _table(tmp_path / "b.parquet", [2, 3, 4, 5], "gradsign", [20.0, 30.0, None, 50.0])
    spec = cp.Spec("nb201", [cp.Source(a, {"gradsign": "gradsign"}), cp.Source(b, {"gradsign": "gradsign_bn_batch"})],
                   "unused", "unused")
    table = cp.joined(spec)
    assert table.column("arch_id").to_pylist() == [2, 3, 4]
    assert table.column("gradsign").to_pylist() == [2.0, 3.0, 4.0]
    got = table.column("gradsign_bn_batch").to_pylist()
    assert got[:2] == [20.0, 30.0] and math.isnan(got[2])


def test_join_refuses_sources_that_disagree_on_an_arch(tmp_path):
    space = spaces.get("nb201")
    a = _table(tmp_path / "a.parquet", [1, 2], "x", [1.0, 2.0])
    b = _table(tmp_path / "b.parquet", [1, 2], "y", [1.0, 2.0], archs=[space.arch(1), space.arch(7)])
    with pytest.raises(ValueError, match="arch_id 2"):
        cp.joined(cp.Spec("nb201", [cp.Source(a, {"x": "x"}), cp.Source(b, {"y": "y"})], "u", "u"))


def test_bootstrap_interval_brackets_the_estimate():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=300)
    noisy = truth + rng.normal(size=300)
    table = pa.table({"arch_id": np.arange(300), "perfect": truth * 2 + 1, "noisy": noisy})
    rows = {r["column"]: r for r in cp.statistics(table, truth, ["perfect", "noisy"], None, resamples=200)}
    assert rows["perfect"]["spearman"] == pytest.approx(1.0)
    assert rows["perfect"]["spearman_lo"] == pytest.approx(1.0)
    r = rows["noisy"]
    assert r["spearman_lo"] < r["spearman"] < r["spearman_hi"]
    assert r["kendall_lo"] < r["kendall"] < r["kendall_hi"]
    assert 0.5 < r["spearman"] < 0.85 and r["spearman_hi"] - r["spearman_lo"] < 0.2


def test_ensemble_is_the_mean_of_percentile_ranks():
    table = pa.table({"a": [1.0, 2.0, 3.0, 4.0], "b": [40.0, 30.0, 20.0, 10.0], "c": [1.0, 3.0, 2.0, float("nan")]})
    out = cp.with_ensembles(table, [["a", "b"], ["a", "c"]])
    assert out.column("a+b").to_pylist() == pytest.approx([0.625] * 4)
    ac = out.column("a+c").to_pylist()
    assert ac[:3] == pytest.approx([(1 / 4 + 1 / 3) / 2, (2 / 4 + 3 / 3) / 2, (3 / 4 + 2 / 3) / 2])
    assert math.isnan(ac[3])
