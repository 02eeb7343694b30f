"""The cohort engine scores K NB201 cells in one pass, each cell exactly as the per-cell engine
(and the loop) scores it, whatever K and whatever the mix; what it cannot vouch for goes one cell at a time."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import small_config
from gradsign import spaces
from gradsign.actors.cohort import CohortUnsupported, check_replay, cohort_scores, score_cohort
from gradsign.actors.per_sample import sign_sums, weighted_layers
from gradsign.actors.scorer import Scorer, arch_seed
from gradsign.pipeline.driver import config as config_mod
from gradsign.pipeline.driver.identity import content_identity
from gradsign.spaces.nb201 import OPS, Cell, NB201Space
from test_gradsign import CELLS, oracle_gradsign

SPACE = spaces.get("nb201")
SEED = 3
# Five cells that between them put every op on every edge (cell j: op (j + e) mod 5 on edge e), the
# all-none cell, and two cells whose output is cut off: these three score exactly 0.
LATIN = [str(Cell(tuple(OPS[(j + e) % len(OPS)] for e in range(6)))) for j in range(len(OPS))]
ALL_NONE = str(Cell(("none",) * 6))
MIX = LATIN + [ALL_NONE, CELLS[3], "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|none~1|none~2|"]
ZERO = set(MIX[len(LATIN):])


def build(arch: str) -> torch.nn.Module:
    torch.manual_seed(arch_seed(SEED, arch))
    return SPACE.build(arch, 10)


@pytest.fixture(scope="module")
def batch(cifar10_batch):
    """Three real images, their 16x16 centres (exactness does not depend on the resolution; tests stay fast)."""
    x, y = cifar10_batch
    return x[:3, :, 8:24, 8:24].contiguous(), y[:3]


@pytest.fixture(scope="module")
def per_cell(batch):
    """The per-cell hooks engine's score of every cell of MIX."""
    x, y = batch
    return {arch: sign_sums(build(arch), x, y).score() for arch in MIX}


def _agree(got: float, expected: float) -> None:
    if expected == 0:
        assert got == 0  # exact zeros stay exact
    else:
        assert got == pytest.approx(expected, rel=1e-3)


def test_replayed_weights_are_space_build_bit_for_bit():
    cohort = SPACE.build_cohort(MIX, 10, seeds=[arch_seed(SEED, a) for a in MIX])
    for k, arch in enumerate(MIX):
        layers = cohort.cell_layers(k)
        built = weighted_layers(build(arch))
        assert len(layers) == len(built)
        for (weight, bias), (_, m) in zip(layers, built):
            assert torch.equal(weight.reshape(m.weight.shape), m.weight)
            assert bias is None if m.bias is None else torch.equal(bias, m.bias)
    copied = SPACE.build_cohort(MIX, 10, nets=[build(a) for a in MIX]).state_dict()
    assert all(torch.equal(v, copied[k]) for k, v in cohort.state_dict().items())


@pytest.mark.parametrize("size", [len(MIX), 4, 1])
def test_cohort_equals_the_per_cell_engine_for_every_size_and_mix(size, batch, per_cell):
    x, y = batch
    order = {len(MIX): MIX, 4: MIX[::-1], 1: [MIX[1], MIX[-1]]}[size]  # other mixes in each cohort
    for start in range(0, len(order), size):
        part = order[start: start + size]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback
            got = score_cohort(SPACE, part, [arch_seed(SEED, a) for a in part], 10, x, y)
        assert [g.engine for g in got] == ["cohort"] * len(part)
        for arch, value in zip(part, got):
            _agree(value, per_cell[arch])
            assert (value == 0) == (arch in ZERO)


def test_cohort_equals_the_loop(batch):
    x, y = batch[0][:2], batch[1][:2]
    cells = LATIN + [ALL_NONE]  # every op on every edge, and an exact zero
    net = SPACE.build_cohort(cells, 10, seeds=[arch_seed(SEED, a) for a in cells])
    got = cohort_scores(net, x, y, chunk_size=1)  # two chunks of samples: no difference but rounding
    for arch, value in zip(cells, got):
        _agree(value, oracle_gradsign(build(arch), x, y))


def test_a_cohort_it_cannot_vouch_for_goes_cell_by_cell(batch):
    """Inputs so large that a gradient entry may overflow: the overflow bound fails, the cohort engine
    refuses (it does not mask per cell), and the scorer's per-cell path counts the non-finite entries."""
    x, y = batch[0][:2] * 1e36, batch[1][:2]
    with pytest.warns(RuntimeWarning, match="cannot vouch"):
        assert score_cohort(SPACE, MIX[4:5], [1], 10, x, y) is None
    with pytest.raises(CohortUnsupported):
        cohort_scores(SPACE.build_cohort(MIX[4:5], 10, seeds=[1]), x, y)


class ShiftedSpace(NB201Space):
    """NB201 whose build draws one extra number first: its cohorts' replayed weights would be wrong."""

    name = "nb201-shifted"

    def build(self, arch, num_classes):
        torch.rand(1)
        return super().build(arch, num_classes)


def test_a_replay_that_differs_from_build_turns_the_cohort_off():
    with pytest.raises(CohortUnsupported, match="differs from space.build"):
        check_replay(ShiftedSpace(), MIX[1], 5, 10)
    check_replay(SPACE, MIX[1], 5, 10)  # NB201's own replay passes


def _rows(archs):
    return {"arch_id": list(range(len(archs))), "arch": archs}


def test_scorer_values_do_not_depend_on_the_cohort_size(batch):
    x, y = batch
    archs = MIX[5:] + ["|bad~0|+|none~0|none~1|+|none~0|none~1|none~2|"] + MIX[:1]
    common = dict(space="nb201", proxy_names=["gradsign", "params"], images=x.numpy(), labels=y.numpy(),
                  num_classes=10, seed=SEED, device="cpu")
    one = Scorer(**common).__call__(_rows(archs)).to_pydict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scorer = Scorer(**common, cohort=4)
        many = scorer(_rows(archs)).to_pydict()
    assert scorer.cohort_ready() and scorer.cohort_timing.cells == len(archs) - 1
    assert many["error"] == one["error"] and "arch" in many["error"][len(MIX) - 5]
    assert np.array_equal(many["params"], one["params"], equal_nan=True)
    for a, b in zip(one["gradsign"], many["gradsign"]):
        if math.isnan(a):
            assert math.isnan(b)
        else:
            _agree(b, a)
    assert all(s > 0 for s in many["seconds"])
    # another engine (or a proxy other than GradSign) never goes through the cohort
    assert not Scorer(**common, cohort=4, proxy_options={"gradsign": {"engine": "loop"}}).cohort_ready()


def test_scorer_falls_back_per_cell_and_counts_nonfinite(batch):
    x, y = batch
    common = dict(space="nb201", proxy_names=["gradsign"], images=(x * 1e36).numpy(), labels=y.numpy(),
                  num_classes=10, seed=SEED, device="cpu")
    archs = MIX[4:5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scorer = Scorer(**common, cohort=2)
        many = scorer(_rows(archs)).to_pydict()
        one = Scorer(**common)(_rows(archs)).to_pydict()
    assert scorer.cohort_timing.fallbacks == 1 and scorer.cohort_timing.cells == 0
    assert many["nonfinite"] == one["nonfinite"] and any(many["nonfinite"])
    assert np.allclose(many["gradsign"], one["gradsign"], equal_nan=True)


def test_bad_cohort_size_is_refused(batch, tmp_path, data_dir):
    x, y = batch
    with pytest.raises(ValueError, match="cohort"):
        Scorer("nb201", ["gradsign"], x.numpy(), y.numpy(), 10, 0, device="cpu", cohort=0)
    with pytest.raises(config_mod.ConfigError, match="cohort.size"):
        small_config(tmp_path, data_dir, "cohort.size=0")


def test_identity_does_not_depend_on_the_cohort_size(tmp_path, data_dir):
    one = small_config(tmp_path, data_dir)
    many = small_config(tmp_path, data_dir, "cohort.size=32", "cohort.memory_mb=100")
    assert config_mod.score_identity(one) == config_mod.score_identity(many)
    assert content_identity(one, "f", None) == content_identity(many, "f", None)


@pytest.mark.ray
def test_a_run_resumes_with_another_cohort_size_and_the_same_scores(tmp_path, data_dir, ray_cluster):
    from gradsign.pipeline.driver.run import run

    small = ("sample.size=4", "shard_size=2")
    first = run(small_config(tmp_path, data_dir, *small, "cohort.size=2"))  # 4 cells, shards of 2: one cohort each
    parts = sorted((first.run_dir / "scores").glob("part-*.parquet"))
    before = pq.read_table(first.run_dir / "scores").sort_by("arch_id").to_pydict()
    for part in parts[1:]:
        part.unlink()
    resumed = run(small_config(tmp_path, data_dir, *small, "cohort.size=1"))  # same folder, per-cell path
    assert resumed.summary["shards_resumed"] == 1 and resumed.summary["archs_this_run"] == 2
    after = pq.read_table(first.run_dir / "scores").sort_by("arch_id").to_pydict()
    assert after["arch"] == before["arch"]
    for a, b in zip(before["gradsign"], after["gradsign"]):
        _agree(a, b)


def test_throughput_csv_rows(tmp_path):
    """`bench throughput` summaries -> results/gpu/throughput.csv rows: one per measured actor count, the
    header once, a row without a steady rate left out."""
    import csv

    from tools.throughput_csv import COLUMNS, append, rows_of

    summary = {"rows": [{"actors": 1, "steady_archs_per_second": 12.345, "gpu_mib_per_actor": 1000.4},
                        {"actors": 2, "steady_archs_per_second": None, "gpu_mib_per_actor": None},
                        {"actors": 4, "steady_archs_per_second": 40.0, "gpu_mib_per_actor": None}]}
    out = tmp_path / "throughput.csv"
    for k in (1, 32):
        append(out, rows_of(summary, "cpu (rehearsal)", "nb201", "cohort" if k > 1 else "per-cell", k, 0, f"cmd {k}"))
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 4
    assert [(r["cohort"], r["actors"], r["cells_per_s"], r["gpu_mem_mib"]) for r in rows][:2] == [
        ("1", "1", "12.35", "1000"), ("1", "4", "40.0", "")]
    assert rows[-1]["engine"] == "cohort" and rows[-1]["command"] == "cmd 32"
