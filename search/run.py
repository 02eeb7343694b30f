"""One search run as a pure function: (space, benchmark, scores, variant, params, budget, seed, run, warm)
-> the run's row and trajectory. Nothing here touches Ray or files.

Determinism: a run's random numbers come from ``numpy.random.default_rng([seed, run])`` alone, so a run
gives the same result in any process, in any order, on any number of workers. A vanilla algorithm and
its G-variant with the same (seed, run) start from the same random stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .algorithms import random_search, regularized_evolution, reinforce
from .benchmark import Benchmark, ProxyScores
from .bohb import bohb
from .trial import BudgetExhausted, Trial

ALGORITHMS = {"random": random_search, "rea": regularized_evolution, "reinforce": reinforce, "bohb": bohb}
LABELS = {"random": "RS", "rea": "REA", "reinforce": "REINFORCE", "bohb": "BOHB"}

# Parameters of the NB201 paper's searches (NB201 scripts; BOHB: hpbandster defaults as NB201 sets them).
# BOHB's ``iterations``: None = hyperband iterations until the budget is spent (the budget rule of every
# algorithm); a number caps them, and a run that reaches the cap first is reported as ended early.
DEFAULT_PARAMS: dict[str, dict] = {
    "random": {},
    "rea": {"population": 10, "tournament": 3},
    "reinforce": {"learning_rate": 0.001, "baseline_momentum": 0.9},
    "bohb": {"eta": 3, "min_budget": 12, "max_budget": 200, "iterations": None, "top_n_percent": 15,
             "num_samples": 4, "random_fraction": 0.0, "bandwidth_factor": 3, "min_bandwidth": 0.3,
             "min_points_in_model": None},
}


@dataclass(frozen=True)
class Variant:
    """An algorithm, vanilla (``proxy`` None) or G-variant (best-of-``proposals`` by ``proxy``), with the
    proxy's cost ``charge`` (None = free, "measured", or seconds per scored arch)."""

    algorithm: str
    proxy: str | None = None
    proposals: int = 10
    charge: None | str | float = None
    warm: bool = False

    @property
    def label(self) -> str:
        name = LABELS[self.algorithm]
        if self.proxy is not None:
            name = f"G-{name}" if self.proxy == "gradsign" else f"G-{name}[{self.proxy}]"
        if self.charge is not None:
            name += " charged" if self.charge == "measured" else f" charged {self.charge:g}s"
        if self.warm:
            name += " warm"
        return name


@dataclass
class RunOutcome:
    row: dict
    archs: np.ndarray
    valids: np.ndarray
    times: np.ndarray
    best_valid: np.ndarray
    best_test: np.ndarray  # the first final accuracy (CIFAR-10 by default) of the incumbent after each query


def run_one(space, bench: Benchmark, scores: ProxyScores | None, variant: Variant, params: dict,
            budget: float, seed: int, run: int, warm=()) -> RunOutcome:
    """Simulate one search run; see the module docstring for determinism."""
    if variant.algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {variant.algorithm!r}; valid: {', '.join(ALGORITHMS)}")
    if (scores is None) != (variant.proxy is None):
        raise ValueError("a G-variant needs its proxy's scores, a vanilla algorithm none")
    rng = np.random.default_rng([int(seed), int(run)])
    trial = Trial(bench, budget, scores, variant.proposals, variant.charge)
    try:
        ALGORITHMS[variant.algorithm](space, trial, rng, params, warm if variant.warm else ())
    except BudgetExhausted:  # the normal end; BOHB with an ``iterations`` cap may end before it
        pass
    archs = np.asarray(trial.archs, np.int64)
    valids = np.asarray(trial.valids, float)
    best = np.asarray(trial.best, np.int64)
    k = trial.pick()
    pick = int(archs[k]) if k >= 0 else -1
    row = {
        "variant": variant.label,
        "algorithm": variant.algorithm,
        "proxy": variant.proxy,
        "proposals": variant.proposals if variant.proxy is not None else None,
        "charge_proxy": None if variant.charge is None else str(variant.charge),
        "warm_start": variant.warm,
        "run": int(run),
        "seed": int(seed),
        "pick_arch_id": pick,
        "pick_valid": float(valids[k]) if k >= 0 else float("nan"),
        **{f"{name}_test": (float(bench.final[name][pick]) if k >= 0 else float("nan")) for name in bench.final},
        "queries": int(archs.size),
        "distinct_archs": int(np.unique(archs).size),
        "simulated_seconds": trial.spent,
        "proxy_seconds": trial.proxy_spent,
        "ended_early": not trial.exhausted,  # the algorithm stopped before its budget refused a query
    }
    first = next(iter(bench.final))
    best_arch = archs[best] if best.size else archs
    return RunOutcome(row=row, archs=archs, valids=valids, times=np.asarray(trial.times, float),
                      best_valid=valids[best] if best.size else valids,
                      best_test=bench.final[first][best_arch] if best.size else valids)
