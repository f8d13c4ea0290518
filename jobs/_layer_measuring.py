"""The layers job's per-layer measurement: which rows each measure reads (a seeded,
stratified subsample past ``--max-samples``), one layer's measures (geometry, probe, k-NN
agreement, cluster scores) and the per-layer map shared by every layer. The names of what
it returns are the registry's (:mod:`latentscape.tracking.layer_measures`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from latentscape.jobs import _layer_scores as _scores
from latentscape.tracking.contract import Column, Metric, Param
from latentscape.tracking.errors import UsageError

if TYPE_CHECKING:
    from latentscape.jobs.layers import LayersConfig

__all__ = ["Rows", "measured_rows", "measure", "Mapper", "min_class_size"]


@dataclass(frozen=True)
class Rows:
    """Which rows each kind of measure reads. ``geometry``: the k-NN graph and TwoNN's rows;
    ``labelled``: the label scores' rows (labelled, of a big enough class, stratified), with
    their ``labels`` (None: no label scores). None means every row."""

    n: int
    geometry: np.ndarray | None
    labelled: np.ndarray | None
    labels: np.ndarray | None

    def of_labels(self, x: np.ndarray) -> np.ndarray:
        return x if self.labelled is None else x[self.labelled]

    def params(self, labelled: bool, mapped: bool) -> dict:
        """``n.<measure>``: how many samples each subsampled measure read."""
        sizes = {Metric.INTRINSIC_DIM: self.n if self.geometry is None else len(self.geometry)}
        if labelled:
            size = len(self.labels)
            sizes.update({name: size for name in (Metric.PROBE_ACCURACY, Metric.KNN_AGREEMENT, Metric.AMI)})
            if mapped:
                sizes.update({Metric.AMI_MAP: size, Metric.AMI_HDBSCAN: size})
        return {Param.sample_size(name): size for name, size in sizes.items()}


def measured_rows(extraction, selection, config: LayersConfig) -> Rows:
    """The rows of :class:`Rows` for ``extraction``: at most ``config.max_samples`` each,
    seeded; the label scores' rows stratified so every kept class keeps the probe's folds.
    Measured on 2 cores: exact k-NN, the probe and k-means grow faster than linearly in
    the samples, while their intervals at 20,000 are already narrower than the gaps
    between layers that the verdict reads."""
    from latentscape.jobs.core.labels import random_rows, stratified_rows

    n = len(extraction.samples)
    geometry = random_rows(n, config.max_samples, seed=config.seed)
    labelled = labels = None
    if selection.usable:
        kept = np.flatnonzero(selection.keep)
        kept_labels = extraction.samples[Column.LABEL].to_numpy()[kept].astype(str)
        picked = stratified_rows(kept_labels, config.max_samples, min_per_class=min_class_size(config),
                                 seed=config.seed)
        labelled, labels = kept[picked], kept_labels[picked]
    return Rows(n=n, geometry=None if len(geometry) == n else geometry,
                 labelled=None if labelled is None or len(labelled) == n else labelled, labels=labels)


def measure(x: np.ndarray, before: np.ndarray | None, rows: Rows,
             config: LayersConfig, mapper: Mapper | None, *, store=None) -> dict[str, float]:
    """One layer's measures; ``x: (n, d)``, ``before``: the previous layer or None;
    ``rows``: which rows the graph and the label scores read; store: the layer's k-NN
    graphs on disk (:func:`latentscape.jobs._knn_store.layer_graph_store`; None: computed here)."""
    from latentscape.jobs.core.geometry import anisotropy
    from latentscape.jobs.core.intrinsic import two_nn_dimension
    from latentscape.jobs.core.probes import knn_agreement_per_sample, probe_accuracy
    from latentscape.jobs.core.similarity import mean_cosine
    from latentscape.jobs.core.verdict import mean_interval

    values: dict[str, float] = {Metric.ANISOTROPY: anisotropy(x, seed=config.seed)}
    if before is not None:
        values[Metric.COSINE_PREVIOUS] = mean_cosine(before, x)
    # One exact Euclidean k-NN graph (each row itself in column 0) serves TwoNN (the two
    # nearest others), the label agreement and the map: computed once per layer.
    labels = rows.labels
    width = max(3, config.knn_k + 1 if labels is not None else 3, mapper.knn_width if mapper else 0)
    seen = x if rows.geometry is None else x[rows.geometry]
    graph = _euclidean_graph(seen, width, store)
    values[Metric.INTRINSIC_DIM] = two_nn_dimension(neighbour_distances=graph.distances[:, 1:3])
    if labels is None:
        return values
    if rows.labelled is not None or rows.geometry is not None:  # the label scores' own rows and graph
        x = rows.of_labels(x)
        graph = _euclidean_graph(x, width, store)
    probe = probe_accuracy(x, labels, folds=config.probe_folds, seed=config.seed)
    values[Metric.PROBE_ACCURACY] = probe.mean
    values[Metric.PROBE_ACCURACY_STD] = probe.std
    agreement = knn_agreement_per_sample(labels, graph.indices[:, 1:config.knn_k + 1])
    values[Metric.KNN_AGREEMENT] = float(agreement.mean())
    for name, per_sample in ((Metric.PROBE_ACCURACY, probe.correct), (Metric.KNN_AGREEMENT, agreement)):
        low, high = mean_interval(per_sample, seed=config.seed)
        values[Metric.trust(name, Metric.CI_LOW_SUFFIX)] = low
        values[Metric.trust(name, Metric.CI_HIGH_SUFFIX)] = high
    # k-means at k = classes on the layer itself: the default cluster score (it cannot
    # merge the classes into a few clusters nor call points noise).
    from latentscape.jobs.core.verdict import kmeans_at_classes

    kmeans = [kmeans_at_classes(x, labels, seed=config.seed + offset) for offset in range(config.seeds)]
    values.update(_scores.cluster_score(_scores.KMEANS, labels, kmeans, config.seed))
    values[Metric.AMI] = values[Metric.AMI_KMEANS]
    if config.seeds > 1:  # the default curve's spread over seeds, and the seeds' agreement
        from latentscape.jobs.core.trust import stability

        found = stability([{Metric.AMI: _scores.ami(labels, c)} for c in kmeans], kmeans)
        values[Metric.AMI_STD], values[Metric.SEED_ARI_MEAN] = found.std[Metric.AMI], found.ari_mean
    if mapper is not None:
        values.update(mapper.scores(x, labels, graph, store=store))
    return values


def _euclidean_graph(x: np.ndarray, width: int, store):
    """The exact Euclidean k-NN graph of ``x``, at least ``min(width, n)`` wide (wider when
    ``store`` kept a wider one: its first columns are the same graph)."""
    from latentscape.jobs.core.knn import KnnCache

    return KnnCache(x, store=store).get("euclidean", min(width, len(x)))


class Mapper:
    """The per-layer map: :func:`latentscape.jobs.core.mapping.fit_map` with one configuration,
    resolved once (again only for a layer of another width) and shared by every layer."""

    def __init__(self, config: LayersConfig, labels: np.ndarray, first: np.ndarray):
        self.reducer, self.clusterer, self.seed = config.map_reducer, config.map_clusterer, config.seed
        self.seeds = config.seeds
        self.n_classes = len(np.unique(labels))
        self._configs: dict[int, object] = {}
        self.map_config = self._config(first)  # fails here, before any run, on a bad setting

    def _config(self, x: np.ndarray):
        from latentscape.jobs.core.mapping import ConfigError, DataShape, resolve_config

        width = x.shape[1]
        if width not in self._configs:
            try:
                self._configs[width] = resolve_config(
                    shape=DataShape(n_samples=len(x), n_features=width, n_classes=self.n_classes),
                    reducer=self.reducer, clusterer=self.clusterer, seed=self.seed)
            except ConfigError as error:
                raise UsageError(f"per-layer map: {error}",
                                 "pick another --map-reducer / --map-clusterer, or pass --no-map") from None
        return self._configs[width]

    @property
    def knn_width(self) -> int:
        """Width of the Euclidean k-NN graph the map can reuse (0: it reads none)."""
        return self.map_config.knn_width if self._reuses_graph(self.map_config) else 0

    @property
    def settings(self) -> dict:
        """Every resolved setting as logged params (``reducer.<name>``, ``clusterer.<name>``)."""
        return self.map_config.flat_params()

    @staticmethod
    def _reuses_graph(map_config) -> bool:
        return map_config.knn == "exact" and map_config.metric == "euclidean"

    def scores(self, x: np.ndarray, labels: np.ndarray, graph, *, store=None) -> dict[str, float]:
        """``ami.map`` (the map's own clusterer) and ``ami.hdbscan`` (HDBSCAN at the classes'
        granularity on the same map), each with its interval and cluster counts: maps made
        with seeds ``seed, seed + 1, ...``, one k-NN graph serving them all (another
        metric's or an approximate one: from ``store`` when it has them)."""
        from dataclasses import replace

        from latentscape.jobs.core.cluster import CLUSTERERS
        from latentscape.jobs.core.mapping import NeighbourCache, fit_map
        from latentscape.jobs.core.verdict import matched_hdbscan_params

        map_config = self._config(x)
        knn = graph if self._reuses_graph(map_config) and graph.k >= map_config.knn_width else None
        cache = NeighbourCache(x, store=store) if knn is None else None
        results = [fit_map(x, None, replace(map_config, seed=self.seed + offset), knn=knn, cache=cache,
                           with_view=False) for offset in range(self.seeds)]
        hdbscan = CLUSTERERS["hdbscan"]
        matched = {**{spec.name: spec.default_for(self._shape(x)) for spec in hdbscan.params},
                   **matched_hdbscan_params(len(x), self.n_classes)}
        return {
            **_scores.cluster_score(_scores.MAP, labels, [r.clusters for r in results], self.seed),
            **_scores.cluster_score(_scores.HDBSCAN, labels, [hdbscan.run(r.embedding, matched, seed=self.seed + offset)
                                                 for offset, r in enumerate(results)], self.seed),
        }

    def _shape(self, x: np.ndarray):
        from latentscape.jobs.core.mapping import DataShape

        return DataShape(n_samples=len(x), n_features=x.shape[1], n_classes=self.n_classes)


def min_class_size(config: LayersConfig) -> int:
    """The smallest class the label scores keep: what the user asked, never below the probe's folds."""
    return max(config.min_class_size or 0, config.probe_folds)
