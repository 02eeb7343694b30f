"""SWAP-Score (Peng et al., "SWAP-NAS: Sample-Wise Activation Patterns for Ultra-fast NAS", ICLR 2024),
with its regularised form as an option.

Definition (the authors' code, github.com/pym1024/SWAP ``src/metrics/swap.py``, read at commit
f6049f7c, first commit 8d622560):

- a forward hook on every ``nn.ReLU`` module (``isinstance``: subclasses too; not ReLU6, LeakyReLU,
  GELU, ...) keeps the ReLU's OUTPUT of every call whose input is 4-D (N, C, H, W); ReLUs called on
  anything else (an MLP head's (N, F)) are left out, as the authors' ``len(input[0].size()) == 4``;
- each kept output is reshaped to (N, C*H*W), all of them concatenated along dim 1 to an (N, units)
  matrix, and ``torch.sign`` taken: 1 where the output is > 0, else 0 (a ReLU output is >= 0, so this is
  exactly [ReLU input > 0]);
- the matrix is transposed to (units, N): row u is unit u's sample-wise activation pattern, its binary
  code over the N samples;
- score = the number of DISTINCT rows (``torch.unique(..., dim=0).size(0)``): the cardinality of the set
  of sample-wise activation patterns, at most min(units, 2^N). Higher is better.

Here each hooked call is turned into its patterns at once, packed 64 samples to an int64 word (one word
per unit when N <= 64: units x 8 bytes, about 7 MiB for the largest NB201 network at batch 64), and
de-duplicated per call; the union is de-duplicated at the end. The count is an exact integer (no float
comparison, no hashing) and the same as the authors' ``unique`` over the whole float matrix, which holds
units x N floats. The pattern is taken when the ReLU runs, so an in-place op applied later to the ReLU's
output cannot change it (the authors keep a reference and read it after the forward). A NaN reaching a
hooked ReLU makes the pattern undefined: the score is then NaN.

Regularised form (the authors' ``cal_regular_factor``; ``regular=True`` in their ``SWAP`` class):

    score = SWAP * exp(-(P - mu)^2 / sigma)

with P the parameter count (every parameter tensor once, names containing "auxiliary" left out, as
theirs). Here P, mu and sigma are in MILLIONS of parameters (P as the ``params`` proxy reports it;
``sigma`` divides the squared difference: it is not a standard deviation, its unit is millions squared).
The authors' code counts P in THOUSANDS (``count_parameters`` divides by 1e3): their (mu_K, sigma_K) are
mu = mu_K / 1e3 and sigma = sigma_K / 1e6 here. Defaults: none. The authors' code has ``regular=False,
mu=None, sigma=None`` and ships no per-space values (its one pair, mu=0.5, sigma=1.5 in
``SWAP_Universal/SWAP_Transformer.py``, is passed with ``regular=False``, so unused); the values of the
paper's experiments could not be read here. So ``regularise=True`` needs both ``mu`` and ``sigma``, and
``mu``/``sigma`` without ``regularise=True`` is refused (the authors' code ignores them silently).

Protocol (the authors' ``correlation.py``): a batch of 16 real CIFAR-10 training images (normalised;
their crop and channel "augmentations" are identities at 32x32), labels unused; the network in training
mode (BatchNorm on batch statistics: it is never put in eval); before each evaluation every Conv2d and
Linear weight is drawn from N(0, 1) with biases zeroed and every BatchNorm2d/GroupNorm weight set to 1 and
bias to 0 (``network_weight_gaussian_init``); 32 such draws (``--repeats 32``) and the mean of their
scores. Options here:

- ``samples`` (16): the first ``samples`` images of the batch; a smaller batch is refused. ``None``: the
  whole batch. The score's range and ranking depend on N (at N = 64 almost every unit's pattern is
  distinct and the score tends to the number of ReLU units);
- ``init`` ("gaussian"): the authors' initialisation, drawn from a private ``torch.Generator`` seeded with
  ``seed`` (0) on the CPU, so the score does not depend on, or change, the global RNG, and the weights are
  the same on any device. "none" keeps the network's own weights (then ``repeats`` must be 1);
- ``repeats`` (32): draws averaged; ``repeats=1`` costs one forward pass. The authors' class also takes a
  ``seed`` that it never applies (``reinit`` seeds only when the seed changes), so their draws come from
  whatever the global RNG holds.

A network with no ``nn.ReLU`` module (ReLU applied as ``F.relu``/``torch.relu``, which no module hook
sees) is refused with a ValueError, as is one whose ReLU modules never see a 4-D input: there is no
faithful pattern to count. The NB101 network (``nasbench_pytorch``: ``ConvBnRelu`` is Conv2d, BatchNorm2d,
``nn.ReLU()`` in an ``nn.Sequential``), NB201, DARTS/NB301 and NDS networks all use ``nn.ReLU`` modules.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import register

WORD = 64  # samples per packed int64 word
_CHUNK = 1 << 22  # int64 entries of the packing temporary (32 MiB)
INITS = ("gaussian", "none")


def gaussian_init(net: nn.Module, generator: torch.Generator) -> None:
    """The authors' ``network_weight_gaussian_init``: Conv2d/Linear weights ~ N(0, 1), biases 0;
    BatchNorm2d/GroupNorm weights 1, biases 0. Draws on the CPU from ``generator`` (module order)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight
                w.copy_(torch.randn(w.shape, generator=generator, dtype=torch.float32).to(w))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                if m.weight is not None:
                    m.weight.fill_(1.0)
                if m.bias is not None:
                    m.bias.zero_()


def parameters_in_millions(net: nn.Module) -> float:
    """Parameters counted as the authors count them (each tensor once, no "auxiliary" names), millions."""
    return sum(p.numel() for name, p in net.named_parameters() if "auxiliary" not in name) / 1e6


def regular_factor(params_m: float, mu: float, sigma: float) -> float:
    """exp(-(params_m - mu)^2 / sigma), everything in millions of parameters."""
    return math.exp(-((params_m - mu) ** 2) / sigma)


def pack(active: torch.Tensor) -> torch.Tensor:
    """Binary codes (N, U) -> (U, ceil(N / 64)) int64: row u holds unit u's pattern, sample n in bit
    n % 64 of word n // 64 (bit 63 is the sign bit: the words are exact bit patterns)."""
    n, units = active.shape
    words = -(-n // WORD)
    out = torch.empty((units, words), dtype=torch.int64, device=active.device)
    shifts = torch.arange(WORD, dtype=torch.int64, device=active.device)
    step = max(1, _CHUNK // WORD)
    for w in range(words):
        rows = active[w * WORD:(w + 1) * WORD]
        weights = torch.bitwise_left_shift(torch.ones_like(shifts[: rows.shape[0]]), shifts[: rows.shape[0]])
        for start in range(0, units, step):
            block = rows[:, start:start + step].to(torch.int64)
            # distinct powers of two: the sum is their bitwise OR and never overflows int64
            out[start:start + step, w] = (block * weights[:, None]).sum(0)
    return out


DIRECT_BITS = 20  # up to this many samples a pattern indexes a table of 2^N flags (no sort)


class PatternSet:
    """The set of distinct sample-wise activation patterns seen so far (exact).

    Up to ``DIRECT_BITS`` samples, each unit's pattern is an integer below 2^N that marks a flag in a table of
    2^N booleans (one pass, no sort: SWAP's 16 samples need a 64 KiB table); above, patterns are packed 64
    samples to an int64 word and de-duplicated with ``torch.unique``. Both count the same set."""

    def __init__(self):
        self.parts: list[torch.Tensor] = []
        self.seen: torch.Tensor | None = None  # the flag table of the direct path
        self.calls = 0
        self.units = 0
        self.nan: torch.Tensor | None = None

    def add(self, output: torch.Tensor) -> None:
        """Add the patterns of one ReLU output (N, ...): unit u's pattern is [output[:, u] > 0]."""
        flat = output.detach().reshape(output.shape[0], -1)
        nan = torch.isnan(flat).any()
        self.nan = nan if self.nan is None else self.nan | nan
        n = flat.shape[0]
        if n <= DIRECT_BITS:
            if self.seen is None:
                self.seen = torch.zeros(2**n, dtype=torch.bool, device=flat.device)
            weights = torch.bitwise_left_shift(torch.ones(n, dtype=torch.int64, device=flat.device),
                                               torch.arange(n, device=flat.device))
            codes = ((flat > 0).to(torch.int64) * weights[:, None]).sum(0)  # distinct powers of two: an OR
            self.seen[codes] = True
            self.calls += 1
            self.units += flat.shape[1]
            return
        codes = pack(flat > 0)
        self.parts.append(torch.unique(codes, dim=0) if codes.shape[1] > 1 else torch.unique(codes[:, 0])[:, None])
        self.calls += 1
        self.units += flat.shape[1]

    @property
    def nbytes(self) -> int:
        table = 0 if self.seen is None else self.seen.numel() * self.seen.element_size()
        return table + sum(p.numel() * p.element_size() for p in self.parts)

    def count(self) -> float:
        """The number of distinct patterns (NaN when a NaN reached a hooked ReLU)."""
        if self.nan is not None and bool(self.nan):
            return math.nan
        if self.seen is not None:
            return float(self.seen.sum().item())
        allcodes = torch.cat(self.parts, 0)
        if allcodes.shape[1] == 1:
            return float(torch.unique(allcodes[:, 0]).numel())
        return float(torch.unique(allcodes, dim=0).shape[0])


def swap_patterns(net: nn.Module, inputs: torch.Tensor) -> PatternSet:
    """One forward pass of ``net`` (training mode, no gradients) on ``inputs`` with every ``nn.ReLU``
    hooked; the patterns of the calls on 4-D inputs. ValueError where there is nothing to count."""
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError("swap counts the activation patterns of nn.ReLU modules, and this network has none "
                         "(a ReLU applied as F.relu/torch.relu is invisible to module hooks); SWAP is not "
                         "defined for it")
    patterns = PatternSet()

    def hook(module: nn.Module, args, output) -> None:
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            patterns.add(output)

    net.train()
    handles = [m.register_forward_hook(hook) for m in relus]
    try:
        with torch.no_grad():
            net(inputs)
    finally:
        for h in handles:
            h.remove()
    if patterns.calls == 0:
        raise ValueError(f"swap: none of the network's {len(relus)} nn.ReLU modules was called on a 4-D "
                         "(N, C, H, W) input, the only ones SWAP counts; SWAP is not defined for it")
    return patterns


@register("swap")
def make(regularise: bool = False, mu: float | None = None, sigma: float | None = None,
         samples: int | None = 16, init: str = "gaussian", repeats: int = 32, seed: int = 0):
    """SWAP-Score; ``regularise=True`` multiplies by exp(-(P - mu)^2 / sigma), P/mu/sigma in millions of
    parameters (both required). ``samples``, ``init``, ``repeats``, ``seed``: the module docstring."""
    if not isinstance(regularise, bool):
        raise ValueError(f"swap: regularise must be true or false, got {regularise!r}")
    if regularise:
        if mu is None or sigma is None:
            raise ValueError("swap: regularise=True needs mu and sigma (millions of parameters; the authors' "
                             "code ships no default values)")
        mu, sigma = float(mu), float(sigma)
        if not (math.isfinite(mu) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"swap: mu must be finite and sigma finite and > 0, got mu={mu}, sigma={sigma}")
    elif mu is not None or sigma is not None:
        raise ValueError("swap: mu/sigma given without regularise=True (they would be ignored)")
    if samples is not None and (isinstance(samples, bool) or int(samples) != samples or samples < 1):
        raise ValueError(f"swap: samples must be a positive integer or null, got {samples!r}")
    if init not in INITS:
        raise ValueError(f"swap: init must be one of {', '.join(INITS)}, got {init!r}")
    if isinstance(repeats, bool) or int(repeats) != repeats or repeats < 1:
        raise ValueError(f"swap: repeats must be a positive integer, got {repeats!r}")
    if init == "none" and repeats != 1:
        raise ValueError("swap: init='none' keeps the network's weights, so every repeat gives the same "
                         "score: use repeats=1")

    def swap(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        if samples is not None:
            if inputs.shape[0] < samples:
                raise ValueError(f"swap: samples={samples} but the batch has {inputs.shape[0]} images "
                                 "(set proxy_options swap.samples, null for the whole batch)")
            inputs = inputs[: int(samples)]
        generator = torch.Generator(device="cpu")
        generator.manual_seed(int(seed))
        scores = []
        for _ in range(int(repeats)):
            if init == "gaussian":
                gaussian_init(net, generator)
            scores.append(swap_patterns(net, inputs).count())
        score = sum(scores) / len(scores)
        if regularise:
            score *= regular_factor(parameters_in_millions(net), mu, sigma)
        return float(score)

    return swap
