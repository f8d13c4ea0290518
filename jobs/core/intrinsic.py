"""Intrinsic dimension of a point cloud (numpy only)."""

from __future__ import annotations

import numpy as np

__all__ = ["two_nn_dimension"]


def two_nn_dimension(
    x: np.ndarray | None = None,
    *,
    neighbour_distances: np.ndarray | None = None,
    discard_fraction: float = 0.1,
) -> float:
    """TwoNN intrinsic dimension (Facco et al., 2017, Sci. Rep. 7:12140).

    For each point, ``mu = r2 / r1``, the ratio of its second to its first nearest-
    neighbour distance, follows a Pareto law with exponent the intrinsic dimension d
    on a locally uniform manifold. d is the slope, through the origin, of
    ``-log(1 - F(mu))`` against ``log(mu)`` with F the empirical distribution, after
    discarding the largest ``discard_fraction`` of ratios (the paper's advice, as
    they are the most noise-sensitive).

    Pass ``x: (n, d)`` or the Euclidean ``neighbour_distances: (n, >= 2)`` of each
    point's nearest neighbours (itself excluded, nearest first), e.g. columns 1 and 2
    of a :mod:`latentscape.jobs.core.knn` graph already computed. Points with a duplicate
    (``r1 == 0``) are left out. NaN with fewer than 3 usable points. Deterministic.
    """
    if neighbour_distances is None:
        if x is None:
            raise ValueError("pass x or neighbour_distances")
        from sklearn.neighbors import NearestNeighbors

        finder = NearestNeighbors(n_neighbors=2, algorithm="brute").fit(np.asarray(x, dtype=np.float64))
        neighbour_distances, _ = finder.kneighbors()  # X=None: a point is not its own neighbour
    distances = np.asarray(neighbour_distances, dtype=np.float64)
    if distances.ndim != 2 or distances.shape[1] < 2:
        raise ValueError(f"neighbour_distances must be (n, >= 2), got {distances.shape}")
    if not 0 <= discard_fraction < 1:
        raise ValueError(f"discard_fraction must be in [0, 1), got {discard_fraction}")
    r1, r2 = distances[:, 0], distances[:, 1]
    usable = r1 > 0
    mu = np.sort(r2[usable] / r1[usable])
    n = len(mu)
    if n < 3:
        return float("nan")
    keep = max(2, int(np.floor(n * (1 - discard_fraction))))
    keep = min(keep, n - 1)  # F = 1 at the last point: -log(0)
    log_mu = np.log(mu[:keep])
    empirical = np.arange(1, keep + 1) / n
    y = -np.log1p(-empirical)
    denominator = float(log_mu @ log_mu)
    if denominator <= 0:
        return float("nan")  # every ratio 1: no neighbour structure to read
    return float(log_mu @ y / denominator)
