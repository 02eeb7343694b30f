"""GradSign (Zhang & Jia, ICLR 2022).

score = sum over every weight entry k of every Conv2d/Linear of | sum_i sign(g_ik) |, where g_i is the
gradient of cross_entropy(f(x_i), y_i) for sample i alone, taken at initialisation in training mode with
BatchNorm normalising each sample by its own statistics (``bn="sample"``, the default; ``bn="batch"``
normalises with the whole batch's train-mode statistics held constant). sign(0) = 0; non-finite g_ik are left out of
the inner sum and counted on the returned ``Score``. Higher is better (more samples agree).
Data: the actor's labelled batch. Biases and BatchNorm parameters are not scored.

The default ``hooks`` engine refuses networks it cannot vouch for (see ``actors.per_sample``) and
``fallback`` says what then computes the score; the returned ``Score`` carries ``engine`` (which engine
did) and ``fallback`` (why the hooks engine handed over, or None).
"""

from __future__ import annotations

import torch
from torch import nn

from ..per_sample import BN_MODES, CONV_METHODS, DEFAULT_MEMORY_BUDGET_MB, ENGINES, FALLBACKS, sign_sums
from .base import Score, register


@register("gradsign")
def make(engine: str = "hooks", chunk_size: int | None = None, memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB,
         conv_method: str = "auto", fallback: str = "auto", bn: str = "sample"):
    """Options: ``engine`` (hooks | func | loop), ``chunk_size`` (samples per batched pass; None = auto),
    ``memory_budget_mb`` (what auto may use per chunk), ``conv_method`` (auto | grouped | unfold),
    ``fallback`` (for a network the hooks engine refuses: auto = func, or loop where vmap cannot run it |
    func | loop | error = raise ``HooksUnsupported`` naming the module), ``bn`` (sample = each BatchNorm
    normalises each sample alone, the paper's definition | batch = the whole batch's train-mode statistics,
    measured once and held constant; see docs/proxies.md for when to use which)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown GradSign engine {engine!r}; valid engines: {', '.join(ENGINES)}")
    if conv_method not in CONV_METHODS:
        raise ValueError(f"unknown conv_method {conv_method!r}; valid: {', '.join(CONV_METHODS)}")
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown GradSign fallback {fallback!r}; valid: {', '.join(FALLBACKS)}")
    if bn not in BN_MODES:
        raise ValueError(f"unknown GradSign bn mode {bn!r}; valid: {', '.join(BN_MODES)}")

    def gradsign(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Score:
        sums = sign_sums(net, inputs, targets, engine, chunk_size, memory_budget_mb, conv_method, fallback,
                         bn=bn)
        score = Score(sums.score(), nonfinite=sums.nonfinite)
        score.engine, score.fallback = sums.engine, sums.fallback
        return score

    return gradsign
