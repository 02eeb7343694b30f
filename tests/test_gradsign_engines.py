"""GradSign beyond NB201: the production engine equals the per-sample loop oracle or hands
the network to an exact engine, saying which module and why - never a silently different number."""

import warnings

import pytest
import torch
from torch import nn

from gradsign.actors import proxies
from gradsign.actors.per_sample import sign_sums
from engine_cases import CASES, build
from test_gradsign import CELLS, fresh, oracle_gradsign

# case -> (engine that must give the number, a word the fallback reason must contain: the module)
EXPECTED_PATH = {
    "seq_first_linear": ("func", "mix (Linear)"),  # sequence length == batch (16): dim 0 == N
    "seq_first_linear_L4": ("func", "mix (Linear)"),
    "multihead_attention": ("func", "attn.out_proj"),
    "functional_batch_norm": ("func", "samples interact"),
    "learned_query": ("func", "qproj (Linear)"),
    "partial_detach": ("func", "conv2 (Conv2d)"),
    "tied_weight": ("hooks", None),  # handled exactly on the fast path
    "transformer_encoder_layer": ("func", "layer."),
}


def _oracle(case: str, x, y) -> float:
    return oracle_gradsign(build(case), x, y)


@pytest.mark.parametrize("chunk_size", [None, 4], ids=["auto-chunk", "chunk4"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_production_engine_equals_loop(case, chunk_size, cifar10_batch):
    x, y = cifar10_batch
    expected = _oracle(case, x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = proxies.get("gradsign", chunk_size=chunk_size)(build(case), x, y)
    assert got == pytest.approx(expected, rel=1e-4)
    engine, why = EXPECTED_PATH[case]
    assert getattr(got, "engine", None) == engine
    if why is None:
        assert got.fallback is None
    else:
        assert why in got.fallback


@pytest.mark.parametrize("case", sorted(CASES))
def test_func_engine_equals_loop(case, cifar10_batch):
    x, y = cifar10_batch
    got = proxies.get("gradsign", engine="func")(build(case), x, y)
    assert got == pytest.approx(_oracle(case, x, y), rel=1e-4)


@pytest.mark.parametrize("case", [c for c, (engine, _) in EXPECTED_PATH.items() if engine != "hooks"])
def test_refuses_naming_the_module_when_asked(case, cifar10_batch):
    from gradsign.actors.per_sample import HooksUnsupported

    x, y = cifar10_batch
    with pytest.raises(HooksUnsupported, match=EXPECTED_PATH[case][1].replace("(", r"\(").replace(")", r"\)")):
        sign_sums(build(case), x, y, "hooks", fallback="error")


def test_fallback_warns_and_loop_fallback(cifar10_batch):
    from gradsign.actors.per_sample import GradSignFallbackWarning

    x, y = cifar10_batch
    with pytest.warns(GradSignFallbackWarning, match="attn.out_proj"):
        got = sign_sums(build("multihead_attention"), x, y, "hooks", fallback="loop")
    assert got.engine == "loop"
    assert got.score() == pytest.approx(_oracle("multihead_attention", x, y), rel=1e-4)


def test_random_network_goes_to_the_loop(cifar10_batch):
    """Dropout: sample 0 alone and in the batch differ (refused by hooks); vmap refuses randomness."""
    x, y = cifar10_batch
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(10))
    net(x[:1])  # materialise the lazy Linear
    with pytest.warns(RuntimeWarning):
        got = sign_sums(net, x, y)
    assert got.engine == "loop"
    assert "func engine cannot run it" in got.fallback


class StandardisedConv(nn.Conv2d):
    """A Conv2d whose forward uses a function of its weight (weight standardisation): the hooks' formula
    is the stock Conv2d's, the gradient with respect to the function's value."""

    def forward(self, x):
        w = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
        return self._conv_forward(x, w, self.bias)


def _small(conv: nn.Module) -> nn.Module:
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


@pytest.mark.parametrize("variant", ["overridden_forward", "weight_norm", "forward_hook"])
def test_modules_the_formulas_do_not_cover(variant, cifar10_batch):
    x, y = cifar10_batch

    def make():
        torch.manual_seed(0)
        if variant == "overridden_forward":
            return _small(StandardisedConv(3, 4, 3))
        net = _small(nn.Conv2d(3, 4, 3))
        if variant == "weight_norm":
            nn.utils.parametrizations.weight_norm(net[0])
        else:
            net[0].register_forward_hook(lambda m, a, out: torch.tanh(out))
        return net

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = sign_sums(make(), x, y)
    assert got.engine != "hooks" and "0 (" in got.fallback
    assert got.score() == pytest.approx(oracle_gradsign(make(), x, y), rel=1e-4)


def test_frozen_weight_is_left_out_as_the_loop_does(cifar10_batch):
    x, y = cifar10_batch

    def make():
        torch.manual_seed(0)
        net = _small(nn.Conv2d(3, 4, 3))
        net[0].weight.requires_grad_(False)
        return net

    got = sign_sums(make(), x, y)
    assert got.engine == "hooks"
    assert got.score() == pytest.approx(oracle_gradsign(make(), x, y), rel=1e-4)
    assert "0" not in got.sums


def test_nb201_stays_on_the_fast_path(cifar10_batch):
    """No fallback (a warning would be an error here) and the loop's numbers, several chunkings."""
    x, y = cifar10_batch
    for arch in CELLS[:2]:
        expected = oracle_gradsign(fresh(arch), x, y)
        for chunk_size in (None, 5):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                got = sign_sums(fresh(arch), x, y, "hooks", chunk_size=chunk_size)
            assert got.engine == "hooks" and got.fallback is None
            assert got.score() == pytest.approx(expected, rel=1e-3)


def test_hooks_engine_leaves_the_network_as_it_was(cifar10_batch):
    x, y = cifar10_batch
    for net in (fresh(CELLS[0]), build("multihead_attention")):  # fast path, and refused then handed over
        next(net.parameters()).requires_grad_(False)
        before = [p.requires_grad for p in net.parameters()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sign_sums(net, x, y)
        assert [p.requires_grad for p in net.parameters()] == before
        assert all(not m._forward_hooks for m in net.modules())
        assert all("forward" not in vars(m) for m in net.modules())  # per-sample BatchNorm patch removed


def test_unknown_fallback_is_refused():
    with pytest.raises(ValueError, match="valid"):
        proxies.get("gradsign", fallback="nope")
    with pytest.raises(ValueError, match="valid"):
        sign_sums(nn.Linear(2, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), fallback="nope")
