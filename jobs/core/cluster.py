"""Clusterers, one registry: ``hdbscan``, ``kmeans``, ``agglomerative``, ``gmm``.

Every clusterer is a :class:`~latentscape.jobs.core._params.Method` whose ``run(z, params, *, seed)``
takes ``z: (n_samples, n_dims)`` and returns ``(n_samples,)`` int64 cluster labels,
``-1`` for noise (only HDBSCAN marks noise). ``n_clusters`` defaults to the number of true
labels where a clusterer needs one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latentscape.jobs.core._params import ConfigError, DataShape, Method, ParamSpec

__all__ = ["CLUSTERERS", "NOISE"]

NOISE = -1


def _log(low: float, high: float) -> dict:
    return {"low": low, "high": high, "log": True}


def _n_classes(shape: DataShape) -> int | None:
    return shape.n_classes if shape.n_classes and shape.n_classes >= 2 else None


def _check_n_clusters(p: dict[str, Any], shape: DataShape, name: str) -> None:
    if p["n_clusters"] is None:
        raise ConfigError(f"{name} needs n_clusters and the data has no labels to default to",
                          "pass n_clusters (e.g. --n-clusters 10)")
    if p["n_clusters"] > shape.n_samples:
        raise ConfigError(f"{name} n_clusters={p['n_clusters']} is above the number of samples ({shape.n_samples})",
                          f"pass n_clusters <= {shape.n_samples}")


def _cluster_search(shape: DataShape) -> dict:
    base = _n_classes(shape) or 10
    return {"low": 2, "high": max(3, min(shape.n_samples - 1, 3 * base))}


# -- hdbscan -------------------------------------------------------------------------
def _check_hdbscan(p: dict[str, Any], shape: DataShape) -> None:
    if p["min_cluster_size"] > shape.n_samples:
        raise ConfigError(f"hdbscan min_cluster_size={p['min_cluster_size']} is above the number of samples "
                          f"({shape.n_samples})", f"pass min_cluster_size <= {shape.n_samples}")
    if p["min_samples"] >= shape.n_samples:
        raise ConfigError(f"hdbscan min_samples={p['min_samples']} is not below the number of samples "
                          f"({shape.n_samples})", f"pass min_samples < {shape.n_samples}")


def _run_hdbscan(z: np.ndarray, p: dict[str, Any], *, seed: int) -> np.ndarray:
    import hdbscan

    model = hdbscan.HDBSCAN(
        min_cluster_size=p["min_cluster_size"], min_samples=p["min_samples"],
        cluster_selection_epsilon=p["cluster_selection_epsilon"],
        cluster_selection_method=p["cluster_selection_method"], allow_single_cluster=p["allow_single_cluster"],
        core_dist_n_jobs=1,
    )
    return model.fit_predict(np.asarray(z, dtype=np.float64)).astype(np.int64)


def _default_min_cluster_size(shape: DataShape) -> int:
    # About a tenth of an average class, kept within 5..50 (digits: 18; 240 sentences of
    # 10 classes: 5; 5,000 samples of 10 classes: 50).
    per_class = shape.n_samples / (_n_classes(shape) or 10)
    return int(max(5, min(50, round(per_class / 10))))


_HDBSCAN = Method(
    name="hdbscan",
    help="HDBSCAN (density-based; marks outliers as noise, label -1)",
    params=(
        ParamSpec("min_cluster_size", int, _default_min_cluster_size, "smallest group called a cluster", low=2,
                  search=lambda s: _log(5, max(6, min(100, s.n_samples // 4))), counts_samples=True),
        # hdbscan's own default is min_cluster_size; measured on digits (UMAP 2D, 3 seeds):
        # min_samples 10 gave AMI 0.92-0.93, 5 gave 0.87-0.93, 1 gave 0.82-0.92.
        ParamSpec("min_samples", int, lambda s: min(10, _default_min_cluster_size(s)),
                  "neighbours for a core point (higher: more noise)", low=1,
                  search=lambda s: _log(1, max(2, min(30, s.n_samples // 10))), counts_samples=True),
        ParamSpec("cluster_selection_epsilon", float, 0.0, "merge clusters closer than this", low=0.0),
        ParamSpec("cluster_selection_method", str, "eom", "excess of mass or leaf", choices=("eom", "leaf")),
        ParamSpec("allow_single_cluster", bool, False, "allow one cluster for everything"),
    ),
    check=_check_hdbscan,
    run=_run_hdbscan,
)


# -- kmeans --------------------------------------------------------------------------
def _run_kmeans(z: np.ndarray, p: dict[str, Any], *, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=p["n_clusters"], n_init=p["n_init"], max_iter=p["max_iter"], random_state=seed)
    return model.fit_predict(np.asarray(z, dtype=np.float64)).astype(np.int64)


_KMEANS = Method(
    name="kmeans",
    help="k-means (k-means++ starts, best of n_init)",
    params=(
        ParamSpec("n_clusters", int, _n_classes, "k (default: the number of true labels)", low=1,
                  search=_cluster_search),
        # explicit restarts: the tutorial's re-fit lost them, so they are logged.
        ParamSpec("n_init", int, 10, "restarts; the best inertia wins", low=1),
        ParamSpec("max_iter", int, 300, "iterations per restart", low=1),
    ),
    check=lambda p, s: _check_n_clusters(p, s, "kmeans"),
    run=_run_kmeans,
)


# -- agglomerative -------------------------------------------------------------------
_AGGLOMERATIVE_MAX_SAMPLES = 30_000  # O(n^2) memory


def _check_agglomerative(p: dict[str, Any], shape: DataShape) -> None:
    _check_n_clusters(p, shape, "agglomerative")
    if shape.n_samples > _AGGLOMERATIVE_MAX_SAMPLES:
        raise ConfigError(f"agglomerative clustering of {shape.n_samples} samples needs O(n^2) memory",
                          f"use hdbscan or kmeans above {_AGGLOMERATIVE_MAX_SAMPLES} samples")


def _run_agglomerative(z: np.ndarray, p: dict[str, Any], *, seed: int) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    model = AgglomerativeClustering(n_clusters=p["n_clusters"], linkage=p["linkage"])
    return model.fit_predict(np.asarray(z, dtype=np.float64)).astype(np.int64)


_AGGLOMERATIVE = Method(
    name="agglomerative",
    help="agglomerative (hierarchical) clustering cut at n_clusters",
    params=(
        ParamSpec("n_clusters", int, _n_classes, "clusters (default: the number of true labels)", low=1,
                  search=_cluster_search),
        ParamSpec("linkage", str, "ward", "merge criterion", choices=("ward", "complete", "average", "single"),
                  search={"choices": ["ward", "average", "complete"]}),
    ),
    check=_check_agglomerative,
    run=_run_agglomerative,
)


# -- gmm -----------------------------------------------------------------------------
def _run_gmm(z: np.ndarray, p: dict[str, Any], *, seed: int) -> np.ndarray:
    from sklearn.mixture import GaussianMixture

    z = np.asarray(z, dtype=np.float64)
    model = GaussianMixture(n_components=p["n_clusters"], covariance_type=p["covariance_type"], n_init=p["n_init"],
                            max_iter=p["max_iter"], random_state=seed)
    return model.fit(z).predict(z).astype(np.int64)


_GMM = Method(
    name="gmm",
    help="Gaussian mixture (EM), each point to its most likely component",
    params=(
        ParamSpec("n_clusters", int, _n_classes, "components (default: the number of true labels)", low=1,
                  search=_cluster_search),
        ParamSpec("covariance_type", str, "full", "covariance shape", choices=("full", "tied", "diag", "spherical"),
                  search={"choices": ["full", "diag"]}),
        ParamSpec("n_init", int, 1, "restarts; the best likelihood wins", low=1),
        ParamSpec("max_iter", int, 100, "EM iterations", low=1),
    ),
    check=lambda p, s: _check_n_clusters(p, s, "gmm"),
    run=_run_gmm,
)


CLUSTERERS: dict[str, Method] = {m.name: m for m in (_HDBSCAN, _KMEANS, _AGGLOMERATIVE, _GMM)}
