"""Per-sample gradient sign sums for Conv2d/Linear weights: the engines behind GradSign.

All engines compute, for a network in training mode and a batch (x_i, y_i), i = 1..N::

    S_k = sum_i sign(g_ik)        g_i = d cross_entropy(f(x_i), y_i) / d weights (Conv2d, Linear)

with BatchNorm normalising each sample by its own statistics (as a batch of one would; ``bn="sample"``, the
paper's definition) or by the whole batch's statistics held constant (``bn="batch"``, see
``BatchStatistics``), sign(0) = 0, and non-finite g_ik left out of the sum (and counted). They differ only
in how they get g_i:

- ``loop``: N backward passes at batch size 1 (the reference's way; slow, launch-bound on a GPU).
- ``hooks`` (production): one batched forward+backward per chunk of samples, each BatchNorm switched to
  per-sample statistics (``group_norm`` with one channel per group and the BN's affine parameters, which
  is exactly BatchNorm on a batch of one); per-sample weight gradients are formed inside backward hooks from each
  layer's input and output gradient and reduced to sign sums at once, so no N x P gradient tensor is ever held.
  Parameters need no summed gradient, so backward computes none: the per-sample products replace it.
- ``func``: ``torch.func.vmap(grad(...))`` over ``functional_call``, per chunk.

Invariant shared by all three, in both BatchNorm modes: samples never interact (per-sample BN, or BN as a
constant per-channel affine map), so chunking the batch changes no number beyond float rounding.

The loop is the definition. ``func`` equals it by construction (vmap evaluates each sample alone). The
``hooks`` engine equals it only on networks where every use of a scored weight is a call of a stock
Conv2d/Linear on an input whose dim 0 is the sample, and samples do not interact; it checks this on every
call (``sign_sums_hooks`` lists the checks) and raises ``HooksUnsupported`` naming the module otherwise.
``sign_sums(engine="hooks")`` then falls back to ``func`` (``loop`` where vmap cannot run the network) and
says so on the result (``SignSums.engine``, ``SignSums.fallback``) and with a ``GradSignFallbackWarning``;
``fallback="error"`` refuses instead. A weight shared by several modules counts once per module, with the
gradient summed over all its uses, as the loop (and the reference's loop over ``net.modules()``) counts it.
"""

from __future__ import annotations

import contextlib
import math
import types
import warnings
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .layers import WEIGHTED, weighted_layers

ENGINES = ("hooks", "func", "loop")
BN_MODES = ("sample", "batch")
FALLBACKS = ("auto", "func", "loop", "error")
DEFAULT_MEMORY_BUDGET_MB = 2048
# Sample 0's logits alone and inside the batch must agree to this fraction of their largest magnitude.
# Measured on the CPU in fp32: NB201 cells differ by <= 4e-7 (batched kernels round differently); samples
# that interact differ by 3e-2 (dropout 0.1 in one transformer layer) to 2e-1 (functional batch_norm).
# TF32 or half precision rounds at ~1e-3 per layer, so they get the looser bound.
INTERACTION_RTOL = 1e-3
INTERACTION_RTOL_REDUCED = 2e-2


def _interaction_rtol(t: torch.Tensor) -> float:
    reduced = t.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(t.device.type)
    if t.is_cuda and (torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32
                      or torch.get_float32_matmul_precision() != "highest"):
        reduced = True
    return INTERACTION_RTOL_REDUCED if reduced else INTERACTION_RTOL


class HooksUnsupported(ValueError):
    """The hooks engine cannot vouch for its per-sample gradients on this network; the message names the
    module and the reason."""


class GradSignFallbackWarning(RuntimeWarning):
    """GradSign's production engine handed a network to an exact engine (the message says why)."""


@dataclass
class SignSums:
    """Per-layer sign sums S (same shapes as the weights) and how many non-finite entries were dropped.

    ``add`` is exact: it masks and counts non-finite entries. ``add_unchecked`` skips that work; its caller
    must vouch that every entry is finite (the hooks engine does so with an ``OverflowBound`` and redoes the
    pass with ``add`` where it cannot). Counts stay on the device until read, so adding a layer never waits
    for the GPU.
    """

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    _nonfinite: list[torch.Tensor] = field(default_factory=list)
    engine: str = ""  # the engine that computed these sums
    fallback: str | None = None  # why the hooks engine handed over (None: it did not)

    def _accumulate(self, name: str, total: torch.Tensor) -> None:
        if name in self.sums:
            self.sums[name] += total
        else:
            self.sums[name] = total

    def add(self, name: str, per_sample: torch.Tensor) -> None:
        """Add sum_i sign(g_i) for per-sample gradients ``per_sample`` (N, *weight.shape)."""
        finite = torch.isfinite(per_sample)
        self._nonfinite.append((~finite).sum())
        self._accumulate(name, torch.sign(per_sample).masked_fill_(~finite, 0.0).sum(0))

    def add_unchecked(self, name: str, per_sample: torch.Tensor) -> None:
        """Like ``add`` when every entry is finite, which the caller must vouch for."""
        self._accumulate(name, torch.sign(per_sample).sum(0))

    @property
    def nonfinite(self) -> int:
        return int(torch.stack(self._nonfinite).sum().item()) if self._nonfinite else 0

    def score(self) -> float:
        """sum_k |S_k| over every weight entry, accumulated in float64 (exact: every S_k is an integer).

        One concatenation and one reduction for all layers, not a pair of kernels per layer."""
        if not self.sums:
            return 0.0
        flat = torch.cat([s.reshape(-1) for s in self.sums.values()])
        return float(flat.abs().sum(dtype=torch.float64).item())


class OverflowBound:
    """Vouches, with one device sync per pass, that no per-sample gradient entry of any call is NaN/inf.

    Each per-sample weight-gradient entry of a call is a sum of ``terms`` products x * grad_out, so if
    max|x| * max|grad_out| * terms stays under the dtype's largest value / ``HEADROOM`` for every call, no
    entry can overflow; a NaN or inf in x or grad_out makes its factor NaN/inf and the bound fails. Per call
    this launches two one-pass reductions (``aminmax`` of x and of grad_out); the products and the
    comparison run once per pass, in float64, when ``may_be_nonfinite`` is asked. ``require_finite`` adds a
    value that must itself be finite (the sum of a weight's per-sample gradients over several calls, whose
    total the per-call factors do not bound).
    """

    HEADROOM = 32.0  # float32: limit 1.06e37, against a largest value of 3.4e38

    def __init__(self) -> None:
        self._x: list[torch.Tensor] = []  # per call: min and max of x (two 0-d tensors)
        self._grad: list[torch.Tensor] = []  # per call: min and max of grad_out
        self._scale: list[float] = []  # terms * HEADROOM / largest value of the call's dtype
        self._finite: list[torch.Tensor] = []

    def add_call(self, x: torch.Tensor, grad_out: torch.Tensor, terms: int) -> None:
        # aminmax: one pass, NaN propagates (linalg.vector_norm(inf) is one kernel too, but 10x slower on CPU)
        self._x.extend(torch.aminmax(x))
        self._grad.extend(torch.aminmax(grad_out))
        dtype = x.dtype if x.dtype == grad_out.dtype else torch.promote_types(x.dtype, grad_out.dtype)
        self._scale.append(float(terms) * self.HEADROOM / torch.finfo(dtype).max)

    def require_finite(self, value: torch.Tensor) -> None:
        self._finite.append(value.reshape(()))

    def may_be_nonfinite(self) -> bool:
        """True unless every call's bound holds and every required value is finite (NaN fails both)."""
        fails = []
        if self._x:
            x = torch.stack(self._x).double().abs().view(-1, 2).amax(1)  # NaN propagates through both
            grad = torch.stack(self._grad).double().abs().view(-1, 2).amax(1)
            scale = torch.tensor(self._scale, dtype=torch.float64, device=x.device)
            fails.append(~((x * grad * scale) < 1.0).all())
        if self._finite:
            fails.append(~torch.isfinite(torch.stack(self._finite)).all())
        return bool(torch.stack(fails).any().item()) if fails else False


def _label(name: str, module: nn.Module) -> str:
    return f"{name or '<root>'} ({type(module).__name__})"


def _owners(layers: list[tuple[str, nn.Module]]) -> dict[int, list[str]]:
    """id(weight) -> the names of every scored module that holds it (more than one: a tied weight)."""
    owners: dict[int, list[str]] = {}
    for name, m in layers:
        owners.setdefault(id(m.weight), []).append(name)
    return owners


def _share_tied(result: "SignSums", owners: dict[int, list[str]]) -> None:
    """A tied weight's sums, accumulated under its first owner, are counted under every owner (as the loop)."""
    for names in owners.values():
        if names[0] in result.sums:
            for other in names[1:]:
                result.sums[other] = result.sums[names[0]]


def _per_sample_batch_norm(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 3:
        raise ValueError(
            f"{type(self).__name__} on input {tuple(x.shape)} has one value per channel per sample: "
            "per-sample BatchNorm (as GradSign needs) is undefined there"
        )
    # GroupNorm with one channel per group normalises each (sample, channel) over its positions with the
    # biased variance: exactly BatchNorm in training mode on a batch of one, in one fused kernel.
    return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)


@contextlib.contextmanager
def _forward_replaced(modules: list[nn.Module], forward) -> Iterator[None]:
    """Within the block each of ``modules`` runs ``forward(module, x)`` instead of its own forward."""
    for m in modules:
        m.forward = types.MethodType(forward, m)
    try:
        yield
    finally:
        for m in modules:
            del m.forward


def per_sample_batch_norm(net: nn.Module):
    """A context in which every BatchNorm of ``net`` normalises each sample by its own statistics."""
    return _forward_replaced([m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)],
                             _per_sample_batch_norm)


class BatchStatistics:
    """Every BatchNorm's batch mean and biased variance from one train-mode forward of the whole batch.

    ``applied()`` makes each BatchNorm compute ``(x - mean) / sqrt(var + eps) * weight + bias`` with these
    numbers held constant (per channel, no gradient through them): a per-channel affine map, so samples never
    interact, every engine stays exact, and each sample's output is the one it has inside the full batch in
    train mode. A BatchNorm called several times per forward gets the statistics of each call in call order
    (every forward must call it as often as the measuring one did). The measuring forward leaves the running
    statistics (and ``num_batches_tracked``) as they were.
    """

    def __init__(self, net: nn.Module, inputs: torch.Tensor) -> None:
        self.modules = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.stats: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        buffers = [{k: b.clone() for k, b in m.named_buffers(recurse=False)} for m in self.modules]

        def record(module: nn.Module, args) -> None:
            x = args[0].detach()
            if x.dim() < 2 or x.numel() // x.shape[1] < 2:
                raise ValueError(f"{type(module).__name__} on input {tuple(x.shape)}: batch statistics need "
                                 "more than one value per channel")
            var, mean = torch.var_mean(x, dim=[d for d in range(x.dim()) if d != 1], correction=0)
            self.stats.setdefault(id(module), []).append((mean, var))

        handles = [m.register_forward_pre_hook(record) for m in self.modules]
        was_training = net.training
        try:
            net.train()
            with torch.no_grad():
                net(inputs)
        finally:
            for h in handles:
                h.remove()
            net.train(was_training)
            for m, saved in zip(self.modules, buffers):
                for k, b in saved.items():
                    getattr(m, k).copy_(b)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block every measured BatchNorm normalises with its held batch statistics."""
        patched = [m for m in self.modules if id(m) in self.stats]
        calls = {id(m): 0 for m in patched}

        def frozen(module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
            stats = self.stats[id(module)]
            mean, var = stats[calls[id(module)] % len(stats)]
            calls[id(module)] += 1
            shape = (1, -1) + (1,) * (x.dim() - 2)
            out = (x - mean.view(shape)) * torch.rsqrt(var + module.eps).view(shape)
            if module.weight is not None:
                out = out * module.weight.view(shape)
            if module.bias is not None:
                out = out + module.bias.view(shape)
            return out

        with _forward_replaced(patched, frozen):
            yield


def normalisation(net: nn.Module, inputs: torch.Tensor, bn: str):
    """A factory of the context in which ``net``'s BatchNorms behave as GradSign's ``bn`` mode says:
    ``"sample"``: per-sample statistics; ``"batch"``: ``inputs``' batch statistics, measured here once."""
    if bn not in BN_MODES:
        raise ValueError(f"unknown GradSign bn mode {bn!r}; valid: {', '.join(BN_MODES)}")
    if bn == "batch":
        return BatchStatistics(net, inputs).applied
    return lambda: per_sample_batch_norm(net)


CONV_METHODS = ("auto", "grouped", "unfold")


def _conv_per_sample_grad(conv: nn.Conv2d, x: torch.Tensor, grad_out: torch.Tensor,
                          method: str = "auto") -> torch.Tensor:
    """Per-sample weight gradients (N, C_out, C_in/groups, kh, kw) of a Conv2d from its input and output grad.

    ``grouped``: one weight-gradient convolution in which every sample is its own group (the batch folded
    into channels); ``unfold``: one im2col over the batch folded into channels, then a batched matmul.
    ``auto`` picks what measured faster (``python -m tools.bench gradsign --conv-method ...``): grouped on
    the CPU (engine at 1.1x the floor against 1.8x), unfold on CUDA (2.6x against 2.9x on an H100).
    """
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise NotImplementedError("per-sample gradients need a Conv2d with numeric zero padding")
    n = x.shape[0]
    kh, kw = conv.kernel_size
    groups = conv.groups
    c_out = conv.out_channels
    if method == "auto":
        method = "unfold" if x.is_cuda else "grouped"
    if method == "grouped":
        weight = conv.weight.detach()
        folded = weight.new_empty((n * c_out, *weight.shape[1:]))  # only its shape is read
        per_sample = torch.ops.aten.convolution_backward(
            grad_out.reshape(1, n * c_out, *grad_out.shape[2:]), x.reshape(1, -1, *x.shape[2:]), folded, None,
            list(conv.stride), list(conv.padding), list(conv.dilation), False, [0, 0], n * groups,
            [False, True, False])[1]
        return per_sample.view(n, *weight.shape)
    if (kh, kw) == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0):
        cols = x.flatten(2)
    else:
        # The batch folded into channels: one im2col kernel for all samples (aten's unfold loops over the
        # batch, one launch per sample on CUDA).
        cols = F.unfold(x.reshape(1, -1, *x.shape[2:]), (kh, kw), dilation=conv.dilation, padding=conv.padding,
                        stride=conv.stride).view(n, -1, grad_out.shape[2] * grad_out.shape[3])
    g = grad_out.flatten(2)  # (N, C_out, L)
    if groups == 1:
        per_sample = torch.bmm(g, cols.transpose(1, 2))  # (N, C_out, C_in*kh*kw)
    else:
        cols = cols.view(n, groups, -1, cols.shape[-1])
        g = g.view(n, groups, c_out // groups, g.shape[-1])
        per_sample = torch.einsum("ngol,ngil->ngoi", g, cols)
    return per_sample.reshape(n, *conv.weight.shape)


def _linear_per_sample_grad(linear: nn.Linear, x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    return torch.einsum("nlo,nli->noi", grad_out.reshape(n, -1, grad_out.shape[-1]), x.reshape(n, -1, x.shape[-1]))


def per_sample_weight_grad(module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor,
                           conv_method: str = "auto") -> torch.Tensor:
    if isinstance(module, nn.Conv2d):
        return _conv_per_sample_grad(module, x, grad_out, conv_method)
    return _linear_per_sample_grad(module, x, grad_out)


def _terms(module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> int:
    """How many products each per-sample weight-gradient entry sums (output positions, or tokens)."""
    if isinstance(module, nn.Conv2d):
        return math.prod(grad_out.shape[2:])
    return max(1, math.prod(x.shape[1:]) // max(1, x.shape[-1]))


@dataclass
class Probe:
    """One no-grad forward of sample 0 alone: what the chunk size and the hooks engine's checks need.

    It depends on the network's structure and weights and on sample 0, not on the device: a probe made on a
    CPU copy of the network (same seed, same weights) serves the same network on a GPU, and takes its
    launches off the GPU (``sign_sums(..., probe=...)``). Modules are named, not held."""

    calls: list[tuple[str, tuple[int, ...]]]  # (module name, input shape) of every scored-module call, in order
    logits: torch.Tensor | None  # the network's output for sample 0 alone
    kept_bytes: int  # activations and their gradients, held across the whole pass, per sample
    transient_bytes: int  # the largest one-layer temporary (unfolded input + per-sample weight grads)

    def chunk_size(self, n: int, memory_budget_mb: int) -> int:
        budget = memory_budget_mb * 2**20
        return int(max(1, min(n, budget // max(1, self.kept_bytes + self.transient_bytes))))


def probe_network(net: nn.Module, inputs: torch.Tensor, norm=None) -> Probe:
    """Probe of sample 0 alone; ``norm``: the BatchNorm context factory (``normalisation``; None = per sample)."""
    norm = norm or (lambda: per_sample_batch_norm(net))
    names = {id(m): name for name, m in weighted_layers(net)}
    probe = Probe([], None, 0, 0)
    handles = []

    def count(module: nn.Module, args, output) -> None:
        if isinstance(output, torch.Tensor):
            probe.kept_bytes += 3 * output.numel() * output.element_size()  # output, its grad, saved input
        if isinstance(module, WEIGHTED) and args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
            kh, kw = module.kernel_size if isinstance(module, nn.Conv2d) else (1, 1)
            cols = math.prod(args[0].shape[1:]) * kh * kw
            probe.transient_bytes = max(probe.transient_bytes,
                                        2 * (cols + module.weight.numel()) * module.weight.element_size())

    def record(module: nn.Module, args, output) -> None:
        x = args[0] if args else None
        probe.calls.append((names[id(module)], tuple(x.shape) if isinstance(x, torch.Tensor) else ()))

    for m in net.modules():
        if isinstance(m, WEIGHTED):
            handles.append(m.register_forward_hook(record))
        if len(list(m.children())) == 0:
            handles.append(m.register_forward_hook(count))
    try:
        with torch.no_grad(), norm():
            out = net(inputs[:1])
    finally:
        for h in handles:
            h.remove()
    probe.logits = out.detach() if isinstance(out, torch.Tensor) else None
    return probe


def auto_chunk_size(net: nn.Module, inputs: torch.Tensor, memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB) -> int:
    """Samples per chunk so that one chunk's activations and per-sample gradients fit the budget.

    A function of (network structure, input shape, budget) only - not of free device memory - so every
    actor picks the same chunks for the same cell. Measured by one no-grad forward of a single sample.
    """
    return probe_network(net, inputs).chunk_size(inputs.shape[0], memory_budget_mb)


def _chunks(n: int, chunk_size: int) -> Iterator[slice]:
    for start in range(0, n, chunk_size):
        yield slice(start, min(n, start + chunk_size))


def check_modules(layers: list[tuple[str, nn.Module]]) -> None:
    """Raise ``HooksUnsupported`` unless every scored module computes exactly what the hooks' formulas
    assume: the stock Conv2d/Linear forward on its own ``weight`` Parameter, with no forward hook that could
    change its output, and a Conv2d with numeric zero padding."""
    global_hooks = getattr(nn.modules.module, "_global_forward_hooks", {})
    if global_hooks:
        raise HooksUnsupported("global module forward hooks are registered (they may change layer outputs)")
    for name, m in layers:
        base = nn.Conv2d if isinstance(m, nn.Conv2d) else nn.Linear
        cls = type(m)
        if cls.forward is not base.forward or (base is nn.Conv2d and cls._conv_forward is not nn.Conv2d._conv_forward):
            raise HooksUnsupported(f"{_label(name, m)} overrides forward: its weight gradient is not the stock "
                                   f"{base.__name__}'s")
        if parametrize.is_parametrized(m) or not isinstance(m.weight, nn.Parameter):
            raise HooksUnsupported(f"{_label(name, m)}: its weight is computed (parametrization, weight norm, "
                                   "pruning), not a Parameter")
        if m._forward_hooks:
            raise HooksUnsupported(f"{_label(name, m)} has forward hooks (they may change its output)")
        if base is nn.Conv2d and (isinstance(m.padding, str) or m.padding_mode != "zeros"):
            raise HooksUnsupported(f"{_label(name, m)}: per-sample gradients need numeric zero padding")


def _same_values(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    """Same shape, same non-finite positions, finite parts within ``rtol`` of their largest magnitude."""
    if a.shape != b.shape:
        return False
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    if not torch.equal(fa, fb):
        return False
    if not bool(fa.any()):
        return True
    a, b = a[fa].double(), b[fb].double()
    scale = torch.maximum(a.abs().max(), b.abs().max())
    return bool(((a - b).abs().max() <= rtol * scale).item())


def _summed_cross_entropy(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, targets, reduction="sum")


class HooksPass:
    """One pass of the hooks engine over all chunks, with the checks that make its numbers the loop's.

    Per chunk of n samples: one forward with a hook on every scored-module call and one backward for the
    input's gradient only; each call's output-gradient hook turns (input, output grad) into per-sample
    weight gradients and reduces them to sign sums at once. Scored weights require grad during the pass
    (so the autograd graph shows every use of each weight) but backward computes no weight gradient:
    only the input's is asked for. Checks, each raising ``HooksUnsupported`` with the module's name:

    - every call's input has the sample in dim 0: its shape is (n, *R) where the same call's input had
      shape (1, *R) in the probe of sample 0 alone (so sequence-first input, or an input that does not
      depend on the batch, is refused even when a length equals n), and the output gradient has n rows;
    - calls come in the probe's order (no data-dependent control flow);
    - first chunk: sample 0's output equals its output alone (to ``INTERACTION_RTOL``, or
      ``INTERACTION_RTOL_REDUCED`` under TF32/half precision): samples do not interact (functional
      ``F.batch_norm``, mixing across dim 0) and nothing is random (dropout);
    - first chunk: every use of a scored weight in the graph of the loss is inside a hooked call (not,
      e.g., ``F.linear(x, m.weight)`` as ``nn.MultiheadAttention`` applies ``out_proj``), and every hooked
      output that reaches the loss gets its gradient (not only through a ``.detach()``-ed input);
    - every chunk gets as many gradients as the first.

    A weight shared by several modules (tied) is keyed by its Parameter: its per-sample gradients are
    summed over every call of every module holding it before the sign is taken.
    """

    def __init__(self, net: nn.Module, layers: list[tuple[str, nn.Module]], probe: Probe, conv_method: str,
                 exact: bool, loss=None, norm=None):
        self.net, self.layers, self.probe = net, layers, probe
        self.norm = norm or (lambda: per_sample_batch_norm(net))  # the BatchNorm mode's context factory
        # (output, targets) -> the summed loss whose per-sample weight gradients are wanted; a loss that is
        # not a sum over samples of each sample's own term breaks the engine's premise (None: cross-entropy)
        self.loss = loss or _summed_cross_entropy
        self.conv_method, self.exact = conv_method, exact
        self.owners = _owners(layers)
        self.key = {id(m.weight): self.owners[id(m.weight)][0] for _, m in layers if m.weight.requires_grad}
        self.result = SignSums(engine="hooks")
        # A weight used in several calls has its per-sample gradient summed over its calls before the sign
        # is taken; most weights are used once and reduce at once.
        self.pending: dict[str, torch.Tensor] = {}
        self.bound = OverflowBound()  # vouches for the unchecked sums (not used when exact)
        self.calls_left: dict[str, int] = {}
        self.n = 0  # samples in the current chunk
        self.call = 0  # index of the next scored-module call in this chunk's forward
        self.first_chunk = True
        self.claimed: set = set()  # autograd nodes, inside hooked calls, that use a scored weight
        self.outputs: list[tuple[int, str, object]] = []  # first chunk: (call, label, grad_fn) per hooked output
        self.fired: set[int] = set()  # indices of this chunk's calls whose output got its gradient
        self.fired_first = 0

    # -- reduction -------------------------------------------------------------------------------------
    def _reduce(self, key: str, per_sample: torch.Tensor) -> None:
        if self.calls_left[key] > 0 or key in self.pending:
            if key in self.pending:
                per_sample = self.pending[key] + per_sample
            self.pending[key] = per_sample
            if self.calls_left[key] == 0:
                self._flush(key)
        elif self.exact:
            self.result.add(key, per_sample)
        else:
            self.result.add_unchecked(key, per_sample)

    def _flush(self, key: str) -> None:
        per_sample = self.pending.pop(key)
        if self.exact:
            self.result.add(key, per_sample)
        else:
            self.bound.require_finite(per_sample.sum())  # the calls' sum may overflow where each did not
            self.result.add_unchecked(key, per_sample)

    # -- hooks -----------------------------------------------------------------------------------------
    def forward_hook(self, name: str):
        def hook(module: nn.Module, args, output) -> None:
            index, self.call = self.call, self.call + 1
            key = self.key.get(id(module.weight))
            if key is None:  # a frozen weight: no gradient in the loop either
                return
            label = _label(name, module)
            if index >= len(self.probe.calls) or self.probe.calls[index][0] != name:
                raise HooksUnsupported(f"{label}: scored modules are called in another order at batch "
                                       f"{self.n} than for one sample (data-dependent control flow)")
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor):
                raise HooksUnsupported(f"{label}: called without a positional input tensor")
            alone = self.probe.calls[index][1]
            if len(alone) < 2 or alone[0] != 1 or tuple(x.shape) != (self.n, *alone[1:]):
                raise HooksUnsupported(
                    f"{label}: its input is {tuple(x.shape)} for {self.n} samples and {alone} for one, so dim 0 "
                    "is not the sample (sequence-first input, or an input that does not depend on the batch)")
            if not output.requires_grad:  # computed without grad: no gradient in the loop either
                return
            if self.first_chunk:
                self._claim(module, x, output)
                self.outputs.append((index, label, output.grad_fn))
            self.calls_left[key] = self.calls_left.get(key, 0) + 1
            x = x.detach()

            def on_grad(grad_out: torch.Tensor) -> None:
                self.fired.add(index)
                self.calls_left[key] -= 1
                grad_out = grad_out.detach()
                if grad_out.shape[0] != self.n:
                    raise HooksUnsupported(f"{label}: output gradient {tuple(grad_out.shape)} has no row per sample")
                if not self.exact:
                    self.bound.add_call(x, grad_out, _terms(module, x, grad_out))
                self._reduce(key, per_sample_weight_grad(module, x, grad_out, self.conv_method))

            output.register_hook(on_grad)
        return hook

    def _claim(self, module: nn.Module, x: torch.Tensor, output: torch.Tensor) -> None:
        """Record the autograd nodes of this call (between its output and its input) that use its weight."""
        stop, weight = x.grad_fn, module.weight
        stack, seen = [output.grad_fn], set()
        while stack and len(seen) < 16:  # a stock Conv2d/Linear adds a handful of nodes
            node = stack.pop()
            if node is None or node is stop or node in seen:
                continue
            seen.add(node)
            for nxt, _ in node.next_functions:
                if nxt is None:
                    continue
                if hasattr(nxt, "variable"):  # AccumulateGrad of a leaf
                    if nxt.variable is weight:
                        self.claimed.add(node)
                else:
                    stack.append(nxt)

    # -- first-chunk checks ----------------------------------------------------------------------------
    def _check_interaction(self, out: torch.Tensor) -> None:
        alone = self.probe.logits
        if alone is not None and alone.device != out.device:  # a probe made on a host copy of the network
            alone = alone.to(out.device)
        if alone is None or not _same_values(out[:1].detach(), alone, _interaction_rtol(out)):
            raise HooksUnsupported(
                "sample 0's output inside the batch differs from its output alone: samples interact "
                "(e.g. functional F.batch_norm with batch statistics, mixing across dim 0) or the network is random "
                "(e.g. dropout)")

    def _check_graph(self, loss: torch.Tensor) -> set:
        """Every use of a scored weight in the loss's graph is inside a hooked call; returns the graph's nodes."""
        seen, stack = set(), [loss.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            for nxt, _ in node.next_functions:
                if nxt is None:
                    continue
                if hasattr(nxt, "variable"):
                    if id(nxt.variable) in self.key and node not in self.claimed:
                        names = ", ".join(self.owners[id(nxt.variable)])
                        raise HooksUnsupported(
                            f"the weight of {names} is used outside a call of its module ({type(node).__name__}; "
                            "e.g. F.linear(x, m.weight) as nn.MultiheadAttention applies out_proj, or a weight "
                            "tied to a non-scored module)")
                elif nxt not in seen:
                    stack.append(nxt)
        return seen

    # -- the pass --------------------------------------------------------------------------------------
    def run(self, inputs: torch.Tensor, targets: torch.Tensor, chunk_size: int) -> SignSums:
        params = list(self.net.parameters())
        requires = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(id(p) in self.key)
        handles = [m.register_forward_hook(self.forward_hook(name)) for name, m in self.layers]
        try:
            with self.norm():
                for part in _chunks(inputs.shape[0], chunk_size):
                    self._chunk(inputs[part], targets[part])
        finally:
            # Autograd nodes held here would keep a graph (and its saved tensors) alive in a reference cycle
            # through the output hooks, which Python's collector cannot see: drop them.
            self.claimed.clear()
            self.outputs.clear()
            for h in handles:
                h.remove()
            for p, r in zip(params, requires):
                p.requires_grad_(r)
        _share_tied(self.result, self.owners)
        return self.result

    def _chunk(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.n, self.call = inputs.shape[0], 0
        self.fired.clear()
        x = inputs.detach().requires_grad_(True)
        out = self.net(x)
        if self.call != len(self.probe.calls):
            raise HooksUnsupported(f"scored modules are called {self.call} times for {self.n} samples and "
                                   f"{len(self.probe.calls)} times for one (data-dependent control flow)")
        if self.first_chunk:
            self._check_interaction(out)
        loss = self.loss(out, targets)
        if self.first_chunk and loss.requires_grad:
            graph = self._check_graph(loss)
        if loss.requires_grad:
            torch.autograd.grad(loss, x, allow_unused=True)
        for key in list(self.pending):  # a weight some of whose calls got no gradient
            self._flush(key)
        self.calls_left.clear()
        if self.first_chunk:
            missing = ([label for index, label, fn in self.outputs if fn in graph and index not in self.fired]
                       if loss.requires_grad else [])
            if missing:
                raise HooksUnsupported(
                    f"{missing[0]}: its output reaches the loss but not along a path from the input (e.g. behind "
                    ".detach()), so its per-sample gradient is unknown")
            self.fired_first = len(self.fired)
            self.first_chunk = False
            self.claimed.clear()
            self.outputs.clear()
        elif len(self.fired) != self.fired_first:
            raise HooksUnsupported(f"{len(self.fired)} layer gradients for a chunk of {self.n} samples against "
                                   f"{self.fired_first} for the first chunk")


def sign_sums_hooks(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                    chunk_size: int | None = None, memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB,
                    conv_method: str = "auto", probe: Probe | None = None, bn: str = "sample",
                    norm=None) -> SignSums:
    """Production engine: batched forward+backward per chunk, per-sample grads formed in hooks.

    Raises ``HooksUnsupported`` (naming the module) where its numbers could differ from the loop's; the
    checks are listed on ``HooksPass``. Per layer the per-sample gradients are reduced to sign sums at once,
    without the non-finite masking, while a cheap bound (``OverflowBound``, read once per pass) vouches that
    no entry can be NaN/inf; if any layer's bound fails, the whole pass is redone with exact masking and
    counting.
    """
    net.train()
    layers = weighted_layers(net)
    check_modules(layers)
    norm = norm or normalisation(net, inputs, bn)
    probe = probe or probe_network(net, inputs, norm)
    chunk_size = chunk_size or probe.chunk_size(inputs.shape[0], memory_budget_mb)
    fast = HooksPass(net, layers, probe, conv_method, exact=False, norm=norm)
    result = fast.run(inputs, targets, chunk_size)
    if fast.bound.may_be_nonfinite():
        result = HooksPass(net, layers, probe, conv_method, exact=True, norm=norm).run(inputs, targets, chunk_size)
    return result


def sign_sums_func(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                   chunk_size: int | None = None, memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB,
                   bn: str = "sample", norm=None) -> SignSums:
    """``torch.func`` engine: vmap(grad(loss of one sample)) over chunks of samples.

    Each sample is evaluated alone under vmap, so this equals the loop on any network vmap can run
    (it raises on random ops, in-place buffer updates and data-dependent control flow). Differentiates
    each distinct scored weight that requires grad once; a tied weight's gradient covers all its uses.
    """
    from torch.func import functional_call, grad, vmap

    net.train()
    norm = norm or normalisation(net, inputs, bn)
    layers = weighted_layers(net)
    owners = _owners(layers)
    param_name = {id(p): name for name, p in net.named_parameters()}
    weights: dict[str, torch.Tensor] = {}
    key: dict[str, str] = {}  # parameter name -> the first scored module holding it
    for name, m in layers:
        pname = param_name.get(id(m.weight))
        if pname is not None and m.weight.requires_grad and pname not in weights:
            weights[pname] = m.weight.detach()
            key[pname] = owners[id(m.weight)][0]
    others = {k: v.detach() for k, v in net.named_parameters() if k not in weights}
    buffers = dict(net.named_buffers())
    chunk_size = chunk_size or auto_chunk_size(net, inputs, memory_budget_mb)

    def sample_loss(w: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(net, ({**w, **others}, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(out, y.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    result = SignSums(engine="func")
    with norm():
        for part in _chunks(inputs.shape[0], chunk_size):
            grads = per_sample(weights, inputs[part], targets[part])
            for pname, g in grads.items():
                result.add(key[pname], g)
    _share_tied(result, owners)
    return result


def sign_sums_loop(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                   chunk_size: int | None = None, memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB,
                   bn: str = "sample", norm=None) -> SignSums:
    """Reference engine: one backward pass per sample at batch size 1. ``bn="sample"``: BatchNorm in train
    mode sees the one sample (the definition, unpatched); ``"batch"``: the held batch statistics."""
    net.train()
    if norm is None:
        norm = normalisation(net, inputs, bn) if bn == "batch" else contextlib.nullcontext
    layers = weighted_layers(net)
    result = SignSums(engine="loop")
    with norm():
        for i in range(inputs.shape[0]):
            net.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(inputs[i: i + 1]), targets[i: i + 1])
            loss.backward()
            for name, m in layers:
                if m.weight.grad is not None:
                    result.add(name, m.weight.grad.unsqueeze(0))
    net.zero_grad(set_to_none=True)
    return result


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _fall_back(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, chunk_size: int | None,
               memory_budget_mb: int, fallback: str, reason: str, bn: str = "sample") -> SignSums:
    """The exact engine ``fallback`` names (``auto``: func, or the loop where vmap cannot run the network)."""
    if fallback in ("auto", "func"):
        try:
            result = sign_sums_func(net, inputs, targets, chunk_size, memory_budget_mb, bn)
        except Exception as exc:  # noqa: BLE001 - vmap refuses many things; the loop runs anything
            if fallback == "func" or _out_of_memory(exc):
                raise
            reason = f"{reason}; the func engine cannot run it ({type(exc).__name__}: {str(exc)[:200]})"
            result = sign_sums_loop(net, inputs, targets, chunk_size, memory_budget_mb, bn)
    else:
        result = sign_sums_loop(net, inputs, targets, chunk_size, memory_budget_mb, bn)
    result.fallback = reason
    warnings.warn(f"GradSign: the hooks engine cannot vouch for this network ({reason}); "
                  f"used the exact {result.engine} engine instead", GradSignFallbackWarning, stacklevel=3)
    return result


def sign_sums(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, engine: str = "hooks",
              chunk_size: int | None = None, memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB,
              conv_method: str = "auto", fallback: str = "auto", probe: Probe | None = None,
              bn: str = "sample") -> SignSums:
    """Sign sums by ``engine``; ``chunk_size`` None = the largest chunk that fits ``memory_budget_mb``;
    ``conv_method`` picks how the hooks engine forms per-sample conv gradients (``CONV_METHODS``).
    ``probe`` (hooks engine only): ``probe_network`` of this network made elsewhere, e.g. on a CPU copy
    before the network moved to the GPU; None = the engine probes ``net`` itself. A probe of another
    network cannot pass the engine's checks (call order, sample 0's output), so it costs a fallback, never
    a wrong number.

    ``fallback`` (hooks engine only): what to do with a network the hooks engine cannot vouch for -
    ``auto`` (func, or loop where vmap cannot run it), ``func``, ``loop``, or ``error`` (raise
    ``HooksUnsupported`` naming the module). The result's ``engine`` and ``fallback`` say what happened.

    ``bn``: ``"sample"`` (each BatchNorm normalises each sample by its own statistics: the paper's definition)
    or ``"batch"`` (the statistics of one train-mode forward of the whole batch, held constant:
    ``BatchStatistics``). A ``probe`` must have been made in the same mode.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown GradSign engine {engine!r}; valid engines: {', '.join(ENGINES)}")
    if conv_method not in CONV_METHODS:
        raise ValueError(f"unknown conv_method {conv_method!r}; valid: {', '.join(CONV_METHODS)}")
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown GradSign fallback {fallback!r}; valid: {', '.join(FALLBACKS)}")
    if bn not in BN_MODES:
        raise ValueError(f"unknown GradSign bn mode {bn!r}; valid: {', '.join(BN_MODES)}")
    if engine == "hooks":
        try:
            return sign_sums_hooks(net, inputs, targets, chunk_size, memory_budget_mb, conv_method, probe, bn)
        except HooksUnsupported as exc:
            if fallback == "error":
                raise
            return _fall_back(net, inputs, targets, chunk_size, memory_budget_mb, fallback, str(exc), bn)
    fn = sign_sums_func if engine == "func" else sign_sums_loop
    return fn(net, inputs, targets, chunk_size, memory_budget_mb, bn)
