"""``latentscape layers``: where does the representation change, and where does it stop?

For every layer of an extraction: linear CKA against every other layer, mean cosine of
each sample to the layer before, linear-probe accuracy and k-NN label agreement (where
labels exist), TwoNN intrinsic dimension, anisotropy, and cluster scores. Logged as a
``layers`` run, a child of the extract run: each curve a metric with ``step=layer``, the
CKA matrix and a per-layer table as Parquet, and two findings as params: the layer of the
largest change (lowest CKA to the layer before) and the first layer after which
consecutive layers stay above ``--stable-cka``.

Cluster scores that cannot collapse silently. A cluster score measures the layer and the
clusterer's granularity at once (:mod:`latentscape.jobs.core.verdict`), so every layer is clustered
three ways, each scored by AMI with a bootstrap interval (``ami.<scorer>``, with
``n_clusters.<scorer>`` and ``noise_fraction.<scorer>``): ``kmeans``, k-means at k = the
number of classes on the layer itself; ``map``, the per-layer map's own clusterer on the
map (UMAP + HDBSCAN by default); ``hdbscan``, HDBSCAN at the classes' granularity on the
same map. ``ami`` is ``ami.kmeans``, the one that can neither merge the classes nor call
points noise. ``--tune N`` adds ``ami.tuned``: each layer's best map from an N-trial sweep
(child runs of this one; ``--holdout`` scores it on samples the search never saw). A
clustering with fewer than half as many clusters as classes, or more than half of its
points noise, gets a ``warning`` tag and a line on stderr.

The verdict: the best layer by each measure (probe, k-NN agreement, every cluster score,
and the largest CKA change for context) with its interval and the layers tied with it,
as ``verdict.<measure>`` params, ``measures_agree``, a one-sentence ``verdict`` tag and
``verdict.parquet``.

How far to trust the curves:

- ``--seeds N`` clusters each layer with N seeds (seed, seed + 1, ...): every ``ami.<scorer>``
  is their mean; ``ami_std`` is the default ``ami``'s sample standard deviation and
  ``seed_ari_mean`` the mean ARI between its seeds' clusterings, each with ``step=layer``,
  so a chart has error bars.
- ``--compare-poolings`` puts the pooling on an axis: the labelled curves (probe accuracy,
  k-NN agreement, AMI) of this extraction and of every other extraction of the same model
  and data with another pooling (or those named with ``--pooling-runs``), logged in this
  one run as ``<curve>.<pooling>`` with ``step=layer`` and as ``poolings.parquet``.
- ``--aligned-maps`` lays out every layer in 2D with AlignedUMAP (:mod:`latentscape.jobs.core.aligned`)
  and logs ``aligned_maps.parquet`` (layer, sample_id, x, y, label), so stepping through
  layers moves points only where their neighbourhood changes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass

from typing import TYPE_CHECKING

import numpy as np

from latentscape.jobs import _layer_measuring as measuring
from latentscape.jobs import _layer_poolings as poolings
from latentscape.jobs import _layer_scores as _scores
from latentscape.jobs._options import add_options, check_options, from_args, option
from latentscape.jobs._result import JobResult
from latentscape.tracking import layer_measures
from latentscape.tracking.contract import Artifact, Column, Kind, Metric, Param, Tag
from latentscape.tracking.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd  # imported where used: argument errors come before it (~0.5-1 s)

__all__ = ["LayersConfig", "LayerFindings", "layers", "findings", "add_parser", "NONE"]

# The value of a finding that does not exist (one layer only; never stable).
NONE = "none"

# Per-layer map for ami.map and ami.hdbscan: fixed settings on every layer, so layers are
# compared by their geometry, not by tuning. UMAP + HDBSCAN, the `map` job's own defaults,
# so ami.map means what the map page shows. Its cost is bearable because each layer's exact
# k-NN graph, computed anyway for k-NN agreement and TwoNN, is handed to UMAP (no
# pynndescent compilation): measured on 2 busy cores, 7 layers x 240 samples took 6 s
# warm, 12 s in a new process, against 2.6 s with PCA + k-means (k = number of classes),
# which stays available (--map-reducer pca --map-clusterer kmeans) for many large layers,
# where UMAP costs ~3-4 s per layer of 10,000.
DEFAULT_MAP_REDUCER = "umap"
DEFAULT_MAP_CLUSTERER = "hdbscan"

# Columns of layers.parquet besides Column.LAYER and each clustering's: the per-layer
# curves, named as the metrics they are logged as (tracking/layer_measures.py).
CURVES = layer_measures.LAYERS_COLUMNS
LABELLED_CURVES = layer_measures.LABELLED
# With --seeds above 1: the spread of the per-layer AMI and the agreement of the seeds.
SEED_CURVES = (Metric.AMI_STD, Metric.SEED_ARI_MEAN)


@dataclass(frozen=True)
class LayersConfig:
    """What ``latentscape layers`` does, validated once, logged whole; every field an option."""

    run: str = option(metavar="EXTRACT_RUN", help="id of an extract run")
    stable_cka: float = option(0.95, above=0, high=1, help="consecutive layers at or above this CKA count as stable")
    debiased: bool = option(False, help="debiased CKA (unbiased HSIC): removes the upward bias of small samples")
    probe_folds: int = option(5, low=2, help="cross-validation folds of the probe")
    knn_k: int = option(10, low=1, help="neighbours for k-NN label agreement")
    max_samples: int = option(20_000, low=0, metavar="N",
                              help="measure k-NN agreement, the probe, cluster scores and intrinsic dimension on a "
                              "seeded subsample of N samples (stratified by label; n.<measure> params say how many); "
                              "CKA, cosine and anisotropy use every sample (default 20000; 0: every sample)")
    min_class_size: int | None = option(None, low=1, metavar="N",
                                        help="label scores (probe, k-NN agreement, AMI, verdict) leave out classes "
                                        "with fewer samples, and unlabelled rows (default and least: the probe's folds)")
    seed: int = option(0, low=0, help="seed of the probe folds, anisotropy pairs and maps")
    # Choices checked in __post_init__, not by argparse: the registries load there, and a
    # typo is the one-line "unknown --map-reducer" of every other setting.
    map_reducer: str = option(DEFAULT_MAP_REDUCER, help="reducer of the per-layer map")
    map_clusterer: str = option(DEFAULT_MAP_CLUSTERER, help="clusterer of the per-layer map")
    map: bool = option(True, flag="--no-map", help="skip the per-layer map and its AMI")
    seeds: int = option(1, low=1, help="clusterings per layer with seeds seed, seed+1, ...: every ami.<scorer> is "
                        "their mean; ami_std and seed_ari_mean are the default ami's spread and the seeds' agreement (default 1)")
    compare_poolings: bool = option(False, help="also measure every other finished extraction of the same model and "
                                    "data with another pooling (same experiment): probe accuracy, k-NN agreement and "
                                    "AMI per pooling")
    pooling_runs: tuple[str, ...] = option((), nargs="+", metavar="EXTRACT_RUN", help="compare with these "
                                           "extractions of the same model and data (other poolings)")
    aligned_maps: bool = option(False, help="lay out every layer in 2D with AlignedUMAP (aligned_maps.parquet), so "
                                "the UI steps through layers without the picture jumping")
    aligned_epochs: int = option(200, low=1, help="layout epochs of the aligned maps (default 200; time grows "
                                 "linearly)")
    tune: int = option(0, low=0, metavar="N", help="also sweep each layer's map with N Optuna trials (child runs) and "
                       "log its best AMI as ami.tuned: which layer is best when each gets its best settings")
    holdout: float | None = option(None, metavar="FRACTION", above=0, below=1,
                                   help="with --tune: score each layer's best map on this fraction of the "
                                   "samples, held out of the search (stratified, seeded)")

    def __post_init__(self):
        check_options(self)
        if self.holdout is not None and not self.tune:
            raise UsageError("--holdout holds samples out of the per-layer sweeps, and --tune is off",
                             "add --tune N, or drop --holdout")
        from latentscape.jobs.core.cluster import CLUSTERERS
        from latentscape.jobs.core.reduce import REDUCERS

        # Names only (the registries import nothing heavy): a typo fails before the store opens.
        if self.map_reducer not in REDUCERS:
            raise UsageError(f"unknown --map-reducer {self.map_reducer!r}", f"choose one of {', '.join(REDUCERS)}")
        if self.map_clusterer not in CLUSTERERS:
            raise UsageError(f"unknown --map-clusterer {self.map_clusterer!r}",
                             f"choose one of {', '.join(CLUSTERERS)}")
        object.__setattr__(self, "pooling_runs", tuple(self.pooling_runs))
        if self.pooling_runs:
            object.__setattr__(self, "compare_poolings", True)


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
        "dimension, anisotropy, and cluster scores: AMI of k-means at k = classes on the layer (ami, "
        "ami.kmeans), of the per-layer map's clusterer (ami.map) and of HDBSCAN at the classes' granularity "
        "(ami.hdbscan), each with a bootstrap interval. Logs a `layers` run (child of the extract run) with "
        "each curve as a metric with step=layer, the layer of the largest change and the first stable layer, "
        "and a verdict: the best layer by each measure and whether they agree. Clusterings that collapsed "
        "are flagged with a warning.",
        epilog="examples:\n  latentscape layers --run EXTRACT_RUN\n"
        "  latentscape layers --run EXTRACT_RUN --stable-cka 0.9 --debiased\n"
        "  latentscape layers --run EXTRACT_RUN --map-reducer pca --map-clusterer kmeans\n"
        "  latentscape layers --run EXTRACT_RUN --seeds 5              # AMI per layer with error bars\n"
        "  latentscape layers --run EXTRACT_RUN --compare-poolings     # every pooling extracted of this data\n"
        "  latentscape layers --run EXTRACT_RUN --pooling-runs CLS_RUN MAX_RUN\n"
        "  latentscape layers --run EXTRACT_RUN --aligned-maps         # 2D maps aligned across layers\n"
        "  latentscape layers --run EXTRACT_RUN --tune 20 --holdout 0.3  # each layer at its best settings",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser, LayersConfig)
    parser.set_defaults(handler=_run_cli)


def _run_cli(args) -> JobResult:
    config = from_args(LayersConfig, args)
    from latentscape.tracking.runs import open_store

    return layers(config, store=open_store(args.tracking_uri), experiment=args.experiment)


def layers(config: LayersConfig, *, store, experiment: str | None = None) -> JobResult:
    """Compare every layer of ``config.run`` and log one ``layers`` run."""
    import pandas as pd

    from latentscape.jobs._progress import progress
    from latentscape.jobs._source import label_selection_params, load_extraction
    from latentscape.jobs.core.probes import chance_accuracy
    from latentscape.jobs.core.similarity import cka_matrix, consecutive
    from latentscape.tracking.run_log import tracked_run

    # Load and validate everything before a run exists.
    extraction = load_extraction(store, config.run)
    layer_ids = list(extraction.layers)
    n = len(extraction.samples)
    if n <= max(config.knn_k, 3):
        raise UsageError(f"extract run {config.run} has {n} samples, too few for --knn-k {config.knn_k}",
                         "extract more samples or pass a smaller --knn-k")
    # Label scores see the labelled samples of classes big enough for every one of them
    # (the probe needs a class in each fold); rare classes never stop the job.
    selection = extraction.label_selection(measuring.min_class_size(config))
    notes = [note] if (note := selection.note()) else []
    if not selection.usable:
        notes.append("fewer than two labelled classes are big enough: probe accuracy, k-NN agreement and AMI skipped")
    measured = measuring.measured_rows(extraction, selection, config)
    labels = measured.labels
    first = extraction.embedding(layer_ids[0])  # kept in the extraction's cache
    mapper = (measuring.Mapper(config, labels, measured.of_labels(first))
              if labels is not None and config.map else None)
    others = poolings.pooling_extractions(store, extraction, config) if config.compare_poolings else []
    if config.tune and labels is None:
        raise UsageError(f"--tune maximises AMI against the labels and extract run {config.run} has none",
                         "extract labelled data (--label-col), or drop --tune")
    if config.aligned_maps and n <= 2:
        raise UsageError(f"extract run {config.run} has {n} samples, too few for aligned maps",
                         "extract more samples or drop --aligned-maps")
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
            **label_selection_params(selection), **measured.params(labels is not None, mapper is not None),
        })
        if others:
            log.params({Param.POOLINGS: ",".join(poolings.pooling_of(e) for e in [extraction, *others]),
                        Param.POOLING_RUNS: ",".join(e.run_id for e in [extraction, *others])})
        log.json(Artifact.CONFIG, {**asdict(config), "map": mapper.map_config.to_dict() if mapper else None})

        # Every pair of layers: centred once, self-similarities reused.
        started = time.perf_counter()
        cka = cka_matrix(embeddings, debiased=config.debiased)
        cka_seconds = time.perf_counter() - started
        previous_cka = consecutive(cka)

        # Each layer on its own: geometry, and what its labels look like.
        curves = _curves(labels is not None, mapper is not None, config)
        rows = []
        # One BLAS/OpenMP thread: the probe's and k-means' products are small, and on 2
        # cores two threads made them 1.3-28x slower whenever anything else ran (measured:
        # the probe of 240 x 384 took 4.6 s with two threads, 0.17 s with one).
        from threadpoolctl import threadpool_limits

        from latentscape.jobs._knn_store import layer_graph_store

        with progress(len(layer_ids), "measure layers", unit="layer") as bar, threadpool_limits(limits=1):
            for index, (layer, x) in enumerate(zip(layer_ids, embeddings)):
                before = embeddings[index - 1] if index > 0 else None
                row = measuring.measure(x, before, measured, config, mapper,
                                        store=layer_graph_store(extraction, layer))
                row[Metric.CKA_PREVIOUS] = float(previous_cka[index - 1]) if index > 0 else math.nan
                rows.append({Column.LAYER: layer, **{name: row.get(name, math.nan) for name in curves}})
                bar.update()
        table = pd.DataFrame(rows, columns=[Column.LAYER, *curves])

        # Each layer at its own best settings: one sweep per layer, child runs of this one.
        if config.tune:
            table = _scores.tune(table, config, store, experiment_name, log.run_id)
            curves = [*curves, *_scores.scorer_columns(_scores.TUNED)]

        # The two findings, each curve with step=layer, the tables.
        found = findings(layer_ids, previous_cka, config.stable_cka)
        log.params({Param.LAYER_OF_LARGEST_CHANGE: _finding(found.largest_change),
                    Param.FIRST_STABLE_LAYER: _finding(found.first_stable)})
        metric_rows = _curve_rows(table, curves)
        once = {Metric.CKA_SECONDS: cka_seconds}
        if labels is not None:
            once[Metric.PROBE_CHANCE] = chance_accuracy(labels)
        log.metric_rows(metric_rows + [(name, value, 0) for name, value in once.items()])
        log.table(Artifact.CKA, _cka_frame(layer_ids, cka))
        log.table(Artifact.LAYER_SUMMARY, table)

        # The verdict: each measure's best layer, its interval, and whether they agree;
        # every collapsed clustering named, with the fix.
        verdict = None
        collapsed = _scores.collapsed_layers(table, labels)
        if labels is not None:
            verdict = _scores.verdict_of(table, collapsed)
            log.params({**{Param.verdict(c.measure): _finding(c.layer) for c in verdict.choices},
                        Param.MEASURES_AGREE: verdict.agree})
            log.tags({Tag.VERDICT: verdict.sentence})
            log.table(Artifact.VERDICT, _scores.verdict_frame(verdict))
        warning = _scores.collapse_warning(collapsed, len(np.unique(labels)) if labels is not None else 0)
        if warning:
            print(f"latentscape layers: warning: {warning}", file=sys.stderr)
            log.tags({Tag.WARNING: warning})

        # Pooling as an axis: the labelled curves of every extraction compared.
        best_pooling = None
        if others:
            compared = poolings.compare_poolings(extraction, table, others, measured, config, mapper)
            best_pooling = poolings.best_pooling(compared)
            log.params({Param.BEST_POOLING: best_pooling})
            log.metric_rows([
                (Metric.qualified(name, pooling), value, step)
                for pooling, part in compared.groupby(Column.POOLING, sort=False)
                for name, value, step in _curve_rows(part, poolings.POOLING_CURVES)
            ])
            log.table(Artifact.POOLINGS, compared)

        # Every layer in 2D, aligned across layers.
        if config.aligned_maps:
            started = time.perf_counter()
            aligned = _aligned_frame(extraction, layer_ids, embeddings, config)
            log.metrics({Metric.ALIGNED_SECONDS: time.perf_counter() - started})
            log.table(Artifact.ALIGNED_MAPS, aligned)
        run_id = log.run_id

    details = _details(found, table, notes, len(layer_ids))
    if verdict is not None:
        details[Param.MEASURES_AGREE] = verdict.agree
        details[Tag.VERDICT] = verdict.sentence
    if warning:
        details[Tag.WARNING] = warning
    if best_pooling is not None:
        details[Param.BEST_POOLING] = best_pooling
    return JobResult(kind=Kind.LAYERS.value, run_id=run_id, experiment=experiment_name,
                     scores=_headline(table), details=details)


def _curve_rows(table: pd.DataFrame, names) -> list[tuple[str, float, int]]:
    """(metric, value, step=layer) for every finite value of the ``names`` columns."""
    return [
        (name, float(value), int(layer))
        for name in names if name in table
        for layer, value in zip(table[Column.LAYER], table[name])
        if np.isfinite(value)
    ]


def _aligned_frame(extraction, layer_ids: list[int], embeddings: list[np.ndarray],
                   config: LayersConfig) -> pd.DataFrame:
    """``aligned_maps.parquet``: layer, sample_id, x, y, label for every layer."""
    import pandas as pd

    from latentscape.jobs.core.aligned import DEFAULT_N_NEIGHBORS, aligned_maps

    n = len(extraction.samples)
    maps = aligned_maps(embeddings, n_neighbors=min(DEFAULT_N_NEIGHBORS, n - 1), n_epochs=config.aligned_epochs,
                        seed=config.seed)
    labels = extraction.samples[Column.LABEL] if Column.LABEL in extraction.samples else pd.Series([None] * n)
    return pd.concat([
        pd.DataFrame({
            Column.LAYER: np.full(n, layer, dtype=np.int64), Column.SAMPLE_ID: extraction.ids,
            Column.X: coords[:, 0].astype(np.float32), Column.Y: coords[:, 1].astype(np.float32),
            Column.LABEL: labels.to_numpy(),
        })
        for layer, coords in zip(layer_ids, maps)
    ], ignore_index=True)


def _curves(labelled: bool, mapped: bool, config: LayersConfig) -> list[str]:
    """The per-layer columns this run measures, in table order."""
    if not labelled:
        return [*CURVES]  # the labelled ones stay, NaN
    curves = [*CURVES]
    curves += [Metric.trust(name, suffix) for name in layer_measures.INTERVALS
               for suffix in (Metric.CI_LOW_SUFFIX, Metric.CI_HIGH_SUFFIX)]
    for scorer in (_scores.KMEANS, _scores.MAP, _scores.HDBSCAN) if mapped else (_scores.KMEANS,):
        curves += _scores.scorer_columns(scorer)
    if config.seeds > 1:
        curves += SEED_CURVES
    return curves


def _config_params(config: LayersConfig, mapper: measuring.Mapper | None) -> dict:
    params = {
        Param.STABLE_CKA: config.stable_cka, Param.DEBIASED: config.debiased, Param.PROBE_FOLDS: config.probe_folds,
        Param.KNN_K: config.knn_k, Param.SEED: config.seed, Param.SEEDS: config.seeds,
        Param.ALIGNED_MAPS: config.aligned_maps, Param.TUNE: config.tune,
    }
    if config.tune:
        params[Param.HOLDOUT] = config.holdout
    if config.aligned_maps:
        params[Param.ALIGNED_EPOCHS] = config.aligned_epochs
    if mapper is not None:
        params |= {Param.REDUCER: config.map_reducer, Param.CLUSTERER: config.map_clusterer}
        params |= {name: value for name, value in mapper.settings.items()}
    return params


def _finding(layer: int | None) -> str:
    return NONE if layer is None else str(layer)


def _cka_frame(layer_ids: list[int], cka: np.ndarray) -> pd.DataFrame:
    """Long form, every ordered pair (diagonal included): DuckDB pivots it directly."""
    import pandas as pd

    a, b = np.meshgrid(layer_ids, layer_ids, indexing="ij")
    return pd.DataFrame({Column.LAYER_A: a.ravel(), Column.LAYER_B: b.ravel(), Column.CKA: cka.ravel()})


def _headline(table: pd.DataFrame) -> dict[str, float]:
    scores = {}
    for name in (Metric.CKA_PREVIOUS, Metric.PROBE_ACCURACY, Metric.KNN_AGREEMENT, Metric.AMI):
        values = table[name].to_numpy(dtype=np.float64)
        if np.isfinite(values).any():
            lowest = name in layer_measures.LOWER_IS_BETTER
            scores[f"{'min' if lowest else 'max'}_{name}"] = float(np.nanmin(values) if lowest else np.nanmax(values))
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
