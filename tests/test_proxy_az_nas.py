"""AZ-NAS components and aggregate: checked against a plain reimplementation of the authors' definitions
written here (explicit walk through the NB201 network, numpy covariance and eigenvalues, numpy pixel
unshuffle, per-position outer products, numpy spectral norm), the block ends of each space, the refusals,
and the population-level rank aggregate against scipy and hand-computed numbers."""

from __future__ import annotations

import hashlib
import math
import pickle

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from gradsign import spaces
from gradsign.actors import proxies
from gradsign.actors.proxies import az_nas

CELLS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
]
IDENTITY = "|skip_connect~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"  # every cell's output is its input
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"  # every cell's output is zero
NB101_ARCH = "conv3x3~0|maxpool3x3~1|conv3x3~2|conv3x3~0|conv1x1~0,3,4|output~2,5"
NAMES = ["az_nas_expressivity", "az_nas_progressivity", "az_nas_trainability"]


def nb201(arch: str, seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return spaces.get("nb201").build(arch, 10)


# --------------------------------------------------------------------- the reference, written plainly


def ref_generator(net: nn.Module, shape: tuple, seed: int) -> torch.Generator:
    h = hashlib.sha256(("az_nas|%d|%s" % (seed, tuple(shape))).encode())
    for p in net.parameters():
        h.update(p.detach().numpy().astype(np.float32).tobytes())
    g = torch.Generator()
    g.manual_seed(int.from_bytes(h.digest()[:8], "little") % 2**63)
    return g


def ref_authors_init(net: nn.Module, g: torch.Generator) -> None:
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = torch.empty(m.weight.shape)
            nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu", generator=g)
            m.weight.data = w
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            m.weight.data.fill_(1.0)
            m.bias.data.zero_()


def ref_entropy(feature: torch.Tensor) -> float:
    x = feature.detach().numpy().astype(np.float64)
    b, c, h, w = x.shape
    rows = np.transpose(x, (0, 2, 3, 1)).reshape(b * h * w, c)
    cov = np.cov(rows, rowvar=False, bias=True)
    eig = np.linalg.eigvalsh(cov)
    p = eig / eig.sum()
    return float(sum(-q * math.log(q + 1e-8) for q in p))


def ref_unshuffle(g: np.ndarray, r: int) -> np.ndarray:
    b, c, h, w = g.shape  # channel order differs from torch's; the singular values do not care
    return g.reshape(b, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4).reshape(b, c * r * r, h // r, w // r)


def ref_components(net: nn.Module, images: torch.Tensor, init="default", data="random", seed=0) -> dict:
    g = ref_generator(net, tuple(images.shape), seed)
    if init == "authors":
        ref_authors_init(net, g)
    x = torch.randn(tuple(images.shape), generator=g) if data == "random" else images
    net.train()
    feats = [net.stem(x)]  # the authors' extract_cell_features: the stem, then every cell
    for cell in net.cells:
        feats.append(cell(feats[-1]))
    e = [ref_entropy(f) for f in feats]
    expressivity = sum(e)
    progressivity = min(e[i] - e[i - 1] for i in range(1, len(e)))
    scores = []
    for i in range(len(feats) - 1, 0, -1):
        v = (torch.randint(0, 2, feats[i].shape, generator=g) * 2 - 1).float()
        (u,) = torch.autograd.grad(feats[i], feats[i - 1], grad_outputs=v, retain_graph=True)
        if u.shape == v.shape and bool((u == v).all()):
            scores.append(-math.inf)
            continue
        u, v = u.numpy().astype(np.float64), v.numpy().astype(np.float64)
        if u.shape[2] != v.shape[2]:
            u = ref_unshuffle(u, u.shape[2] // v.shape[2])
        b, _, h, w = v.shape
        mat = np.zeros((u.shape[1], v.shape[1]))
        for n in range(b):  # the mean over positions of the outer products g_in g_out^T (a row at a time)
            for y in range(h):
                mat += u[n, :, y, :] @ v[n, :, y, :].T
        mat /= b * h * w
        sigma = np.linalg.norm(mat, 2)
        scores.append(-sigma - 1 / (sigma + 1e-6) + 2)
    trainability = float(np.mean(scores))
    worst = lambda t: -math.inf if math.isnan(t) else t  # noqa: E731
    return {"expressivity": worst(expressivity), "progressivity": worst(progressivity),
            "trainability": worst(trainability)}


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    return a == b if math.isinf(a) or math.isinf(b) else math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


# --------------------------------------------------------------------------------------- the components


@pytest.mark.parametrize("arch", CELLS)
@pytest.mark.parametrize("data", ["random", "batch"])
def test_components_equal_the_plain_reference_on_real_nb201_cells(arch, data, cifar10_batch):
    x, y = cifar10_batch
    got = az_nas.components(nb201(arch), x, y, data=data)
    want = ref_components(nb201(arch), x, data=data)
    for k in az_nas.COMPONENTS:
        assert math.isfinite(got[k]), (k, got[k])
        assert close(got[k], want[k]), (k, got[k], want[k])
    assert got["complexity"] == proxies.get("flops")(nb201(arch), x, y)  # complexity is the flops column
    assert 0 < got["expressivity"] < 18 * math.log(64)  # 18 block ends, at most log(C) each
    assert got["trainability"] < 0.01  # -s - 1/s + 2 <= 0 up to the 1e-6


def test_authors_init_equals_the_reference_and_sets_kaiming_fan_in(cifar10_batch):
    x, y = cifar10_batch
    net = nb201(CELLS[0])
    got = az_nas.components(net, x, y, init="authors")
    want = ref_components(nb201(CELLS[0]), x, init="authors")
    for k in az_nas.COMPONENTS:
        assert close(got[k], want[k]), (k, got[k], want[k])
    default = az_nas.components(nb201(CELLS[0]), x, y)
    assert all(got[k] != default[k] for k in az_nas.COMPONENTS)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.weight[0].numel() >= 144]
    weights = torch.cat([m.weight.detach().flatten() * math.sqrt(m.weight[0].numel() / 2) for m in convs])
    assert abs(float(weights.std()) - 1) < 0.02  # N(0, 2/fan_in), standardised


@pytest.mark.parametrize("options", [{}, {"data": "batch"}, {"init": "authors"}, {"seed": 7}])
def test_registered_proxies_equal_the_components(options, cifar10_batch):
    x, y = cifar10_batch
    both = az_nas.components(nb201(CELLS[1]), x, y, complexity=False, **options)
    assert set(both) == set(az_nas.COMPONENTS)
    for name in NAMES:
        value = proxies.get(name, **options)(nb201(CELLS[1]), x, y)
        assert isinstance(value, float)
        assert close(value, both[name.removeprefix("az_nas_")], rel=1e-9), (name, value)


def test_draws_depend_on_weights_shape_and_seed_not_on_image_values(cifar10_batch):
    x, y = cifar10_batch
    base = az_nas.components(nb201(CELLS[0]), x, y, complexity=False)
    assert az_nas.components(nb201(CELLS[0]), x, y, complexity=False) == base  # deterministic
    assert az_nas.components(nb201(CELLS[0]), x.flip(0) * 3, y, complexity=False) == base  # random: shape only
    assert az_nas.components(nb201(CELLS[0]), x, y, complexity=False, seed=1) != base
    assert az_nas.components(nb201(CELLS[0], seed=4), x, y, complexity=False) != base  # another run seed
    real = az_nas.components(nb201(CELLS[0]), x, y, complexity=False, data="batch")
    assert az_nas.components(nb201(CELLS[0]), x.flip(0) * 3, y, complexity=False, data="batch") != real


def test_identity_blocks_and_zero_features_are_the_worst_values(cifar10_batch):
    x, y = cifar10_batch
    identity = az_nas.components(nb201(IDENTITY), x, y)
    assert identity["trainability"] == -math.inf and math.isfinite(identity["expressivity"])
    want = ref_components(nb201(IDENTITY), x)
    assert all(close(identity[k], want[k]) for k in az_nas.COMPONENTS), (identity, want)
    zero = az_nas.components(nb201(ALL_NONE), x, y)
    assert zero["expressivity"] == zero["progressivity"] == -math.inf  # 0/0 eigenvalue shares: NaN -> -inf
    # 15 cells without a gradient path give 2 - 1e6 each; the two reduction blocks are ordinary
    assert -1e6 < zero["trainability"] < -15 / 17 * (1e6 - 2) + 1


def test_no_hooks_left_and_training_mode(cifar10_batch):
    x, y = cifar10_batch
    net = nb201(CELLS[0])
    proxies.get("az_nas_trainability")(net, x, y)
    assert all(not m._forward_hooks for m in net.modules())


# ------------------------------------------------------------------------------- block ends per space


def hook_order(net: nn.Module, x: torch.Tensor) -> list[int]:
    order: list[int] = []
    mods = net.feature_modules()
    handles = [m.register_forward_hook(lambda *_, i=i: order.append(i)) for i, m in enumerate(mods)]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return order


def test_block_ends_of_each_space(cifar10_batch):
    x = cifar10_batch[0][:2]
    net = nb201(CELLS[0])
    assert net.feature_modules() == [net.stem, *net.cells] and len(net.feature_modules()) == 18
    torch.manual_seed(0)
    darts = spaces.get("darts").build(spaces.get("darts").arch(12345), 10)
    assert darts.feature_modules() == [darts.stem, *darts.cells] and len(darts.feature_modules()) == 9
    nb101 = spaces.get("nb101").build(spaces.get("nb101").canonical(NB101_ARCH), 10)
    mods = nb101.feature_modules()
    assert len(mods) == 10 and mods[0] is nb101.layers[0]
    assert not any(isinstance(m, nn.MaxPool2d) for m in mods)
    for network in (net, darts, nb101):
        assert hook_order(network, x) == list(range(len(network.feature_modules())))
    copy = pickle.loads(pickle.dumps(nb101))
    assert len(copy.feature_modules()) == 10 and copy.feature_modules()[0] is copy.layers[0]


def test_finite_on_a_darts_and_an_nb101_network(cifar10_batch):
    x, y = cifar10_batch[0][:4], cifar10_batch[1][:4]
    darts_space, nb101_space = spaces.get("darts"), spaces.get("nb101")
    torch.manual_seed(0)
    darts = az_nas.components(darts_space.build(darts_space.arch(12345), 10), x, y, data="batch")
    torch.manual_seed(0)
    nb101 = az_nas.components(nb101_space.build(nb101_space.canonical(NB101_ARCH), 10), x, y)
    for values in (darts, nb101):
        assert all(math.isfinite(v) for v in values.values()), values


# ------------------------------------------------------------------------------------------- refusals


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.b(self.a(x)).mean((2, 3)))


class Listed(Plain):
    def __init__(self, names):
        super().__init__()
        self.names = names

    def feature_modules(self):
        return [getattr(self, n) for n in self.names]


class Odd(Listed):  # 8x8 -> 3x3: not an integer downscale
    def __init__(self):
        super().__init__(["a", "b"])
        self.b = nn.Conv2d(4, 4, 3, stride=2, padding=0)


@pytest.mark.parametrize("net, match", [
    (Plain(), "no feature_modules"),
    (Listed(["a"]), "at least two block ends"),
    (Listed(["b", "a"]), "not in forward order"),
    (Listed(["a", "fc"]), r"\(N, C, H, W\)"),
    (Odd(), "not an integer downscale"),
])
def test_refuses_networks_it_cannot_score(net, match):
    x = torch.randn(4, 3, 8, 8)
    with pytest.raises(ValueError, match=match):
        az_nas.components(net, x, None)
    assert all(not m._forward_hooks for m in net.modules())


def test_refuses_a_block_end_that_runs_twice():
    class Twice(Listed):
        def forward(self, x):
            return self.fc(self.b(self.b(self.a(x))).mean((2, 3)))

    with pytest.raises(ValueError, match="ran 2 times"):
        proxies.get("az_nas_expressivity")(Twice(["a", "b"]), torch.randn(4, 3, 8, 8), None)


@pytest.mark.parametrize("options", [{"init": "kaiming"}, {"data": "real"}, {"seed": 1.5}, {"seed": True}])
def test_unknown_options_are_refused(options):
    for name in NAMES:
        with pytest.raises(ValueError, match="az_nas"):
            proxies.get(name, **options)


# -------------------------------------------------------------------------------------------- aggregate


def test_aggregate_by_hand():
    # ranks (ascending, average ties): a: 1, 2.5, 2.5; b: 3, 1, 2 -> log(r/3) summed
    got = az_nas.aggregate({"a": [1.0, 5.0, 5.0], "b": [9.0, -math.inf, 0.0]})
    want = [math.log(1 / 3) + math.log(3 / 3), math.log(2.5 / 3) + math.log(1 / 3), math.log(2.5 / 3) + math.log(2 / 3)]
    assert got == pytest.approx(want, rel=1e-12)
    assert az_nas.aggregate({"a": [3.0]}) == [0.0]


def test_aggregate_equals_the_authors_sum_of_log_ranks():
    rng = np.random.default_rng(0)
    cols = {name: rng.integers(0, 6, 50).astype(float).tolist() for name in az_nas.COLUMNS.values()}
    cols["az_nas_trainability"][3] = -math.inf
    cols["az_nas_trainability"][7] = -math.inf
    cols["flops"][5] = math.inf
    frozen = {k: list(v) for k, v in cols.items()}
    want = sum(np.log(stats.rankdata(v) / 50) for v in cols.values())
    assert az_nas.aggregate(cols) == pytest.approx(want.tolist(), rel=1e-12)
    assert cols == frozen  # pure


def test_aggregate_leaves_nan_rows_out():
    got = az_nas.aggregate({"a": [1.0, math.nan, 3.0, 2.0], "b": [4.0, 5.0, 6.0, math.nan]})
    assert math.isnan(got[1]) and math.isnan(got[3])
    assert got[0] == pytest.approx(2 * math.log(1 / 2)) and got[2] == 0.0
    assert all(math.isnan(v) for v in az_nas.aggregate({"a": [math.nan, math.nan]}))


def test_aggregate_refuses_bad_columns():
    with pytest.raises(ValueError, match="at least one"):
        az_nas.aggregate({})
    with pytest.raises(ValueError, match="equal length"):
        az_nas.aggregate({"a": [1.0, 2.0], "b": [1.0]})
