"""Scores over a population (AZ-NAS's rank aggregate) and proxies that share one computation: the scorer
computes a family once per network with the values each member gives alone; the reducer adds the aggregate
over exactly the rows it holds, ranks by it, and leaves failed rows out."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from gradsign import spaces
from gradsign.actors import proxies
from gradsign.actors.proxies import az_nas
from gradsign.actors.scorer import Scorer, arch_seed
from gradsign.pipeline.outputs.reducer import Reducer

AZ = ["az_nas_expressivity", "az_nas_progressivity", "az_nas_trainability", "flops"]
ARCHS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_1x1~2|",
]


def test_a_family_is_computed_once_with_each_member_s_own_value(cifar10_batch):
    x, y = cifar10_batch
    scorer = Scorer("nb201", AZ, x.numpy(), y.numpy(), num_classes=10, seed=0)
    calls = []
    original = scorer.proxies["az_nas_expressivity"].family_values

    def counted(*args):
        calls.append(1)
        return original(*args)

    for name in AZ[:3]:
        scorer.proxies[name].family_values = counted
    space = spaces.get("nb201")
    table = scorer({"arch_id": [space.arch_id(a) for a in ARCHS], "arch": ARCHS})
    assert len(calls) == len(ARCHS)  # one computation per network for the three columns
    for row, arch in enumerate(ARCHS):
        for name in AZ:
            torch.manual_seed(arch_seed(0, arch))
            alone = proxies.get(name)(space.build(arch, 10), x, y)
            assert table.column(name)[row].as_py() == pytest.approx(alone, rel=1e-6, abs=1e-9), (arch, name)


def _rows(values: dict[str, list[float]], errors: list[str | None], first: int = 100) -> pa.Table:
    space = spaces.get("nb201")
    n = len(errors)
    ids = list(range(first, first + n))
    return pa.table({"arch_id": pa.array(ids, pa.int64()), "arch": [space.arch(i) for i in ids],
                     **{k: pa.array(v, pa.float64()) for k, v in values.items()},
                     "nonfinite": pa.array([None] * n, pa.string()), "seconds": [0.0] * n,
                     "error": pa.array(errors, pa.string())})


def test_reducer_adds_the_aggregate_over_the_rows_it_holds():
    rng = np.random.default_rng(0)
    values = {name: rng.normal(size=6).tolist() for name in AZ}
    values["az_nas_trainability"][4] = math.nan  # a failed proxy: out of the population
    errors = [None, None, None, None, "az_nas_trainability: boom", None]
    reducer = Reducer(AZ, spaces.get("nb201"), None, topk=3, topk_by="az_nas")
    reducer.add(_rows({k: v[:3] for k, v in values.items()}, errors[:3]))
    reducer.add(_rows({k: v[3:] for k, v in values.items()}, errors[3:], first=103))
    assert "az_nas" in reducer.names
    cols = reducer.columns()
    keep = [0, 1, 2, 3, 5]
    expected = az_nas.aggregate({k: [values[k][i] for i in keep] for k in AZ})
    got = cols.values["az_nas"]
    assert math.isnan(got[4])
    assert np.allclose(got[keep], expected)
    top = reducer.top(cols)
    best = [keep[i] for i in np.argsort(-np.asarray(expected), kind="stable")[:3]]
    assert top.column("arch_id").to_pylist() == [100 + i for i in best]
    assert "az_nas" in top.column_names


def test_minus_infinity_is_ranked_last_not_left_out():
    values = {name: [1.0, 2.0, 3.0] for name in AZ}
    values["az_nas_trainability"] = [-math.inf, 2.0, 3.0]  # an identity network's trainability
    reducer = Reducer(AZ, spaces.get("nb201"), None)
    reducer.add(_rows(values, [None, None, None]))
    got = reducer.columns().values["az_nas"]
    assert np.allclose(got, az_nas.aggregate(values)) and np.isfinite(got).all()


def test_no_aggregate_without_every_component():
    reducer = Reducer(AZ[:3], spaces.get("nb201"), None)
    assert reducer.names == AZ[:3]
