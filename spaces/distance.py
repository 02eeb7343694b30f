"""Distances between architectures of one space: what a diverse candidate list keeps apart.

A space that supports distances defines ``distance_features(arch_ids) -> np.ndarray`` (shape
``(len(arch_ids), m)``, integer codes): the distance of two archs is the number of the ``m`` positions where
their codes differ (a Hamming distance over codes). A space may also define ``distance(a, b)`` on arch
strings; ``distance`` below gives it for any space with features. The features are a space's to choose;
each space documents what its distance counts:

- NB201: the 6 edges' op indices, so the distance is the number of edges whose op differs (0..6);
- NB101: a documented stand-in for a graph edit distance: see ``NB101Space.distance_features``.

Invariants: the distance of an arch to itself is 0, it is symmetric, and it is a pure function of the two
archs (never of list order, batch or seed). A space without ``distance_features`` has no distance: asking
for one is a ``DistanceError`` that names the space.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class DistanceError(ValueError):
    """The space defines no distance between its archs."""


def supports(space) -> bool:
    """Whether ``space`` defines distances (a ``distance_features`` method)."""
    return callable(getattr(space, "distance_features", None))


def require(space) -> None:
    """Raise ``DistanceError`` naming the space when it has no distance."""
    if not supports(space):
        raise DistanceError(f"space {getattr(space, 'name', type(space).__name__)!r} defines no distance between "
                            "archs (no distance_features method), so a diverse top-k (topk_min_distance) cannot "
                            "be made for it; leave topk_min_distance null")


def features(space, arch_ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """The distance codes of ``arch_ids`` (2-D int array, one row per id)."""
    require(space)
    out = np.asarray(space.distance_features(np.asarray(arch_ids, np.int64)))
    if out.ndim != 2 or out.shape[0] != len(arch_ids):
        raise ValueError(f"space {space.name!r}: distance_features gave shape {out.shape} for {len(arch_ids)} archs")
    return out


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise distances between the feature rows of ``a`` (n x m) and ``b`` (k x m): an n x k int array."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]), np.int64)
    return (a[:, None, :] != b[None, :, :]).sum(axis=2)


def distance(space, a: str, b: str) -> int:
    """The distance between arch strings ``a`` and ``b`` of ``space``."""
    rows = features(space, [space.arch_id(a), space.arch_id(b)])
    return int((rows[0] != rows[1]).sum())
