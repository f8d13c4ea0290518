"""Dimensionality reducers, one registry: ``umap``, ``pca``, ``tsne``, ``spectral``, ``none``.

Every reducer is a :class:`~latentscape.jobs.core._params.Method` whose ``run(x, params, *, seed,
knn)`` takes ``x: (n_samples, n_features)`` and returns ``(n_samples, n_components)``
float32 (``none`` returns ``x`` itself: cluster in the layer's own space). Parameters are
resolved and checked against the data's shape before any work
(:func:`~latentscape.jobs.core._params.resolve_params`), so a bad setting fails in milliseconds.

``umap`` and ``spectral`` read a k-NN graph (:mod:`latentscape.jobs.core.knn`); the others ignore it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from latentscape.jobs.core._params import ConfigError, DataShape, Method, ParamSpec
from latentscape.jobs.core._numba_cache import enable_numba_cache
from latentscape.jobs.core.knn import METRICS, KnnGraph

__all__ = ["REDUCERS", "uses_knn", "knn_width", "input_metric"]


def _log(low: float, high: float) -> dict:
    return {"low": low, "high": high, "log": True}


def _cap(value: int, shape: DataShape, margin: int = 1) -> int:
    return max(2, min(value, shape.n_samples - margin))


def _quiet() -> None:
    # Expected warnings: no pynndescent index with a precomputed graph (we never call
    # transform), n_jobs overridden by random_state (we want the determinism),
    # disconnected graphs in spectral initialisation.
    for pattern in ("precomputed_knn", "n_jobs value", "Graph is not fully connected",
                    "is not an NNDescent object", "n_jobs value 1 overridden"):
        warnings.filterwarnings("ignore", message=f".*{pattern}.*")


# -- umap ----------------------------------------------------------------------------
def _check_umap(p: dict[str, Any], shape: DataShape) -> None:
    _check_neighbours(p, shape, "umap")
    _check_components(p, shape, "umap", limit=shape.n_samples - 2)
    if p["min_dist"] > p["spread"]:
        raise ConfigError(f"umap min_dist={p['min_dist']} is above spread={p['spread']}",
                          "pass min_dist <= spread")


def _check_neighbours(p: dict[str, Any], shape: DataShape, name: str) -> None:
    if p["n_neighbors"] >= shape.n_samples:
        raise ConfigError(f"{name} n_neighbors={p['n_neighbors']} is not below the number of samples "
                          f"({shape.n_samples})", f"pass n_neighbors <= {shape.n_samples - 1}")


def _check_components(p: dict[str, Any], shape: DataShape, name: str, *, limit: int) -> None:
    if p["n_components"] > limit:
        raise ConfigError(f"{name} n_components={p['n_components']} is too many for {shape.n_samples} samples "
                          f"of {shape.n_features} features", f"pass n_components <= {max(limit, 1)}")


def _run_umap(x: np.ndarray, p: dict[str, Any], *, seed: int, knn: KnnGraph | None) -> np.ndarray:
    import umap

    enable_numba_cache()
    _quiet()
    extra = {}
    if knn is not None:
        extra["precomputed_knn"] = knn.for_umap(p["n_neighbors"])
    model = umap.UMAP(
        n_neighbors=p["n_neighbors"], min_dist=p["min_dist"], n_components=p["n_components"], metric=p["metric"],
        spread=p["spread"], n_epochs=p["n_epochs"], learning_rate=p["learning_rate"], init=p["init"],
        negative_sample_rate=p["negative_sample_rate"], local_connectivity=p["local_connectivity"],
        repulsion_strength=p["repulsion_strength"], random_state=seed, transform_seed=seed, n_jobs=1,
        verbose=False, **extra,
    )
    return np.asarray(model.fit_transform(x), dtype=np.float32)


_UMAP = Method(
    name="umap",
    help="UMAP (McInnes et al.): a fuzzy k-NN graph laid out in n_components dimensions",
    params=(
        ParamSpec("n_neighbors", int, 15, "size of the local neighbourhood (counting the point)", low=2,
                  search=lambda s: _log(5, _cap(100, s))),
        # UMAP's default. Measured on digits with HDBSCAN: AMI 0.92-0.93 over 3 seeds,
        # against 0.88-0.91 with min_dist 0.0 (which splits digits into sub-clusters).
        ParamSpec("min_dist", float, 0.1, "how tightly points may pack", low=0.0,
                  search={"low": 0.0, "high": 0.5}),
        ParamSpec("n_components", int, 2, "dimensions of the embedding", low=1, high=100,
                  search=lambda s: {"low": 2, "high": max(2, min(10, s.n_samples - 2))}),
        ParamSpec("metric", str, "euclidean", "input-space distance", choices=METRICS,
                  search={"choices": ["euclidean", "cosine"]}),
        ParamSpec("spread", float, 1.0, "scale of the embedded points", low=1e-3),
        # measured: 200 epochs is 2.3x faster than UMAP's 500 for small data at the same AMI
        # (digits, 5k x 384); UMAP itself uses 200 above 10,000 samples.
        ParamSpec("n_epochs", int, 200, "layout optimisation epochs", low=1, high=10_000),
        ParamSpec("learning_rate", float, 1.0, "initial layout learning rate", low=1e-6),
        ParamSpec("init", str, "spectral", "initial layout", choices=("spectral", "random", "pca")),
        ParamSpec("negative_sample_rate", int, 5, "negative samples per positive edge", low=1, high=100),
        ParamSpec("local_connectivity", float, 1.0, "neighbours assumed connected", low=0.0),
        ParamSpec("repulsion_strength", float, 1.0, "weight of negative samples", low=0.0),
    ),
    check=_check_umap,
    run=_run_umap,
    extra={"uses_knn": True},
)


# -- pca -----------------------------------------------------------------------------
def _check_pca(p: dict[str, Any], shape: DataShape) -> None:
    _check_components(p, shape, "pca", limit=min(shape.n_samples, shape.n_features))


def _run_pca(x: np.ndarray, p: dict[str, Any], *, seed: int, knn: KnnGraph | None) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(n_components=p["n_components"], whiten=p["whiten"], random_state=seed).fit_transform(
        np.asarray(x, dtype=np.float64)).astype(np.float32)


_PCA = Method(
    name="pca",
    help="principal components (linear; deterministic up to sign)",
    params=(
        ParamSpec("n_components", int, 2, "number of components", low=1,
                  search=lambda s: {"low": 2, "high": max(2, min(50, s.n_features, s.n_samples))}),
        ParamSpec("whiten", bool, False, "scale components to unit variance"),
    ),
    check=_check_pca,
    run=_run_pca,
)


# -- tsne ----------------------------------------------------------------------------
def _check_tsne(p: dict[str, Any], shape: DataShape) -> None:
    if p["n_components"] > 3:
        raise ConfigError(f"tsne n_components={p['n_components']} is above 3 (Barnes-Hut t-SNE)",
                          "pass n_components 1..3, or use umap for more dimensions")
    if p["perplexity"] >= shape.n_samples:
        raise ConfigError(f"tsne perplexity={p['perplexity']} is not below the number of samples ({shape.n_samples})",
                          f"pass perplexity < {shape.n_samples}")
    if p["metric"] != "euclidean" and p["init"] == "pca":
        raise ConfigError(f"tsne init='pca' needs metric='euclidean', not {p['metric']!r}", "pass init=random")


def _run_tsne(x: np.ndarray, p: dict[str, Any], *, seed: int, knn: KnnGraph | None) -> np.ndarray:
    from sklearn.manifold import TSNE

    model = TSNE(n_components=p["n_components"], perplexity=p["perplexity"], early_exaggeration=p["early_exaggeration"],
                 learning_rate=p["learning_rate"], max_iter=p["max_iter"], metric=p["metric"], init=p["init"],
                 random_state=seed, method="barnes_hut", n_jobs=1)
    return model.fit_transform(np.asarray(x, dtype=np.float32)).astype(np.float32)


_TSNE = Method(
    name="tsne",
    help="t-SNE (Barnes-Hut, scikit-learn)",
    params=(
        ParamSpec("n_components", int, 2, "dimensions (1 to 3)", low=1, high=3),
        ParamSpec("perplexity", float, lambda s: float(min(30.0, max(2.0, (s.n_samples - 1) / 3))),
                  "effective number of neighbours", low=1.0,
                  search=lambda s: _log(5.0, float(max(5.0, min(50.0, (s.n_samples - 1) / 3))))),
        ParamSpec("early_exaggeration", float, 12.0, "cluster separation early on", low=1.0),
        # scikit-learn's "auto" rule (Belkina et al. 2019), resolved to a number.
        ParamSpec("learning_rate", float, lambda s: float(max(s.n_samples / 12.0 / 4.0, 50.0)),
                  "gradient step size", low=1e-3),
        ParamSpec("max_iter", int, 1000, "optimisation iterations", low=250),
        ParamSpec("metric", str, "euclidean", "input-space distance", choices=METRICS),
        ParamSpec("init", str, "pca", "initial layout", choices=("pca", "random")),
    ),
    check=_check_tsne,
    run=_run_tsne,
)


# -- spectral ------------------------------------------------------------------------
def _check_spectral(p: dict[str, Any], shape: DataShape) -> None:
    _check_neighbours(p, shape, "spectral")
    _check_components(p, shape, "spectral", limit=shape.n_samples - 2)


def _run_spectral(x: np.ndarray, p: dict[str, Any], *, seed: int, knn: KnnGraph | None) -> np.ndarray:
    from scipy.sparse import csr_matrix
    from sklearn.manifold import SpectralEmbedding

    if knn is None:
        from latentscape.jobs.core.knn import exact_knn

        knn = exact_knn(x, p["n_neighbors"], metric=p["metric"])
    _quiet()
    graph = knn.truncate(p["n_neighbors"])
    n, k = graph.indices.shape
    connectivity = csr_matrix((np.ones(n * k), (np.repeat(np.arange(n), k), graph.indices.ravel())), shape=(n, n))
    affinity = 0.5 * (connectivity + connectivity.T)  # what scikit-learn does with a k-NN graph
    model = SpectralEmbedding(n_components=p["n_components"], affinity="precomputed", random_state=seed,
                              eigen_solver="arpack")
    return model.fit_transform(affinity).astype(np.float32)


_SPECTRAL = Method(
    name="spectral",
    help="Laplacian eigenmaps on the symmetrised k-NN graph",
    params=(
        ParamSpec("n_components", int, 2, "dimensions of the embedding", low=1,
                  search=lambda s: {"low": 2, "high": max(2, min(10, s.n_samples - 2))}),
        ParamSpec("n_neighbors", int, 15, "neighbours in the graph (counting the point)", low=2,
                  search=lambda s: _log(5, _cap(100, s))),
        ParamSpec("metric", str, "euclidean", "input-space distance", choices=METRICS),
    ),
    check=_check_spectral,
    run=_run_spectral,
    extra={"uses_knn": True},
)


# -- none ----------------------------------------------------------------------------
def _run_none(x: np.ndarray, p: dict[str, Any], *, seed: int, knn: KnnGraph | None) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


_NONE = Method(name="none", help="no reduction: cluster in the layer's own space", params=(), run=_run_none)


REDUCERS: dict[str, Method] = {m.name: m for m in (_UMAP, _PCA, _TSNE, _SPECTRAL, _NONE)}


def uses_knn(name: str) -> bool:
    """Whether reducer ``name`` reads a k-NN graph of the input."""
    return bool(REDUCERS[name].extra.get("uses_knn"))


def knn_width(name: str, params: dict[str, Any]) -> int:
    """Graph width (counting each point) reducer ``name`` needs with ``params``; 0 if none."""
    return int(params["n_neighbors"]) if uses_knn(name) else 0


def input_metric(params: dict[str, Any]) -> str:
    """The input-space distance of a reducer's settings (euclidean when it has none)."""
    return str(params.get("metric", "euclidean"))
