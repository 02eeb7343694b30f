"""NAS-Bench-101: official hashes, pruning, arch strings, bad specs, networks and parameter counts.

Oracles: the official repository's own hash tests (equalities/inequalities in
``nasbench/tests/graph_util_test.py``), the official ``hash_module`` as shipped inside the
``nasbench_pytorch`` dependency (run, never copied), published (spec, hash, trainable parameters)
triples, and the NASLib peer table's ``params``/``flops`` columns.
"""

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from gradsign import spaces
from gradsign.actors import proxies
from gradsign.spaces.nb101 import build_network, trainable_parameters
from gradsign.spaces.nb101_spec import (OPS, Spec, SpecError, format_arch, graph_hash, interior_perms, parse_arch,
                                        spec_from_code)

CONV3, CONV1, POOL = OPS
NOTEBOOK = ([[0, 1, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0, 0],
             [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]],
            ["input", CONV1, CONV3, CONV3, CONV3, POOL, "output"])
# What the official API returned for NOTEBOOK (NASBench.ipynb): the stored spec and its parameter count.
NOTEBOOK_STORED = ([[0, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1],
                    [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]],
                   ["input", CONV3, CONV1, POOL, CONV3, CONV3, "output"])
# The first hash of the official data set, with its stored spec and 8.55553 M parameters (NNI's
# NAS-Bench-101 example, read from nasbench_only108.tfrecord).
FIRST_HASH = "00005c142e6f48ac74fdcf73e3439874"
FIRST = ([[0, 1, 0, 0, 1, 1, 0], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 1, 0],
          [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]],
         ["input", CONV3, POOL, CONV3, CONV3, CONV1, "output"])
# A stored spec and its trainable parameters as the official API printed them (nasbench issue #23).
ISSUE23 = ([[0, 1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0],
            [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]],
           ["input", CONV1, CONV3, POOL, CONV3, CONV3, "output"])


def official_hash(matrix, labels):
    from nasbench_pytorch.model import graph_util  # the official algorithm as the dependency ships it

    return graph_util.hash_module(np.asarray(matrix), list(labels))


@pytest.fixture(scope="module")
def rows(data_dir):
    return [json.loads(line) for line in (data_dir / "nb101_naslib_500.jsonl").read_text().splitlines()]


def random_specs(n, seed=0):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        v = rng.randint(2, 7)
        matrix = [[int(i < j and rng.random() < 0.45) for j in range(v)] for i in range(v)]
        ops = ["input", *(rng.choice(OPS) for _ in range(v - 2)), "output"]
        try:
            out.append(Spec.from_matrix(matrix, ops))
        except SpecError:
            continue
    return out


# --- the hash ---------------------------------------------------------------------------------------

def test_hash_agrees_with_the_official_tests_assertions():
    m = [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]]
    assert graph_hash(m, [-1, 1, 2, -2]) == graph_hash(m, [-1, 2, 1, -2])
    m1 = [[0, 1, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    m2 = [[0, 1, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    m3 = [[0, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    h1 = graph_hash(m1, [-1, 1, 2, 3, -2])
    assert h1 == graph_hash(m2, [-1, 2, 3, 1, -2]) == graph_hash(m3, [-1, 2, 1, 3, -2])
    assert graph_hash(m1, [-1, 2, 3, 1, -2]) != h1 and graph_hash(m1, [-1, 2, 1, 3, -2]) != h1
    chain = [[int(j == i + 1) for j in range(5)] for i in range(5)]
    assert graph_hash(chain, [-1, 1, 0, 0, -2]) != graph_hash(chain, [-1, 0, 0, 1, -2])  # needs self
    d = [[0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    assert graph_hash(d, [-1, 1, 0, -2]) != graph_hash(d, [-1, 0, 1, -2])  # needs direction
    t = [[0, 1, 1, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1, 0],
         [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]]
    assert graph_hash(t, [-1, 1, 0, 0, 0, 0, -2]) != graph_hash(t, [-1, 0, 0, 0, 1, 0, -2])  # needs in-nbrs


def test_hash_is_bit_for_bit_the_official_algorithm(rows):
    specs = [Spec.from_matrix(r["matrix"], r["ops"]) for r in rows] + random_specs(300)
    for spec in specs:
        assert spec.hash() == official_hash(spec.matrix, spec.labels)
    assert len({Spec.from_matrix(r["matrix"], r["ops"]).hash() for r in rows}) == 292  # 500 rows, 292 graphs


def test_published_hash_spec_and_stored_representatives():
    first = Spec.from_matrix(*FIRST)
    assert first.hash() == FIRST_HASH and first.representative() == first
    stored = Spec.from_matrix(*NOTEBOOK_STORED)
    assert Spec.from_matrix(*NOTEBOOK).representative() == stored  # the spec the official API returned
    assert Spec.from_matrix(*ISSUE23).representative() == Spec.from_matrix(*ISSUE23)


# --- pruning, strings, canonical form ----------------------------------------------------------------

def test_pruning_removes_vertices_off_every_input_output_path():
    # vertex 2 has no way to the output, vertex 3 no way from the input
    spec = Spec.from_matrix([[0, 1, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0] * 5],
                            ["input", CONV3, POOL, CONV1, "output"])
    assert spec.matrix == ((0, 1, 0), (0, 0, 1), (0, 0, 0)) and spec.ops == ("input", CONV3, "output")
    # an 8-vertex spec is valid when it prunes to 7 or fewer, and hashes as the pruned graph
    big = [[0] * 8 for _ in range(8)]
    for a, b in [(0, 1), (1, 2), (2, 7), (0, 3), (3, 7), (4, 5), (5, 6)]:
        big[a][b] = 1
    pruned = Spec.from_matrix(big, ["input", CONV3, CONV3, POOL, CONV1, CONV1, CONV1, "output"])
    assert pruned.num_vertices == 5 and pruned.hash() == parse_arch(format_arch(pruned)).hash()
    # NASLib's first row: vertex 5 has no out-edge
    assert Spec.from_matrix(*([[0, 1, 1, 1, 1, 0, 1], [0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 1],
                                [0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1, 1], [0] * 7, [0] * 7],
                               ["input", POOL, POOL, CONV3, CONV3, CONV3, "output"])).num_vertices == 6


def test_arch_string_round_trip_and_canonical_form(rows):
    space = spaces.get("nb101")
    assert str(Spec.from_matrix(*NOTEBOOK_STORED)) == \
        "conv3x3~0|conv1x1~0|maxpool3x3~0|conv3x3~0|conv3x3~4|output~1,2,3,5"
    for spec in random_specs(200, seed=1) + [Spec.from_matrix(r["matrix"], r["ops"]) for r in rows[:50]]:
        text = format_arch(spec)
        assert parse_arch(text) == spec
        canonical = space.canonical(text)
        assert space.canonical(canonical) == canonical and space.key(canonical) == spec.hash()
        # any relabelling of the interior vertices that keeps a DAG order is the same graph
        for perm in interior_perms(spec.num_vertices)[:6]:
            inv = np.argsort(perm)
            m = np.asarray(spec.matrix)[np.ix_(inv, inv)]
            if not np.tril(m).any():
                other = Spec.from_matrix(m, [spec.ops[i] for i in inv])
                assert space.canonical(other) == canonical and other.hash() == spec.hash()
    long_names = "conv3x3-bn-relu~0|conv1x1-bn-relu~0|maxpool3x3~0|conv3x3~0|conv3x3~4|output~1,2,3,5"
    assert space.canonical(long_names) == "conv3x3~0|conv1x1~0|maxpool3x3~0|conv3x3~0|conv3x3~4|output~1,2,3,5"


@pytest.mark.parametrize("matrix, ops, message", [
    ([[0, 1, 0], [0, 0, 1]], ["input", CONV3, "output"], "must be square"),
    ([[0, 1], [1, 0]], ["input", "output"], "strictly upper-triangular"),
    ([[1, 1], [0, 0]], ["input", "output"], "strictly upper-triangular"),
    ([[0, 2], [0, 0]], ["input", "output"], "must be 0 or 1"),
    ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "output"], "op count 2 != 3 vertices"),
    ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv5x5", "output"], "unknown op 'conv5x5' at vertex 1"),
    ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], [CONV3, CONV3, "output"], "first op must be 'input'"),
    ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", CONV3, POOL], "last op must be 'output'"),
    ([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ["input", CONV3, "output"], "input is not connected to output"),
    ([[int(j == i + 1) for j in range(8)] for i in range(8)], ["input"] + [CONV3] * 6 + ["output"],
     "too many vertices: 8 after pruning"),
    ([[int(i < j and (i, j) not in {(0, 6), (1, 6), (0, 5)}) for j in range(7)] for i in range(7)],
     ["input"] + [CONV3] * 5 + ["output"], "too many edges: 18 after pruning"),
    ([[0]], ["input"], "at least 2 vertices"),
])
def test_bad_specs_are_one_clear_error(matrix, ops, message):
    with pytest.raises(SpecError, match=message):
        Spec.from_matrix(matrix, ops)


@pytest.mark.parametrize("arch, message", [
    ("", "empty"),
    ("conv3x3~0|output", "is not 'op~src"),
    ("conv3x3~0|output~2", "vertex 2 reads from vertex 2"),
    ("conv7x7~0|output~1", "unknown op 'conv7x7' at vertex 1"),
    ("conv3x3~0|conv3x3~1", "last vertex must be 'output'"),
    ("conv3x3~0,0|output~1", "lists input 0 twice"),
    ("conv3x3~0|conv3x3~0|output~1", None),  # valid: vertex 2 is pruned
])
def test_bad_arch_strings_are_one_clear_error(arch, message):
    space = spaces.get("nb101")
    if message is None:
        assert space.canonical(arch) == "conv3x3~0|output~1"
        return
    with pytest.raises(SpecError, match=message):
        space.canonical(arch)


# --- networks ----------------------------------------------------------------------------------------

def test_network_has_only_real_weights_and_official_parameter_counts():
    space = spaces.get("nb101")
    for spec, official in ((NOTEBOOK, 2_694_282), (FIRST, 8_555_530), (ISSUE23, 32_426_634)):
        torch.manual_seed(0)
        net = space.build(space.canonical(spec), 10)
        assert sum(p.numel() for p in net.parameters()) == trainable_parameters(net) == official
        kinds = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)
        owners = {id(p) for m in net.modules() if isinstance(m, kinds) for p in m.parameters(recurse=False)}
        assert all(id(p) in owners for p in net.parameters())
        assert not [m for m in net.modules() if type(m).__name__ == "Placeholder"]
        x = torch.randn(2, 3, 32, 32)
        assert net(x).shape == (2, 10)
        assert proxies.get("params")(net, x, None) == official / 1e6


def test_params_and_flops_match_the_peer_table_on_30_rows(rows):
    """The peer built each row's pruned spec in its own vertex order: so do we here (``given``), and the
    numbers match exactly; the benchmark's network (the representative) matches wherever the row's spec
    splits channels the same way, and always matches the official count (test above)."""
    params, flops = proxies.get("params"), proxies.get("flops")
    x = torch.zeros(1, 3, 32, 32)
    same = 0
    for r in rows[:30]:
        spec = Spec.from_matrix(r["matrix"], r["ops"])
        given = build_network(spec, 10)
        assert params(given, x, None) == pytest.approx(r["params"], abs=1e-9)
        assert flops(given, x, None) == pytest.approx(r["flops"], abs=1e-6)
        rep = build_network(spec.representative(), 10)
        same += params(rep, x, None) == pytest.approx(r["params"], abs=1e-9)
    assert same >= 25  # 27 of these 30 rows split channels as the representative does


def test_gradsign_engines_agree_on_an_nb101_cell(cifar10_batch):
    from gradsign.actors.per_sample import sign_sums

    space = spaces.get("nb101")
    arch = space.canonical(NOTEBOOK)
    x, y = cifar10_batch[0][:4], cifar10_batch[1][:4]
    scores = {}
    for engine in ("loop", "hooks"):
        torch.manual_seed(1)
        scores[engine] = sign_sums(space.build(arch, 10), x, y, engine=engine).score()
    assert scores["loop"] > 0 and abs(scores["hooks"] - scores["loop"]) <= 1e-3 * scores["loop"]


def test_spec_from_code_is_the_generation_order():
    # V=4: bitmask 0b110011 = edges 0->1, 0->2, 1->3, 2->3; labelling code 5 = (1, 2) in product order
    spec = spec_from_code(4, 0b110011, 5)
    assert spec.matrix == ((0, 1, 1, 0), (0, 0, 0, 1), (0, 0, 0, 1), (0, 0, 0, 0))
    assert spec.ops == ("input", CONV1, POOL, "output")
