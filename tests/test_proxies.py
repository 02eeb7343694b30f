"""The baseline zero-cost proxies: registry, peer data (params/flops), hand computations, oracles written
plainly here, invariances, and independence of one proxy from another's side effects."""

from __future__ import annotations

import csv
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradsign import spaces
from gradsign.actors import proxies
from gradsign.pipeline.driver.data import dataset_info

BASELINES = ["grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov", "naswot", "params", "flops"]

CELLS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
]
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def fresh(arch: str, num_classes: int = 10, seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return spaces.get("nb201").build(arch, num_classes)


def weighted(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# --------------------------------------------------------------------------------------------- registry


def test_every_baseline_is_registered():
    assert set(BASELINES) <= set(proxies.names())
    with pytest.raises(ValueError, match="unknown proxy"):
        proxies.get("synflw")


@pytest.mark.parametrize("arch", CELLS)
def test_every_proxy_gives_a_finite_float_on_real_cells(arch, cifar10_batch):
    x, y = cifar10_batch
    values = {}
    for name in BASELINES:
        value = proxies.get(name)(fresh(arch), x, y)
        assert isinstance(value, float), name
        assert math.isfinite(value), (name, value)
        values[name] = value
    for name in ("grad_norm", "snip", "fisher", "synflow", "params", "flops"):
        assert values[name] > 0, name
    # log(u) + 1/u >= 1, so jacob_cov <= -N; equality would need exactly uncorrelated Jacobians
    assert values["jacob_cov"] < -x.shape[0]
    assert values["naswot"] > 0


def test_degenerate_cell_all_none(cifar10_batch):
    """The all-none cell cuts the input off: the output is a constant."""
    x, y = cifar10_batch
    assert math.isnan(proxies.get("jacob_cov")(fresh(ALL_NONE), x, y))  # zero Jacobian: undefined corr
    assert proxies.get("naswot")(fresh(ALL_NONE), x, y) == -math.inf  # every sample has the same codes
    assert proxies.get("synflow")(fresh(ALL_NONE), x, y) == 0.0  # R does not depend on the cut-off weights


# ------------------------------------------------------------------------------------- params and flops


def peer_rows(data_dir, dataset: str, count: int = 30) -> list[dict]:
    with open(data_dir / "naslib_zc_nb201.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["dataset"] == dataset]
    step = max(1, len(rows) // count)
    return rows[::step][:count]


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "imagenet16_120"])
def test_params_and_flops_equal_the_peer_columns(dataset, data_dir):
    info = dataset_info(dataset)
    rows = peer_rows(data_dir, dataset)
    assert len(rows) == 30
    x = torch.zeros(4, 3, info.image_size, info.image_size)
    y = torch.zeros(4, dtype=torch.int64)
    for row in rows:
        net = fresh(row["arch"], info.num_classes)
        assert proxies.get("params")(net, x, y) == pytest.approx(float(row["params"]), rel=1e-6), row["arch"]
        assert proxies.get("flops")(net, x, y) == pytest.approx(float(row["flops"]), rel=1e-6), row["arch"]


def test_flops_conventions_by_hand():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    x = torch.randn(7, 3, 8, 8)  # seven images: flops are for one
    conv = 8 * 8 * 3 * 3 * 3 * 4
    bias = 4 * 8 * 8
    bn = 2 * 4 * 8 * 8
    relu = 4 * 8 * 8
    pool = 4 * 4 * 4 * 2 * 2
    gap = 4 * (4 + 1) * (4 + 1)  # torchstat: (rows + 1) * (cols + 1) per output cell
    linear = 4 * 5
    assert proxies.get("flops")(net, x, None) * 1e6 == pytest.approx(conv + bias + bn + relu + pool + gap + linear)
    assert proxies.get("flops", convention="macs")(net, x, None) * 1e6 == pytest.approx(conv + linear)
    assert proxies.get("params")(net, x, None) * 1e6 == pytest.approx((3 * 9 * 4 + 4) + 2 * 4 + (4 * 5 + 5))
    with pytest.raises(ValueError, match="convention"):
        proxies.get("flops", convention="fvcore")


# ------------------------------------------------------------------------------------------------ synflow


def test_synflow_equals_hand_computation_on_a_tiny_net():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    w1, b1 = net[0].weight.detach().abs().double(), net[0].bias.detach().abs().double()
    w2 = net[3].weight.detach().abs().double()
    # BN removed, |params|, input ones (1, 3): R = 1^T |W2| (|W1| 1 + |b1|) + sum |b2|, all terms positive
    # so the ReLU passes everything. dR/dW1[i, j] = colsum(|W2|)[i]; dR/dW2[k, i] = (|W1| 1 + |b1|)[i].
    hidden = w1.sum(1) + b1
    expected = (w1 * w2.sum(0)[:, None]).sum() + (w2 * hidden[None, :]).sum()
    x = torch.randn(5, 3)  # only its shape (per sample) matters; a batch of 1 would break BN1d in training
    got = proxies.get("synflow")(net, x, torch.zeros(5, dtype=torch.int64))
    assert got == pytest.approx(float(expected), rel=1e-12)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in net.modules())  # it was removed


def test_synflow_conv_by_hand_and_independent_of_the_data():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 2 * 2, 2))
    wc = net[0].weight.detach().abs().double().reshape(3, 2)
    wl = net[3].weight.detach().abs().double().reshape(2, 3, 4)
    # ones (1, 2, 2, 2): conv output channel o at each of the 4 positions = sum_c |wc[o, c]|
    # R = sum_{k,o,p} |wl[k, o, p]| * sum_c |wc[o, c]| + const
    expected = (wl * wc.sum(1)[None, :, None]).sum() + (wc * wl.sum((0, 2))[:, None]).sum()
    one = proxies.get("synflow")(net, torch.randn(4, 2, 2, 2), None)
    assert one == pytest.approx(float(expected), rel=1e-12)


# -------------------------------------------------------------------------- gradient proxies vs oracles


def test_grad_norm_and_snip_equal_a_plain_backward(cifar10_batch):
    x, y = cifar10_batch
    net = fresh(CELLS[0])
    net.train()
    F.cross_entropy(net(x), y).backward()
    norm = sum(m.weight.grad.norm().item() for m in weighted(net))
    saliency = sum((m.weight * m.weight.grad).abs().sum().item() for m in weighted(net))
    assert proxies.get("grad_norm")(fresh(CELLS[0]), x, y) == pytest.approx(norm, rel=1e-5)
    assert proxies.get("snip")(fresh(CELLS[0]), x, y) == pytest.approx(saliency, rel=1e-5)


def grasp_two_pass_oracle(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The reference's recipe: pass 1 for g, pass 2 with create_graph, backward g . grad, -W * W.grad."""
    net.train()
    weights = [m.weight for m in weighted(net)]
    g = torch.autograd.grad(F.cross_entropy(net(x), y), weights)
    grad_f = torch.autograd.grad(F.cross_entropy(net(x), y), weights, create_graph=True)
    sum((a.detach() * b).sum() for a, b in zip(g, grad_f)).backward()
    return float(sum((-w.detach() * w.grad).sum().item() for w in weights))


def test_grasp_equals_the_two_pass_recipe(cifar10_batch):
    x, y = cifar10_batch
    expected = grasp_two_pass_oracle(fresh(CELLS[0]), x, y)
    got = proxies.get("grasp")(fresh(CELLS[0]), x, y)
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6 * abs(expected))


def test_grasp_equals_minus_theta_hessian_gradient_on_a_tiny_net():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(5, 4, bias=False), nn.Tanh(), nn.Linear(4, 3, bias=False)).double()
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    w1, w2 = net[0].weight.detach().clone(), net[2].weight.detach().clone()
    theta = torch.cat([w1.flatten(), w2.flatten()])

    def loss(flat):
        a, b = flat[:20].view(4, 5), flat[20:].view(3, 4)
        return F.cross_entropy(torch.tanh(x @ a.T) @ b.T, y)

    g = torch.autograd.functional.jacobian(loss, theta)
    hessian = torch.autograd.functional.hessian(loss, theta)
    expected = float(-(theta * (hessian @ g)).sum())
    got = proxies.get("grasp")(net, x, y)
    assert got == pytest.approx(expected, rel=1e-9)
    # the temperature divides the logits
    assert proxies.get("grasp", temperature=2.0)(net, x, y) != pytest.approx(got, rel=1e-3)


def fisher_oracle(net: nn.Module, x: torch.Tensor, y: torch.Tensor, per_weight: bool) -> float:
    """Activations kept with retain_grad, then the formula channel by channel, broadcast like the reference."""
    net.train()
    acts = {}

    def keep(module, args, out):
        out.retain_grad()
        acts[module] = out

    for m in weighted(net):
        m.register_forward_hook(keep)
    F.cross_entropy(net(x), y).backward()
    total = 0.0
    for m, a in acts.items():
        per_sample = (a * a.grad).detach()
        per_sample = per_sample if a.dim() == 2 else per_sample.sum((2, 3))  # (N, channels)
        fisher_k = 0.5 * per_sample.pow(2).mean(0)
        if per_weight:  # the reference broadcasts each channel's value to each of its weights
            fisher_k = torch.stack([torch.full(m.weight.shape[1:], float(v)) for v in fisher_k])
        total += fisher_k.sum().item()
    return total


@pytest.mark.parametrize("per_weight", [True, False])
def test_fisher_equals_oracle(per_weight, cifar10_batch):
    x, y = cifar10_batch
    expected = fisher_oracle(fresh(CELLS[1]), x, y, per_weight)
    got = proxies.get("fisher", per_weight=per_weight)(fresh(CELLS[1]), x, y)
    assert got == pytest.approx(expected, rel=1e-4)


# ------------------------------------------------------------------------------------ naswot, jacob_cov


def test_naswot_equals_brute_force_hamming_kernel():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.randn(5, 6)
    codes = []
    h = x
    for layer in net:
        if isinstance(layer, nn.ReLU):
            codes.append(h > 0)
        h = layer(h)
    c = torch.cat(codes, 1)
    kernel = torch.tensor([[float((c[i] == c[j]).sum()) for j in range(5)] for i in range(5)], dtype=torch.float64)
    expected = math.log(abs(torch.linalg.det(kernel).item()))
    assert proxies.get("naswot")(net, x, None) == pytest.approx(expected, rel=1e-10)


def test_naswot_permutation_invariant_and_duplicates_collapse(cifar10_batch):
    x, y = cifar10_batch
    base = proxies.get("naswot")(fresh(CELLS[0]), x, y)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    assert proxies.get("naswot")(fresh(CELLS[0]), x[perm], y[perm]) == pytest.approx(base, rel=1e-9)
    twins = x.clone()
    twins[1] = twins[0]  # two samples with the same codes: K has two equal rows
    assert proxies.get("naswot")(fresh(CELLS[0]), twins, y) < base - 10


def test_jacob_cov_closed_form_on_a_linear_net():
    """Every sample has the same Jacobian: the correlation matrix is all ones, eigenvalues N, 0, ..., 0."""
    torch.manual_seed(6)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    n, k = 5, 1e-5
    expected = -((math.log(n + k) + 1 / (n + k)) + (n - 1) * (math.log(k) + 1 / k))
    got = proxies.get("jacob_cov")(net, torch.randn(n, 3, 2, 2), None)
    assert got == pytest.approx(expected, rel=1e-6)


def test_jacob_cov_permutation_invariant_and_bounded(cifar10_batch):
    x, y = cifar10_batch
    base = proxies.get("jacob_cov")(fresh(CELLS[1]), x, y)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1))
    assert proxies.get("jacob_cov")(fresh(CELLS[1]), x[perm], y[perm]) == pytest.approx(base, rel=1e-6)
    # labels are not used
    assert proxies.get("jacob_cov")(fresh(CELLS[1]), x, y.flip(0)) == base
    assert base <= -x.shape[0]


# ---------------------------------------------------------------------------------------- independence


def test_no_proxy_depends_on_another_side_effects(cifar10_batch):
    x, y = cifar10_batch
    x_before, y_before = x.clone(), y.clone()
    arch = CELLS[1]
    alone = {name: proxies.get(name)(fresh(arch), x, y) for name in BASELINES}
    for order in (list(reversed(BASELINES)), BASELINES[1::2] + BASELINES[0::2]):
        together = {}
        for name in order:
            together[name] = proxies.get(name)(fresh(arch), x, y)
        for name in BASELINES:
            assert together[name] == pytest.approx(alone[name], rel=1e-9, abs=0), (name, order)
    # nothing global was left changed
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert not x.requires_grad and x.grad is None
    assert torch.is_grad_enabled()
    assert torch.get_default_dtype() == torch.float32


def test_proxies_work_under_no_grad_and_leave_pairs_consistent(cifar10_batch):
    """A caller in a no_grad block still gets gradient proxies (they enable grad themselves)."""
    x, y = cifar10_batch
    expected = {name: proxies.get(name)(fresh(CELLS[0]), x, y) for name in ("snip", "jacob_cov", "grasp")}
    with torch.no_grad():
        for name, value in expected.items():
            assert proxies.get(name)(fresh(CELLS[0]), x, y) == pytest.approx(value, rel=1e-9)


@pytest.mark.parametrize("pair", list(itertools.combinations(["fisher", "synflow", "naswot"], 2)))
def test_same_seed_nets_give_same_values(pair, cifar10_batch):
    x, y = cifar10_batch
    first = [proxies.get(name)(fresh(CELLS[0], seed=11), x, y) for name in pair]
    second = [proxies.get(name)(fresh(CELLS[0], seed=11), x, y) for name in reversed(pair)][::-1]
    assert first == second


def test_jacob_cov_samples_option_uses_the_first_images(cifar10_batch):
    x, y = cifar10_batch
    arch = spaces.get("nb201").arch(11393)

    def net():
        torch.manual_seed(3)
        return spaces.get("nb201").build(arch, 10)

    assert proxies.get("jacob_cov", samples=8)(net(), x, y) == proxies.get("jacob_cov")(net(), x[:8], y[:8])
    assert proxies.get("jacob_cov", samples=8)(net(), x, y) != proxies.get("jacob_cov")(net(), x, y)
    with pytest.raises(ValueError, match="samples >= 2"):
        proxies.get("jacob_cov", samples=1)
