"""How a candidate list is ranked and thinned: proxy ensembles (rank averages) and the diverse top-k.

Pure functions over arrays (no files, no Ray); the reducer (``reducer.py``) and ``gradsign candidates``
(``candidates.py``) both call them, so a run's list and a list recomputed later are the same list.

- **Rank average** of proxies ``p1..pn`` (``topk_by: [p1, ..., pn]``, column ``p1+...+pn``): each proxy's
  usable values are ranked ascending (rank 1 = worst; equal values share their average rank, so the rank
  is a function of the values alone, not of row order), divided by that proxy's count of usable values
  (a percentile in (0, 1], 1 = best), and averaged over the proxies in the order given. An arch gets an
  ensemble value only when every proxy has a usable value for it; otherwise it has none and is left out
  of the list (an ensemble of proxies that share no arch gives an empty list). Higher is better.
- **Diverse top-k** (``topk_min_distance: d``): walk the archs best first (ties by arch_id); keep an arch
  when its distance (``spaces/distance.py``) to every arch kept so far is at least ``d``; stop at ``k``.
  The first kept arch is the best-ranked one; each kept row records its distance to the nearest earlier
  row (None for the first). ``d`` <= 1 keeps the plain top-k (distinct archs are at distance >= 1).
  The list may be shorter than ``k`` when fewer archs are that far apart (NB201 at d = 6: at most 5).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats

from gradsign.spaces import distance as space_distance

BLOCK = 4096  # candidates whose distance codes are computed at once


def ranking_names(by: str | Sequence[str] | None, proxies: Sequence[str]) -> list[str]:
    """The proxies ``by`` ranks with (default: the first of ``proxies``); ValueError naming an unknown one."""
    names = [proxies[0]] if by is None else [by] if isinstance(by, str) else list(by)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"topk_by must name one proxy or a list of distinct proxies, got {by!r}")
    for name in names:
        if name not in proxies:
            raise ValueError(f"topk_by names {name!r}, which is not one of proxies {list(proxies)}")
    return names


def ranking_column(names: Sequence[str]) -> str:
    """The column a ranking is written as: the proxy itself, or ``p1+p2+...`` for a rank average."""
    return "+".join(names)


def percentile_ranks(values: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Ascending average ranks of the usable values over their count (1.0 = best); NaN where unusable."""
    out = np.full(values.shape, np.nan)
    keep = np.flatnonzero(usable)
    if keep.size:
        out[keep] = stats.rankdata(values[keep], method="average") / keep.size
    return out


def rank_average(values: dict[str, np.ndarray], usable: dict[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """The rank average of ``names`` (see the module docstring); NaN where any proxy is unusable."""
    ranks = [percentile_ranks(values[n], usable[n]) for n in names]
    total = np.zeros_like(ranks[0])
    for r in ranks:  # in the order given: the same float sums on every rerun
        total = total + r
    return total / len(names)


def ranking(values: dict[str, np.ndarray], usable: dict[str, np.ndarray],
            names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(values, usable) of the ranking: the single proxy's own, or the rank average's."""
    if len(names) == 1:
        return values[names[0]], usable[names[0]]
    combined = rank_average(values, usable, names)
    return combined, np.isfinite(combined)


def best_first(arch_ids: np.ndarray, values: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Positions of the usable rows, best value first, equal values by arch_id (lower first)."""
    candidates = np.flatnonzero(usable)
    return candidates[np.lexsort((arch_ids[candidates], -values[candidates]))]


def diverse(space, ranked_ids: np.ndarray, count: int, min_distance: int) -> tuple[np.ndarray, list[int | None]]:
    """Greedy diverse selection over ``ranked_ids`` (best first): (indices into ``ranked_ids`` kept, each
    kept row's distance to the nearest earlier kept row, None for the first). Distance codes are computed
    a block at a time and checked against all kept rows at once, so a whole space is one pass."""
    space_distance.require(space)
    kept: list[int] = []
    nearest: list[int | None] = []
    kept_features: np.ndarray | None = None
    for start in range(0, len(ranked_ids), BLOCK):
        if len(kept) >= count:
            break
        block = space_distance.features(space, ranked_ids[start:start + BLOCK])
        before = 0 if kept_features is None else kept_features.shape[0]
        to_kept = (space_distance.distances(block, kept_features).min(axis=1) if before
                   else np.full(block.shape[0], np.iinfo(np.int64).max))
        new: list[int] = []  # rows of ``block`` kept in this block
        for j in np.flatnonzero(to_kept >= min_distance):
            d = int(to_kept[j])
            if new:
                d = min(d, int(space_distance.distances(block[j:j + 1], block[new]).min()))
            if d < min_distance:
                continue
            new.append(int(j))
            kept.append(start + int(j))
            nearest.append(None if len(kept) == 1 else d)
            if len(kept) >= count:
                break
        if new:
            kept_features = block[new] if kept_features is None else np.concatenate([kept_features, block[new]])
    return np.asarray(kept, np.int64), nearest
