"""Per-sample gradient sign sums for Conv2d/Linear weights: the engines behind GradSign.

All engines compute, for a network in training mode and a batch (x_i, y_i), i = 1..N::

    S_k = sum_i sign(g_ik)        g_i = d cross_entropy(f(x_i), y_i) / d weights (Conv2d, Linear)

with BatchNorm normalising each sample by its own statistics (as a batch of one would), sign(0) = 0,
and non-finite g_ik left out of the sum (and counted). They differ only in how they get g_i:

- ``loop``: N backward passes at batch size 1 (the reference's way; slow, launch-bound on a GPU).
- ``hooks`` (production): one batched forward+backward per chunk of samples, each BatchNorm switched to
  per-sample statistics (``group_norm`` with one channel per group and the BN's affine parameters, which
  is exactly BatchNorm on a batch of one); per-sample weight gradients are formed inside backward hooks from each layer's input
  and output gradient and reduced to sign sums at once, so no N x P gradient tensor is ever held.
  Parameters need no summed gradient, so backward computes none: the per-sample products replace it.
- ``func``: ``torch.func.vmap(grad(...))`` over ``functional_call``, per chunk.

Invariant shared by all three: samples never interact (per-sample BN), so chunking the batch changes no
number beyond float rounding.
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTED = (nn.Conv2d, nn.Linear)
ENGINES = ("hooks", "func", "loop")
DEFAULT_MEMORY_BUDGET_MB = 2048


@dataclass
class SignSums:
    """Per-layer sign sums S (same shapes as the weights) and how many non-finite entries were dropped.

    ``add`` is exact: it masks and counts non-finite entries. ``add_unchecked`` skips that work and takes
    a device-side flag saying whether the layer's per-sample gradients could hold a non-finite entry;
    ``suspect`` reads all flags at once (one sync), and a caller that sees it true recomputes with
    ``add``. Counts and flags stay on the device until read, so adding a layer never waits for the GPU.
    """

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    _nonfinite: list[torch.Tensor] = field(default_factory=list)
    _suspect: list[torch.Tensor] = field(default_factory=list)

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

    def add_unchecked(self, name: str, per_sample: torch.Tensor, suspect: torch.Tensor) -> None:
        """Like ``add`` when every entry is finite, which ``suspect`` (a bool tensor) must vouch for."""
        self._suspect.append(suspect)
        self._accumulate(name, torch.sign(per_sample).sum(0))

    @property
    def suspect(self) -> bool:
        return bool(torch.stack(self._suspect).any().item()) if self._suspect else False

    @property
    def nonfinite(self) -> int:
        return int(torch.stack(self._nonfinite).sum().item()) if self._nonfinite else 0

    def score(self) -> float:
        """sum_k |S_k| over every weight entry, accumulated in float64 (exact for any realistic size)."""
        if not self.sums:
            return 0.0
        return float(torch.stack([s.abs().sum(dtype=torch.float64) for s in self.sums.values()]).sum().item())


def weighted_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in net.named_modules() if isinstance(m, WEIGHTED)]


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
def per_sample_batch_norm(net: nn.Module) -> Iterator[None]:
    """Within the block every BatchNorm of ``net`` normalises each sample by its own statistics."""
    patched = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in patched:
        m.forward = types.MethodType(_per_sample_batch_norm, m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


CONV_METHODS = ("auto", "grouped", "unfold")


def _conv_per_sample_grad(conv: nn.Conv2d, x: torch.Tensor, grad_out: torch.Tensor,
                          method: str = "auto") -> torch.Tensor:
    """Per-sample weight gradients (N, C_out, C_in/groups, kh, kw) of a Conv2d from its input and output grad.

    ``grouped``: one weight-gradient convolution in which every sample is its own group (the batch folded
    into channels); ``unfold``: one im2col over the batch folded into channels, then a batched matmul.
    ``auto`` picks what measured faster (``python -m pipeline.bench gradsign --conv-method ...``): grouped on
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


_SAFE_BOUND = 1e37  # well under float32's max (3.4e38)


def may_be_nonfinite(x: torch.Tensor, grad_out: torch.Tensor, terms: int) -> torch.Tensor:
    """A device-side bool: True unless every per-sample gradient entry is provably finite.

    Each entry is a sum of ``terms`` products x * grad_out, so with max|x| * max|grad_out| * terms below
    float32's range no entry can overflow; a NaN or inf in either input makes the bound NaN/inf -> True.
    """
    def max_abs(t: torch.Tensor) -> torch.Tensor:
        low, high = torch.aminmax(t)  # one pass; NaN propagates
        return torch.maximum(high, -low)

    bound = max_abs(x) * max_abs(grad_out) * float(terms)
    return ~(bound < _SAFE_BOUND)


def _terms(module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> int:
    """How many products each per-sample weight-gradient entry sums (output positions, or tokens)."""
    if isinstance(module, nn.Conv2d):
        return int(grad_out[0, 0].numel())
    return max(1, int(x[0].numel() // max(1, x.shape[-1])))


def auto_chunk_size(net: nn.Module, inputs: torch.Tensor, memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB) -> int:
    """Samples per chunk so that one chunk's activations and per-sample gradients fit the budget.

    A function of (network structure, input shape, budget) only - not of free device memory - so every
    actor picks the same chunks for the same cell. Measured by one no-grad forward of a single sample.
    """
    kept_bytes = 0  # activations and their gradients, held across the whole pass
    transient_bytes = 0  # the largest one-layer temporary (unfolded input + per-sample weight grads)
    handles = []

    def count(module: nn.Module, args, output) -> None:
        nonlocal kept_bytes, transient_bytes
        if isinstance(output, torch.Tensor):
            kept_bytes += 3 * output.numel() * output.element_size()  # output, its grad, saved input
        if isinstance(module, WEIGHTED):
            kh, kw = module.kernel_size if isinstance(module, nn.Conv2d) else (1, 1)
            cols = args[0][0].numel() * kh * kw
            transient_bytes = max(transient_bytes, 2 * (cols + module.weight.numel()) * module.weight.element_size())

    for m in net.modules():
        if len(list(m.children())) == 0:
            handles.append(m.register_forward_hook(count))
    try:
        with torch.no_grad(), per_sample_batch_norm(net):
            net(inputs[:1])
    finally:
        for h in handles:
            h.remove()
    budget = memory_budget_mb * 2**20
    return int(max(1, min(inputs.shape[0], budget // max(1, kept_bytes + transient_bytes))))


def _chunks(n: int, chunk_size: int) -> Iterator[slice]:
    for start in range(0, n, chunk_size):
        yield slice(start, min(n, start + chunk_size))


def sign_sums_hooks(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                    chunk_size: int | None = None, memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB,
                    conv_method: str = "auto", exact: bool = False) -> SignSums:
    """Production engine: batched forward+backward per chunk, per-sample grads formed in hooks.

    Per layer the per-sample gradients are reduced to sign sums at once, without the non-finite masking,
    while a cheap bound (``may_be_nonfinite``) vouches that no entry can be NaN/inf; if any layer's bound
    fails, the whole pass is redone with exact masking and counting (``exact=True``).
    """
    net.train()
    layers = weighted_layers(net)
    result = SignSums()
    chunk_size = chunk_size or auto_chunk_size(net, inputs, memory_budget_mb)
    requires = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)

    # A layer called several times in one forward (shared weights) has its per-sample gradient summed
    # over its calls before the sign is taken; most layers are called once and reduce at once.
    pending: dict[str, torch.Tensor] = {}
    pending_suspect: dict[str, torch.Tensor] = {}
    calls_left: dict[str, int] = {}

    def reduce(name: str, per_sample: torch.Tensor, suspect: torch.Tensor) -> None:
        if calls_left[name] > 0 or name in pending:
            if name in pending:
                per_sample, suspect = pending[name] + per_sample, pending_suspect[name] | suspect
            pending[name], pending_suspect[name] = per_sample, suspect
            if calls_left[name] == 0:
                flush(name)
        elif exact:
            result.add(name, per_sample)
        else:
            result.add_unchecked(name, per_sample, suspect)

    def flush(name: str) -> None:
        per_sample, suspect = pending.pop(name), pending_suspect.pop(name)
        if exact:
            result.add(name, per_sample)
        else:
            result.add_unchecked(name, per_sample, suspect | ~torch.isfinite(per_sample.sum()))

    def make_forward_hook(name: str):
        def forward_hook(module: nn.Module, args, output: torch.Tensor) -> None:
            if not output.requires_grad:
                return
            calls_left[name] = calls_left.get(name, 0) + 1
            x = args[0].detach()

            def on_grad(grad_out: torch.Tensor) -> None:
                calls_left[name] -= 1
                grad_out = grad_out.detach()
                suspect = (grad_out.new_zeros((), dtype=torch.bool) if exact
                           else may_be_nonfinite(x, grad_out, _terms(module, x, grad_out)))
                reduce(name, per_sample_weight_grad(module, x, grad_out, conv_method), suspect)

            output.register_hook(on_grad)
        return forward_hook

    handles = [m.register_forward_hook(make_forward_hook(name)) for name, m in layers]
    try:
        with per_sample_batch_norm(net):
            for part in _chunks(inputs.shape[0], chunk_size):
                x = inputs[part].detach().requires_grad_(True)
                loss = F.cross_entropy(net(x), targets[part], reduction="sum")
                torch.autograd.grad(loss, x)
                for name in list(pending):  # a shared layer some of whose calls got no gradient
                    flush(name)
                calls_left.clear()
    finally:
        for h in handles:
            h.remove()
        for p, r in zip(net.parameters(), requires):
            p.requires_grad_(r)
    if not exact and result.suspect:
        return sign_sums_hooks(net, inputs, targets, chunk_size, memory_budget_mb, conv_method, exact=True)
    return result


def sign_sums_func(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                   chunk_size: int | None = None, memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB) -> SignSums:
    """``torch.func`` engine: vmap(grad(loss of one sample)) over chunks of samples."""
    from torch.func import functional_call, grad, vmap

    net.train()
    layers = weighted_layers(net)
    weights = {f"{name}.weight" if name else "weight": m.weight.detach() for name, m in layers}
    others = {k: v.detach() for k, v in net.named_parameters() if k not in weights}
    buffers = dict(net.named_buffers())
    chunk_size = chunk_size or auto_chunk_size(net, inputs, memory_budget_mb)

    def sample_loss(w: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(net, ({**w, **others}, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(out, y.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    result = SignSums()
    with per_sample_batch_norm(net):
        for part in _chunks(inputs.shape[0], chunk_size):
            grads = per_sample(weights, inputs[part], targets[part])
            for key, g in grads.items():
                result.add(key[: -len(".weight")] if key.endswith(".weight") else "", g)
    return result


def sign_sums_loop(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                   chunk_size: int | None = None, memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB) -> SignSums:
    """Reference engine: one backward pass per sample at batch size 1 (BatchNorm sees one sample)."""
    net.train()
    layers = weighted_layers(net)
    result = SignSums()
    for i in range(inputs.shape[0]):
        net.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(inputs[i: i + 1]), targets[i: i + 1])
        loss.backward()
        for name, m in layers:
            if m.weight.grad is not None:
                result.add(name, m.weight.grad.unsqueeze(0))
    net.zero_grad(set_to_none=True)
    return result


def sign_sums(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, engine: str = "hooks",
              chunk_size: int | None = None, memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB,
              conv_method: str = "auto") -> SignSums:
    """Sign sums by ``engine``; ``chunk_size`` None = the largest chunk that fits ``memory_budget_mb``;
    ``conv_method`` picks how the hooks engine forms per-sample conv gradients (``CONV_METHODS``)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown GradSign engine {engine!r}; valid engines: {', '.join(ENGINES)}")
    if conv_method not in CONV_METHODS:
        raise ValueError(f"unknown conv_method {conv_method!r}; valid: {', '.join(CONV_METHODS)}")
    if engine == "hooks":
        return sign_sums_hooks(net, inputs, targets, chunk_size, memory_budget_mb, conv_method)
    fn = sign_sums_func if engine == "func" else sign_sums_loop
    return fn(net, inputs, targets, chunk_size, memory_budget_mb)
