"""``latentscape layers``: where does the representation change, and where does it stop?

For every layer of an extraction: linear CKA against every other layer, mean cosine of
each sample to the layer before, linear-probe accuracy and k-NN label agreement (where
labels exist), TwoNN intrinsic dimension, anisotropy, and the AMI of a map made with the
same fixed settings on every layer. Logged as a ``layers`` run, a child of the extract
run: each curve a metric with ``step=layer``, the CKA matrix and a per-layer table as
Parquet, and two findings as params: the layer of the largest change (lowest CKA to
the layer before) and the first layer after which consecutive layers stay above
``--stable-cka``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from jobs._result import JobResult
from tracking.contract import Artifact, Column, Kind, Metric, Param, Tag
from tracking.errors import UsageError

__all__ = ["LayersConfig", "LayerFindings", "layers", "findings", "add_parser", "NONE"]

# The value of a finding that does not exist (one layer only; never stable).
NONE = "none"

# Per-layer map for the AMI curve: fixed settings on every layer, so layers are compared
# by their geometry, not by tuning. UMAP + HDBSCAN, the `map` job's own defaults, so the
# curve means what the map page shows. Its cost is bearable because each layer's exact
# k-NN graph, computed anyway for k-NN agreement and TwoNN, is handed to UMAP (no
# pynndescent compilation): measured on 2 busy cores, 7 layers x 240 samples took 6 s
# warm, 12 s in a new process, against 2.6 s with PCA + k-means (k = number of classes),
# which stays available (--map-reducer pca --map-clusterer kmeans) for many large layers,
# where UMAP costs ~3-4 s per layer of 10,000.
DEFAULT_MAP_REDUCER = "umap"
DEFAULT_MAP_CLUSTERER = "hdbscan"

# Columns of layers.parquet besides Column.LAYER: the per-layer curves, named as the
# metrics they are logged as.
CURVES = (
    Metric.CKA_PREVIOUS, Metric.COSINE_PREVIOUS, Metric.ANISOTROPY, Metric.INTRINSIC_DIM,
    Metric.PROBE_ACCURACY, Metric.PROBE_ACCURACY_STD, Metric.KNN_AGREEMENT, Metric.AMI,
)
LABELLED_CURVES = (Metric.PROBE_ACCURACY, Metric.PROBE_ACCURACY_STD, Metric.KNN_AGREEMENT, Metric.AMI)


@dataclass(frozen=True)
class LayersConfig:
    """What ``latentscape layers`` does, validated once, logged whole."""

    run: str
    stable_cka: float = 0.95
    debiased: bool = False
    probe_folds: int = 5
    knn_k: int = 10
    seed: int = 0
    map_reducer: str = DEFAULT_MAP_REDUCER
    map_clusterer: str = DEFAULT_MAP_CLUSTERER
    map: bool = True  # False: no per-layer AMI (saves a map per layer)

    def __post_init__(self):
        if not (isinstance(self.stable_cka, (int, float)) and 0 < self.stable_cka <= 1):
            raise UsageError(f"--stable-cka {self.stable_cka} is outside (0, 1]", "pass e.g. 0.95 (the default)")
        if self.probe_folds < 2:
            raise UsageError(f"--probe-folds {self.probe_folds} is too few for cross-validation",
                             "pass 2 or more (default 5)")
        if self.knn_k < 1:
            raise UsageError(f"--knn-k {self.knn_k} must be positive", "pass 1 or more (default 10)")
        if self.seed < 0:
            raise UsageError(f"--seed {self.seed} is negative", "pass 0 or more (default 0)")


@dataclass(frozen=True)
class LayerFindings:
    """The two answers: ``largest_change`` is the layer least like the one before it
    (lowest consecutive CKA), ``first_stable`` the first layer after which every
    consecutive pair has CKA >= the threshold. Either is None when it does not exist."""

    largest_change: int | None
    first_stable: int | None


def findings(layer_ids: list[int], consecutive_cka: np.ndarray, threshold: float) -> LayerFindings:
    """``layer_ids: (L,)``, ``consecutive_cka: (L - 1,)`` with entry i = CKA(layer i, layer i+1).

    NaN (a constant layer) counts as unstable and is never the largest change.
    """
    cka = np.asarray(consecutive_cka, dtype=np.float64)
    if len(cka) == 0 or np.isnan(cka).all():
        return LayerFindings(None, None)
    largest = layer_ids[int(np.nanargmin(cka)) + 1]
    stable = np.nan_to_num(cka, nan=-np.inf) >= threshold
    first = None
    for index in range(len(cka) - 1, -1, -1):  # walk back while every later pair is stable
        if not stable[index]:
            break
        first = layer_ids[index]
    return LayerFindings(largest, first)


def add_parser(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "layers", parents=parents, help="compare every layer: CKA, probes, intrinsic dimension, AMI",
        description="For every layer of an extraction: linear CKA against every other layer, mean cosine to "
        "the layer before, linear-probe accuracy and k-NN label agreement (labelled data), TwoNN intrinsic "
        "dimension, anisotropy, and the AMI of a map with the same settings on every layer. Logs a `layers` "
        "run (child of the extract run) with each curve as a metric with step=layer, and the layer of the "
        "largest change and the first stable layer as params.",
        epilog="examples:\n  latentscape layers --run EXTRACT_RUN\n"
        "  latentscape layers --run EXTRACT_RUN --stable-cka 0.9 --debiased\n"
        "  latentscape layers --run EXTRACT_RUN --map-reducer pca --map-clusterer kmeans",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run", required=True, metavar="EXTRACT_RUN", help="id of an extract run")
    parser.add_argument("--stable-cka", type=float, default=0.95,
                        help="consecutive layers at or above this CKA count as stable (default 0.95)")
    parser.add_argument("--debiased", action="store_true",
                        help="debiased CKA (unbiased HSIC): removes the upward bias of small samples")
    parser.add_argument("--probe-folds", type=int, default=5, help="cross-validation folds of the probe (default 5)")
    parser.add_argument("--knn-k", type=int, default=10, help="neighbours for k-NN label agreement (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the probe folds, anisotropy pairs and maps")
    parser.add_argument("--map-reducer", default=DEFAULT_MAP_REDUCER,
                        help=f"reducer of the per-layer map (default {DEFAULT_MAP_REDUCER})")
    parser.add_argument("--map-clusterer", default=DEFAULT_MAP_CLUSTERER,
                        help=f"clusterer of the per-layer map (default {DEFAULT_MAP_CLUSTERER})")
    parser.add_argument("--no-map", dest="map", action="store_false", help="skip the per-layer map and its AMI")
    parser.set_defaults(handler=_run_cli)


def _run_cli(args) -> JobResult:
    config = LayersConfig(
        run=args.run, stable_cka=args.stable_cka, debiased=args.debiased, probe_folds=args.probe_folds,
        knn_k=args.knn_k, seed=args.seed, map_reducer=args.map_reducer, map_clusterer=args.map_clusterer,
        map=args.map,
    )
    from tracking.runs import open_store

    return layers(config, store=open_store(args.tracking_uri), experiment=args.experiment)


def layers(config: LayersConfig, *, store, experiment: str | None = None) -> JobResult:
    """Compare every layer of ``config.run`` and log one ``layers`` run."""
    from jobs._progress import progress
    from jobs._source import load_extraction
    from jobs.core.probes import check_probe_labels, chance_accuracy
    from jobs.core.similarity import cka_matrix, consecutive
    from tracking.runs import tracked_run

    # Load and validate everything before a run exists.
    extraction = load_extraction(store, config.run)
    layer_ids = list(extraction.layers)
    n = len(extraction.samples)
    if n <= max(config.knn_k, 3):
        raise UsageError(f"extract run {config.run} has {n} samples, too few for --knn-k {config.knn_k}",
                         "extract more samples or pass a smaller --knn-k")
    labels = extraction.labels
    notes = []
    if labels is None:
        notes.append("unlabelled data: probe accuracy, k-NN agreement and AMI skipped")
    else:
        try:
            check_probe_labels(labels, config.probe_folds)
        except ValueError as error:
            raise UsageError(f"labels of run {config.run}: {error}",
                             "pass a smaller --probe-folds, or extract with more samples per class") from None
    first = extraction.embedding(layer_ids[0])  # kept in the extraction's cache
    mapper = _Mapper(config, labels, first) if labels is not None and config.map else None
    with progress(len(layer_ids), "load layers", unit="layer") as bar:
        embeddings = []
        for layer in layer_ids:
            embeddings.append(extraction.embedding(layer))
            bar.update()
    experiment_name = experiment or extraction.experiment_name
    experiment_id = store.experiment_id(experiment_name)

    for note in notes:
        print(f"latentscape layers: note: {note}", file=sys.stderr)
    tags = {**extraction.lineage_tags(), Tag.NOTE: "; ".join(notes) or None}
    with tracked_run(store, experiment_id, Kind.LAYERS,
                     run_name=f"layers · {extraction.model.split('/')[-1]} · {extraction.tags.get(Tag.DATASET_NAME, '')}",
                     parent_run_id=extraction.run_id, source_run_id=extraction.run_id, tags=tags) as log:
        log.params(_config_params(config, mapper) | {
            Param.N_LAYERS: len(layer_ids), Param.LAYERS: ",".join(map(str, layer_ids)), Param.N_SAMPLES: n,
        })
        log.json(Artifact.CONFIG, {**asdict(config), "map": mapper.map_config.to_dict() if mapper else None})

        # Every pair of layers: centred once, self-similarities reused.
        started = time.perf_counter()
        cka = cka_matrix(embeddings, debiased=config.debiased)
        cka_seconds = time.perf_counter() - started
        previous_cka = consecutive(cka)

        # Each layer on its own: geometry, and what its labels look like.
        rows = []
        with progress(len(layer_ids), "measure layers", unit="layer") as bar:
            for index, (layer, x) in enumerate(zip(layer_ids, embeddings)):
                before = embeddings[index - 1] if index > 0 else None
                row = _measure(x, before, labels, config, mapper)
                row[Metric.CKA_PREVIOUS] = float(previous_cka[index - 1]) if index > 0 else math.nan
                rows.append({Column.LAYER: layer, **{name: row.get(name, math.nan) for name in CURVES}})
                bar.update()
        table = pd.DataFrame(rows, columns=[Column.LAYER, *CURVES])

        # The two findings, each curve with step=layer, the tables.
        found = findings(layer_ids, previous_cka, config.stable_cka)
        log.params({Param.LAYER_OF_LARGEST_CHANGE: _finding(found.largest_change),
                    Param.FIRST_STABLE_LAYER: _finding(found.first_stable)})
        metric_rows = [
            (name, float(value), int(layer))
            for name in CURVES
            for layer, value in zip(table[Column.LAYER], table[name])
            if np.isfinite(value)
        ]
        once = {Metric.CKA_SECONDS: cka_seconds}
        if labels is not None:
            once[Metric.PROBE_CHANCE] = chance_accuracy(labels)
        log.metric_rows(metric_rows + [(name, value, 0) for name, value in once.items()])
        log.table(Artifact.CKA, _cka_frame(layer_ids, cka))
        log.table(Artifact.LAYER_SUMMARY, table)
        run_id = log.run_id

    return JobResult(kind=Kind.LAYERS.value, run_id=run_id, experiment=experiment_name,
                     scores=_headline(table), details=_details(found, table, notes, len(layer_ids)))


def _measure(x: np.ndarray, before: np.ndarray | None, labels: np.ndarray | None,
             config: LayersConfig, mapper: _Mapper | None) -> dict[str, float]:
    """One layer's measures; ``x: (n, d)``, ``before``: the previous layer or None."""
    from jobs.core.geometry import anisotropy
    from jobs.core.intrinsic import two_nn_dimension
    from jobs.core.knn import exact_knn
    from jobs.core.probes import knn_agreement, probe_accuracy
    from jobs.core.similarity import mean_cosine

    values: dict[str, float] = {Metric.ANISOTROPY: anisotropy(x, seed=config.seed)}
    if before is not None:
        values[Metric.COSINE_PREVIOUS] = mean_cosine(before, x)
    # One exact Euclidean k-NN graph (each row itself in column 0) serves TwoNN (the two
    # nearest others), the label agreement and the map: computed once per layer.
    width = max(3, config.knn_k + 1 if labels is not None else 3, mapper.knn_width if mapper else 0)
    graph = exact_knn(x, min(width, len(x)))
    values[Metric.INTRINSIC_DIM] = two_nn_dimension(neighbour_distances=graph.distances[:, 1:3])
    if labels is None:
        return values
    probe = probe_accuracy(x, labels, folds=config.probe_folds, seed=config.seed)
    values[Metric.PROBE_ACCURACY] = probe.mean
    values[Metric.PROBE_ACCURACY_STD] = probe.std
    values[Metric.KNN_AGREEMENT] = knn_agreement(labels, graph.indices[:, 1:config.knn_k + 1])
    if mapper is not None:
        values[Metric.AMI] = mapper.ami(x, labels, graph)
    return values


class _Mapper:
    """The per-layer map: :func:`jobs.core.mapping.fit_map` with one configuration,
    resolved once (again only for a layer of another width) and shared by every layer."""

    def __init__(self, config: LayersConfig, labels: np.ndarray, first: np.ndarray):
        self.reducer, self.clusterer, self.seed = config.map_reducer, config.map_clusterer, config.seed
        self.n_classes = len(np.unique(labels))
        self._configs: dict[int, object] = {}
        self.map_config = self._config(first)  # fails here, before any run, on a bad setting

    def _config(self, x: np.ndarray):
        from jobs.core.mapping import ConfigError, DataShape, resolve_config

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

    def ami(self, x: np.ndarray, labels: np.ndarray, graph) -> float:
        from jobs.core.mapping import fit_map

        map_config = self._config(x)
        knn = graph if self._reuses_graph(map_config) and graph.k >= map_config.knn_width else None
        result = fit_map(x, labels, map_config, knn=knn, with_view=False)
        return float(result.scores[Metric.AMI])


def _config_params(config: LayersConfig, mapper: _Mapper | None) -> dict:
    params = {
        Param.STABLE_CKA: config.stable_cka, Param.DEBIASED: config.debiased, Param.PROBE_FOLDS: config.probe_folds,
        Param.KNN_K: config.knn_k, Param.SEED: config.seed,
    }
    if mapper is not None:
        params |= {Param.REDUCER: config.map_reducer, Param.CLUSTERER: config.map_clusterer}
        params |= {name: value for name, value in mapper.settings.items()}
    return params


def _finding(layer: int | None) -> str:
    return NONE if layer is None else str(layer)


def _cka_frame(layer_ids: list[int], cka: np.ndarray) -> pd.DataFrame:
    """Long form, every ordered pair (diagonal included): DuckDB pivots it directly."""
    a, b = np.meshgrid(layer_ids, layer_ids, indexing="ij")
    return pd.DataFrame({Column.LAYER_A: a.ravel(), Column.LAYER_B: b.ravel(), Column.CKA: cka.ravel()})


def _headline(table: pd.DataFrame) -> dict[str, float]:
    scores = {}
    for name in (Metric.CKA_PREVIOUS, Metric.PROBE_ACCURACY, Metric.KNN_AGREEMENT, Metric.AMI):
        values = table[name].to_numpy(dtype=np.float64)
        if np.isfinite(values).any():
            best = np.nanmin(values) if name == Metric.CKA_PREVIOUS else np.nanmax(values)
            scores[f"{'min' if name == Metric.CKA_PREVIOUS else 'max'}_{name}"] = float(best)
    return scores


def _details(found: LayerFindings, table: pd.DataFrame, notes: list[str], count: int) -> dict:
    details = {"layers": count, Param.LAYER_OF_LARGEST_CHANGE: _finding(found.largest_change),
               Param.FIRST_STABLE_LAYER: _finding(found.first_stable)}
    probe = table[Metric.PROBE_ACCURACY].to_numpy(dtype=np.float64)
    if np.isfinite(probe).any():
        details["best_probe_layer"] = int(table[Column.LAYER].iloc[int(np.nanargmax(probe))])
    for note in notes:
        details["note"] = note
    return details
