"""GradSign's ``bn="batch"`` mode: every engine gives the per-sample loop's sign sums exactly (float64),
an oracle written plainly here agrees, the held statistics are the whole batch's, running statistics are
untouched, and the option reaches the proxy, ``gradsign.score`` and a run's identity."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradsign
from gradsign.actors import proxies
from gradsign.actors.per_sample import BatchStatistics, sign_sums
from test_gradsign import CELLS, fresh



def _double(net: nn.Module) -> nn.Module:
    return net.double()


@pytest.mark.parametrize("arch", CELLS[:2])
def test_every_engine_equals_the_loop_in_float64(arch, cifar10_batch):
    x, y = cifar10_batch
    x = x[:8].double()
    y = y[:8]
    loop = sign_sums(_double(fresh(arch)), x, y, "loop", bn="batch")
    for engine, chunk in (("hooks", None), ("hooks", 3), ("func", None), ("func", 5)):
        got = sign_sums(_double(fresh(arch)), x, y, engine, chunk_size=chunk, bn="batch", fallback="error")
        assert got.engine == engine
        assert got.sums.keys() == loop.sums.keys()
        for name in loop.sums:
            assert torch.equal(got.sums[name], loop.sums[name]), (engine, chunk, name)


def test_batch_mode_differs_from_the_sample_mode(cifar10_batch):
    x, y = cifar10_batch
    a = sign_sums(fresh(CELLS[0]), x, y, bn="sample").score()
    b = sign_sums(fresh(CELLS[0]), x, y, bn="batch").score()
    assert a > 0 and b > 0 and a != b


class TinyNet(nn.Module):
    """conv - BN - ReLU - conv - BN - global pool - linear: BN right before the pool, as DARTS cells end."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(5, affine=False)
        self.fc = nn.Linear(5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(h.mean((2, 3)))


def _oracle(net: TinyNet, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The definition written out: batch statistics from the whole batch (biased variance), then each sample's
    gradient alone with those statistics as constants, then sign sums."""
    with torch.no_grad():
        h1 = net.conv1(x)
        m1, v1 = h1.mean((0, 2, 3)), h1.var((0, 2, 3), unbiased=False)
        a1 = F.relu((h1 - m1[:, None, None]) / torch.sqrt(v1[:, None, None] + net.bn1.eps)
                    * net.bn1.weight[:, None, None] + net.bn1.bias[:, None, None])
        h2 = net.conv2(a1)
        m2, v2 = h2.mean((0, 2, 3)), h2.var((0, 2, 3), unbiased=False)
    sums = {"conv1": 0, "conv2": 0, "fc": 0}
    for i in range(x.shape[0]):
        w1, w2, wf = (p.detach().clone().requires_grad_(True)
                      for p in (net.conv1.weight, net.conv2.weight, net.fc.weight))
        h = F.conv2d(x[i:i + 1], w1, padding=1)
        h = (h - m1[:, None, None]) / torch.sqrt(v1[:, None, None] + net.bn1.eps)
        h = F.relu(h * net.bn1.weight.detach()[:, None, None] + net.bn1.bias.detach()[:, None, None])
        h = F.conv2d(h, w2, padding=1)
        h = (h - m2[:, None, None]) / torch.sqrt(v2[:, None, None] + net.bn2.eps)
        out = F.linear(h.mean((2, 3)), wf, net.fc.bias.detach())
        grads = torch.autograd.grad(F.cross_entropy(out, y[i:i + 1]), (w1, w2, wf))
        for name, g in zip(sums, grads):
            sums[name] = sums[name] + torch.sign(g)
    return sums


@pytest.mark.parametrize("engine", ["hooks", "func", "loop"])
def test_engines_equal_an_oracle_written_plainly(engine, cifar10_batch):
    x, y = cifar10_batch
    x = x.double()
    torch.manual_seed(0)
    net = TinyNet().double()
    with torch.no_grad():  # non-trivial affine parameters
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(-0.5, 0.5)
    expected = _oracle(net, x, y)
    got = sign_sums(net, x, y, engine, bn="batch", fallback="error")
    assert got.engine == engine
    for name, s in expected.items():
        assert torch.equal(got.sums[name], s), name


def test_batch_statistics_are_the_batch_s_and_leave_running_stats_alone(cifar10_batch):
    x, _ = cifar10_batch
    torch.manual_seed(0)
    net = TinyNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stats = BatchStatistics(net, x)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    mean, var = stats.stats[id(net.bn1)][0]
    h1 = net.conv1(x).detach()
    assert torch.allclose(mean, h1.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(var, h1.var((0, 2, 3), unbiased=False), atol=1e-6)
    # inside ``applied`` the whole batch gives exactly what train-mode BatchNorm gives
    with stats.applied():
        frozen = net(x)
    net.train()
    assert torch.allclose(frozen, net(x), atol=1e-5)
    assert "forward" not in vars(net.bn1)  # the patch is removed


def test_darts_network_runs_on_the_fast_path_without_rounding_noise(cifar10_batch):
    """On a network whose cells end in BN before the pool, batch mode gives the same signs in float32 and
    float64 (the sample mode does not: docs/proxies.md measures both)."""
    from gradsign.spaces.darts_net import DartsNetwork
    from gradsign.spaces.darts_genotype import Genotype
    from test_darts_genotype import ALL_DARTS_OPS, DARTS

    x, y = cifar10_batch
    torch.manual_seed(3)
    net = DartsNetwork(Genotype.from_record(ALL_DARTS_OPS, DARTS), 4, 3, 10)
    net64 = DartsNetwork(Genotype.from_record(ALL_DARTS_OPS, DARTS), 4, 3, 10)
    net64.load_state_dict(net.state_dict())
    got32 = sign_sums(net, x, y, "hooks", bn="batch", fallback="error")
    got64 = sign_sums(net64.double(), x.double(), y, "loop", bn="batch")
    changed = sum(int((got32.sums[k] != got64.sums[k]).sum()) for k in got64.sums)
    total = sum(s.numel() for s in got64.sums.values())
    assert got32.engine == "hooks"
    assert changed / total < 0.01, (changed, total)


def test_option_reaches_the_proxy_and_the_api(cifar10_batch):
    x, y = cifar10_batch
    direct = sign_sums(fresh(CELLS[1]), x, y, bn="batch").score()
    assert proxies.get("gradsign", bn="batch")(fresh(CELLS[1]), x, y) == direct
    assert gradsign.score(fresh(CELLS[1]), x, y, bn="batch") == direct
    with pytest.raises(ValueError, match="bn mode"):
        proxies.get("gradsign", bn="batches")


def test_bn_option_is_part_of_a_run_s_identity(tmp_path, data_dir):
    from gradsign.pipeline.driver.config import resolve
    from gradsign.pipeline.driver.identity import content_identity
    from conftest import small_overrides

    a = resolve("configs/nb201-cifar10.yaml", small_overrides(tmp_path, data_dir))
    b = resolve("configs/nb201-cifar10.yaml", small_overrides(tmp_path, data_dir, "proxy_options.gradsign.bn=batch"))
    ia, ib = content_identity(a, "f", None), content_identity(b, "f", None)
    assert ia != ib
    assert json.dumps(ib["proxy_options"]) == json.dumps({"gradsign": {"bn": "batch"}})
