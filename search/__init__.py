"""The stage that follows scoring: NAS algorithms that read proxy score tables (RS, REA, REINFORCE, BOHB,
vanilla and GradSign-assisted), simulated on benchmark tables.

Pure code, like ``spaces/``: functions of (space, scores, benchmark oracle, rng); no Ray, no files. The
runner in ``pipeline/search_runner/runner.py`` loads the tables, spreads the independent runs over Ray and writes
the outputs.
"""

from __future__ import annotations

from .benchmark import FINAL_DATASETS, Benchmark, BenchmarkError, ProxyScores
from .run import ALGORITHMS, DEFAULT_PARAMS, LABELS, RunOutcome, Variant, run_one
from .space import NB201Choices
from .space import get as get_space
from .trial import BudgetExhausted, Trial

__all__ = ["ALGORITHMS", "DEFAULT_PARAMS", "FINAL_DATASETS", "LABELS", "Benchmark", "BenchmarkError",
           "BudgetExhausted", "NB201Choices", "ProxyScores", "RunOutcome", "Trial", "Variant", "get_space",
           "run_one"]
