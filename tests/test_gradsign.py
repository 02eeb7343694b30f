"""GradSign against a straightforward loop oracle written here, on real NB201 cells and real images."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradsign import spaces
from gradsign.actors import proxies
from gradsign.actors.per_sample import sign_sums


def oracle_gradsign(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The paper's definition, as plainly as possible: N backward passes at batch size 1."""
    net.train()
    totals = {}
    for i in range(x.shape[0]):
        net.zero_grad()
        F.cross_entropy(net(x[i:i + 1]), y[i:i + 1]).backward()
        for name, m in net.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None:
                g = m.weight.grad
                s = torch.where(torch.isfinite(g), torch.sign(g), torch.zeros_like(g))
                totals[name] = totals.get(name, 0) + s
    return float(sum(t.abs().sum().item() for t in totals.values()))


CELLS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|",
    "|skip_connect~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|",  # output cut off: score 0
]


def fresh(arch: str, seed: int = 7) -> nn.Module:
    torch.manual_seed(seed)
    return spaces.get("nb201").build(arch, 10)


ENGINES = [{"engine": "hooks", "conv_method": "grouped"}, {"engine": "hooks", "conv_method": "unfold"},
           {"engine": "func"}, {"engine": "loop"}]


@pytest.mark.parametrize("options", ENGINES, ids=lambda o: "-".join(o.values()))
@pytest.mark.parametrize("arch", CELLS)
def test_engines_equal_loop_oracle(arch, options, cifar10_batch):
    x, y = cifar10_batch
    expected = oracle_gradsign(fresh(arch), x, y)
    got = proxies.get("gradsign", **options)(fresh(arch), x, y)
    if expected == 0:
        assert got == 0  # exact zeros identical
    else:
        assert got == pytest.approx(expected, rel=1e-3)
    assert got.nonfinite == 0


def test_default_proxy_is_the_batched_engine_and_chunking_does_not_matter(cifar10_batch):
    x, y = cifar10_batch
    whole = proxies.get("gradsign")(fresh(CELLS[0]), x, y)
    chunked = proxies.get("gradsign", chunk_size=5)(fresh(CELLS[0]), x, y)
    assert chunked == pytest.approx(whole, rel=1e-4)
    # per-layer sign sums too, not just the total
    a = sign_sums(fresh(CELLS[0]), x, y, "hooks", chunk_size=16).sums
    b = sign_sums(fresh(CELLS[0]), x, y, "hooks", chunk_size=3).sums
    assert a.keys() == b.keys()
    mismatch = sum(int((a[k] != b[k]).sum()) for k in a)
    total = sum(a[k].numel() for k in a)
    assert mismatch / total < 1e-3


class SharedTrunk(nn.Module):
    """Not NB201: a Linear used twice (shared weights), in-place ReLU after a conv, a grouped conv.

    (A ReLU before the mean: a mean straight after per-sample BatchNorm makes the next conv's weight
    gradients sums that cancel to zero exactly in exact arithmetic, whose signs are rounding noise.)
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.shared = nn.Linear(8, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        h = torch.relu_(self.conv(x))
        h = torch.relu(self.grouped(self.bn(h))).mean((2, 3))
        h = self.shared(torch.tanh(self.shared(h)))
        return self.head(h)


@pytest.mark.parametrize("options", ENGINES[:3], ids=lambda o: "-".join(o.values()))
def test_any_classifier_module(options, cifar10_batch):
    x, y = cifar10_batch
    torch.manual_seed(0)
    net = SharedTrunk()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    expected = oracle_gradsign(net, x, y)
    net.load_state_dict(state)
    got = proxies.get("gradsign", **options)(net, x, y)
    assert got == pytest.approx(expected, rel=1e-3)


def test_nonfinite_gradients_are_left_out_and_counted(cifar10_batch):
    x, y = cifar10_batch
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with torch.no_grad():
        net[1].weight[0, :5] = float("inf")  # logits inf -> NaN gradients
    x = x.clone()
    x[:, 0, 0, :5] = 1.0
    got = proxies.get("gradsign")(net, x, y)
    assert got.nonfinite > 0
    assert got == pytest.approx(oracle_gradsign(net, x, y), rel=1e-3)


def test_registry_names_and_unknown_proxy():
    assert "gradsign" in proxies.names()
    with pytest.raises(ValueError, match="valid proxies"):
        proxies.get("nope")
    with pytest.raises(ValueError, match="valid engines"):
        proxies.get("gradsign", engine="nope")(fresh(CELLS[0]), torch.zeros(2, 3, 32, 32),
                                               torch.zeros(2, dtype=torch.long))


def test_overflow_bound_vouches_only_for_entries_that_cannot_be_nonfinite():
    from gradsign.actors.per_sample import OverflowBound

    def bound(x, g, terms=1, dtype=torch.float32):
        b = OverflowBound()
        b.add_call(torch.tensor([0.5, -x], dtype=dtype), torch.tensor([g, 0.25], dtype=dtype), terms)
        b.add_call(torch.ones(3, dtype=dtype), torch.ones(3, dtype=dtype), 9)  # a harmless second call
        return b.may_be_nonfinite()

    assert not OverflowBound().may_be_nonfinite()
    assert not bound(1.0, 1.0)
    assert not bound(1e18, 1e18)  # 1e36 < float32 max / 32
    assert bound(1e18, 1e18, terms=100)  # 1e38: entries summing 100 such products could overflow
    assert bound(-1e20, 1e20)  # the magnitude counts, whatever the sign
    assert bound(float("nan"), 1.0) and bound(1.0, float("inf")) and bound(1.0, float("-inf"))
    assert not bound(10.0, 10.0, dtype=torch.float16) and bound(300.0, 300.0, dtype=torch.float16)
    b = OverflowBound()
    b.require_finite(torch.tensor([1.0, 2.0]).sum())
    assert not b.may_be_nonfinite()
    b.require_finite(torch.tensor(float("inf")))
    assert b.may_be_nonfinite()


def test_a_probe_made_on_a_copy_serves_the_network_and_a_wrong_probe_costs_a_fallback(cifar10_batch):
    """The hooks engine's probe may be made elsewhere (a CPU copy, before the net moves to a GPU): the same
    weights give the same sums; another network's probe fails the engine's checks and the exact engine
    answers, so a wrong probe never gives a wrong number."""
    from gradsign.actors.per_sample import GradSignFallbackWarning, probe_network

    x, y = cifar10_batch
    x, y = x[:16], y[:16]
    arch = CELLS[0]
    own = sign_sums(fresh(arch), x, y)
    copy_probe = probe_network(fresh(arch), x)  # another module object, same seed: same weights
    with_copy = sign_sums(fresh(arch), x, y, probe=copy_probe)
    assert with_copy.engine == "hooks" and with_copy.fallback is None
    assert with_copy.score() == own.score()

    other_seed = probe_network(fresh(arch, seed=8), x)  # same structure, other weights
    with pytest.warns(GradSignFallbackWarning, match="differs from its output alone"):
        got = sign_sums(fresh(arch), x, y, probe=other_seed)
    expected = oracle_gradsign(fresh(arch), x, y)
    assert got.engine == "func" and got.score() == pytest.approx(expected, rel=1e-3)
    other_arch = probe_network(fresh(CELLS[1]), x)  # another structure
    with pytest.warns(GradSignFallbackWarning, match="another order|times for"):
        got = sign_sums(fresh(arch), x, y, probe=other_arch)
    assert got.engine == "func" and got.score() == pytest.approx(own.score(), rel=1e-3)
