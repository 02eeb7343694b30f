"""MeCo and MeCo_opt: against a numpy implementation written plainly here, against the authors' float32
recipe (corrcoef + general eig), a hand computation, the skip rules, the options, refusals, other spaces."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from gradsign import spaces
from gradsign.actors import proxies
from gradsign.actors.proxies import meco as _meco  # noqa: F401  (registers "meco" even before __init__ does)

CELLS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|nor_conv_3x3~0|skip_connect~1|nor_conv_1x1~2|",
]


def fresh(arch: str, seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return spaces.get("nb201").build(arch, 10)


def first_sample_maps(net: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """Every module's output, in call order, as sample 0's (C, positions) float64 array; only tensors of
    >= 3 dims (the documented rule), train mode, no gradients."""
    maps = []

    def keep(module, args, out):
        if isinstance(out, torch.Tensor) and out.dim() >= 3:
            maps.append(out[0].detach().numpy().reshape(out.shape[1], -1).astype(np.float64))

    handles = [m.register_forward_hook(keep) for m in net.modules()]
    net.train()
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return maps


def lambda_min(rows: np.ndarray) -> float:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        corr = np.atleast_2d(np.corrcoef(rows))
    corr = np.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)
    return float(np.min(np.real(np.linalg.eigvals(corr))))  # a general eigensolver, as the authors'


def oracle(net: nn.Module, x: torch.Tensor, opt_seed: int | None = None) -> float:
    """sum over maps of lambda_min; opt: 8 channels by torch.Generator(seed).randperm(C)[:8], times C/8."""
    gen = torch.Generator().manual_seed(opt_seed) if opt_seed is not None else None
    total = 0.0
    for rows in first_sample_maps(net, x):
        c = rows.shape[0]
        if gen is not None and c > 8:
            pick = torch.randperm(c, generator=gen)[:8].numpy()
            total += lambda_min(rows[pick]) * c / 8
        else:
            total += lambda_min(rows)
    return total


def authors_float32(net: nn.Module, x: torch.Tensor) -> float:
    """The authors' hook as they wrote it: data_output[0] of every module, float32 torch.corrcoef, NaN/inf
    to 0, torch.linalg.eig, min real part, NaN/inf values dropped, summed (outputs < 3 dims included)."""
    values = []

    def hook(module, args, out):
        fea = out[0].detach()
        fea = fea.reshape(fea.shape[0], -1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            corr = torch.corrcoef(fea)
        corr[torch.isnan(corr)] = 0
        corr[torch.isinf(corr)] = 0
        values.append(torch.min(torch.real(torch.linalg.eig(corr)[0])))

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    net.train()
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    v = torch.stack(values)
    return float(v[torch.isfinite(v)].sum())


@pytest.mark.parametrize("arch", CELLS)
def test_equals_plain_numpy_and_the_authors_recipe_on_real_cells(arch, cifar10_batch):
    x, _ = cifar10_batch
    got = proxies.get("meco")(fresh(arch), x, None)  # labels are not used
    assert isinstance(got, float) and math.isfinite(got) and got > 0
    assert got == pytest.approx(oracle(fresh(arch), x[:1]), rel=1e-9, abs=1e-9)
    # float32 + eig: rank-deficient maps give about +-1e-7 each instead of 0, a few hundred of them
    assert got == pytest.approx(authors_float32(fresh(arch), x[:1]), abs=1e-4)


@pytest.mark.parametrize("arch", CELLS[:2])
def test_opt_equals_plain_numpy_with_the_documented_draws(arch, cifar10_batch):
    x, y = cifar10_batch
    got = proxies.get("meco", variant="opt")(fresh(arch), x, y)
    assert got == pytest.approx(oracle(fresh(arch), x[:1], opt_seed=0), rel=1e-9, abs=1e-9)
    again = proxies.get("meco", variant="opt")(fresh(arch), x, y)
    assert again == got  # deterministic: the draws are seeded at every call
    other = proxies.get("meco", variant="opt", seed=7)(fresh(arch), x, y)
    assert other == pytest.approx(oracle(fresh(arch), x[:1], opt_seed=7), rel=1e-9, abs=1e-9)
    assert other != pytest.approx(got, rel=1e-6)
    assert got != pytest.approx(proxies.get("meco")(fresh(arch), x, y), rel=1e-3)


def test_opt_is_meco_when_no_map_has_more_than_8_channels(cifar10_batch):
    x, y = cifar10_batch

    def net():
        torch.manual_seed(2)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 6, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10))

    plain = proxies.get("meco")(net(), x, y)
    assert proxies.get("meco", variant="opt")(net(), x, y) == pytest.approx(plain, rel=1e-12)
    assert plain == pytest.approx(oracle(net(), x[:1]), rel=1e-9)


def test_by_hand_two_channels():
    """An Identity on a (1, 2, 2, 3) input: R = [[1, r], [r, 1]], lambda_min = 1 - |r|; the Flatten, the
    Linear and the root Sequential output (N, K) and add nothing."""
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)
    b = torch.tensor([2.0, 1.0, 4.0, 3.0, 6.0, 7.0], dtype=torch.float64)
    x = torch.stack([a, b]).reshape(1, 2, 2, 3)
    r = float(((a - a.mean()) * (b - b.mean())).sum() / ((a - a.mean()).norm() * (b - b.mean()).norm()))
    net = nn.Sequential(nn.Identity(), nn.Flatten(), nn.Linear(12, 3)).double()
    assert proxies.get("meco")(net, x, None) == pytest.approx(1 - abs(r), rel=1e-12)
    # a constant third channel: its row and column (diagonal too) are NaN, set to 0, so lambda_min = 0
    # (were they set to 1 instead, det R = -(1 - r)^2 < 0: a negative eigenvalue)
    x3 = torch.cat([x, torch.full((1, 1, 2, 3), 5.0, dtype=torch.float64)], 1)
    net3 = nn.Sequential(nn.Identity(), nn.Flatten(), nn.Linear(18, 3)).double()
    assert proxies.get("meco")(net3, x3, None) == pytest.approx(0.0, abs=1e-15)


def test_three_dim_outputs_count_channels_by_positions():
    """A Conv1d's (N, C, L) output: rows = the C channels of sample 0, columns = its L positions."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv1d(2, 6, 3), nn.BatchNorm1d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 8, 3))
    x = torch.randn(4, 2, 10)
    got = proxies.get("meco")(net, x, None)
    maps = first_sample_maps(net, x[:1])
    assert [m.shape for m in maps] == [(6, 8)] * 3
    assert got == pytest.approx(sum(lambda_min(m) for m in maps), rel=1e-9) and got > 0


def test_two_dim_outputs_add_zero_in_the_authors_recipe_and_are_skipped():
    """The authors' hook on a Linear's (N, K) output correlates K one-value rows: all NaN, zeroed,
    lambda_min = 0. Skipping those outputs gives the same sum."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 16), nn.ReLU(),
                        nn.Linear(16, 10))
    x = torch.randn(1, 3, 8, 8)
    assert proxies.get("meco")(net, x, None) == pytest.approx(authors_float32(net, x), abs=1e-5)
    assert proxies.get("meco")(net, x, None) == pytest.approx(oracle(net, x), rel=1e-9)


class PairThenSum(nn.Module):
    """A module whose output is a tuple (skipped); its parent sums the pair into a 4-D map (counted)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.a(x), self.b(x)


class TupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.pair = PairThenSum()
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        p, q = self.pair(x)
        return self.head((p * q).mean((2, 3)))


def test_tuple_outputs_are_skipped():
    torch.manual_seed(0)
    net = TupleNet()
    x = torch.randn(2, 3, 6, 6)
    maps = first_sample_maps(net, x[:1])
    assert len(maps) == 2  # the two convolutions; the tuple, the Linear and the root add nothing
    assert proxies.get("meco")(net, x, None) == pytest.approx(sum(lambda_min(m) for m in maps), rel=1e-12)


def test_samples_option(cifar10_batch):
    x, y = cifar10_batch
    one = proxies.get("meco")(fresh(CELLS[0]), x, y)
    whole = proxies.get("meco", samples=None)(fresh(CELLS[0]), x, y)
    four = proxies.get("meco", samples=4)(fresh(CELLS[0]), x, y)
    assert whole == pytest.approx(oracle(fresh(CELLS[0]), x), rel=1e-9, abs=1e-9)
    assert four == pytest.approx(oracle(fresh(CELLS[0]), x[:4]), rel=1e-9, abs=1e-9)
    assert len({round(v, 6) for v in (one, whole, four)}) == 3  # BatchNorm's statistics see the others


def test_hooks_are_removed_and_refusals(cifar10_batch):
    x, y = cifar10_batch
    net = fresh(CELLS[0])
    proxies.get("meco")(net, x, y)
    assert all(not m._forward_hooks for m in net.modules())
    mlp = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(ValueError, match="needs feature maps"):
        proxies.get("meco")(mlp, torch.randn(4, 12), None)
    assert all(not m._forward_hooks for m in mlp.modules())
    with pytest.raises(ValueError, match="unknown meco variant 'meco_opt'"):
        proxies.get("meco", variant="meco_opt")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="samples"):
            proxies.get("meco", samples=bad)
    with pytest.raises(ValueError, match="seed"):
        proxies.get("meco", seed="0")


def test_runs_on_nb101_and_darts(cifar10_batch):
    x, y = cifar10_batch
    torch.manual_seed(0)
    nb101 = spaces.get("nb101").build("conv3x3~0|maxpool3x3~1|conv3x3~2|conv3x3~0|conv1x1~0,3,4|output~2,5", 10)
    darts = spaces.get("darts")
    for variant in ("meco", "opt"):
        torch.manual_seed(0)
        assert math.isfinite(proxies.get("meco", variant=variant)(nb101, x[:8], y[:8]))
        torch.manual_seed(0)
        value = proxies.get("meco", variant=variant)(darts.build(darts.arch(123_456_789), 10), x[:8], y[:8])
        assert math.isfinite(value) and value > 0


def test_meco_opt_is_registered_as_the_opt_variant(cifar10_batch):
    x, y = cifar10_batch
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    torch.manual_seed(3)
    net = spaces.get("nb201").build(arch, 10)
    other = spaces.get("nb201").build(arch, 10)
    other.load_state_dict(net.state_dict())
    assert proxies.get("meco_opt")(net, x, y) == proxies.get("meco", variant="opt")(other, x, y)
