"""BOHB (Falkner et al. 2018) over a categorical space, written to behave as the NB201 searches' BOHB
(hpbandster 0.7.4's BOHB with statsmodels' KDE, as NB201's ``BOHB.py`` drives it), vanilla and G-variant.

Hyperband schedule (hpbandster's): ``S = floor(log(max_budget / min_budget) / log(eta)) + 1`` rungs at
budgets ``max_budget * eta**-k``; iteration ``i`` runs successive halving with ``s = S - 1 - i % S``,
``n0 = floor(S / (s + 1)) * eta**s`` configurations, then ``floor(n0 * eta**-k)`` promoted at rung k (the
best losses, kept in their original order). With the NB201 settings (12, 200, eta 3) that is 9-3-1, 3-1,
3 configurations per cycle of 3 iterations. As in the NB201 protocol the budget does not change what a
query returns (the 12-epoch validation accuracy) but every evaluation, promotions included, is a query
that costs its training time. Iterations follow one another until the run's budget refuses a query, as
for every other algorithm (``iterations: null``, the default); a number caps them (hpbandster's
``n_iterations``), and a run that reaches the cap with budget left is reported as ended early.

The pick is hpbandster's incumbent: the best loss among evaluations at ``max_budget`` (if there is none
yet, the best of all queries). It is NOT the best signal seen: a cell evaluated only at a lower rung (not
promoted, or its iteration cut by the budget before it reached ``max_budget``) is never picked, even when
its signal beats every max-budget evaluation (on the NB201 tables at 12,000 s, seed 0: 43 of 500 vanilla
runs pick a cell below the best signal they saw).

Model (hpbandster's ``BOHB`` config generator): per budget, observations (choices, loss = 100 - accuracy);
an observation at a budget lower than one that already has a model is dropped; with ``n >= m + 1``
points (``m = max(min_points_in_model, d + 1)``), good = the ``max(m, top_n_percent * n // 100)`` best,
bad = the next ``max(m, (100 - top_n_percent) * n // 100)``; both need more rows than dimensions. Each
is a product of Aitchison-Aitken kernels (statsmodels' ``KDEMultivariate`` with unordered variables:
weight ``1 - h`` on the datum's own level, ``h / (L - 1)`` elsewhere, ``L`` = the levels present in
that variable's data) with normal-reference bandwidths ``1.06 * std * n**(-1 / (4 + d))``, clipped below
at ``min_bandwidth``. A proposal uses the model of the largest budget that has one (else, or with
probability ``random_fraction``, a uniform random arch): ``num_samples`` draws, each taking a random good
datum and keeping each variable's level with probability ``1 - max(h, min_bandwidth)``, else a uniform
level; it returns the draw with the smallest ``max(1e-32, bad(x)) / max(good(x), 1e-32)`` (a draw whose
ratio is not finite but whose good density is, is taken at once). ``bandwidth_factor`` widens only
continuous variables in hpbandster, so it has no effect on this all-categorical space.

Why not hpbandster itself: its last release (0.7.4) is from 2018 and unmaintained; it would bring
statsmodels, pandas, ConfigSpace, Pyro4 and netifaces (a C build), start a Pyro4 name server and worker
threads per run, draw from the global numpy/random state (no per-run generator, so no determinism per
(seed, run) across Ray workers), and its G-variant needs the GradSign authors' patch of its source.

G-variant (the GradSign paper's patched hpbandster): the proposal is replaced by the best-scored of N
distinct uniformly random archs; the model is not consulted (so it is not fitted).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .trial import Trial


class _KDE:
    def __init__(self, data: np.ndarray, min_bandwidth: float) -> None:
        n, d = data.shape
        self.data = data
        bw = 1.06 * data.std(axis=0) * n ** (-1.0 / (4 + d))
        self.bw = np.maximum(bw, min_bandwidth)
        levels = np.array([np.unique(data[:, j]).size for j in range(d)], float)
        with np.errstate(divide="ignore", invalid="ignore"):
            self._off = self.bw / (levels - 1)  # inf where one level only, as in statsmodels
        self._on = 1.0 - self.bw

    def pdf(self, x: np.ndarray) -> float:
        kernel = np.where(self.data == x[None, :], self._on[None, :], self._off[None, :])
        with np.errstate(invalid="ignore", over="ignore"):
            return float(kernel.prod(axis=1).mean())


class _Model:
    """hpbandster's BOHB config generator, for categorical variables."""

    def __init__(self, space, params: dict, rng: np.random.Generator) -> None:
        self.space, self.rng = space, rng
        d = space.num_vars
        self.min_points = max(int(params["min_points_in_model"] or 0), d + 1)
        self.top_n_percent = int(params["top_n_percent"])
        self.num_samples = int(params["num_samples"])
        self.random_fraction = float(params["random_fraction"])
        self.min_bandwidth = float(params["min_bandwidth"])
        self.observations: dict[float, tuple[list, list]] = {}
        self.models: dict[float, tuple[_KDE, _KDE]] = {}

    def observe(self, arch: int, budget: float, loss: float) -> None:
        if self.models and max(self.models) > budget:
            return
        configs, losses = self.observations.setdefault(budget, ([], []))
        configs.append(self.space.encode(arch))
        losses.append(loss)
        n = len(configs)
        if n <= self.min_points - 1:
            return
        order = np.argsort(np.asarray(losses), kind="stable")
        data = np.asarray(configs)
        n_good = max(self.min_points, self.top_n_percent * n // 100)
        n_bad = max(self.min_points, (100 - self.top_n_percent) * n // 100)
        good, bad = data[order[:n_good]], data[order[n_good:n_good + n_bad]]
        if good.shape[0] <= good.shape[1] or bad.shape[0] <= bad.shape[1]:
            return
        self.models[budget] = (_KDE(good, self.min_bandwidth), _KDE(bad, self.min_bandwidth))

    def propose(self) -> int:
        rng, space = self.rng, self.space
        if not self.models or rng.random() < self.random_fraction:
            return space.random(rng)
        good, bad = self.models[max(self.models)]
        keep = 1.0 - np.maximum(good.bw, self.min_bandwidth)
        best, best_vector = math.inf, None
        for _ in range(self.num_samples):
            datum = good.data[int(rng.integers(good.data.shape[0]))]
            random_levels = rng.integers(space.num_choices, size=space.num_vars)
            vector = np.where(rng.random(space.num_vars) < keep, datum, random_levels)
            g, l_ = bad.pdf(vector), good.pdf(vector)
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                val = max(1e-32, g) / max(l_, 1e-32)
            if not np.isfinite(val):
                if np.isfinite(l_):
                    best_vector = vector
                    break
            if val < best:
                best, best_vector = val, vector
        if best_vector is None:
            return space.random(rng)
        return space.decode(best_vector)


def budgets(params: dict) -> list[float]:
    eta, low, high = float(params["eta"]), float(params["min_budget"]), float(params["max_budget"])
    rungs = -int(np.log(low / high) / np.log(eta)) + 1
    return [float(b) for b in high * np.power(eta, -np.linspace(rungs - 1, 0, rungs))]


def schedule(params: dict, iteration: int) -> tuple[list[int], list[float]]:
    """(configurations per rung, rung budgets) of hyperband iteration ``iteration``."""
    eta = float(params["eta"])
    rungs = budgets(params)
    s_max = len(rungs)
    s = s_max - 1 - (iteration % s_max)
    n0 = int(math.floor(s_max / (s + 1)) * eta ** s)
    counts = [max(int(n0 * eta ** (-k)), 1) for k in range(s + 1)]
    return counts, rungs[-s - 1:]


def bohb(space, trial: Trial, rng: np.random.Generator, params: dict, warm=()) -> None:
    """Run hyperband iterations until the budget refuses a query (or, when ``params["iterations"]`` is a
    number, until that many iterations are done, whichever comes first)."""
    model = _Model(space, params, rng)
    top = budgets(params)[-1]
    for arch in warm:  # a candidate list's archs enter as evaluations at the largest budget
        model.observe(arch, top, 100.0 - trial.query(arch, eligible=True))
    n = trial.proposals
    cap = params.get("iterations")
    for iteration in (itertools.count() if cap is None else range(int(cap))):
        counts, rungs = schedule(params, iteration)
        entries: list[tuple[int, float]] = []
        for _ in range(counts[0]):
            if trial.guided:
                arch = trial.best_of(rng.choice(space.size, size=n, replace=False))
            else:
                arch = model.propose()
            valid = trial.query(arch, eligible=rungs[0] == top)
            if not trial.guided:
                model.observe(arch, rungs[0], 100.0 - valid)
            entries.append((arch, valid))
        for stage in range(1, len(counts)):
            losses = np.array([100.0 - v for _, v in entries])
            ranks = np.argsort(np.argsort(losses, kind="stable"), kind="stable")
            entries = [e for e, r in zip(entries, ranks) if r < counts[stage]]
            promoted = []
            for arch, _ in entries:
                valid = trial.query(arch, eligible=rungs[stage] == top)
                if not trial.guided:
                    model.observe(arch, rungs[stage], 100.0 - valid)
                promoted.append((arch, valid))
            entries = promoted
