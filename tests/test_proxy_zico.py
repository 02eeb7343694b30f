"""ZiCo: against the authors' recipe written plainly here (zero_grad / backward / .grad per part, numpy
statistics), a hand computation, the left-out layers, the splits option, refusals, other spaces."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradsign import spaces
from gradsign.actors import proxies
from gradsign.actors.proxies import zico as _zico  # noqa: F401  (registers "zico" even before __init__ does)

CELLS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|nor_conv_3x3~0|skip_connect~1|nor_conv_1x1~2|",
]
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def fresh(arch: str, seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return spaces.get("nb201").build(arch, 10)


def authors_recipe(net: nn.Module, x: torch.Tensor, y: torch.Tensor, parts: int, dtype=np.float64) -> float:
    """The authors' loop: each part is one "batch": zero_grad, forward, mean CE, backward, read .grad of every
    Conv2d/Linear; then per layer np.std (ddof 0), entries with nonzero std, log of the sum of mean|g|/std."""
    net.train()
    size = x.shape[0] // parts
    grads: dict[str, list[np.ndarray]] = {}
    for s in range(parts):
        net.zero_grad()
        loss = nn.CrossEntropyLoss()(net(x[s * size:(s + 1) * size]), y[s * size:(s + 1) * size])
        loss.backward()
        for name, mod in net.named_modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)) and mod.weight.grad is not None:
                grads.setdefault(name, []).append(mod.weight.grad.detach().numpy().reshape(-1).astype(dtype))
    total = 0.0
    for samples in grads.values():
        g = np.array(samples)
        std = np.std(g, axis=0)
        nz = np.nonzero(std)[0]
        tmpsum = np.sum(np.mean(np.abs(g), axis=0)[nz] / std[nz])
        if tmpsum != 0:
            total += float(np.log(tmpsum))
    return total


@pytest.mark.parametrize("arch", CELLS)
def test_equals_the_authors_recipe_on_real_cells(arch, cifar10_batch):
    x, y = cifar10_batch
    got = proxies.get("zico")(fresh(arch), x, y)
    assert isinstance(got, float) and math.isfinite(got)
    assert got == pytest.approx(authors_recipe(fresh(arch), x, y, 2), rel=1e-9)
    # the authors' float32 statistics: the same to float32 rounding
    assert got == pytest.approx(authors_recipe(fresh(arch), x, y, 2, np.float32), rel=1e-4)
    assert got.nonfinite == 0


def test_splits_option(cifar10_batch):
    x, y = cifar10_batch  # 16 images
    four = proxies.get("zico", splits=4)(fresh(CELLS[0]), x, y)
    assert four == pytest.approx(authors_recipe(fresh(CELLS[0]), x, y, 4), rel=1e-9)
    assert four != pytest.approx(proxies.get("zico")(fresh(CELLS[0]), x, y), rel=1e-3)
    sixteen = proxies.get("zico", splits=16)(fresh(CELLS[0]), x, y)  # parts of one image (BN over positions)
    assert sixteen == pytest.approx(authors_recipe(fresh(CELLS[0]), x, y, 16), rel=1e-9)


def test_parts_are_independent_not_accumulated(cifar10_batch):
    """Gradient samples are each part's own gradient (the authors' zero_grad per batch), not the running
    .grad sum of ports that forget to clear it."""
    x, y = cifar10_batch
    net = fresh(CELLS[0])
    net.train()
    accumulated: dict[str, list[np.ndarray]] = {}
    for s in range(2):  # no zero_grad between parts
        F.cross_entropy(net(x[s * 8:(s + 1) * 8]), y[s * 8:(s + 1) * 8]).backward()
        for name, mod in net.named_modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                accumulated.setdefault(name, []).append(mod.weight.grad.numpy().reshape(-1).astype(np.float64))
    wrong = 0.0
    for samples in accumulated.values():
        g = np.array(samples)
        std = np.std(g, axis=0)
        nz = np.nonzero(std)[0]
        tmpsum = np.sum(np.mean(np.abs(g), axis=0)[nz] / std[nz])
        wrong += float(np.log(tmpsum)) if tmpsum else 0.0
    assert proxies.get("zico")(fresh(CELLS[0]), x, y) != pytest.approx(wrong, rel=1e-3)


def test_by_hand_on_a_linear_layer():
    """One Linear, two samples = two parts of one: g_s = (softmax(W x_s) - onehot(y_s)) x_s^T, and
    Z = sum over entries with g_1 != g_2 of (|g_1| + |g_2|) / |g_1 - g_2| (mean |g| / std for S = 2)."""
    torch.manual_seed(0)
    net = nn.Linear(3, 4, bias=False).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    x[:, 2] = 0.0  # the third input is 0 in both samples: its column of the gradient is 0 twice, std 0
    y = torch.tensor([1, 3])
    w = net.weight.detach()
    g = [torch.outer(torch.softmax(w @ x[s], 0) - F.one_hot(y[s], 4).double(), x[s]) for s in range(2)]
    differ = g[0] != g[1]
    assert int(differ.sum()) == 8  # the two nonzero columns; the zero column is left out
    z = ((g[0].abs() + g[1].abs()) / (g[0] - g[1]).abs())[differ].sum()
    assert proxies.get("zico")(net, x, y) == pytest.approx(math.log(float(z)), rel=1e-12)


class TwoBranch(nn.Module):
    def __init__(self, zero_branch: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dead = nn.Conv2d(3, 8, 3, padding=1)  # multiplied by 0 (zero gradient) or unused (no gradient)
        self.head = nn.Linear(8, 10)
        self.zero_branch = zero_branch

    def forward(self, x):
        h = self.bn(self.conv(x))
        if self.zero_branch:
            h = h + 0.0 * self.dead(x)
        return self.head(torch.relu(h).mean((2, 3)))


def test_layers_without_spread_are_left_out(cifar10_batch):
    x, y = cifar10_batch

    def net(zero_branch: bool) -> nn.Module:
        torch.manual_seed(5)
        return TwoBranch(zero_branch)

    zero_gradient = proxies.get("zico")(net(True), x, y)  # dead: gradient 0 in both parts, std 0
    no_gradient = proxies.get("zico")(net(False), x, y)  # dead: unused, no gradient at all
    assert zero_gradient == pytest.approx(no_gradient, rel=1e-12)
    assert no_gradient == pytest.approx(authors_recipe(net(False), x, y, 2), rel=1e-9)
    # a cell whose output does not depend on the input: no layer has any spread, the empty sum
    assert proxies.get("zico")(fresh(ALL_NONE), x, y) == 0.0


def test_non_finite_gradients_are_left_out_and_counted():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    x = torch.randn(4, 4)
    x[2, 0] = math.inf  # part 2 (images 2 and 3) gives NaN gradients everywhere
    got = proxies.get("zico")(net, x, torch.tensor([0, 1, 0, 1]))
    assert got == 0.0 and got.nonfinite == 4 * 3 + 3 * 2


def test_refusals(cifar10_batch):
    x, y = cifar10_batch
    with pytest.raises(ValueError, match="cannot split a batch of 15 into 2 equal parts"):
        proxies.get("zico")(fresh(CELLS[0]), x[:15], y[:15])
    with pytest.raises(ValueError, match="cannot split a batch of 1 into 2"):
        proxies.get("zico")(fresh(CELLS[0]), x[:1], y[:1])
    with pytest.raises(ValueError, match="cannot split a batch of 16 into 32"):
        proxies.get("zico", splits=32)(fresh(CELLS[0]), x, y)
    for bad in (1, 0, 2.0, True, "2"):
        with pytest.raises(ValueError, match="splits >= 2"):
            proxies.get("zico", splits=bad)


def test_deterministic_and_runs_on_nb101_and_darts(cifar10_batch):
    x, y = cifar10_batch
    x, y = x[:8], y[:8]
    assert proxies.get("zico")(fresh(CELLS[0]), x, y) == proxies.get("zico")(fresh(CELLS[0]), x, y)
    torch.manual_seed(0)
    nb101 = spaces.get("nb101").build("conv3x3~0|maxpool3x3~1|conv3x3~2|conv3x3~0|conv1x1~0,3,4|output~2,5", 10)
    assert math.isfinite(proxies.get("zico")(nb101, x, y))
    darts = spaces.get("darts")
    torch.manual_seed(0)
    value = proxies.get("zico")(darts.build(darts.arch(123_456_789), 10), x, y)
    assert math.isfinite(value) and value != 0.0
