"""The pictures a researcher reads first (matplotlib, Agg backend, no other dependency).

- ``score_figure``: per proxy, the rank of the score against the rank of the ground-truth accuracy, as
  percentiles (0 = worst, 100 = best), Spearman rho and Kendall tau in the panel's title; one panel per
  proxy in one figure. Ranks, not raw scores: Spearman rho *is* the correlation of these two ranks, so the
  picture shows exactly what the number summarises; raw scores span orders of magnitude (GradSign: 0 to
  ~1e6) and some proxies are negative (GraSP, jacob_cov), which no log axis shows. The score and accuracy
  values at the rank quartiles are printed on the top and right axes, so the scale is not lost.
- Degenerate cells are drawn apart and counted, never mixed into the cloud: cells whose score is exactly
  0 (no path from input to output through a weight) in a strip left of the axes, cells whose accuracy is
  at chance (``CHANCE_MARGIN`` above 100 / classes, in the table's units) in a strip below, cells that are
  both in the corner. Their ranks are the ones the correlations use (ties averaged), so the cloud is
  ranked against the same n as rho and tau.
- ``rho_heatmap``: the proxy x dataset Spearman table of ``gradsign compare``, one fixed colour scale
  (-1 to 1), the value (and the published one) written in each cell.
- ``search_queries``: the search report's pick accuracy against the number of queries, per variant.

Every function writes a PNG atomically (a temporary name, then a rename) and returns nothing; callers
skip plots when matplotlib is not installed (``pyplot()`` returns None).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import stats

CHANCE_MARGIN = 0.1  # accuracy <= chance x 1.1 counts as "at chance" (NB201: 10.0 % on CIFAR-10)
STRIP = (-13.0, -3.0)  # where the degenerate strips are drawn, in percentile units outside [0, 100]


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


def chance_level(truth: np.ndarray, num_classes: int | None) -> float | None:
    """Chance accuracy in the table's units (percent when any value exceeds 1, else a fraction)."""
    finite = truth[np.isfinite(truth)]
    if not num_classes or finite.size == 0:
        return None
    return (100.0 if finite.max() > 1.0 else 1.0) / num_classes


@dataclass
class Panel:
    """One proxy's cells that enter its correlations: scores, accuracies, and the summary's rho / tau."""

    proxy: str
    scores: np.ndarray
    truth: np.ndarray
    spearman: float | None
    kendall: float | None
    chance: float | None = None

    @property
    def zero(self) -> np.ndarray:
        return self.scores == 0.0

    @property
    def at_chance(self) -> np.ndarray:
        if self.chance is None:
            return np.zeros(self.truth.size, bool)
        return self.truth <= self.chance * (1 + CHANCE_MARGIN)


def percentile_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to (0, 100): the lowest value near 0, the highest near 100, ties averaged."""
    return (stats.rankdata(values) - 0.5) / values.size * 100.0


def _num(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:.3g}" if 1e-2 <= abs(value) < 1e4 else f"{value:.1e}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _draw_panel(ax, panel: Panel, truth_label: str, rng: np.random.Generator) -> None:
    x, y = percentile_ranks(panel.scores), percentile_ranks(panel.truth)
    zero, chance = panel.zero, panel.at_chance
    main = ~zero & ~chance
    n = panel.scores.size
    size, alpha = (14, 0.8) if n <= 200 else (4, 0.5) if n <= 2000 else (1.5, 0.25)
    ax.scatter(x[main], y[main], s=size, alpha=alpha, linewidths=0, color="tab:blue", rasterized=n > 2000,
               label=f"cells outside the strips ({int(main.sum()):,} of {n:,})")
    if n >= 20:  # the median accuracy rank along the score rank: the trend the eye looks for
        edges = np.linspace(0, 100, 11 if n < 500 else 21)
        mids, med = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            sel = (x >= lo) & (x < hi)
            if sel.sum() >= 3:
                mids.append((lo + hi) / 2)
                med.append(np.median(y[sel]))
        ax.plot(mids, med, color="tab:orange", lw=1.8, label="median accuracy rank")
    ax.plot([0, 100], [0, 100], color="0.5", lw=0.8, ls=":", label="perfect ranking")
    lo, hi = STRIP
    span = hi - lo
    strip_x = lo + span * (0.2 + 0.6 * rng.random(n))
    strip_y = lo + span * (0.2 + 0.6 * rng.random(n))
    grey = dict(s=max(size, 6), alpha=0.6, linewidths=0, color="0.35", rasterized=n > 2000)
    only_zero, only_chance, both = zero & ~chance, chance & ~zero, zero & chance
    ax.scatter(strip_x[only_zero], y[only_zero], marker="s", **grey)
    ax.scatter(x[only_chance], strip_y[only_chance], marker="s", **grey)
    ax.scatter(strip_x[both], strip_y[both], marker="x", **{**grey, "color": "tab:red", "linewidths": 1.2})
    ax.axvline(hi + 1.5, color="0.6", lw=0.8)
    ax.axhline(hi + 1.5, color="0.6", lw=0.8)
    box = dict(fontsize=7, color="0.2", ha="center", va="center")
    # each strip counts its own cells only: those in both (the red corner) are counted there, not twice
    ax.text((lo + hi) / 2, 50, f"score = 0 only\n{int(only_zero.sum()):,} cells", rotation=90, **box)
    ax.text(50, (lo + hi) / 2, f"accuracy at chance only: {int(only_chance.sum()):,} cells", **box)
    if both.any():
        ax.text((lo + hi) / 2, lo - 1.5, f"both (score = 0 and chance): {int(both.sum()):,}", fontsize=6.5,
                color="tab:red", ha="left", va="top")
    ax.set_xlim(lo - 1, 101)
    ax.set_ylim(lo - 6 if both.any() else lo - 1, 101)
    ticks = [0, 25, 50, 75, 100]
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel(f"rank of {panel.proxy} score (percentile)")
    ax.set_ylabel(f"rank of {truth_label} (percentile)")
    # the values behind the ranks: score (top) and accuracy (right) at the quartiles
    quart = np.asarray(ticks, float)
    top = ax.secondary_xaxis("top")
    top.set_xticks(ticks, [_num(v) for v in np.percentile(panel.scores, quart)], fontsize=7)
    top.set_xlabel("score at that rank", fontsize=7)
    right = ax.secondary_yaxis("right")
    right.set_yticks(ticks, [_num(v) for v in np.percentile(panel.truth, quart)], fontsize=7)
    right.set_ylabel("accuracy at that rank", fontsize=7)
    ax.set_title(f"{panel.proxy}: Spearman \u03c1 {_fmt(panel.spearman)}, Kendall \u03c4 {_fmt(panel.kendall)}\n"
                 f"n = {n:,} (rho and tau over all of them, strips included)", fontsize=9)
    ax.legend(loc="upper left", fontsize=6.5, frameon=False, markerscale=1.5)
    ax.grid(alpha=0.25)


def score_figure(panels: Sequence[Panel], path: Path, truth_label: str, heading: str | None = None) -> None:
    """One figure, one panel per proxy (``panels`` in order), written to ``path``."""
    plt = pyplot()
    if plt is None or not panels:
        return
    cols = 2 if len(panels) == 4 else min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 4.6 * rows + (0.3 if heading else 0)), dpi=120,
                             squeeze=False)
    rng = np.random.default_rng(0)  # the strips' jitter: the same picture every time
    for ax, panel in zip(axes.flat, panels):
        _draw_panel(ax, panel, truth_label, rng)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if heading:
        fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def rho_heatmap(proxies: Sequence[str], columns: Sequence[str], rho: np.ndarray, published: np.ndarray,
                path: Path, note: str | None = None) -> None:
    """``rho[i, j]``: Spearman of proxy i in run j (NaN: none); ``published`` alike (NaN: not published)."""
    plt = pyplot()
    if plt is None:
        return
    import matplotlib.colors

    fig, ax = plt.subplots(figsize=(1.9 * len(columns) + 2.6, 0.62 * len(proxies) + 1.9), dpi=120)
    cmap = plt.get_cmap("RdBu").with_extremes(bad="0.88")
    image = ax.imshow(np.ma.masked_invalid(rho), cmap=cmap, norm=matplotlib.colors.Normalize(-1, 1), aspect="auto")
    for i in range(len(proxies)):
        for j in range(len(columns)):
            value, pub = rho[i, j], published[i, j]
            text = "-" if not np.isfinite(value) else f"{value:.3f}"
            if np.isfinite(pub):
                text += f"\n(paper {pub:.3f})"
            dark = np.isfinite(value) and abs(value) > 0.55
            ax.text(j, i, text, ha="center", va="center", fontsize=8.5, color="white" if dark else "black")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(proxies)), proxies)
    ax.tick_params(length=0)
    ax.set_title("Spearman \u03c1 against ground truth (proxy x run)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03, label="Spearman \u03c1")
    if note:
        fig.text(0.01, 0.01, note, fontsize=6.5, color="0.3", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.05 if note else 0, 1, 1))
    _save(fig, path)
    plt.close(fig)


@dataclass
class QueryCurve:
    """One search variant: per run, the pick's test accuracy after each query (best by the search signal)."""

    label: str
    algorithm: str
    runs: list[np.ndarray]  # run -> accuracy of the pick after query 1, 2, ...


def search_queries(curves: Sequence[QueryCurve], titles: dict[str, str], path: Path, accuracy_label: str) -> None:
    """Per algorithm one panel: the mean over runs of the pick's accuracy after k queries (a run that ended
    keeps its final pick) with a band from its 25th to its 75th percentile over runs, and a dot at each
    variant's mean queries and mean final pick accuracy."""
    plt = pyplot()
    if plt is None or not curves:
        return
    algorithms = list(dict.fromkeys(c.algorithm for c in curves))
    fig, axes = plt.subplots(1, len(algorithms), figsize=(4.4 * len(algorithms), 3.7), dpi=110, squeeze=False)
    for ax, algorithm in zip(axes[0], algorithms):
        mine = [c for c in curves if c.algorithm == algorithm and c.runs]
        lengths = np.asarray([r.size for c in mine for r in c.runs])
        if lengths.size == 0:
            continue
        horizon = int(np.percentile(lengths, 95))
        for k, curve in enumerate(mine):
            stack = np.vstack([np.concatenate([r, np.full(max(0, horizon - r.size), r[-1])])[:horizon]
                               for r in curve.runs if r.size])
            color = f"C{k}"
            steps = np.arange(1, horizon + 1)
            ax.plot(steps, stack.mean(axis=0), color=color, lw=1.4, label=f"{curve.label} ({len(curve.runs)} runs)")
            # the spread over runs: the middle half of the picks after k queries (a mean alone hides it)
            q25, q75 = np.percentile(stack, [25, 75], axis=0)
            ax.fill_between(steps, q25, q75, color=color, alpha=0.15, linewidth=0)
            ends = np.asarray([r.size for r in curve.runs if r.size])
            finals = np.asarray([r[-1] for r in curve.runs if r.size])
            ax.plot([ends.mean()], [finals.mean()], "o", color=color, ms=6, mec="black", mew=0.6)
        ax.set_title(titles.get(algorithm, algorithm), fontsize=10)
        ax.set_xlabel("queries")
        ax.set_ylabel(f"pick's {accuracy_label} (%)")
        ax.legend(fontsize=7, title="line: mean; band: 25-75% of runs;\ndot: mean queries at budget",
                  title_fontsize=6.5)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
