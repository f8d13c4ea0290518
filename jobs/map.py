"""``latentscape map``: reduce, cluster and score one layer of an extraction, logged as one run.

The run is a child of the extract run. Its params are every resolved setting (the run
contract's ``reducer.<name>`` / ``clusterer.<name>`` plus layer, seed, view, ...); its
metrics every score of :mod:`latentscape.jobs.core.scores` and the duration of each step; its
artifacts ``map.parquet`` (sample_id, x, y, cluster, label, text, meta.*) and
``config.json`` (the fully resolved configuration: replaying it gives the same map).

The pieces a sweep or another job reuses: :func:`resolve_for`, :func:`map_params`,
:func:`log_map`, :func:`config_payload`, :func:`read_logged_config`.

How far to trust the scores (:mod:`latentscape.jobs._trust`): beside each label score S, its chance
level and p-value under ``--permutations`` label shuffles (``S_perm_mean``,
``S_p_value``) and a 95% bootstrap interval (``S_ci_low``, ``S_ci_high``); with
``--seeds N`` the mean and spread of every score over N seeds (``S_mean``, ``S_std``)
and ``seed_ari_mean``. ``--preset tutorial`` starts from the tutorial's recipe.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentscape.jobs._options import add_options, check_options, from_args, option, options_of
from latentscape.jobs._result import JobResult
from latentscape.jobs._trust import TrustSettings, settings_from_args
from latentscape.jobs.core.presets import PRESETS
from latentscape.tracking.contract import Artifact, Column, Kind, Metric, Param, Tag
from latentscape.tracking.errors import UsageError
from latentscape.tracking.scores import SUMMARY

__all__ = [
    "MapRequest",
    "add_parser",
    "check_request",
    "map_layer",
    "replay",
    "resolve_for",
    "map_params",
    "map_frame",
    "log_map",
    "log_cluster_table",
    "config_payload",
    "read_logged_config",
    "config_from_params",
    "parse_assignments",
    "KEY_SCORES",
]

# config.json: {"source_run": EXTRACT_RUN, "layer": K, "map": MapConfig.to_dict(), "versions": {...}}
_CONFIG_SOURCE = Tag.SOURCE_RUN
_CONFIG_LAYER = Param.LAYER
_CONFIG_MAP = Kind.MAP.value
_CONFIG_VERSIONS = "versions"
_VERSIONED = ("umap-learn", "hdbscan", "scikit-learn", "numpy", "scipy", "pynndescent")

# The scores a command-line summary shows (every score is logged): the registry's.
KEY_SCORES = SUMMARY

# Convenience flags (name -> help), so `--n-neighbors 30` works for any reducer (clusterer) that has it.
_REDUCER_FLAGS = {
    "n_neighbors": "umap/spectral neighbourhood size (default 15)",
    "min_dist": "umap min_dist (default 0.1)",
    "n_components": "dimensions to cluster in (default 2; a 2D view is kept for display)",
    "metric": "input-space distance: euclidean (default), cosine, manhattan, ...",
}
_CLUSTERER_FLAGS = {
    "min_cluster_size": "hdbscan smallest cluster (default: a tenth of a class, 5..50; when that collapses on "
    "labelled data, the map is clustered again at a quarter of a class)",
    "min_samples": "hdbscan core-point neighbours (default min(10, min_cluster_size))",
    "n_clusters": "kmeans/agglomerative/gmm clusters (default: the number of labels)",
}
# The options of the "common settings" group; the others go to the sub-command itself.
_SETTINGS = ("seed", "view", "knn", "score_k", "score_sample")


@dataclass(frozen=True)
class MapRequest:
    """What the user asked for; :func:`resolve_for` checks it and fills in every default.
    reducer, clusterer and their params come from several flags (:func:`request_from_args`)."""

    run: str | None = option(None, help="the extract run to map (its id)")
    layer: int | None = option(None, help="layer to map (default: the last one)")
    reducer: str = option("umap", cli_default=None, help="umap (default), pca, tsne, spectral or none")
    clusterer: str = option("hdbscan", cli_default=None, help="hdbscan (default), kmeans, agglomerative or gmm")
    # the named recipe the settings started from (latentscape.jobs.core.presets)
    preset: str | None = option(None, choices=sorted(PRESETS),
                                help="start from a named recipe (any setting given overrides it), e.g. tutorial")
    reducer_params: Mapping[str, Any] = field(default_factory=dict)
    clusterer_params: Mapping[str, Any] = field(default_factory=dict)
    seed: int = option(0, help="seed of every stochastic step (default 0)")
    view: str = option("auto", help="2D display: auto, embedding, refit or pca")
    knn: str = option("auto", help="k-NN graph: auto (exact up to 30,000 samples), exact, approx")
    score_k: int | None = option(None, help="neighbours for trustworthiness / k-NN preservation (default 15)")
    score_sample: int | None = option(None, help="sample size of silhouette and neighbourhood scores (default 1000)")
    from_run: str | None = option(None, metavar="RUN_ID", help="replay the logged config.json of a map run or sweep "
                                  "trial (no other settings)")
    min_class_size: int = option(1, low=1, metavar="N", help="label scores leave out classes with fewer samples "
                                 "(default 1); unlabelled rows are always left out of them and kept on the map")
    trust: TrustSettings = TrustSettings()  # permutations, bootstrap, seeds
    holdout: float | None = None  # replays of sweep --holdout maps: label scores over the tuning part

    def __post_init__(self):
        check_options(self)


def parse_assignments(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    """``["n_neighbors=30", "metric=cosine"]`` -> dict (values stay strings; the registry
    coerces them)."""
    parsed: dict[str, str] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"{flag} {item!r} is not NAME=VALUE", f"write e.g. {flag} n_neighbors=30")
        parsed[name.strip().replace("-", "_")] = value.strip()
    return parsed


def add_parser(subparsers, parents) -> None:
    from latentscape.jobs._trust import add_trust_arguments
    from latentscape.jobs.core.cluster import CLUSTERERS
    from latentscape.jobs.core.reduce import REDUCERS

    parser = subparsers.add_parser(
        "map", parents=parents, help="reduce, cluster and score one layer (logged as a run)",
        description="Reduce one layer of an extraction to 2D (or more), cluster it, and score the clusters "
        "against the true labels (MI, NMI, AMI, ARI, homogeneity, completeness, V-measure) and the reduction "
        "against the layer (trustworthiness, k-NN preservation). Logged as a child run of the extraction "
        "with map.parquet and the fully resolved config.json. HDBSCAN noise is scored as its own label; "
        "the same scores over clustered points only end in _clustered.",
        epilog="examples:\n  latentscape map --run EXTRACT_RUN --layer 6\n"
        "  latentscape map --run EXTRACT_RUN --layer 6 --n-neighbors 30 --n-components 5 --metric cosine\n"
        "  latentscape map --run EXTRACT_RUN --reducer pca --clusterer kmeans --n-clusters 8\n"
        "  latentscape map --run EXTRACT_RUN -r init=random -c cluster_selection_method=leaf\n"
        "  latentscape map --from-run MAP_OR_TRIAL_RUN      # replay a logged map exactly\n"
        "  latentscape map --run EXTRACT_RUN --preset tutorial --seeds 5   # the tutorial's recipe, 5 seeds\n\n"
        f"reducers: {', '.join(REDUCERS)}; clusterers: {', '.join(CLUSTERERS)}\n"
        f"presets: {'; '.join(f'{p.name}: {p.description}' for p in PRESETS.values())}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser, MapRequest, skip=_SETTINGS)
    group = parser.add_argument_group("common settings (any other: -r / -c NAME=VALUE)")
    for name, text in {**_REDUCER_FLAGS, **_CLUSTERER_FLAGS}.items():
        group.add_argument("--" + name.replace("_", "-"), help=text)
    group.add_argument("-r", "--reducer-param", action="append", metavar="NAME=VALUE",
                       help="any reducer setting, e.g. -r n_epochs=500 (repeatable)")
    group.add_argument("-c", "--clusterer-param", action="append", metavar="NAME=VALUE",
                       help="any clusterer setting, e.g. -c cluster_selection_method=leaf (repeatable)")
    add_options(group, MapRequest, skip=[f.name for f, _, _ in options_of(MapRequest) if f.name not in _SETTINGS])
    add_trust_arguments(parser)
    parser.set_defaults(handler=_run_cli)


def request_from_args(args) -> MapRequest:
    """A :class:`MapRequest` from the parsed command line: its options, the reducer's and
    the clusterer's settings (-r, -c, the convenience flags, under a --preset's recipe) and
    the trust settings."""
    reducer_params = parse_assignments(args.reducer_param, "--reducer-param")
    clusterer_params = parse_assignments(args.clusterer_param, "--clusterer-param")
    for name in _REDUCER_FLAGS:
        if getattr(args, name) is not None:
            reducer_params[name] = getattr(args, name)
    for name in _CLUSTERER_FLAGS:
        if getattr(args, name) is not None:
            clusterer_params[name] = getattr(args, name)
    reducer, clusterer = args.reducer, args.clusterer
    if args.preset:  # the recipe's settings, under anything given explicitly
        recipe = PRESETS[args.preset]
        reducer, clusterer = reducer or recipe.reducer, clusterer or recipe.clusterer
        if reducer == recipe.reducer:
            reducer_params = {**recipe.reducer_params, **reducer_params}
        if clusterer == recipe.clusterer:
            clusterer_params = {**recipe.clusterer_params, **clusterer_params}
    return from_args(MapRequest, args, reducer=reducer or "umap", clusterer=clusterer or "hdbscan",
                     reducer_params=reducer_params, clusterer_params=clusterer_params, trust=settings_from_args(args))


def check_request(request: MapRequest) -> None:
    """Everything that can be checked before a store is opened (UsageError)."""
    from latentscape.jobs.core.mapping import ConfigError, check_settings

    if request.from_run:
        if request != MapRequest(from_run=request.from_run):
            raise UsageError("--from-run replays a logged configuration and takes no other map settings",
                             "drop --run, --layer and the settings, or drop --from-run")
        return
    if not request.run:
        raise UsageError("no extraction to map", "pass --run EXTRACT_RUN (an id printed by `latentscape extract`)")
    try:
        check_settings(reducer=request.reducer, clusterer=request.clusterer, reducer_params=request.reducer_params,
                       clusterer_params=request.clusterer_params, seed=request.seed, view=request.view,
                       knn=request.knn)
    except ConfigError as error:
        raise UsageError(str(error)) from None


def _run_cli(args) -> JobResult:
    # Settings first (milliseconds), then the store and the extraction (seconds).
    request = request_from_args(args)
    check_request(request)
    from latentscape.tracking.runs import open_store

    store = open_store(args.tracking_uri)
    if request.from_run:
        return replay(store, request.from_run, experiment=args.experiment)
    return map_layer(request, store=store, experiment=args.experiment)


def extraction_shape(extraction, layer: int):
    """The :class:`DataShape` of one layer, read from the run's params and samples table
    (no embeddings loaded), so settings are checked before any work."""
    from latentscape.jobs.core.mapping import DataShape

    dim = extraction.params.get(Param.DIM)
    n_features = int(dim) if dim else int(extraction.embedding(layer).shape[1])
    labels = extraction.labels
    n_classes = None if labels is None else int(len(np.unique(labels)))
    return DataShape(n_samples=len(extraction.samples), n_features=n_features, n_classes=n_classes)


def resolve_for(extraction, request: MapRequest):
    """(layer, MapConfig) for ``request`` on ``extraction``; UsageError on any bad setting."""
    from latentscape.jobs.core.mapping import ConfigError, resolve_config

    layer = max(extraction.layers) if request.layer is None else extraction.check_layer(request.layer)
    try:
        config = resolve_config(
            shape=extraction_shape(extraction, layer), reducer=request.reducer, clusterer=request.clusterer,
            reducer_params=request.reducer_params, clusterer_params=request.clusterer_params, seed=request.seed,
            view=request.view, knn=request.knn, score_k=request.score_k, score_sample=request.score_sample,
        )
    except ConfigError as error:
        raise UsageError(str(error)) from None
    return layer, config


def map_params(config, layer: int) -> dict[str, Any]:
    """The params a map (or trial) run logs: every resolved setting."""
    return {
        Param.LAYER: layer, Param.REDUCER: config.reducer, Param.CLUSTERER: config.clusterer, Param.SEED: config.seed,
        Param.NOISE_POLICY: config.noise_policy, Param.VIEW: config.view, Param.KNN: config.knn,
        Param.KNN_K: config.knn_k, Param.SCORE_K: config.score_k, Param.SCORE_SAMPLE: config.score_sample,
        **config.flat_params(),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in _VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def config_payload(config, *, source_run: str, layer: int) -> dict[str, Any]:
    """The ``config.json`` of a map or trial: everything a replay needs."""
    return {_CONFIG_SOURCE: source_run, _CONFIG_LAYER: int(layer), _CONFIG_MAP: config.to_dict(),
            _CONFIG_VERSIONS: _versions()}


def config_from_params(params: Mapping[str, str]) -> dict[str, Any]:
    """A MapConfig dict from a run's logged params (strings; :func:`resolve_config`
    coerces them by each parameter's type). A sweep trial logs its config this way."""
    reducer_prefix, clusterer_prefix = Param.reducer_param(""), Param.clusterer_param("")
    knn_k = params.get(Param.KNN_K)
    return {
        "reducer": params[Param.REDUCER], "clusterer": params[Param.CLUSTERER], "seed": int(params[Param.SEED]),
        "reducer_params": {k[len(reducer_prefix):]: v for k, v in params.items() if k.startswith(reducer_prefix)},
        "clusterer_params": {k[len(clusterer_prefix):]: v for k, v in params.items()
                             if k.startswith(clusterer_prefix)},
        "view": params.get(Param.VIEW, "auto"), "knn": params.get(Param.KNN, "auto"),
        "knn_k": int(knn_k) if knn_k else None, "score_k": int(params[Param.SCORE_K]),
        "score_sample": int(params[Param.SCORE_SAMPLE]), "noise_policy": params.get(Param.NOISE_POLICY),
    }


def read_logged_config(store, run_id: str) -> tuple[str, int, dict[str, Any]]:
    """(extract run, layer, MapConfig dict) of a map run (its ``config.json``), a sweep
    run (its best trial's ``config.json``) or a sweep trial (its params)."""
    import json

    run = store.get_run(run_id)
    names = set(store.artifact_paths(run_id))
    try:
        if Artifact.CONFIG in names:
            from latentscape.tracking.runs import download

            payload = json.loads(download(store, run_id, Artifact.CONFIG).read_text())
            return str(payload[_CONFIG_SOURCE]), int(payload[_CONFIG_LAYER]), dict(payload[_CONFIG_MAP])
        if run.kind == Kind.TRIAL.value:
            params = run.params
            return run.tags[Tag.SOURCE_RUN], int(params[Param.LAYER]), config_from_params(params)
    except (KeyError, TypeError, ValueError):
        pass
    raise UsageError(f"run {run_id} has no logged map configuration",
                     "pass a map run, a sweep run or a sweep trial run")


def map_frame(extraction, coords: np.ndarray, clusters: np.ndarray):
    """``map.parquet``: sample_id, x, y, cluster, label, text, then the samples' meta.* columns."""
    import pandas as pd

    samples = extraction.samples.reset_index(drop=True)
    frame = pd.DataFrame({
        Column.SAMPLE_ID: samples[Column.SAMPLE_ID].astype(str),
        Column.X: np.asarray(coords[:, 0], dtype=np.float32),
        Column.Y: np.asarray(coords[:, 1], dtype=np.float32),
        Column.CLUSTER: np.asarray(clusters, dtype=np.int64),
        Column.LABEL: samples[Column.LABEL] if Column.LABEL in samples else None,
        Column.TEXT: samples[Column.TEXT] if Column.TEXT in samples else None,
    })
    for column in samples.columns:
        if str(column).startswith(Column.META_PREFIX):
            frame[column] = samples[column]
    return frame


def _finite(values: Mapping[str, float]) -> dict[str, float]:
    # None dropped; NaN kept (MLflow stores it: "undefined for this map").
    return {name: float(value) for name, value in values.items() if value is not None}


def log_map(log, result, extraction, layer: int, *, with_table: bool = True, extra: Mapping | None = None) -> None:
    """Log one :class:`~latentscape.jobs.core.mapping.MapResult` into an open run: scores and
    durations as metrics, ``config.json`` (with ``extra`` entries), and (when it has
    coordinates) ``map.parquet`` and ``clusters.parquet`` (size, purity, keywords, central
    samples of every cluster)."""
    log.metrics(_finite({**result.scores, **result.durations}))
    log.json(Artifact.CONFIG, {**config_payload(result.config, source_run=extraction.run_id, layer=layer),
                               **(extra or {})})
    if with_table and result.coords is not None:
        log.table(Artifact.MAP, map_frame(extraction, result.coords, result.clusters))
        log_cluster_table(log, extraction, result)


def log_cluster_table(log, extraction, result) -> None:
    """``clusters.parquet`` beside ``map.parquet`` (what each cluster is: size, purity,
    keywords, central samples; :mod:`latentscape.jobs._clusters`)."""
    try:
        from latentscape.jobs._clusters import log_clusters
    except ImportError:  # pragma: no cover - the module ships with the package
        return
    log_clusters(log, extraction, result)


def map_layer(request: MapRequest, *, store, experiment: str | None = None, replay_of: str | None = None,
              config=None) -> JobResult:
    """Map one layer of ``request.run`` and log it as a ``map`` run (child of the extraction)."""
    from latentscape.jobs._knn_store import layer_graph_store
    from latentscape.jobs._source import label_selection_params, load_extraction
    from latentscape.jobs.core.mapping import NeighbourCache, fit_map
    from latentscape.tracking.run_log import tracked_run

    # Load what the map builds on and check every setting before a run exists.
    extraction = load_extraction(store, request.run)
    replaying = config is not None  # a replay fits exactly the logged config
    if config is None:
        layer, config = resolve_for(extraction, request)
    else:
        layer = extraction.check_layer(request.layer)
    experiment_id = store.experiment_id(experiment) if experiment else extraction.experiment_id
    x = extraction.embedding(layer)
    labels = extraction.labels
    notes = []
    if request.preset:
        from latentscape.jobs.core.presets import pooling_note

        note = pooling_note(PRESETS[request.preset], extraction.pooling)
        if note:
            notes.append(note)
            print(f"latentscape map: note: {note}", file=sys.stderr)
    # Label scores read the labelled rows of big enough classes; the map keeps every row.
    selection = extraction.label_selection(request.min_class_size) if labels is not None else None
    rows = None
    if selection is not None and not selection.keeps_all:
        note = selection.note()
        if selection.usable:
            rows = np.flatnonzero(selection.keep)
        else:
            labels = None
            note += "; fewer than two classes are left: label scores skipped"
        notes.append(note)
        print(f"latentscape map: note: {note}", file=sys.stderr)
    split = None
    if request.holdout:
        if labels is None:
            raise UsageError(f"--holdout needs labels and extract run {extraction.run_id} has none",
                             "replay it against a labelled extraction")
        from latentscape.jobs._trust import split_for

        split = split_for(labels if rows is None else labels[rows], request.holdout, config.seed)
        if rows is not None:  # positions in the kept rows -> rows of the map
            split = (rows[split[0]], rows[split[1]])
    scored = split[0] if split is not None else rows  # the rows the label scores read (None: all)
    # A labelled new map whose clusterer was left at its default settles its granularity after the fit.
    may_regranulate = not replaying and labels is not None and _clusterer_left_to_default(request)

    # Fit and log; then how far to trust the scores.
    tags = {**extraction.lineage_tags(), Tag.LAYER: layer, Tag.REPLAY_OF: replay_of,
            Tag.NOTE: "; ".join(notes) or None}
    with tracked_run(store, experiment_id, Kind.MAP, run_name=f"map · layer {layer} · {config.reducer}+{config.clusterer}",
                     parent_run_id=extraction.run_id, source_run_id=extraction.run_id, tags=tags) as log:
        from latentscape.jobs._trust import holdout_metrics, map_trust, score_rows

        params = {**map_params(config, layer), Param.PERMUTATIONS: request.trust.permutations,
                  Param.BOOTSTRAP: request.trust.bootstrap, Param.SEEDS: request.trust.seeds,
                  Param.PRESET: request.preset, Param.HOLDOUT: request.holdout,
                  **(label_selection_params(selection) if selection is not None else {})}
        # MLflow params are immutable: a clustering that may still change logs its
        # clusterer.* params once it is settled, so they are the ones that made the clusters.
        clusterer_prefix = Param.clusterer_param("")
        log.params({k: v for k, v in params.items() if not (may_regranulate and k.startswith(clusterer_prefix))})
        # The k-NN graph from the disk cache when an earlier process computed it (the run says which).
        cache = NeighbourCache(x, store=layer_graph_store(extraction, layer))
        if scored is None:
            result = fit_map(x, labels, config, cache=cache)
        else:  # label scores over the kept rows (and the tuning part only, as the sweep scored it)
            result = score_rows(fit_map(x, None, config, cache=cache), labels, scored)
        knn_graph = cache.graph_source
        log.tags({Tag.KNN_GRAPH: knn_graph})
        if may_regranulate:
            result, note = _matched_granularity(x, labels, scored, result)
            if note:
                notes.append(note)
                print(f"latentscape map: note: {note}", file=sys.stderr)
                log.tags({Tag.NOTE: "; ".join(notes)})
            log.params({k: v for k, v in result.config.flat_params().items() if k.startswith(clusterer_prefix)})
        log_map(log, result, extraction, layer, extra={"trust": request.trust.to_dict(), Param.PRESET: request.preset,
                                                       Param.HOLDOUT: request.holdout})
        warning = collapse_warning(result.scores, labels if scored is None or labels is None else labels[scored])
        if warning:
            print(f"latentscape map: warning: {warning}", file=sys.stderr)
            log.tags({Tag.WARNING: warning})
        trust = map_trust(x, labels, result, request.trust, rows=scored, cache=cache)
        log.metrics(_finite(trust))
        if split is not None:
            log.metrics(holdout_metrics(labels, result.clusters, split[1]))
        replay_diff = None
        if replay_of:
            replay_diff = max_abs_diff(result.scores, store.get_run(replay_of).metrics)
            log.metrics({Metric.REPLAY_MAX_ABS_DIFF: replay_diff})
        run_id = log.run_id

    details: dict[str, Any] = {"layer": layer, "reducer": config.reducer, "clusterer": config.clusterer,
                               "seconds": round(sum(result.durations.values()), 2)}
    if knn_graph:
        details[Tag.KNN_GRAPH] = knn_graph
    if replay_of:
        details["replay_of"] = replay_of
        details[Metric.REPLAY_MAX_ABS_DIFF] = replay_diff
    if notes:
        details["note"] = "; ".join(notes)
    if warning:
        details[Tag.WARNING] = warning
    shown = KEY_SCORES
    if request.preset:
        shown = PRESETS[request.preset].scores
    scores = {k: result.scores[k] for k in shown if k in result.scores}
    for name in (Metric.P_VALUE_SUFFIX, Metric.CI_LOW_SUFFIX, Metric.CI_HIGH_SUFFIX, Metric.STD_SUFFIX):
        key = Metric.trust(Metric.AMI, name)
        if key in trust:
            scores[key] = trust[key]
    return JobResult(kind=Kind.MAP.value, run_id=run_id, experiment=experiment or extraction.experiment_name,
                     scores=scores, details=details)


def _clusterer_left_to_default(request: MapRequest) -> bool:
    """The user set neither the clusterer nor any of its settings (a preset's count as set)."""
    from latentscape.jobs.core.mapping import DEFAULT_CLUSTERER

    return request.clusterer == DEFAULT_CLUSTERER and not request.clusterer_params


def _matched_granularity(x: np.ndarray, labels: np.ndarray, scored: np.ndarray | None, result):
    """(map, note): ``result``, a default HDBSCAN map of ``x``, clustered again on the
    same reduction at the classes' granularity when it collapsed against the labels
    (:func:`latentscape.jobs.core.verdict.granularity_fallback`), and the note saying so;
    ``(result, None)`` when it did not. scored: the rows the label scores read (None: all)."""
    from latentscape.jobs._trust import score_rows
    from latentscape.jobs.core.mapping import recluster
    from latentscape.jobs.core.verdict import granularity_fallback

    scored_labels = labels if scored is None else labels[scored]
    fallback = granularity_fallback(int(result.scores[Metric.N_CLUSTERS]), len(np.unique(scored_labels)),
                                    float(result.scores.get(Metric.NOISE_FRACTION, 0.0)), len(x))
    if fallback is None:
        return result, None
    params, note = fallback
    if scored is None:
        return recluster(x, labels, result, params), note
    return score_rows(recluster(x, None, result, params), labels, scored), note


MAP_COLLAPSE_FIX = ("pass --clusterer kmeans (k = the number of classes), a smaller -c min_cluster_size=N, "
                    "or let `latentscape sweep` search the settings")


def collapse_warning(scores: Mapping[str, float], labels: np.ndarray | None, fix: str = MAP_COLLAPSE_FIX) -> str | None:
    """The ``warning`` of a map whose clustering collapsed (:func:`latentscape.jobs.core.verdict.collapse_reason`):
    what happened, that its label scores measure the clusterer, and ``fix``. None when
    the map is unlabelled or did not collapse."""
    from latentscape.jobs.core.verdict import collapse_reason

    if labels is None or Metric.N_CLUSTERS not in scores:
        return None
    n_classes = len(np.unique(labels))
    reason = collapse_reason(int(scores[Metric.N_CLUSTERS]), n_classes,
                             float(scores.get(Metric.NOISE_FRACTION, 0.0)))
    if reason is None:
        return None
    return f"the clustering collapsed ({reason}): its label scores measure the clusterer, not the layer; {fix}"


def max_abs_diff(scores: Mapping[str, float], logged: Mapping[str, float]) -> float:
    """Largest |difference| between ``scores`` and ``logged`` over the scores both have
    (NaN equals NaN; a NaN against a number counts as infinitely far)."""
    from latentscape.jobs.core.scores import SCORE_NAMES

    worst = 0.0
    for name in SCORE_NAMES:
        if name not in scores or name not in logged:
            continue
        a, b = float(scores[name]), float(logged[name])
        if math.isnan(a) and math.isnan(b):
            continue
        worst = max(worst, abs(a - b) if not (math.isnan(a) or math.isnan(b)) else math.inf)
    return worst


def replay(store, run_id: str, *, experiment: str | None = None) -> JobResult:
    """Re-run a logged map or sweep trial from its ``config.json`` as a new ``map`` run
    tagged ``replay_of``; logs the largest score difference to the original."""
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.core.mapping import ConfigError, MapConfig

    logged = store.get_run(run_id)  # a clear error for an unknown id
    if logged.kind == Kind.TRIAL.value and logged.params.get(Param.SEARCH_SAMPLE):
        raise UsageError(f"trial run {run_id} mapped a subsample of {logged.params[Param.SEARCH_SAMPLE]} samples "
                         "(sweep --search-sample), which --from-run does not draw",
                         "replay its sweep run, whose map is re-fitted on every sample")
    source, layer, payload = read_logged_config(store, run_id)
    extraction = load_extraction(store, source)
    extraction.check_layer(layer)
    try:
        config = MapConfig.from_dict(payload, extraction_shape(extraction, layer))
    except (ConfigError, KeyError, TypeError) as error:
        raise UsageError(f"the config.json of run {run_id} cannot be replayed: {error}") from None
    holdout = logged.params.get(Param.HOLDOUT)
    request = MapRequest(run=source, layer=layer, reducer=config.reducer, clusterer=config.clusterer,
                         trust=_logged_trust(store, run_id), holdout=float(holdout) if holdout else None,
                         min_class_size=int(logged.params.get(Param.MIN_CLASS_SIZE) or 1))
    return map_layer(request, store=store, experiment=experiment, replay_of=run_id, config=config)


def _logged_trust(store, run_id: str) -> TrustSettings:
    """The trust settings in a run's ``config.json`` (the defaults where it has none: a
    trial, or a map logged before they existed)."""
    import json

    names = set(store.artifact_paths(run_id))
    if Artifact.CONFIG not in names:
        return TrustSettings()
    from latentscape.tracking.runs import download

    payload = json.loads(download(store, run_id, Artifact.CONFIG).read_text())
    return TrustSettings.from_dict(payload.get("trust"))
