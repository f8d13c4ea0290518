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

from latentscape.jobs import _layer_scores as _scores
from latentscape.jobs._result import JobResult
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

# Columns of layers.parquet besides Column.LAYER: the per-layer curves, named as the
# metrics they are logged as.
CURVES = (
    Metric.CKA_PREVIOUS, Metric.COSINE_PREVIOUS, Metric.ANISOTROPY, Metric.INTRINSIC_DIM,
    Metric.PROBE_ACCURACY, Metric.PROBE_ACCURACY_STD, Metric.KNN_AGREEMENT, Metric.AMI,
)
# Measures with a bootstrap interval ("<name>_ci_low" / "_ci_high" columns and metrics).
INTERVAL_CURVES = (Metric.PROBE_ACCURACY, Metric.KNN_AGREEMENT)
LABELLED_CURVES = (Metric.PROBE_ACCURACY, Metric.PROBE_ACCURACY_STD, Metric.KNN_AGREEMENT, Metric.AMI)
# With --seeds above 1: the spread of the per-layer AMI and the agreement of the seeds.
SEED_CURVES = (Metric.AMI_STD, Metric.SEED_ARI_MEAN)
# The curves compared across poolings (poolings.parquet, metrics "<curve>.<pooling>").
POOLING_CURVES = (*LABELLED_CURVES, Metric.AMI_STD)


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
    seeds: int = 1  # k-means and maps per layer (seed, seed + 1, ...): AMI mean and spread
    compare_poolings: bool = False  # also every other extraction of the same model and data
    pooling_runs: tuple[str, ...] = ()  # ... or these extract runs (implies compare_poolings)
    aligned_maps: bool = False  # AlignedUMAP of every layer -> aligned_maps.parquet
    aligned_epochs: int = 200
    tune: int = 0  # Optuna trials per layer (0: no per-layer sweep)
    holdout: float | None = None  # --tune: fraction of samples the sweeps score on, never tune on
    min_class_size: int | None = None  # label scores leave out smaller classes (None: the probe's folds)
    max_samples: int = 20_000  # k-NN, probe and cluster measures on a seeded subsample this big (0: all)

    def __post_init__(self):
        if not (isinstance(self.stable_cka, (int, float)) and 0 < self.stable_cka <= 1):
            raise UsageError(f"--stable-cka {self.stable_cka} is outside (0, 1]", "pass e.g. 0.95 (the default)")
        if self.probe_folds < 2:
            raise UsageError(f"--probe-folds {self.probe_folds} is too few for cross-validation",
                             "pass 2 or more (default 5)")
        if self.knn_k < 1:
            raise UsageError(f"--knn-k {self.knn_k} must be positive", "pass 1 or more (default 10)")
        if self.max_samples < 0:
            raise UsageError(f"--max-samples {self.max_samples} is negative", "pass 0 (every sample) or e.g. 20000")
        if self.min_class_size is not None and self.min_class_size < 1:
            raise UsageError(f"--min-class-size {self.min_class_size} must be positive",
                             "pass 1 or more (default: the probe's folds)")
        if self.seed < 0:
            raise UsageError(f"--seed {self.seed} is negative", "pass 0 or more (default 0)")
        if self.seeds < 1:
            raise UsageError(f"--seeds {self.seeds} must be at least 1", "pass e.g. --seeds 5")
        if self.aligned_epochs < 1:
            raise UsageError(f"--aligned-epochs {self.aligned_epochs} must be positive", "pass e.g. 200 (default)")
        if self.tune < 0:
            raise UsageError(f"--tune {self.tune} is negative", "pass the trials per layer, e.g. --tune 20")
        if self.holdout is not None and not self.tune:
            raise UsageError("--holdout holds samples out of the per-layer sweeps, and --tune is off",
                             "add --tune N, or drop --holdout")
        if self.holdout is not None and not 0 < self.holdout < 1:
            raise UsageError(f"--holdout {self.holdout} is outside (0, 1)", "pass e.g. --holdout 0.3")
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
    parser.add_argument("--run", required=True, metavar="EXTRACT_RUN", help="id of an extract run")
    parser.add_argument("--stable-cka", type=float, default=0.95,
                        help="consecutive layers at or above this CKA count as stable (default 0.95)")
    parser.add_argument("--debiased", action="store_true",
                        help="debiased CKA (unbiased HSIC): removes the upward bias of small samples")
    parser.add_argument("--probe-folds", type=int, default=5, help="cross-validation folds of the probe (default 5)")
    parser.add_argument("--knn-k", type=int, default=10, help="neighbours for k-NN label agreement (default 10)")
    parser.add_argument("--max-samples", type=int, default=20_000, metavar="N",
                        help="measure k-NN agreement, the probe, cluster scores and intrinsic dimension on a seeded "
                        "subsample of N samples (stratified by label; n.<measure> params say how many); CKA, cosine "
                        "and anisotropy use every sample (default 20000; 0: every sample)")
    parser.add_argument("--min-class-size", type=int, metavar="N",
                        help="label scores (probe, k-NN agreement, AMI, verdict) leave out classes with fewer "
                        "samples, and unlabelled rows (default and least: the probe's folds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the probe folds, anisotropy pairs and maps")
    parser.add_argument("--map-reducer", default=DEFAULT_MAP_REDUCER,
                        help=f"reducer of the per-layer map (default {DEFAULT_MAP_REDUCER})")
    parser.add_argument("--map-clusterer", default=DEFAULT_MAP_CLUSTERER,
                        help=f"clusterer of the per-layer map (default {DEFAULT_MAP_CLUSTERER})")
    parser.add_argument("--no-map", dest="map", action="store_false", help="skip the per-layer map and its AMI")
    parser.add_argument("--seeds", type=int, default=1,
                        help="clusterings per layer with seeds seed, seed+1, ...: every ami.<scorer> is their mean; "
                        "ami_std and seed_ari_mean are the default ami's spread and the seeds' agreement (default 1)")
    parser.add_argument("--compare-poolings", action="store_true",
                        help="also measure every other finished extraction of the same model and data with "
                        "another pooling (same experiment): probe accuracy, k-NN agreement and AMI per pooling")
    parser.add_argument("--pooling-runs", nargs="+", default=(), metavar="EXTRACT_RUN",
                        help="compare with these extractions of the same model and data (other poolings)")
    parser.add_argument("--aligned-maps", action="store_true",
                        help="lay out every layer in 2D with AlignedUMAP (aligned_maps.parquet), so the UI "
                        "steps through layers without the picture jumping")
    parser.add_argument("--aligned-epochs", type=int, default=200,
                        help="layout epochs of the aligned maps (default 200; time grows linearly)")
    parser.add_argument("--tune", type=int, default=0, metavar="N",
                        help="also sweep each layer's map with N Optuna trials (child runs) and log its best "
                        "AMI as ami.tuned: which layer is best when each gets its best settings")
    parser.add_argument("--holdout", type=float, metavar="FRACTION",
                        help="with --tune: score each layer's best map on this fraction of the samples, "
                        "held out of the search (stratified, seeded)")
    parser.set_defaults(handler=_run_cli)


def _run_cli(args) -> JobResult:
    config = LayersConfig(
        run=args.run, stable_cka=args.stable_cka, debiased=args.debiased, probe_folds=args.probe_folds,
        knn_k=args.knn_k, seed=args.seed, map_reducer=args.map_reducer, map_clusterer=args.map_clusterer,
        map=args.map, seeds=args.seeds, compare_poolings=args.compare_poolings,
        pooling_runs=tuple(args.pooling_runs or ()), aligned_maps=args.aligned_maps,
        aligned_epochs=args.aligned_epochs, tune=args.tune, holdout=args.holdout,
        min_class_size=args.min_class_size, max_samples=args.max_samples,
    )
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
    selection = extraction.label_selection(_min_class_size(config))
    notes = [note] if (note := selection.note()) else []
    if not selection.usable:
        notes.append("fewer than two labelled classes are big enough: probe accuracy, k-NN agreement and AMI skipped")
    measured = _measured_rows(extraction, selection, config)
    labels = measured.labels
    first = extraction.embedding(layer_ids[0])  # kept in the extraction's cache
    mapper = _Mapper(config, labels, measured.of_labels(first)) if labels is not None and config.map else None
    others = _pooling_extractions(store, extraction, config) if config.compare_poolings else []
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
            log.params({Param.POOLINGS: ",".join(_pooling(e) for e in [extraction, *others]),
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

        with progress(len(layer_ids), "measure layers", unit="layer") as bar, threadpool_limits(limits=1):
            for index, (layer, x) in enumerate(zip(layer_ids, embeddings)):
                before = embeddings[index - 1] if index > 0 else None
                row = _measure(x, before, measured, config, mapper)
                row[Metric.CKA_PREVIOUS] = float(previous_cka[index - 1]) if index > 0 else math.nan
                rows.append({Column.LAYER: layer, **{name: row.get(name, math.nan) for name in curves}})
                bar.update()
        table = pd.DataFrame(rows, columns=[Column.LAYER, *curves])

        # Each layer at its own best settings: one sweep per layer, child runs of this one.
        if config.tune:
            table = _scores.tune(table, config, store, experiment_name, log.run_id)
            curves = [*curves, *_scores.scorer_columns("tuned")]

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
            compared = _compare_poolings(extraction, table, others, measured, config, mapper)
            best_pooling = _best_pooling(compared)
            log.params({Param.BEST_POOLING: best_pooling})
            log.metric_rows([
                (Metric.qualified(name, pooling), value, step)
                for pooling, part in compared.groupby(Column.POOLING, sort=False)
                for name, value, step in _curve_rows(part, POOLING_CURVES)
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


def _pooling(extraction) -> str:
    return extraction.pooling or extraction.tags.get(Tag.POOLING, "") or "unknown"


def _pooling_extractions(store, extraction, config: LayersConfig) -> list:
    """The other extractions to compare poolings with, checked before any run exists:
    ``config.pooling_runs``, or every other finished extraction of the same model, data
    set digest and maximum length in the extraction's experiment (the newest per pooling)."""
    from latentscape.jobs._source import load_extraction
    from latentscape.tracking.contract import TABULAR_MODEL

    own = _pooling(extraction)
    if extraction.labels is None:
        raise UsageError("comparing poolings compares how well each carries the labels, and extract run "
                         f"{extraction.run_id} is unlabelled", "extract labelled data (--label-col)")
    if own == TABULAR_MODEL or extraction.model == TABULAR_MODEL:
        raise UsageError(f"extract run {extraction.run_id} is tabular data: it has no pooling to compare",
                         "compare poolings of text extracted by a model")
    if config.pooling_runs:
        others = [load_extraction(store, run_id) for run_id in config.pooling_runs]
    else:
        found = store.find_runs(extraction.experiment_id, kind=Kind.EXTRACT,
                                tags={Tag.MODEL: extraction.model, Tag.DATASET_DIGEST: extraction.dataset_digest},
                                params={Param.MAX_LENGTH: extraction.max_length}, status="FINISHED",
                                newest_first=True, max_results=200)
        newest: dict[str, str] = {}
        for run in found:
            pooling = run.params.get(Param.POOLING, "")
            if pooling and pooling != own and pooling not in newest:
                newest[pooling] = run.id
        if not newest:
            raise UsageError(f"no other extraction of {extraction.model} on this data set with another pooling "
                             f"in experiment {extraction.experiment_name!r}",
                             "extract it again with e.g. --pooling cls (same --data, --model, --max-length), "
                             "or name runs with --pooling-runs")
        others = [load_extraction(store, run_id) for run_id in newest.values()]
    seen = {own: extraction.run_id}
    for other in others:
        pooling = _pooling(other)
        if other.model != extraction.model or other.dataset_digest != extraction.dataset_digest:
            raise UsageError(f"extract run {other.run_id} embeds other data or another model than run "
                             f"{extraction.run_id}", "compare extractions of the same model and data set")
        if not np.array_equal(other.ids, extraction.ids):
            raise UsageError(f"extract run {other.run_id} has its samples in another order than run "
                             f"{extraction.run_id}", "extract both with the same --data, --limit and --id-col")
        if other.layers != extraction.layers:
            raise UsageError(f"extract run {other.run_id} has layers {other.layers}, run {extraction.run_id} "
                             f"{extraction.layers}", "extract both with the same --layers")
        if pooling in seen:
            raise UsageError(f"runs {seen[pooling]} and {other.run_id} both use pooling {pooling!r}",
                             "compare one extraction per pooling")
        seen[pooling] = other.run_id
    return others


def _compare_poolings(extraction, table: pd.DataFrame, others: list, measured: _Rows, config: LayersConfig,
                      mapper: _Mapper | None) -> pd.DataFrame:
    """``poolings.parquet``: one row per (pooling, layer) with the labelled curves, this
    extraction's rows taken from ``table`` (measured once), the others measured here."""
    import pandas as pd

    from latentscape.jobs._progress import progress

    present = [name for name in POOLING_CURVES if name in table]
    frames = [table[[Column.LAYER, *present]].assign(**{Column.POOLING: _pooling(extraction)})]
    with progress(len(others) * len(extraction.layers), "compare poolings", unit="layer") as bar:
        for other in others:
            rows = []
            for layer in other.layers:
                found = _measure(other.embedding(layer), None, measured, config, mapper)
                rows.append({Column.LAYER: layer, **{name: found.get(name, math.nan) for name in present}})
                bar.update()
            other._cache.clear()  # one pooling's layers at a time
            frames.append(pd.DataFrame(rows).assign(**{Column.POOLING: _pooling(other)}))
    compared = pd.concat(frames, ignore_index=True)
    return compared[[Column.POOLING, Column.LAYER, *present]]


def _best_pooling(compared: pd.DataFrame) -> str:
    """The pooling whose best layer has the highest probe accuracy (ties: higher AMI)."""
    best = compared.groupby(Column.POOLING, sort=False)[[Metric.PROBE_ACCURACY, Metric.AMI]].max()
    best = best.fillna(-np.inf).sort_values([Metric.PROBE_ACCURACY, Metric.AMI], ascending=False, kind="stable")
    return str(best.index[0])


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


@dataclass(frozen=True)
class _Rows:
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


def _measured_rows(extraction, selection, config: LayersConfig) -> _Rows:
    """The rows of :class:`_Rows` for ``extraction``: at most ``config.max_samples`` each,
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
        picked = stratified_rows(kept_labels, config.max_samples, min_per_class=_min_class_size(config),
                                 seed=config.seed)
        labelled, labels = kept[picked], kept_labels[picked]
    return _Rows(n=n, geometry=None if len(geometry) == n else geometry,
                 labelled=None if labelled is None or len(labelled) == n else labelled, labels=labels)


def _measure(x: np.ndarray, before: np.ndarray | None, rows: _Rows,
             config: LayersConfig, mapper: _Mapper | None) -> dict[str, float]:
    """One layer's measures; ``x: (n, d)``, ``before``: the previous layer or None;
    ``rows``: which rows the graph and the label scores read."""
    from latentscape.jobs.core.geometry import anisotropy
    from latentscape.jobs.core.intrinsic import two_nn_dimension
    from latentscape.jobs.core.knn import exact_knn
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
    graph = exact_knn(seen, min(width, len(seen)))
    values[Metric.INTRINSIC_DIM] = two_nn_dimension(neighbour_distances=graph.distances[:, 1:3])
    if labels is None:
        return values
    if rows.labelled is not None or rows.geometry is not None:  # the label scores' own rows and graph
        x = rows.of_labels(x)
        graph = exact_knn(x, min(width, len(x)))
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
    values.update(_scores.cluster_score("kmeans", labels, kmeans, config.seed))
    values[Metric.AMI] = values[Metric.AMI_KMEANS]
    if config.seeds > 1:  # the default curve's spread over seeds, and the seeds' agreement
        from latentscape.jobs.core.trust import stability

        found = stability([{Metric.AMI: _scores.ami(labels, c)} for c in kmeans], kmeans)
        values[Metric.AMI_STD], values[Metric.SEED_ARI_MEAN] = found.std[Metric.AMI], found.ari_mean
    if mapper is not None:
        values.update(mapper.scores(x, labels, graph))
    return values


class _Mapper:
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

    def scores(self, x: np.ndarray, labels: np.ndarray, graph) -> dict[str, float]:
        """``ami.map`` (the map's own clusterer) and ``ami.hdbscan`` (HDBSCAN at the classes'
        granularity on the same map), each with its interval and cluster counts: maps made
        with seeds ``seed, seed + 1, ...``, one k-NN graph serving them all."""
        from dataclasses import replace

        from latentscape.jobs.core.cluster import CLUSTERERS
        from latentscape.jobs.core.mapping import fit_map
        from latentscape.jobs.core.verdict import matched_hdbscan_params

        map_config = self._config(x)
        knn = graph if self._reuses_graph(map_config) and graph.k >= map_config.knn_width else None
        results = [fit_map(x, None, replace(map_config, seed=self.seed + offset), knn=knn, with_view=False)
                   for offset in range(self.seeds)]
        hdbscan = CLUSTERERS["hdbscan"]
        matched = {**{spec.name: spec.default_for(self._shape(x)) for spec in hdbscan.params},
                   **matched_hdbscan_params(len(x), self.n_classes)}
        return {
            **_scores.cluster_score("map", labels, [r.clusters for r in results], self.seed),
            **_scores.cluster_score("hdbscan", labels, [hdbscan.run(r.embedding, matched, seed=self.seed + offset)
                                                 for offset, r in enumerate(results)], self.seed),
        }

    def _shape(self, x: np.ndarray):
        from latentscape.jobs.core.mapping import DataShape

        return DataShape(n_samples=len(x), n_features=x.shape[1], n_classes=self.n_classes)


def _curves(labelled: bool, mapped: bool, config: LayersConfig) -> list[str]:
    """The per-layer columns this run measures, in table order."""
    if not labelled:
        return [*CURVES]  # the labelled ones stay, NaN
    curves = [*CURVES]
    curves += [Metric.trust(name, suffix) for name in INTERVAL_CURVES
               for suffix in (Metric.CI_LOW_SUFFIX, Metric.CI_HIGH_SUFFIX)]
    for scorer in ("kmeans", "map", "hdbscan") if mapped else ("kmeans",):
        curves += _scores.scorer_columns(scorer)
    if config.seeds > 1:
        curves += SEED_CURVES
    return curves


def _min_class_size(config: LayersConfig) -> int:
    """The smallest class the label scores keep: what the user asked, never below the probe's folds."""
    return max(config.min_class_size or 0, config.probe_folds)


def _config_params(config: LayersConfig, mapper: _Mapper | None) -> dict:
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
