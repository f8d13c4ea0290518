"""One map of one layer: reduce, cluster, score. A pure function of (data, config).

:class:`MapConfig` holds every setting with every default resolved (including the seed,
UMAP's epochs and k-means' k), so a logged ``config.json`` alone reproduces the map:
``fit_map(x, labels, MapConfig.from_dict(logged))`` gives the same coordinates, clusters
and scores (exact k-NN graphs are truncation-consistent, every stochastic step is
seeded, UMAP runs single-threaded under a seed).

    config = resolve_config(shape=DataShape(*x.shape, n_classes), reducer="umap")
    result = fit_map(x, labels, config)
    result.scores["ami"], result.coords  # (n, 2)

Other jobs (layers, sweep) call :func:`fit_map` directly; a :class:`NeighbourCache`
shared between calls computes each k-NN graph and score reference once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from latentscape.jobs.core._params import ConfigError, DataShape, lookup, resolve_params
from latentscape.jobs.core.cluster import CLUSTERERS
from latentscape.jobs.core.knn import EXACT_MAX_SAMPLES, GraphStore, KnnCache, KnnGraph
from latentscape.jobs.core.reduce import REDUCERS, input_metric, knn_width, uses_knn
from latentscape.jobs.core.scores import NOISE_POLICY, NeighbourReference, neighbour_reference, score_map
from latentscape.tracking.contract import Metric, Param

__all__ = [
    "MapConfig",
    "MapResult",
    "NeighbourCache",
    "ConfigError",
    "DataShape",
    "resolve_config",
    "check_settings",
    "fit_map",
    "recluster",
    "with_view",
    "data_shape",
    "DEFAULT_REDUCER",
    "DEFAULT_CLUSTERER",
    "DEFAULT_SEED",
    "CONFIG_VERSION",
]

DEFAULT_REDUCER = "umap"
DEFAULT_CLUSTERER = "hdbscan"
DEFAULT_SEED = 0
DEFAULT_SCORE_K = 15
DEFAULT_SCORE_SAMPLE = 1000
CONFIG_VERSION = 1
VIEWS = ("embedding", "refit", "pca")
KNN_METHODS = ("exact", "approx", "none")
_MIN_SAMPLES = 10


@dataclass(frozen=True)
class MapConfig:
    """Every setting of a map, resolved. Build with :func:`resolve_config`.

    reducer / clusterer: registry names; reducer_params / clusterer_params: every
    parameter of each, defaults filled in; seed: for every stochastic step; view: how
    the 2D display coordinates are made ("embedding": the reduction is already 2D;
    "refit": the same reducer with n_components=2; "pca": the first two principal
    components of the clustering space); knn: "exact", "approx" (pynndescent, width
    ``knn_k``) or "none" (the reducer needs no graph); score_k / score_sample: the
    neighbourhood size and sample size of the geometry scores."""

    reducer: str
    reducer_params: Mapping[str, Any]
    clusterer: str
    clusterer_params: Mapping[str, Any]
    seed: int
    view: str
    knn: str
    knn_k: int | None
    score_k: int
    score_sample: int
    noise_policy: str = NOISE_POLICY
    version: int = CONFIG_VERSION

    def __post_init__(self):
        # Own copies: a caller's dict changing later must not change a config.
        object.__setattr__(self, "reducer_params", dict(self.reducer_params))
        object.__setattr__(self, "clusterer_params", dict(self.clusterer_params))

    @property
    def metric(self) -> str:
        """Input-space distance (the reducer's ``metric``; euclidean when it has none)."""
        return input_metric(dict(self.reducer_params))

    @property
    def knn_width(self) -> int:
        """Width of the k-NN graph the reducer reads (0: none)."""
        return knn_width(self.reducer, dict(self.reducer_params))

    def flat_params(self) -> dict[str, Any]:
        """``reducer.<name>`` and ``clusterer.<name>`` -> value, as logged and searched."""
        flat = {Param.reducer_param(k): v for k, v in self.reducer_params.items()}
        flat.update({Param.clusterer_param(k): v for k, v in self.clusterer_params.items()})
        return flat

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the ``config.json`` payload's ``map`` entry)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any], shape: DataShape) -> MapConfig:
        """A logged config, checked again against the data it is replayed on."""
        if int(payload.get("version", CONFIG_VERSION)) != CONFIG_VERSION:
            raise ConfigError(f"config version {payload.get('version')} is not {CONFIG_VERSION}",
                              "replay it with the latentscape version that logged it")
        if (payload.get("noise_policy") or NOISE_POLICY) != NOISE_POLICY:
            raise ConfigError(f"noise policy {payload.get('noise_policy')!r} is not {NOISE_POLICY!r}")
        return resolve_config(
            shape=shape, reducer=payload["reducer"], clusterer=payload["clusterer"],
            reducer_params=payload.get("reducer_params"), clusterer_params=payload.get("clusterer_params"),
            seed=payload["seed"], view=payload.get("view", "auto"), knn=payload.get("knn", "auto"),
            knn_k=payload.get("knn_k"), score_k=payload.get("score_k"), score_sample=payload.get("score_sample"),
        )


@dataclass(frozen=True)
class MapResult:
    """coords: (n, 2) float32 display coordinates (None when not asked for); embedding:
    (n, c) float32 clustering space; clusters: (n,) int64, -1 noise; scores: contract
    metric name -> value (NaN where undefined); durations: *_seconds -> seconds."""

    config: MapConfig
    coords: np.ndarray | None
    embedding: np.ndarray
    clusters: np.ndarray
    scores: dict[str, float]
    durations: dict[str, float] = field(default_factory=dict)


def data_shape(x: np.ndarray, labels: np.ndarray | None) -> DataShape:
    """The :class:`DataShape` of ``x: (n, d)`` and optional ``labels: (n,)``."""
    n_classes = None if labels is None else int(len(np.unique(np.asarray(labels))))
    return DataShape(n_samples=int(x.shape[0]), n_features=int(x.shape[1]), n_classes=n_classes)


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r}", f"choose one of {', '.join(allowed)}")
    return value


def check_settings(
    *,
    reducer: str = DEFAULT_REDUCER,
    clusterer: str = DEFAULT_CLUSTERER,
    reducer_params: Mapping[str, Any] | None = None,
    clusterer_params: Mapping[str, Any] | None = None,
    seed: int = DEFAULT_SEED,
    view: str = "auto",
    knn: str = "auto",
) -> None:
    """What can be checked without the data (names, types, ranges, choices): a job runs
    this before it opens a store, so such mistakes fail in milliseconds. Raises
    :class:`ConfigError`; :func:`resolve_config` checks everything again with the data."""
    reducer_method = lookup(REDUCERS, reducer, "reducer")
    clusterer_method = lookup(CLUSTERERS, clusterer, "clusterer")
    for method, given in ((reducer_method, reducer_params), (clusterer_method, clusterer_params)):
        for name, value in (given or {}).items():
            if value is not None:
                method.spec(name).check(value, owner=method.name)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed {seed!r} must be a non-negative integer", "pass e.g. --seed 0")
    _choice(view, ("auto", *VIEWS), "view")
    _choice(knn, ("auto", *KNN_METHODS[:2]), "knn method")


def resolve_config(
    *,
    shape: DataShape,
    reducer: str = DEFAULT_REDUCER,
    clusterer: str = DEFAULT_CLUSTERER,
    reducer_params: Mapping[str, Any] | None = None,
    clusterer_params: Mapping[str, Any] | None = None,
    seed: int = DEFAULT_SEED,
    view: str = "auto",
    knn: str = "auto",
    knn_k: int | None = None,
    score_k: int | None = None,
    score_sample: int | None = None,
) -> MapConfig:
    """Every setting checked against data of ``shape`` and every default filled in.

    Raises :class:`ConfigError` (one line: problem and fix) before any work: unknown
    reducer, clusterer, parameter or metric; ``n_neighbors >= n_samples``;
    ``n_components < 1``; and so on."""
    if shape.n_samples < _MIN_SAMPLES:
        raise ConfigError(f"a map needs at least {_MIN_SAMPLES} samples, the data has {shape.n_samples}",
                          "extract more samples")
    reducer_method = lookup(REDUCERS, reducer, "reducer")
    clusterer_method = lookup(CLUSTERERS, clusterer, "clusterer")
    reduced = resolve_params(reducer_method, reducer_params, shape)
    n_dims = reduced.get("n_components", shape.n_features)
    clustered = resolve_params(clusterer_method, clusterer_params,
                               DataShape(shape.n_samples, n_dims, shape.n_classes))
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed {seed!r} must be a non-negative integer", "pass e.g. --seed 0")

    # How the display coordinates are made.
    if view == "auto":
        if reducer == "none":
            view = "pca"
        elif n_dims == 2:
            view = "embedding"
        else:
            view = "refit"
    _choice(view, VIEWS, "view")
    if view == "embedding" and n_dims != 2:
        raise ConfigError(f"view 'embedding' needs a 2D reduction, not {n_dims}D", "use view refit or pca")
    if view == "refit" and reducer == "none":
        raise ConfigError("view 'refit' needs a reducer", "use view pca")

    # Which k-NN graph the reducer reads.
    if not uses_knn(reducer):
        knn, knn_k = "none", None
    else:
        if knn == "auto":
            knn = "exact" if shape.n_samples <= EXACT_MAX_SAMPLES else "approx"
        _choice(knn, KNN_METHODS[:2], "knn method")
        width = knn_width(reducer, reduced)
        if knn == "exact":
            knn_k = None  # exact graphs truncate exactly: their width does not matter
        else:
            knn_k = width if knn_k is None else int(knn_k)
            if not width <= knn_k < shape.n_samples:
                raise ConfigError(f"knn_k={knn_k} must be within {width}..{shape.n_samples - 1}")

    # Geometry scores.
    limit = (shape.n_samples - 1) // 2
    score_k = min(DEFAULT_SCORE_K, limit) if score_k is None else int(score_k)
    if not 1 <= score_k or score_k >= shape.n_samples / 2:
        raise ConfigError(f"score_k={score_k} must be at least 1 and below half the samples",
                          f"pass score_k <= {limit}")
    score_sample = DEFAULT_SCORE_SAMPLE if score_sample is None else int(score_sample)
    if score_sample < 10:
        raise ConfigError(f"score_sample={score_sample} is too small", "pass 10 or more (default 1000)")
    return MapConfig(reducer=reducer, reducer_params=reduced, clusterer=clusterer, clusterer_params=clustered,
                     seed=int(seed), view=view, knn=knn, knn_k=knn_k, score_k=score_k, score_sample=score_sample)


class NeighbourCache:
    """What maps of the same data share: k-NN graphs (per metric) and score references
    (per metric, k, sample, seed). Thread-safe; give ``hint_k`` = the largest graph width
    any map will need so each graph is computed once. store: where graphs outlive the
    process (a :class:`~latentscape.jobs.core.knn.GraphStore`; None: this process only)."""

    def __init__(self, x: np.ndarray, *, hint_k: int = 0, store: GraphStore | None = None):
        self.x = x
        self.graphs = KnnCache(x, hint_k=hint_k, store=store)
        self._references: dict[tuple, NeighbourReference] = {}
        self._lock = threading.Lock()
        self.reference_seconds = 0.0

    @property
    def graph_source(self) -> str | None:
        """Where this cache's k-NN graphs came from: "computed" (any of them), "stored"
        (all from the store), None (no graph was asked for)."""
        if self.graphs.computed:
            return "computed"
        return "stored" if self.graphs.loaded else None

    def knn(self, config: MapConfig) -> KnnGraph | None:
        if config.knn == "none":
            return None
        if config.knn == "exact":
            return self.graphs.get(config.metric, config.knn_width)
        return self.graphs.get(config.metric, config.knn_width, exact=False, seed=config.seed, width=config.knn_k)

    def reference(self, config: MapConfig) -> NeighbourReference:
        key = (config.metric, config.score_k, config.score_sample, config.seed)
        with self._lock:
            if key not in self._references:
                started = time.perf_counter()
                self._references[key] = neighbour_reference(self.x, k=config.score_k, metric=config.metric,
                                                            sample=config.score_sample, seed=config.seed)
                self.reference_seconds += time.perf_counter() - started
            return self._references[key]


def _check_graph(graph: KnnGraph, config: MapConfig, n: int) -> None:
    if graph.n != n or graph.metric != config.metric or graph.k < config.knn_width:
        raise ValueError(f"k-NN graph ({graph.n} x {graph.k}, {graph.metric}) does not fit this map "
                         f"({n} samples, width {config.knn_width}, {config.metric})")
    if graph.exact != (config.knn == "exact") or (not graph.exact and (graph.k != config.knn_k
                                                                       or graph.seed != config.seed)):
        raise ValueError("k-NN graph was built another way than the config says")


def _view(x: np.ndarray, embedding: np.ndarray, config: MapConfig, knn: KnnGraph | None) -> np.ndarray:
    """(n, 2) display coordinates."""
    if config.view == "embedding":
        return embedding
    if config.view == "refit":
        params = dict(config.reducer_params, n_components=2)
        return REDUCERS[config.reducer].run(x, params, seed=config.seed, knn=knn)
    from sklearn.decomposition import PCA

    source = np.asarray(embedding, dtype=np.float64)
    n_components = min(2, source.shape[1], source.shape[0])
    coords = PCA(n_components=n_components, random_state=config.seed).fit_transform(source)
    if coords.shape[1] < 2:  # 1-D data: put it on a line
        coords = np.hstack([coords, np.zeros((len(coords), 2 - coords.shape[1]))])
    return coords.astype(np.float32)


def with_view(x: np.ndarray, result: MapResult, *, cache: NeighbourCache | None = None) -> MapResult:
    """``result`` (fitted with ``with_view=False``) with its display coordinates: the same
    ones ``fit_map(..., with_view=True)`` makes, without fitting the map again (under the
    same BLAS/OpenMP thread limit as the fit: a refit view's spectral start depends on it)."""
    from dataclasses import replace

    if result.coords is not None:
        return result
    config = result.config
    knn = _knn_graph(x, config, cache) if config.view == "refit" else None
    return replace(result, coords=_view(np.asarray(x), result.embedding, config, knn))


def _knn_graph(x: np.ndarray, config: MapConfig, cache: NeighbourCache | None) -> KnnGraph | None:
    """The k-NN graph ``config`` asks for (None for knn 'none'): from ``cache`` when there
    is one, else computed."""
    if config.knn == "none":
        return None
    if cache is not None:
        return cache.knn(config)
    if config.knn == "exact":
        from latentscape.jobs.core.knn import exact_knn

        return exact_knn(x, config.knn_width, metric=config.metric)
    from latentscape.jobs.core.knn import approx_knn

    return approx_knn(x, config.knn_k, metric=config.metric, seed=config.seed)


def fit_map(
    x: np.ndarray,
    labels: np.ndarray | None,
    config: MapConfig,
    *,
    knn: KnnGraph | None = None,
    cache: NeighbourCache | None = None,
    with_view: bool = True,
    threads: int | None = 1,
) -> MapResult:
    """Reduce ``x: (n, d)``, cluster the reduction, score it against ``labels: (n,)``
    (None: unlabelled, label scores omitted).

    knn: a k-NN graph of ``x`` under ``config.metric`` at least ``config.knn_width`` wide
    (computed here when None); cache: graphs and score references shared across calls;
    with_view: also make the (n, 2) display coordinates (a sweep skips them per trial);
    threads: BLAS/OpenMP threads inside the map (None: leave the libraries' setting).
    One thread is the default: it keeps OpenMP reductions (k-means, t-SNE) in one order
    whatever the machine, and measured on a busy 2-core machine, k-means on digits took
    0.2 s with one thread against 0.8-2.9 s with the default two; parallelise across
    maps (processes) instead. The result depends on ``x``, ``labels`` and ``config`` only."""
    if threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads):
            return fit_map(x, labels, config, knn=knn, cache=cache, with_view=with_view, threads=None)
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be (n_samples, n_features), got shape {x.shape}")
    if labels is not None and len(labels) != len(x):
        raise ValueError(f"{len(labels)} labels for {len(x)} samples")
    durations: dict[str, float] = {}

    # k-NN graph: given, shared, or computed once here.
    started = time.perf_counter()
    if knn is None:
        knn = _knn_graph(x, config, cache)
    if knn is not None:
        _check_graph(knn, config, len(x))
    durations[Metric.KNN_SECONDS] = time.perf_counter() - started

    # Reduce, then the display view.
    started = time.perf_counter()
    reducer = REDUCERS[config.reducer]
    embedding = reducer.run(x, dict(config.reducer_params), seed=config.seed, knn=knn)
    coords = _view(x, embedding, config, knn) if with_view else None
    durations[Metric.REDUCE_SECONDS] = time.perf_counter() - started

    # Cluster in the reduced space.
    started = time.perf_counter()
    clusters = CLUSTERERS[config.clusterer].run(embedding, dict(config.clusterer_params), seed=config.seed)
    durations[Metric.CLUSTER_SECONDS] = time.perf_counter() - started

    # Score.
    started = time.perf_counter()
    scores = _score(x, labels, clusters, embedding, config, cache)
    durations[Metric.SCORE_SECONDS] = time.perf_counter() - started
    return MapResult(config=config, coords=coords, embedding=embedding, clusters=clusters, scores=scores,
                     durations=durations)


def _score(x: np.ndarray, labels: np.ndarray | None, clusters: np.ndarray, embedding: np.ndarray,
           config: MapConfig, cache: NeighbourCache | None) -> dict[str, float]:
    if config.reducer == "none":
        reference = None  # the identity map keeps every neighbourhood
    elif cache is not None:
        reference = cache.reference(config)
    else:
        reference = neighbour_reference(x, k=config.score_k, metric=config.metric, sample=config.score_sample,
                                        seed=config.seed)
    return score_map(labels, clusters, z=embedding, reference=reference, sample=config.score_sample,
                     seed=config.seed)


def recluster(
    x: np.ndarray,
    labels: np.ndarray | None,
    result: MapResult,
    clusterer_params: Mapping[str, Any],
    *,
    cache: NeighbourCache | None = None,
    threads: int | None = 1,
) -> MapResult:
    """``result`` (a map of ``x: (n, d)``) clustered again in its own clustering space by
    the same clusterer with ``clusterer_params`` (unset ones at their defaults), and scored
    again against ``labels: (n,)`` (None: label scores omitted). No new reduction: the
    coordinates stay, and the result equals ``fit_map`` with the new config (a replay of
    its config gives the same clusters). Durations: the clustering and scoring seconds of
    both passes. Raises :class:`ConfigError` for settings that do not fit the data."""
    if threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads):
            return recluster(x, labels, result, clusterer_params, cache=cache, threads=None)
    from dataclasses import replace

    config, embedding = result.config, result.embedding
    shape = DataShape(int(embedding.shape[0]), int(embedding.shape[1]),
                      None if labels is None else int(len(np.unique(np.asarray(labels)))))
    config = replace(config, clusterer_params=resolve_params(CLUSTERERS[config.clusterer], clusterer_params, shape))
    durations = dict(result.durations)
    started = time.perf_counter()
    clusters = CLUSTERERS[config.clusterer].run(embedding, dict(config.clusterer_params), seed=config.seed)
    durations[Metric.CLUSTER_SECONDS] = durations.get(Metric.CLUSTER_SECONDS, 0.0) + time.perf_counter() - started
    started = time.perf_counter()
    scores = _score(np.asarray(x), labels, clusters, embedding, config, cache)
    durations[Metric.SCORE_SECONDS] = durations.get(Metric.SCORE_SECONDS, 0.0) + time.perf_counter() - started
    return replace(result, config=config, clusters=clusters, scores=scores, durations=durations)
