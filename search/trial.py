"""One search run's simulated clock: queries, proxy cost, budget, incumbent and trajectory.

Rules (the same for every algorithm):
- ``query(arch)`` charges the arch's training cost plus any proxy cost spent since the last query; if that
  would take the run past its budget, the query does not happen, ``BudgetExhausted`` is raised, and the
  run ends there (so a run never exceeds its budget, and its last query is the last one that fitted).
  ``exhausted`` records that this happened; a run whose algorithm stopped by itself first (only BOHB with
  a finite ``iterations`` cap can) has ``exhausted`` False and is reported as ended early.
- ``best_of(candidates)`` is the G-variant's filter: the best-scored candidate by the proxy; ties go to
  the earliest candidate; a candidate without a score counts as worse than any scored one, so a
  proposal falls back to the first candidate (the one the vanilla algorithm would have drawn) only when
  none of the N has a score.
- proxy cost (``charge``): ``None`` charges nothing (the paper's protocol); ``"measured"`` charges each arch
  its measured scoring seconds (0 where none is known); a number charges that many seconds per scored
  arch (an arch without a score costs nothing: the table never scored it).
  An arch is charged once per run, the first time it is scored (a search keeps the scores it computed).
- the incumbent (the pick) is the queried arch with the best signal among the queries the algorithm marks
  eligible (all, except BOHB's lower-budget rungs); ties go to the earliest; with no eligible query yet,
  among all queries. So for RS, REA and REINFORCE the pick is the best signal seen; for BOHB it is the best
  signal among its max-budget evaluations, which is not the best seen when a lower-rung cell with a higher
  signal was never promoted (or was promoted only part-way).
"""

from __future__ import annotations

import numpy as np

from .benchmark import Benchmark, ProxyScores


class BudgetExhausted(Exception):
    """The next query would take the run past its budget; the run is over."""


class Trial:
    def __init__(self, bench: Benchmark, budget: float, scores: ProxyScores | None = None,
                 proposals: int = 10, charge: None | str | float = None) -> None:
        if charge is not None and scores is None:
            raise ValueError("charge_proxy needs a proxy (the vanilla algorithm scores nothing)")
        if charge == "measured" and (scores is None or scores.seconds is None):
            raise ValueError("charge_proxy 'measured' needs the score table's 'seconds' column")
        self.bench = bench
        self.budget = float(budget)
        self.scores = scores
        self.proposals = int(proposals)
        self.charge = charge
        self.spent = 0.0
        self.proxy_spent = 0.0
        self.exhausted = False  # a query was refused: the run ended by its budget
        self._pending = 0.0
        self._scored: set[int] = set()
        self.archs: list[int] = []
        self.valids: list[float] = []
        self.times: list[float] = []
        self.eligible: list[bool] = []
        self.best: list[int] = []  # incumbent's position in ``archs`` after each query
        self._eligible_best = -1
        self._any_best = -1

    @property
    def guided(self) -> bool:
        return self.scores is not None

    def best_of(self, candidates) -> int:
        """The best-scored of ``candidates`` (a sequence of arch_ids), charging their proxy cost."""
        values = self.scores.values
        best, best_value = int(candidates[0]), -np.inf
        for arch in candidates:
            arch = int(arch)
            if arch not in self._scored:
                self._scored.add(arch)
                self._pending += self._proxy_cost(arch)
            value = values[arch]
            if value > best_value:  # NaN never wins; ties keep the earlier candidate
                best, best_value = arch, value
        return best

    def _proxy_cost(self, arch: int) -> float:
        if self.charge is None:
            return 0.0
        if self.charge == "measured":
            seconds = self.scores.seconds[arch]
            return float(seconds) if np.isfinite(seconds) else 0.0
        return float(self.charge) if np.isfinite(self.scores.values[arch]) else 0.0

    def query(self, arch: int, eligible: bool = True) -> float:
        """Simulate training ``arch``; return its signal (validation accuracy)."""
        arch = int(arch)
        cost = float(self.bench.cost[arch]) + self._pending
        if self.spent + cost > self.budget:
            self.exhausted = True
            raise BudgetExhausted
        self.spent += cost
        self.proxy_spent += self._pending
        self._pending = 0.0
        valid = float(self.bench.valid[arch])
        k = len(self.archs)
        self.archs.append(arch)
        self.valids.append(valid)
        self.times.append(self.spent)
        self.eligible.append(bool(eligible))
        if self._any_best < 0 or valid > self.valids[self._any_best]:
            self._any_best = k
        if eligible and (self._eligible_best < 0 or valid > self.valids[self._eligible_best]):
            self._eligible_best = k
        self.best.append(self._eligible_best if self._eligible_best >= 0 else self._any_best)
        return valid

    def pick(self) -> int:
        """Position in ``archs`` of the run's pick (-1 when nothing was queried)."""
        return self.best[-1] if self.best else -1
