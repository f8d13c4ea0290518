"""Scores of a map: how well clusters match the true labels, and how faithful the reduction is.

Label scores (scikit-learn's own functions; mutual information in nats):
mutual_info, nmi, ami, ari, homogeneity, completeness, v_measure.

Noise policy (``NOISE_POLICY``): HDBSCAN marks outliers with the label -1. Each label
score is computed twice:

- over all points, with noise treated as one more cluster ("noise as its own label").
  Calling outliers a cluster is penalised as it should be: a map that declares half the
  data noise cannot score high;
- over clustered (non-noise) points only, under the same name plus ``_clustered``: how
  pure the clusters that were found are. NaN when no point is clustered.

Together with ``noise_fraction`` (and ``n_clusters``, noise excluded) the two tell apart
"good clusters, much noise" from "poor clusters". Clusterers without noise give equal pairs.

Geometry scores:

- ``silhouette``: over clustered points in the clustering space (the reducer's output),
  on a seeded sample of ``sample`` points when larger; NaN with fewer than 2 clusters.
- ``trustworthiness`` (Venna & Kaski, scikit-learn's formula) and ``knn_preservation``
  (the mean fraction of each point's ``k`` input-space neighbours still among its ``k``
  neighbours in the embedding), both over a seeded sample of ``sample`` query points
  against all points; with every point a query, trustworthiness equals scikit-learn's.
  The input-space side (distances from the queries) is the same for every map of the same
  data and metric, so it is computed once (:class:`NeighbourReference`) and reused.

Which scores there are, their directions and which need labels: the registry in
:mod:`latentscape.tracking.scores` (``LABEL_SCORES``, ``SCORE_NAMES`` and ``DIRECTIONS`` here are
its lists); :func:`plain_functions` attaches each score's function to its record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from latentscape.tracking import scores as registry
from latentscape.tracking.contract import Metric

__all__ = [
    "NOISE_POLICY",
    "LABEL_SCORES",
    "SCORE_NAMES",
    "DIRECTIONS",
    "plain_functions",
    "batched_functions",
    "NeighbourReference",
    "neighbour_reference",
    "label_scores",
    "cluster_counts",
    "n_clusters",
    "noise_fraction",
    "silhouette",
    "trustworthiness",
    "knn_preservation",
    "score_map",
]

NOISE = -1
NOISE_POLICY = "noise_as_label+clustered"

# Bound on the query-distance matrix (queries x samples, float32): ~100 MB.
_MAX_REFERENCE_CELLS = 25_000_000


def _label_functions() -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    from sklearn import metrics

    return {
        Metric.MUTUAL_INFO: metrics.mutual_info_score,  # natural log: nats
        Metric.NMI: metrics.normalized_mutual_info_score,
        Metric.AMI: metrics.adjusted_mutual_info_score,
        Metric.ARI: metrics.adjusted_rand_score,
        Metric.HOMOGENEITY: metrics.homogeneity_score,
        Metric.COMPLETENESS: metrics.completeness_score,
        Metric.V_MEASURE: metrics.v_measure_score,
    }


# The registry's lists, where the jobs have always imported them from.
LABEL_SCORES: tuple[str, ...] = registry.LABEL_SCORES
SCORE_NAMES: tuple[str, ...] = registry.SCORE_NAMES
DIRECTIONS: dict[str, str | None] = registry.DIRECTIONS


def plain_functions() -> dict[str, Callable[..., float]]:
    """Each registered score's name -> the function computing it alone. Label scores:
    ``f(labels, clusters)`` (``_clustered``: the same on clustered points);
    ``n_clusters`` / ``noise_fraction``: ``f(clusters)``; ``silhouette``: ``f(z,
    clusters, sample=, seed=)``; ``trustworthiness`` / ``knn_preservation``:
    ``f(reference, z)``. scikit-learn is imported here, not at import time."""
    return {**_label_functions(), Metric.N_CLUSTERS: n_clusters, Metric.NOISE_FRACTION: noise_fraction,
            Metric.SILHOUETTE: silhouette, Metric.TRUSTWORTHINESS: trustworthiness,
            Metric.KNN_PRESERVATION: knn_preservation}


def batched_functions() -> dict[str, Callable[..., dict[str, np.ndarray]]]:
    """Each score with a batched twin -> :func:`latentscape.jobs.core.trust.label_score_batch` (the
    label scores of many labelings at once; it returns every such score)."""
    from latentscape.jobs.core.trust import label_score_batch

    return {name: label_score_batch for name in registry.BATCHED}


def label_scores(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """The seven label scores of ``clusters: (n,)`` (``-1`` noise) against ``labels: (n,)``,
    over all points (noise as its own label) and over clustered points (``_clustered``)."""
    functions = _label_functions()
    labels = np.asarray(labels)
    clusters = np.asarray(clusters)
    scores = {name: float(functions[name](labels, clusters)) for name in LABEL_SCORES}
    clustered = clusters != NOISE
    for name in LABEL_SCORES:
        scores[name + Metric.CLUSTERED_SUFFIX] = (
            float(functions[name](labels[clustered], clusters[clustered])) if clustered.any() else float("nan"))
    return scores


def n_clusters(clusters: np.ndarray) -> float:
    """Number of distinct clusters in ``clusters: (n,)``, noise (``-1``) excluded."""
    clusters = np.asarray(clusters)
    return float(len(np.unique(clusters[clusters != NOISE])))


def noise_fraction(clusters: np.ndarray) -> float:
    """Fraction of ``clusters: (n,)`` marked noise (``-1``); NaN when empty."""
    clusters = np.asarray(clusters)
    return float(np.mean(clusters == NOISE)) if len(clusters) else float("nan")


def cluster_counts(clusters: np.ndarray) -> dict[str, float]:
    """Number of clusters (noise excluded) and the fraction of points marked noise."""
    return {Metric.N_CLUSTERS: n_clusters(clusters), Metric.NOISE_FRACTION: noise_fraction(clusters)}


def silhouette(z: np.ndarray, clusters: np.ndarray, *, sample: int = 1000, seed: int = 0) -> float:
    """Mean silhouette of clustered points of ``z: (n, d)``; a seeded sample of ``sample``
    points when more are clustered. NaN unless 2 <= clusters <= clustered points - 1."""
    from sklearn.metrics import silhouette_score

    keep = np.asarray(clusters) != NOISE
    z, kept = np.asarray(z)[keep], np.asarray(clusters)[keep]
    n_labels = len(np.unique(kept))
    if not 2 <= n_labels <= len(kept) - 1:
        return float("nan")
    size = sample if len(kept) > sample else None
    if size is not None and n_labels > size - 1:
        return float("nan")
    return float(silhouette_score(z, kept, sample_size=size, random_state=seed if size else None))


@dataclass(frozen=True)
class NeighbourReference:
    """The input-space side of the neighbourhood scores for one (data, metric, k, sample).

    queries: (m,) sorted row indices; distances: (m, n) float32 from each query to every
    row under ``metric`` (the query itself set to +inf); neighbours: (m, k) each query's
    ``k`` nearest other rows."""

    queries: np.ndarray
    distances: np.ndarray
    neighbours: np.ndarray
    metric: str
    k: int
    n: int


def query_count(n: int, sample: int) -> int:
    """Queries used for ``n`` samples: ``sample``, fewer when the distance rows would be huge."""
    return int(min(n, sample, max(100, _MAX_REFERENCE_CELLS // max(n, 1))))


def neighbour_reference(x: np.ndarray, *, k: int, metric: str = "euclidean", sample: int = 1000,
                        seed: int = 0) -> NeighbourReference:
    """Distances from a seeded sample of query rows of ``x: (n, d)`` to all rows."""
    from latentscape.jobs.core.knn import pairwise

    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if not 1 <= k < n / 2:
        raise ValueError(f"k={k} must be at least 1 and below half the samples ({n / 2:g})")
    m = query_count(n, sample)
    if m < n:
        queries = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
    else:
        queries = np.arange(n)
    distances = np.empty((m, n), dtype=np.float32)
    step = max(1, 2**22 // n)
    for start in range(0, m, step):
        rows = queries[start:start + step]
        distances[start:start + len(rows)] = pairwise(x[rows], x, metric)
    distances[np.arange(m), queries] = np.inf
    neighbours = np.argpartition(distances, k - 1, axis=1)[:, :k]
    return NeighbourReference(queries, distances, neighbours, metric, k, n)


def _embedded_neighbours(reference: NeighbourReference, z: np.ndarray) -> np.ndarray:
    """(m, k) nearest other rows of each query in ``z: (n, c)`` (euclidean)."""
    from sklearn.neighbors import NearestNeighbors

    k = reference.k
    found = (NearestNeighbors(n_neighbors=k + 1).fit(z)
             .kneighbors(z[reference.queries], return_distance=False))
    not_self = found != reference.queries[:, None]
    order = np.argsort(~not_self, axis=1, kind="stable")[:, :k]  # drop the query itself
    return np.take_along_axis(found, order, axis=1)


def trustworthiness(reference: NeighbourReference, z: np.ndarray, *, embedded: np.ndarray | None = None) -> float:
    """Trustworthiness of ``z: (n, c)`` at ``reference.k``: 1 minus the normalised penalty
    for embedded neighbours that are not input-space neighbours, by how far they rank.
    Equals ``sklearn.manifold.trustworthiness`` when every row is a query (and no ties)."""
    k, n, m = reference.k, reference.n, len(reference.queries)
    embedded = _embedded_neighbours(reference, z) if embedded is None else embedded
    penalty = 0.0
    step = max(1, 2**24 // (n * k))
    for start in range(0, m, step):
        d = reference.distances[start:start + step]
        picked = np.take_along_axis(d, embedded[start:start + step], axis=1)  # (rows, k)
        ranks = 1 + (d[:, None, :] < picked[:, :, None]).sum(axis=2)  # rank in the input space
        penalty += float(np.clip(ranks - k, 0, None).sum())
    return float(1.0 - penalty * 2.0 / (m * k * (2.0 * n - 3.0 * k - 1.0)))


def knn_preservation(reference: NeighbourReference, z: np.ndarray, *, embedded: np.ndarray | None = None) -> float:
    """Mean fraction of each query's ``k`` input-space neighbours among its ``k`` embedded ones."""
    embedded = _embedded_neighbours(reference, z) if embedded is None else embedded
    hits = (reference.neighbours[:, :, None] == embedded[:, None, :]).any(axis=2).sum(axis=1)
    return float(np.mean(hits / reference.k))


def score_map(labels: np.ndarray | None, clusters: np.ndarray, *, z: np.ndarray,
              reference: NeighbourReference | None, sample: int = 1000, seed: int = 0) -> dict[str, float]:
    """Every score of one map: label scores (when ``labels`` is given), cluster counts,
    silhouette in the clustering space ``z: (n, c)``, and the neighbourhood scores against
    ``reference`` (None: the map is the identity, both are 1)."""
    scores: dict[str, float] = {}
    if labels is not None:
        scores.update(label_scores(labels, clusters))
    scores.update(cluster_counts(clusters))
    scores[Metric.SILHOUETTE] = silhouette(z, clusters, sample=sample, seed=seed)
    if reference is None:
        scores[Metric.TRUSTWORTHINESS] = 1.0
        scores[Metric.KNN_PRESERVATION] = 1.0
    else:
        embedded = _embedded_neighbours(reference, z)
        scores[Metric.TRUSTWORTHINESS] = trustworthiness(reference, z, embedded=embedded)
        scores[Metric.KNN_PRESERVATION] = knn_preservation(reference, z, embedded=embedded)
    return scores
