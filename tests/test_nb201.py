import csv
import re

import pytest
import torch

from gradsign import spaces
from gradsign.spaces.nb201 import OPS, ArchError, Cell

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_parse_format_round_trip_and_ids():
    cell = Cell.parse(ARCH)
    assert str(cell) == ARCH
    assert Cell.from_id(cell.arch_id) == cell
    assert Cell.from_id(0).ops == ("none",) * 6
    assert Cell.from_id(5**6 - 1).ops == ("avg_pool_3x3",) * 6
    # first edge is the most significant base-5 digit
    assert Cell.parse("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|").arch_id == 5**5


@pytest.mark.parametrize("bad, words", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "3 '+'-separated"),
    ("|conv~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "unknown op 'conv'"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "node 2 must have 2 inputs"),
    ("|nor_conv_3x3~1|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "from node 0"),
    ("|nor_conv_3x3|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "not 'op~input'"),
    ("", "3 '+'-separated"),
])
def test_malformed_arch_says_what_is_wrong(bad, words):
    with pytest.raises(ArchError, match=re.escape(words)):
        Cell.parse(bad)


def test_canonical_enumeration_equals_benchmark_set(data_dir):
    space = spaces.get("nb201")
    archs = list(space)
    assert len(space) == len(archs) == 15625
    assert len(set(archs)) == 15625
    assert [space.arch_id(a) for a in archs[:50]] == list(range(50))
    with open(data_dir / "nb201_accuracy.csv") as f:
        official = {row["arch"] for row in csv.DictReader(f)}
    assert set(archs) == official


def test_unknown_space_lists_valid_ones():
    with pytest.raises(ValueError, match=r"valid spaces: (\S+, )*nb101, nb201, "):
        spaces.get("nb999")


@pytest.mark.slow  # builds every listed NB201 cell (minutes on one core)
def test_param_counts_match_peer_for_every_listed_cell(data_dir):
    """Builder parameter count == the peer library's `params` (millions) on every cell it lists."""
    space = spaces.get("nb201")
    classes = {"cifar10": 10, "cifar100": 100, "imagenet16_120": 120}
    seen = {k: 0 for k in classes}
    counts: dict[tuple[str, int], float] = {}
    with open(data_dir / "naslib_zc_nb201.csv") as f:
        for row in csv.DictReader(f):
            key = (row["arch"], classes[row["dataset"]])
            if key not in counts:
                net = space.build(row["arch"], key[1])
                counts[key] = sum(p.numel() for p in net.parameters()) / 1e6
            assert counts[key] == pytest.approx(float(row["params"]), abs=1e-6), row["arch"]
            seen[row["dataset"]] += 1
    assert all(n >= 100 for n in seen.values()), seen


def test_build_is_seeded_by_torch_rng_and_runs():
    space = spaces.get("nb201")
    torch.manual_seed(3)
    a = space.build(ARCH, 10)
    torch.manual_seed(3)
    b = space.build(ARCH, 10)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert a(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert a(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_sample_ids_are_seeded_distinct_and_sorted():
    space = spaces.get("nb201")
    ids = space.sample_ids(300, 1)
    assert ids == space.sample_ids(300, 1) and ids != space.sample_ids(300, 2)
    assert len(set(ids)) == 300 and ids == sorted(ids)
    assert all(op in OPS for op in Cell.from_id(ids[0]).ops)
