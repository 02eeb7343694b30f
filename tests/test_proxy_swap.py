"""SWAP-Score (Peng et al., ICLR 2024): the authors' definition written plainly here as the oracle
(float sign matrix, transposed, torch.unique over rows), hand-made patterns across the 64-sample word
boundary, the protocol options, the regulariser, refusals, determinism and the memory bound."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradsign import spaces
from gradsign.actors import proxies
from gradsign.actors.proxies import swap as swap_module
from gradsign.actors.proxies.swap import PatternSet, gaussian_init, pack, swap_patterns

CELLS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
]
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def fresh(arch: str, seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return spaces.get("nb201").build(arch, 10)


def authors_swap(net: nn.Module, x: torch.Tensor) -> int:
    """The authors' computation, step by step: ReLU outputs of 4-D calls, view (N, -1), concatenated,
    sign, transposed to (units, N), distinct rows."""
    feats = []

    def hook(module, args, output):
        if isinstance(args, tuple) and len(args[0].size()) == 4:
            feats.append(output.detach().clone())

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    net.train()
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    activations = torch.sign(torch.cat([f.view(x.size(0), -1) for f in feats], 1))
    return torch.unique(activations.T, dim=0).size(0)


def distinct_columns(bits: torch.Tensor) -> int:
    """Distinct unit patterns of a (N, U) 0/1 matrix, by Python sets."""
    return len({tuple(col) for col in bits.T.tolist()})


class Tiny(nn.Module):
    """Conv-BN-ReLU twice, then a ReLU on the flattened (2-D) features, which SWAP leaves out."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1, stride=2), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(width * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(self.body(x))


# ------------------------------------------------------------------------------------------ definition


def test_registered_with_the_authors_protocol_as_default():
    assert "swap" in proxies.names()
    factory = proxies.factory("swap")
    defaults = factory.__defaults__
    assert defaults == (False, None, None, 16, "gaussian", 32, 0)


@pytest.mark.parametrize("arch, n", [(CELLS[0], 16), (CELLS[1], 16), (CELLS[1], 5)])
def test_equals_the_authors_unique_rows_on_nb201(arch, n, cifar10_batch):
    x, _ = cifar10_batch
    expected = authors_swap(fresh(arch), x[:n])
    assert proxies.get("swap", init="none", repeats=1, samples=None)(fresh(arch), x[:n], None) == expected
    assert 1 < expected <= min(2**n, swap_patterns(fresh(arch), x[:n]).units)


@pytest.mark.parametrize("n", [63, 64, 65, 130])
def test_equals_the_authors_unique_rows_across_word_boundaries(n):
    torch.manual_seed(n)
    net = Tiny(width=3)
    x = torch.randn(n, 3, 8, 8)
    got = proxies.get("swap", init="none", repeats=1, samples=None)(net, x, None)
    assert got == authors_swap(net, x)


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 128, 129])
def test_hand_made_patterns_counted_exactly(n):
    """A bare ReLU on (N, 1, 1, U): the patterns are the columns of the input's sign, chosen to differ
    only in the last sample of a word (bit 63, the int64 sign bit), the first of the next, or nowhere."""
    g = torch.Generator().manual_seed(n)
    bits = (torch.rand(n, 40, generator=g) > 0.5).to(torch.float32)
    bits[:, 1] = bits[:, 0]  # a duplicate
    bits[:, 2] = 0.0  # never active
    bits[:, 3] = 1.0  # always active
    for k in (62, 63, 64, 127, 128):
        if k < n:
            bits[:, 4 + k % 5] = bits[:, 0]
            bits[k, 4 + k % 5] = 1 - bits[k, 0]  # differs from column 0 in sample k only
    x = (bits * 2 - 1).reshape(n, 1, 1, 40)  # +1 active, -1 inactive
    net = nn.Sequential(nn.ReLU())
    got = proxies.get("swap", init="none", repeats=1, samples=None)(net, x, None)
    assert got == distinct_columns(bits) == authors_swap(net, x)


def test_pack_puts_sample_n_in_bit_n_of_word_n_div_64():
    active = torch.zeros(130, 4, dtype=torch.bool)
    active[0, 0] = active[63, 1] = active[64, 2] = active[129, 3] = True
    codes = pack(active)
    assert codes.dtype == torch.int64 and codes.shape == (4, 3)
    assert codes[:, 0].tolist() == [1, -(2**63), 0, 0]
    assert codes[:, 1].tolist() == [0, 0, 1, 0]
    assert codes[:, 2].tolist() == [0, 0, 0, 2]


def test_pack_chunks_units(monkeypatch):
    g = torch.Generator().manual_seed(0)
    active = torch.rand(70, 1000, generator=g) > 0.5
    whole = pack(active)
    monkeypatch.setattr(swap_module, "_CHUNK", 64 * 7)  # 7 units a block
    assert torch.equal(pack(active), whole)


def test_only_relu_modules_on_4d_inputs_count():
    torch.manual_seed(2)
    net = Tiny()
    x = torch.randn(12, 3, 8, 8)
    patterns = swap_patterns(net, x)
    assert patterns.calls == 2 and patterns.units == 4 * 8 * 8 + 4 * 4 * 4  # the head's ReLU is left out
    assert patterns.count() == authors_swap(net, x)


def test_pattern_is_taken_when_the_relu_runs():
    """An in-place op after an in-place ReLU does not change the count."""

    class Later(nn.Module):
        def __init__(self, modify: bool):
            super().__init__()
            self.conv, self.relu, self.modify = nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), modify

        def forward(self, x):
            y = self.relu(self.conv(x))
            if self.modify:
                y.sub_(100.0)
            return y.mean((2, 3))

    torch.manual_seed(4)
    plain = Later(False)
    later = Later(True)
    later.load_state_dict(plain.state_dict())
    x = torch.randn(8, 3, 6, 6)
    get = proxies.get("swap", init="none", repeats=1, samples=None)
    assert get(later, x, None) == get(plain, x, None) > 1


def test_identical_samples_give_at_most_two_patterns(cifar10_batch):
    x, _ = cifar10_batch
    same = x[:1].expand(16, -1, -1, -1).contiguous()
    value = proxies.get("swap", repeats=1)(fresh(CELLS[0]), same, None)
    assert 1 <= value <= 2


def test_sample_order_does_not_matter():
    torch.manual_seed(5)
    net = Tiny()
    x = torch.randn(20, 3, 8, 8)
    get = proxies.get("swap", init="none", repeats=1, samples=None)
    assert get(net, x, None) == get(net, x[torch.randperm(20)], None)


def test_all_none_cell_has_one_pattern(cifar10_batch):
    x, _ = cifar10_batch
    assert proxies.get("swap", repeats=1)(fresh(ALL_NONE), x, None) == 1.0


def test_nan_at_a_relu_gives_nan():
    net = nn.Sequential(nn.ReLU())
    x = torch.ones(4, 1, 2, 2)
    x[1, 0, 0, 0] = math.nan
    assert math.isnan(proxies.get("swap", init="none", repeats=1, samples=None)(net, x, None))


# ------------------------------------------------------------------------------------------ protocol


def test_samples_takes_the_first_images_and_refuses_a_smaller_batch(cifar10_batch):
    x, _ = cifar10_batch
    spoiled = x.clone()
    spoiled[8:] = math.nan  # a NaN image reaching the net would make the score NaN
    first8 = proxies.get("swap", samples=8, repeats=1)(fresh(CELLS[1]), spoiled, None)
    assert first8 == proxies.get("swap", samples=None, repeats=1)(fresh(CELLS[1]), x[:8], None)
    assert math.isnan(proxies.get("swap", samples=None, repeats=1)(fresh(CELLS[1]), spoiled, None))
    with pytest.raises(ValueError, match="samples=16 but the batch has 8"):
        proxies.get("swap")(fresh(CELLS[1]), x[:8], None)


def test_gaussian_init_is_the_authors():
    net = nn.Sequential(nn.Conv2d(3, 64, 3, bias=True), nn.BatchNorm2d(64), nn.GroupNorm(4, 64),
                        nn.BatchNorm2d(64, affine=False), nn.Flatten(), nn.Linear(64, 500))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(7.0)
    gaussian_init(net, torch.Generator().manual_seed(0))
    for m in (net[0], net[5]):
        w = m.weight.detach()
        assert abs(float(w.mean())) < 0.05 and abs(float(w.std()) - 1.0) < 0.05
        assert torch.count_nonzero(m.bias) == 0
    for m in (net[1], net[2]):
        assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def tiny(seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return Tiny()


X = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_repeats_average_successive_draws_of_one_generator():
    g = torch.Generator().manual_seed(9)
    net = tiny()
    singles = []
    for _ in range(3):
        gaussian_init(net, g)
        singles.append(swap_patterns(net, X).count())
    got = proxies.get("swap", repeats=3, seed=9)(tiny(), X, None)
    assert got == pytest.approx(sum(singles) / 3, rel=0, abs=1e-9)
    assert len(set(singles)) > 1  # the draws differ


def test_deterministic_and_independent_of_the_global_rng():
    get = proxies.get("swap", repeats=4)
    torch.manual_seed(123)
    first = get(tiny(), X, None)
    torch.manual_seed(999)
    state = torch.get_rng_state()
    net = tiny(seed=77)  # other starting weights: the gaussian init replaces them
    torch.set_rng_state(state)
    assert get(net, X, None) == first
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG was not used
    assert proxies.get("swap", repeats=4, seed=1)(tiny(), X, None) != first


def test_init_none_keeps_the_weights(cifar10_batch):
    x, _ = cifar10_batch
    net = fresh(CELLS[1])
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "batches" not in k}
    proxies.get("swap", init="none", repeats=1)(net, x, None)
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


# ---------------------------------------------------------------------------------------- regulariser


def test_regularised_score_is_swap_times_the_gaussian_of_params_in_millions():
    plain = proxies.get("swap", repeats=2)(tiny(), X, None)
    p = proxies.get("params")(tiny(), X, None)  # millions; no auxiliary head here
    for mu, sigma in ((p, 0.5), (0.5, 1.5), (p + 0.01, 1e-4)):
        got = proxies.get("swap", repeats=2, regularise=True, mu=mu, sigma=sigma)(tiny(), X, None)
        assert got == pytest.approx(plain * math.exp(-((p - mu) ** 2) / sigma), rel=1e-12)
    assert proxies.get("swap", repeats=2, regularise=True, mu=p, sigma=1.0)(tiny(), X, None) == plain
    assert 0 < proxies.get("swap", repeats=2, regularise=True, mu=p + 0.01, sigma=1e-4)(tiny(), X, None) < plain


def test_regulariser_counts_parameters_as_the_authors():
    class WithAux(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 10, 1, bias=False)  # 30 weights
            self.auxiliary = nn.Linear(100, 100)  # left out
            self.tied = self.conv  # counted once

    assert swap_module.parameters_in_millions(WithAux()) == 30 / 1e6


@pytest.mark.parametrize("options, message", [
    (dict(regularise=True), "needs mu and sigma"),
    (dict(regularise=True, mu=1.0), "needs mu and sigma"),
    (dict(regularise=True, mu=1.0, sigma=0.0), "sigma finite and > 0"),
    (dict(mu=1.0, sigma=1.0), "without regularise=True"),
    (dict(regularise="yes", mu=1.0, sigma=1.0), "true or false"),
    (dict(samples=0), "samples must be"),
    (dict(samples=2.5), "samples must be"),
    (dict(init="kaiming"), "init must be one of"),
    (dict(repeats=0), "repeats must be"),
    (dict(init="none"), "use repeats=1"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        proxies.get("swap", **options)


# ------------------------------------------------------------------------------------------- refusals


def test_functional_relu_network_is_refused():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return F.relu(self.conv(x)).mean((2, 3))

    with pytest.raises(ValueError, match="no.*nn.ReLU|has none"):
        proxies.get("swap", repeats=1, samples=None)(Functional(), torch.randn(4, 3, 6, 6), None)


def test_relu_modules_never_on_4d_inputs_are_refused():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(ValueError, match="4-D"):
        proxies.get("swap", repeats=1, samples=None)(net, torch.randn(4, 3, 2, 2), None)


def test_nb101_network_uses_relu_modules(cifar10_batch):
    """nasbench_pytorch's ConvBnRelu holds nn.ReLU(): NB101 is scored, not refused."""
    x, _ = cifar10_batch
    space = spaces.get("nb101")
    torch.manual_seed(0)
    net = space.build("conv3x3~0|conv1x1~0|maxpool3x3~0|conv3x3~0|conv3x3~4|output~1,2,3,5", 10)
    assert any(isinstance(m, nn.ReLU) for m in net.modules())
    value = proxies.get("swap", samples=3, repeats=1)(net, x, None)
    assert 1 < value <= 2**3


# --------------------------------------------------------------------------------------------- memory


def test_memory_is_one_int64_per_unit_at_batch_64(data_dir):
    """The largest NB201 network at batch 64: patterns are kept as one int64 word per unit at most
    (the authors' float matrix would be units x 64 x 4 bytes)."""
    from gradsign.pipeline.driver.data import load_batch

    batch = load_batch(data_dir / "cifar10_train_1000.npz", "cifar10", 64, seed=0)
    x = torch.from_numpy(batch.images)
    biggest = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    patterns = swap_patterns(fresh(biggest), x)
    assert patterns.units > 800_000
    assert patterns.nbytes <= 8 * patterns.units
    assert all(p.dtype == torch.int64 and p.shape[1] == 1 for p in patterns.parts)
    assert 1 < patterns.count() <= patterns.units


def test_pattern_set_unions_calls_exactly():
    s = PatternSet()
    a = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # units: (1,0) (0,0) (1,1)
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # units: (1,0) again, (1,1) again
    s.add(a)
    s.add(b)
    assert s.calls == 2 and s.units == 5 and s.count() == 3
