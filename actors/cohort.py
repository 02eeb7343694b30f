"""The cohort engine: GradSign of K cells of a fixed-skeleton space in one batched pass.

A space that can lay K of its networks side by side offers ``space.build_cohort(archs, num_classes,
seeds=... | nets=...)``: one module whose output is (N, K, num_classes), in which no operation mixes two
cells and each weighted module's output rows belong to one cell each (``module.owners()``); NB201 does
(``spaces.nb201_cohort``). The engine then runs the hooks engine's pass (``actors.per_sample``) on that
module with the loss sum_k sum_i cross_entropy(f_k(x_i), y_i): cell k's weights get gradient from cell
k's term only, so each weight entry's per-sample gradients are those of its own network, and its sign
sums are the per-cell engine's. A cell's score is then the sum of |S| over the rows it owns.

Invariants:
- per cell, the score equals the per-cell hooks engine's (and the loop's) up to the rounding of batched
  kernels (the tolerance held between engines), whatever K and whatever the mix of cells; exact zeros
  stay exact (a cell whose output is cut off gets no gradient at all);
- the hooks engine's checks all run on the cohort module (call order, sample dim, samples that do not
  interact, every use of a weight inside its hooked call); a cohort they refuse raises
  ``HooksUnsupported``, and a pass whose overflow bound cannot vouch that every gradient entry is finite
  raises ``CohortUnsupported``: callers then score those cells one by one (``score_cohort`` does), where
  non-finite entries are masked and counted per cell;
- weights: ``seeds`` replays ``space.build``'s draws per cell without building K networks; the first
  replay of each (space, num_classes) in a process is checked bit for bit against ``space.build`` of
  one of its cells, and a mismatch turns the cohort path off for that process (``CohortUnsupported``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import weighted_layers
from .per_sample import HooksPass, HooksUnsupported, check_modules, probe_network
from .proxies.base import Score

DEFAULT_COHORT_MEMORY_MB = 4096  # per chunk of the cohort's pass (K cells' activations and per-sample grads)


class CohortUnsupported(ValueError):
    """The cohort engine cannot vouch for this cohort (the message says why); score its cells one by one."""


def supports(space) -> bool:
    """Whether ``space`` can build cohorts (a fixed-skeleton space: NB201)."""
    return callable(getattr(space, "build_cohort", None))


def cohort_loss(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum over samples i and cells k of cross_entropy(out[i, k], targets[i]) for out (N, K, classes)."""
    return F.cross_entropy(out.transpose(1, 2), targets.unsqueeze(1).expand(-1, out.shape[1]), reduction="sum")


def cohort_scores(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, chunk_size: int | None = None,
                  memory_budget_mb: int = DEFAULT_COHORT_MEMORY_MB, conv_method: str = "auto") -> list[Score]:
    """GradSign of each of the cohort's cells (``net.size`` of them, in cohort order) from one pass.

    Raises ``HooksUnsupported`` or ``CohortUnsupported`` where the numbers could differ from the per-cell
    engine's; ``chunk_size`` None = the largest chunk of samples whose pass fits ``memory_budget_mb``."""
    net.train()
    layers = weighted_layers(net)
    check_modules(layers)
    probe = probe_network(net, inputs)
    chunk_size = chunk_size or probe.chunk_size(inputs.shape[0], memory_budget_mb)
    hooks = HooksPass(net, layers, probe, conv_method, exact=False, loss=cohort_loss)
    result = hooks.run(inputs, targets, chunk_size)
    if hooks.bound.may_be_nonfinite():
        raise CohortUnsupported("a per-sample gradient entry may be non-finite (its overflow bound fails): "
                                "the per-cell engine masks and counts such entries per cell")
    owners = net.owners()
    rows, cells = [], []
    for name, sums in result.sums.items():
        rows.append(sums.abs().flatten(1).sum(1, dtype=torch.float64))  # exact: integers in float64
        cells.append(owners[name].to(sums.device))
    totals = torch.zeros(net.size, dtype=torch.float64, device=inputs.device)
    if rows:
        totals.index_add_(0, torch.cat(cells), torch.cat(rows))
    scores = []
    for value in totals.tolist():
        score = Score(value, nonfinite=0)
        score.engine, score.fallback = "cohort", None
        scores.append(score)
    return scores


_REPLAY_CHECKED: dict[tuple[str, int], bool] = {}


def check_replay(space, arch: str, seed: int, num_classes: int) -> None:
    """Once per (space, num_classes) per process: ``build_cohort(seeds=...)`` must draw, bit for bit, the
    weights ``torch.manual_seed(seed); space.build(arch)`` draws; raises ``CohortUnsupported`` if not."""
    key = (getattr(space, "name", type(space).__name__), int(num_classes))
    if key not in _REPLAY_CHECKED:
        state = torch.get_rng_state()
        try:
            torch.manual_seed(seed)
            net = space.build(arch, num_classes)
        finally:
            torch.set_rng_state(state)
        copied = space.build_cohort([arch], num_classes, nets=[net]).state_dict()
        replayed = space.build_cohort([arch], num_classes, seeds=[seed]).state_dict()
        _REPLAY_CHECKED[key] = all(torch.equal(copied[k], replayed[k]) for k in copied)
    if not _REPLAY_CHECKED[key]:
        raise CohortUnsupported(f"{key[0]}: the cohort's replayed initialisation differs from space.build's "
                                "(a torch version that draws differently?): cells go one by one")


@dataclass
class CohortTiming:
    build_s: float = 0.0  # making the cohort module on the CPU (replayed draws included)
    engine_s: float = 0.0  # moving it to the device and the pass
    cells: int = 0
    fallbacks: int = 0  # cohorts handed to the per-cell path


def score_cohort(space, archs: Sequence[str], seeds: Sequence[int], num_classes: int, inputs: torch.Tensor,
                 targets: torch.Tensor, *, chunk_size: int | None = None,
                 memory_budget_mb: int = DEFAULT_COHORT_MEMORY_MB, conv_method: str = "auto",
                 timing: CohortTiming | None = None) -> list[Score] | None:
    """GradSign of ``archs`` (weights from ``seeds``) in one pass on ``inputs``'s device, or None where the
    cohort engine cannot vouch for it (a ``GradSignFallbackWarning``-like ``RuntimeWarning`` says why;
    the caller then scores the cells one by one). Other errors (out of memory, bad input) propagate."""
    timing = timing or CohortTiming()
    start = time.perf_counter()
    try:
        check_replay(space, archs[0], seeds[0], num_classes)
        net = space.build_cohort(list(archs), num_classes, seeds=list(seeds))
        built = time.perf_counter()
        timing.build_s += built - start
        scores = cohort_scores(net.to(inputs.device), inputs, targets, chunk_size, memory_budget_mb, conv_method)
    except (HooksUnsupported, CohortUnsupported) as exc:
        timing.fallbacks += 1
        warnings.warn(f"GradSign cohort engine: cannot vouch for this cohort of {len(archs)} ({exc}); "
                      "scoring its cells one by one", RuntimeWarning, stacklevel=2)
        return None
    timing.engine_s += time.perf_counter() - built
    timing.cells += len(archs)
    return scores


def batches(items: Sequence, size: int) -> list[Sequence]:
    """``items`` in consecutive groups of at most ``size``."""
    return [items[i: i + size] for i in range(0, len(items), size)]


__all__ = ["CohortUnsupported", "CohortTiming", "DEFAULT_COHORT_MEMORY_MB", "batches", "check_replay",
           "cohort_loss", "cohort_scores", "score_cohort", "supports"]
