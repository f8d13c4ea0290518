"""``latentscape sweep``: an Optuna study for the map settings that maximise a score.

Recipe: load the layer; check the search space and objective; create or join the study
(Optuna RDB storage: a SQLite file beside the MLflow database by default, any database
URL with ``--storage``); run trials, each one map (:func:`jobs.core.mapping.fit_map`)
logged as a ``trial`` run, child of one ``sweep`` run (child of the extraction); when the
study has all its trials, re-fit the best trial with its logged config (a replay: the
scores must agree) and log its ``map.parquet``, ``trials.parquet`` and
``importances.parquet`` in the sweep run.

Trial counting. Each process asks for ``--trials N``; the study's target is the sum of
what its processes asked for, and every process works until the study has that many
COMPLETE trials: two processes with ``--trials 10`` on one study finish with 20. Running
the same command again adds N more trials to the same study (the name is derived from
the settings); ``--resume`` adds none and only completes an interrupted study.

Crashes. Each trial beats a heartbeat in the storage. A trial whose process died
(SIGKILL) goes stale after ``3 x --heartbeat`` seconds; Optuna then fails it, its MLflow
run is ended KILLED, and a new trial takes its place, so the study still ends with
exactly its target of COMPLETE trials. ``--resume`` waits for such stale trials first.

Held-out scoring (``--holdout FRACTION``). The samples are split once, stratified by label
and seeded by ``--seed``; every trial still maps all samples (no label enters a map), but
its label scores, hence the objective, read only the tuning part's labels. The best map's
scores over the held-out part are logged in the sweep run as ``holdout.<score>``: a
score the search never saw. Trials, the best map and their replays log ``holdout`` so
that ``map --from-run`` scores them the same way.

Speed. The k-NN graph of each metric is computed once, at the largest n_neighbors of the
space, and shared by all trials (exact graphs truncate exactly, so a trial gets the same
map as alone); so is the input-space side of the neighbourhood scores. ``--workers N``
starts N - 1 more processes on the study (spawned, one core each: a seeded UMAP layout is
single-threaded, so processes rather than threads). Trials lay UMAP out with fewer epochs
(``--search-epochs``, 100 by default when the space leaves ``n_epochs`` alone); the best
trial is replayed exactly, then it and the default trial are re-fitted at the full epochs
and the better one is the sweep's map, so it is never worse than the defaults. Each
trial's run (create, one batch, end) is written by a background thread while the next
trial runs; a trial Optuna recorded whose run a killed process never wrote is replayed
and logged by ``--resume``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs._result import JobResult
from tracking.contract import Artifact, Column, Kind, Metric, Param, Tag
from tracking.errors import UsageError
from tracking.studies import default_storage, masked, open_storage

__all__ = ["SweepConfig", "sweep", "add_parser", "study_name_for"]

# Optuna user attributes (the study's and each trial's), shared by every worker process.
_ATTR_SWEEP_RUN = "latentscape.sweep_run_id"
_ATTR_SPEC = "latentscape.spec"
_ATTR_QUOTA = "latentscape.quota."  # + worker id -> trials that worker asked for
_SURPLUS = "surplus: the study already has its trials"

_JOIN_WAIT_S = 60.0
# Trials lay out UMAP with this many epochs unless told otherwise, and the best map is
# re-fitted at the full count: measured at 5,000 x 384, 100 epochs is 1.7-2.6x faster than
# 200 per trial and ranks settings alike (see bench/sweep.py for the best-score check).
DEFAULT_SEARCH_EPOCHS = 100
_EPOCHS = Param.reducer_param("n_epochs")
_MAX_CONSECUTIVE_FAILURES = 10
SWEEP_COLLAPSE_FIX = ("sweep with --clusterer kmeans, or a --space whose min_cluster_size range stays below a "
                      "class's size")
TARGETS = ("map", "sae")  # what a trial fits (sae: jobs._sae_sweep)


@dataclass(frozen=True)
class SweepConfig:
    """A sweep as asked for. ``space``: a parsed YAML mapping (None: the defaults);
    ``fixed``: map settings pinned for every trial (flat ``reducer.x`` names)."""

    run: str
    layer: int | None = None
    trials: int = 30
    objective: str = Metric.AMI
    direction: str | None = None
    reducer: str = "umap"
    clusterer: str = "hdbscan"
    space: dict | None = None
    fixed: dict = field(default_factory=dict)
    seed: int = 0
    storage: str | None = None
    study: str | None = None
    resume: bool = False
    n_jobs: int = 1
    heartbeat: int = 5
    score_k: int | None = None
    score_sample: int | None = None
    progress: bool = True
    holdout: float | None = None  # fraction of samples held out of tuning (stratified, seeded)
    workers: int = 1  # processes on the study, this one included (one core each)
    search_epochs: int | None = None  # UMAP epochs of the trials (None: the default; 0: the full epochs)
    parent_run: str | None = None  # the sweep run's parent (None: the extraction; layers --tune: its run)
    target: str = "map"  # what a trial fits: a map, or a sparse autoencoder (jobs._sae_sweep)
    # Internal: a process started by --workers joins the study, adds no trials, never
    # touches the sweep run, and draws from its own sampler seed.
    join: bool = False
    sampler_offset: int = 0

    def __post_init__(self):
        if self.trials < 1:
            raise UsageError(f"--trials {self.trials} must be positive", "pass 1 or more (default 30)")
        if self.n_jobs < 1:
            raise UsageError(f"--n-jobs {self.n_jobs} must be positive", "pass 1 or more (default 1)")
        if self.workers < 1:
            raise UsageError(f"--workers {self.workers} must be positive", "pass 1 or more, e.g. one per core")
        if self.search_epochs is not None and self.search_epochs < 0:
            raise UsageError(f"--search-epochs {self.search_epochs} is negative",
                             "pass e.g. --search-epochs 100, or --search-epochs full")
        if self.heartbeat < 1:
            raise UsageError(f"--heartbeat {self.heartbeat} must be at least 1 second", "pass e.g. --heartbeat 5")
        if self.holdout is not None and not 0 < self.holdout < 1:
            raise UsageError(f"--holdout {self.holdout} is outside (0, 1)", "pass e.g. --holdout 0.3")
        if self.target not in TARGETS:
            raise UsageError(f"--target {self.target!r} is not one of {', '.join(TARGETS)}", "pass --target map or sae")
        if self.direction not in (None, "maximize", "minimize"):
            raise UsageError(f"--direction {self.direction!r} is neither maximize nor minimize",
                             "pass --direction maximize or --direction minimize")


# -- command line --------------------------------------------------------------------
def add_parser(subparsers, parents) -> None:
    from jobs.core.scores import SCORE_NAMES

    parser = subparsers.add_parser(
        "sweep", parents=parents, help="search map settings with Optuna for the best score",
        description="Search reducer and clusterer settings with an Optuna study (TPE, seeded) for the map that "
        "maximises a score (AMI by default). One sweep run, child of the extraction; every trial a child run of "
        "the sweep with its settings, scores, state and duration; the best trial's map.parquet, trials.parquet "
        "and importances.parquet in the sweep run. The first trial is the default map, so the best is never "
        "worse than it. Trials lay UMAP out with --search-epochs (100) and the best is re-fitted at the full "
        "epochs; --workers runs trials in several processes. Several processes (or machines, with --storage on a shared database) can work on one "
        "study: each adds its --trials; --resume completes an interrupted study.",
        epilog="examples:\n  latentscape sweep --run EXTRACT_RUN --layer 6 --trials 30\n"
        "  latentscape sweep --run EXTRACT_RUN --space space.yaml --objective nmi --seed 1\n"
        "  latentscape sweep --run EXTRACT_RUN --trials 50 --workers 2   # two processes, one core each\n"
        "  latentscape sweep --run EXTRACT_RUN --trials 30 --resume      # after an interruption\n"
        "  latentscape sweep --run EXTRACT_RUN --trials 30 --holdout 0.3 # tune on 70%, report on 30%\n"
        "  latentscape sweep --run EXTRACT_RUN --storage postgresql://user@db/optuna --trials 20  # each worker\n\n"
        f"objectives: {', '.join(SCORE_NAMES)}\n"
        "space.yaml:\n  reducer: umap\n  clusterer: hdbscan\n  params:\n"
        "    reducer.n_neighbors: {low: 5, high: 100, log: true}\n    reducer.metric: {choices: [euclidean, cosine]}\n"
        "    reducer.n_epochs: 200        # fixed\n    clusterer.min_cluster_size: {low: 5, high: 100, log: true}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run", required=False, help="the extract run to sweep (its id)")
    parser.add_argument("--layer", help="layer to map (default: the last one)")
    parser.add_argument("--target", choices=TARGETS, default="map",
                        help="what each trial fits: a map (default) or a sparse autoencoder (sae: searches "
                        "features, k and learning_rate; objective holdout.variance_explained unless --objective "
                        "names another sae score; --space takes 'target: sae' and params named as the sae run's)")
    parser.add_argument("--trials", default="30", help="trials this process adds to the study (default 30)")
    parser.add_argument("--objective", default=Metric.AMI, help="score to optimise (default ami)")
    parser.add_argument("--direction", help="maximize or minimize (default: the score's natural direction)")
    parser.add_argument("--reducer", default="umap", help="reducer when no --space names one (default umap)")
    parser.add_argument("--clusterer", default="hdbscan", help="clusterer when no --space names one (default hdbscan)")
    parser.add_argument("--space", metavar="FILE", help="search space YAML (default: each parameter's usual range)")
    parser.add_argument("-r", "--reducer-param", action="append", metavar="NAME=VALUE",
                        help="pin a reducer setting for every trial, e.g. -r n_epochs=100 (repeatable)")
    parser.add_argument("-c", "--clusterer-param", action="append", metavar="NAME=VALUE",
                        help="pin a clusterer setting for every trial (repeatable)")
    parser.add_argument("--seed", default="0", help="seed of the sampler and of every map (default 0)")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage URL (default: sqlite optuna.db beside the MLflow database)")
    parser.add_argument("--study", metavar="NAME", help="study name (default: derived from run, layer and settings)")
    parser.add_argument("--resume", action="store_true",
                        help="complete an interrupted study without adding trials")
    parser.add_argument("--workers", default="1",
                        help="processes working on the study, this one included; one per core is fastest "
                        "(default 1)")
    parser.add_argument("--search-epochs", metavar="N|full",
                        help=f"UMAP layout epochs of every trial; the best map is then re-fitted at the full "
                        f"epochs (default {DEFAULT_SEARCH_EPOCHS} when the space leaves n_epochs alone; 'full': "
                        "search at the full epochs, no refit)")
    parser.add_argument("--n-jobs", default="1", help="trials in parallel threads in this process (default 1)")
    parser.add_argument("--heartbeat", default="5",
                        help="seconds between trial heartbeats; a trial silent 3x as long is dead (default 5)")
    parser.add_argument("--score-k", help="neighbours for trustworthiness / k-NN preservation (default 15)")
    parser.add_argument("--score-sample", help="sample size of the geometry scores (default 1000)")
    parser.add_argument("--holdout", metavar="FRACTION",
                        help="hold this fraction of the samples out of tuning (stratified by label, seeded by "
                        "--seed): trials are scored on the rest; the best map's held-out scores are logged as "
                        "holdout.<score>")
    parser.set_defaults(handler=_run_cli)


def _fraction(value: str | None, flag: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not a number", f"pass e.g. {flag} 0.3") from None


def _read_space(path: str | None) -> dict | None:
    if path is None:
        return None
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"search space file {path} does not exist", "pass the path of a YAML file to --space")
    try:
        payload = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        first = " ".join(str(error).split())[:200]
        raise UsageError(f"search space file {path} is not valid YAML ({first})") from None
    if not isinstance(payload, dict):
        raise UsageError(f"search space file {path} is not a mapping", "see `latentscape sweep --help`")
    return payload


def _run_cli(args) -> JobResult:
    from jobs.map import int_option, parse_assignments

    if not args.run:
        raise UsageError("no extraction to sweep", "pass --run EXTRACT_RUN (an id printed by `latentscape extract`)")
    fixed = {Param.reducer_param(k): v for k, v in parse_assignments(args.reducer_param, "--reducer-param").items()}
    fixed |= {Param.clusterer_param(k): v
              for k, v in parse_assignments(args.clusterer_param, "--clusterer-param").items()}
    config = SweepConfig(
        run=args.run, layer=int_option(args.layer, "--layer"), trials=int_option(args.trials, "--trials"),
        objective=args.objective, direction=args.direction, reducer=args.reducer, clusterer=args.clusterer,
        space=_read_space(args.space), fixed=fixed, seed=int_option(args.seed, "--seed"), storage=args.storage,
        study=args.study, resume=args.resume, n_jobs=int_option(args.n_jobs, "--n-jobs"),
        workers=int_option(args.workers, "--workers"),
        search_epochs=0 if args.search_epochs == "full" else int_option(args.search_epochs, "--search-epochs"),
        heartbeat=int_option(args.heartbeat, "--heartbeat"), score_k=int_option(args.score_k, "--score-k"),
        score_sample=int_option(args.score_sample, "--score-sample"), holdout=_fraction(args.holdout, "--holdout"),
        target=args.target,
    )
    precheck(config)  # before the store: milliseconds, not seconds
    from tracking.runs import open_store

    return sweep(config, store=open_store(args.tracking_uri), experiment=args.experiment)


# -- names ----------------------------------------------------------------------------
def study_name_for(spec: dict[str, Any]) -> str:
    """A stable name from the sweep's settings: the same command joins the same study."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"sweep-{spec['run'][:8]}-layer{spec['layer']}-{spec['objective']}-{digest}"


# -- the sweep ------------------------------------------------------------------------
@dataclass
class _Plan:
    """Everything resolved before the study is touched."""

    extraction: Any
    layer: int
    shape: Any
    space: Any
    base: Any  # MapConfig of the default trial
    objective: str
    direction: str
    spec: dict[str, Any]
    study_name: str
    storage_url: str
    experiment_id: str
    experiment_name: str
    labels: Any = None  # (n,) every label, read once (None: unlabelled)
    tune: Any = None  # --holdout: row indices whose labels score the trials (None: all rows)
    held: Any = None  # --holdout: row indices held out, read only to score the best map
    search_epochs: int | None = None  # the trials' UMAP epochs, when fewer than the refit's
    refit_epochs: int | None = None  # the best map's UMAP epochs (None: no refit, a replay)

    def searched_config(self, trial_params: dict):
        """The MapConfig a trial ran with, from its Optuna params."""
        return self.trial_config(*self.space.split({**self.space.fixed, **trial_params}))

    def best_config(self, trial_params: dict):
        """The best map's config: the trial's, re-fitted at the full epochs (if fewer were searched)."""
        if self.refit_epochs is None:
            return self.searched_config(trial_params)
        return self.searched_config({**trial_params, _EPOCHS: self.refit_epochs})

    def config_of(self, point):
        """The config of one suggested point (``space.suggest``'s value)."""
        return self.trial_config(*point)

    def default_point(self) -> dict | None:
        """The default map as Optuna params of the space (None: the space excludes it)."""
        return self.space.point_of(self.base.flat_params())

    def trial_config(self, reducer_params: dict, clusterer_params: dict):
        """The MapConfig of one point of the space: seed, graph and score settings of the sweep."""
        from jobs.core.mapping import resolve_config

        return resolve_config(
            shape=self.shape, reducer=self.space.reducer, clusterer=self.space.clusterer,
            reducer_params=reducer_params, clusterer_params=clusterer_params, seed=self.base.seed,
            knn=self.base.knn if self.base.knn != "none" else "auto", knn_k=self.base.knn_k,
            score_k=self.base.score_k, score_sample=self.base.score_sample)


def _plan(config: SweepConfig, store, experiment: str | None) -> _Plan:
    from jobs._source import load_extraction
    from jobs.core.mapping import ConfigError, resolve_config
    from jobs.core.scores import DIRECTIONS, LABEL_SCORES, SCORE_NAMES
    from jobs.core.search_space import default_space, parse_space
    from jobs.map import extraction_shape

    extraction = load_extraction(store, config.run)
    layer = max(extraction.layers) if config.layer is None else extraction.check_layer(config.layer)
    shape = extraction_shape(extraction, layer)
    labels, tune, held = extraction.labels, None, None
    if config.holdout is not None:
        import numpy as np

        from jobs._trust import split_for
        from jobs.core.mapping import DataShape

        if labels is None:
            raise UsageError(f"--holdout holds labels out and run {config.run} has none",
                             "extract with --label-col, or drop --holdout")
        tune, held = split_for(labels, config.holdout, config.seed)
        # Defaults (k-means' k) from the tuning labels: nothing of the held-out part.
        shape = DataShape(shape.n_samples, shape.n_features, int(len(np.unique(labels[tune]))))

    # The objective and its direction.
    if config.objective not in SCORE_NAMES:
        raise UsageError(f"unknown objective {config.objective!r}", f"choose one of {', '.join(SCORE_NAMES)}")
    base_name = config.objective.removesuffix(Metric.CLUSTERED_SUFFIX)
    if base_name in LABEL_SCORES and extraction.labels is None:
        raise UsageError(f"objective {config.objective} needs true labels and run {config.run} has none",
                         "extract with --label-col, or optimise silhouette / trustworthiness")
    direction = config.direction or DIRECTIONS[config.objective]
    if direction is None:
        raise UsageError(f"objective {config.objective} has no natural direction", "pass --direction")

    # The search space, checked against this layer, and the default trial.
    try:
        if config.space is not None:
            if config.fixed:
                raise ConfigError("-r/-c pin settings of the default space only", "put them in the --space file")
            space = parse_space(config.space, shape, reducer=config.reducer, clusterer=config.clusterer)
        else:
            space = default_space(config.reducer, config.clusterer, shape, fixed=config.fixed)
        reducer_params, clusterer_params = space.split(space.fixed)
        base = resolve_config(shape=shape, reducer=space.reducer, clusterer=space.clusterer,
                              reducer_params=reducer_params, clusterer_params=clusterer_params, seed=config.seed,
                              score_k=config.score_k, score_sample=config.score_sample)
        if base.knn == "approx":
            # One shared approximate graph, as wide as the widest trial needs: its width is
            # then part of every trial's config (approximate graphs do not truncate exactly).
            knn_k = int(space.largest(Param.reducer_param("n_neighbors"), base.knn_width))
            base = resolve_config(shape=shape, reducer=space.reducer, clusterer=space.clusterer,
                                  reducer_params=reducer_params, clusterer_params=clusterer_params, seed=config.seed,
                                  knn="approx", knn_k=knn_k, score_k=config.score_k, score_sample=config.score_sample)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    space, search_epochs, refit_epochs = _epochs(space, base, config.search_epochs)

    spec = {"run": extraction.run_id, "layer": layer, "objective": config.objective, "direction": direction,
            "space": space.to_dict(), "seed": config.seed, "score_k": base.score_k,
            "score_sample": base.score_sample, "knn": base.knn, "knn_k": base.knn_k}
    if config.holdout is not None:
        spec["holdout"] = config.holdout  # another split, another study
    if refit_epochs is not None:
        spec["refit_epochs"] = refit_epochs  # (the search epochs are in the space)
    from tracking.runs import resolve_tracking_uri

    storage_url = config.storage or default_storage(resolve_tracking_uri(store.uri))
    experiment_id = store.experiment_id(experiment) if experiment else extraction.experiment_id
    return _Plan(extraction, layer, shape, space, base, config.objective, direction, spec,
                 config.study or study_name_for(spec), storage_url, experiment_id,
                 experiment or extraction.experiment_name, labels=labels, tune=tune, held=held,
                 search_epochs=search_epochs, refit_epochs=refit_epochs)


def _epochs(space, base, asked: int | None):
    """The trials' UMAP epochs and the best map's: (space with the trials' epochs fixed,
    search epochs, refit epochs), the last two None when trials use the full epochs.

    By default trials lay out with DEFAULT_SEARCH_EPOCHS and the best is re-fitted at the
    full count (the reducer's default, or what -r / the space fixed); n_epochs named by
    the user (fixed or searched) is taken as it is unless --search-epochs says otherwise."""
    from dataclasses import replace

    has_epochs = "n_epochs" in base.reducer_params
    searched = any(d.name == _EPOCHS for d in space.dimensions)
    if asked == 0 or (asked is None and (not has_epochs or searched or _EPOCHS in space.fixed)):
        return space, None, None
    if not has_epochs:
        raise UsageError(f"--search-epochs: reducer {space.reducer} has no layout epochs",
                         "drop --search-epochs (it applies to umap)")
    if searched:
        raise UsageError("--search-epochs: n_epochs is itself searched by the space",
                         "drop --search-epochs, or fix reducer.n_epochs in the space")
    full = int(base.reducer_params["n_epochs"])
    epochs = DEFAULT_SEARCH_EPOCHS if asked is None else asked
    if epochs >= full:
        if asked is not None and asked > full:
            raise UsageError(f"--search-epochs {asked} is more than the map's {full} epochs",
                             f"pass at most {full}, or raise them with -r n_epochs=N")
        return space, None, None
    return replace(space, fixed={**space.fixed, _EPOCHS: epochs}), epochs, full


def precheck(config: SweepConfig) -> None:
    """What can be checked before the store is opened: objective, names, pinned settings."""
    from jobs.core.mapping import ConfigError, check_settings
    from jobs.core.scores import SCORE_NAMES
    from jobs.core.search_space import SearchSpace

    if config.target == "sae":
        from jobs._sae_sweep import precheck as sae_precheck

        return sae_precheck(config)
    if config.objective not in SCORE_NAMES:
        raise UsageError(f"unknown objective {config.objective!r}", f"choose one of {', '.join(SCORE_NAMES)}")
    if config.space is not None:
        return  # checked whole against the data in _plan
    reducer_params, clusterer_params = SearchSpace(config.reducer, config.clusterer, (), {}).split(config.fixed)
    try:
        check_settings(reducer=config.reducer, clusterer=config.clusterer, reducer_params=reducer_params,
                       clusterer_params=clusterer_params, seed=config.seed)
    except ConfigError as error:
        raise UsageError(str(error)) from None


def sweep(config: SweepConfig, *, store, experiment: str | None = None) -> JobResult:
    """Run (or join, or resume) the study ``config`` describes; returns the sweep run."""
    import optuna

    precheck(config)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _one_line_optuna_warnings()
    if config.target == "sae":
        from jobs._sae_sweep import SaeWorker, sae_plan

        return SaeWorker(config, sae_plan(config, store, experiment), store).run()
    plan = _plan(config, store, experiment)
    worker = _Worker(config, plan, store)
    return worker.run()


class _WithoutTraceback(logging.Filter):
    """Optuna's "Trial N failed ... because of the following error: ValueError('...')"
    already names the error, and the trial's run keeps it in its error tag; the traceback
    Optuna attaches would be a dump on stderr for every failed trial."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = record.exc_text = None
        return True


def _one_line_optuna_warnings() -> None:
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, _WithoutTraceback) for f in handler.filters):
            handler.addFilter(_WithoutTraceback())


class _Worker:
    """One process's part of a study: its trials, and the final logging if it is last."""

    def __init__(self, config: SweepConfig, plan: _Plan, store):
        self.config, self.plan, self.store = config, plan, store
        self.worker_id = uuid.uuid4().hex[:12]
        self.sweep_run_id: str | None = None
        self.study = None
        self.x = None
        self.labels = None
        self.cache = None
        self.lock = threading.Lock()
        self.failures_in_a_row = 0
        self.ran = 0
        self.bar = None
        self._complete_before = 0  # complete trials of the study when this process's bar started
        self.writer = None  # RunWriter of this process's trial runs
        self.sampler_offset = config.sampler_offset
        self.helpers: list = []  # --workers processes started by this one
        self._best_scores: dict[str, float] = {}
        self._best_details: dict[str, Any] = {}

    # -- study -------------------------------------------------------------------------
    def _trial_runs(self, *, running_only: bool = False) -> list:
        """The MLflow runs of this study's trials (children of the sweep run)."""
        return self.store.find_runs(self.plan.experiment_id, parent_run_id=self.sweep_run_id,
                                    status="RUNNING" if running_only else None, max_results=50000)

    def _on_stale(self, study, trial) -> None:
        """A trial whose process died: Optuna failed it; end its MLflow run KILLED."""
        if self.sweep_run_id is None:
            return
        with contextlib.suppress(Exception):
            for run in self._trial_runs(running_only=True):
                if run.data.tags.get(Tag.TRIAL_NUMBER) == str(trial.number):
                    self.store.kill(run.info.run_id, "the process running this trial died (no heartbeat)",
                                    tags={Tag.TRIAL_STATE: "FAIL"})

    def _sampler(self, offset: int):
        import optuna

        # Each worker its own seed: two workers with one seed would propose the same points;
        # the constant liar keeps parallel workers from proposing near the others' running trials.
        self.sampler_offset = offset
        return optuna.samplers.TPESampler(seed=self.config.seed + offset, constant_liar=True)

    def _open_study(self) -> bool:
        """Create the study (True) or load the existing one (False)."""
        import optuna

        storage = open_storage(self.plan.storage_url, self.config.heartbeat, self._on_stale)
        try:
            self.study = optuna.create_study(storage=storage, study_name=self.plan.study_name,
                                             direction=self.plan.direction, sampler=self._sampler(0),
                                             load_if_exists=False)
            self.study.set_user_attr(_ATTR_SPEC, self.plan.spec)
            # The quota before the sweep run is published: a --resume worker that joins at
            # once would otherwise see a target of 0 and stop with "no trial completed".
            self.study.set_user_attr(_ATTR_QUOTA + self.worker_id, self.config.trials)
            return True
        except optuna.exceptions.DuplicatedStudyError:
            pass
        study = optuna.load_study(study_name=self.plan.study_name, storage=storage)
        spec = study.user_attrs.get(_ATTR_SPEC)
        if spec is not None and json.loads(json.dumps(spec)) != json.loads(json.dumps(self.plan.spec, default=str)):
            raise UsageError(f"study {self.plan.study_name} was created with other settings",
                             "pass the same settings as its first worker, or another --study")
        if study.direction.name.lower() != self.plan.direction:
            raise UsageError(f"study {self.plan.study_name} is {study.direction.name.lower()}d",
                             "pass the same --direction, or another --study")
        offset = len(self._quotas(study)) + (1 if self.config.resume else 0) + len(study.trials)
        if self.config.join:
            offset = self.config.sampler_offset
        self.study = optuna.load_study(study_name=self.plan.study_name, storage=storage, sampler=self._sampler(offset))
        return False

    @staticmethod
    def _quotas(study) -> dict[str, int]:
        return {k: int(v) for k, v in study.user_attrs.items() if k.startswith(_ATTR_QUOTA)}

    def target(self) -> int:
        return sum(self._quotas(self.study).values())

    def _counts(self) -> tuple[int, list[int]]:
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        complete = sum(1 for t in trials if t.state == TrialState.COMPLETE)
        return complete, sorted(t.number for t in trials if t.state == TrialState.RUNNING)

    def _wait_for_sweep_run(self) -> str | None:
        deadline = time.monotonic() + _JOIN_WAIT_S
        while True:
            run_id = self.study.user_attrs.get(_ATTR_SWEEP_RUN)
            if run_id or time.monotonic() > deadline:
                return run_id
            # --resume gives up waiting only on a study with trials (its first worker died);
            # a study without any may have a first worker starting it right now (team mode:
            # workers started together would each open a sweep run).
            if self.config.resume and self.study.trials:
                return run_id
            time.sleep(0.5)  # Study.user_attrs reads the storage on every access

    # -- stale trials ---------------------------------------------------------------------
    def _settle_stale(self) -> None:
        """--resume: let trials of dead processes go stale and fail them (their runs end
        KILLED), then end any trial run left RUNNING without a live trial."""
        import warnings

        import optuna

        deadline = time.monotonic() + 3 * self.config.heartbeat + 2
        announced = False
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optuna.storages.fail_stale_trials(self.study)
            _, running = self._counts()
            if not running or time.monotonic() > deadline:
                break
            if not announced:
                print(f"latentscape sweep: waiting up to {3 * self.config.heartbeat + 2} s for {len(running)} running "
                      "trial(s) to finish or go stale", file=sys.stderr)
                announced = True
            time.sleep(min(1.0, self.config.heartbeat))
        self._end_orphan_runs()

    def _end_orphan_runs(self) -> None:
        from tracking.runs import end_stale_runs

        _, running = self._counts()
        live = set(map(str, running))
        if not running:
            end_stale_runs(self.store, self.plan.experiment_id, parent_run_id=self.sweep_run_id)
        else:
            for run in self._trial_runs(running_only=True):
                if run.data.tags.get(Tag.TRIAL_NUMBER) not in live:
                    self.store.kill(run.info.run_id, "the process died before the run ended")
        self._retract_unrecorded_trials(live)

    def _retract_unrecorded_trials(self, live: set[str]) -> None:
        """A trial whose run was logged COMPLETE but whose process died (or lost the
        tracking server) before Optuna recorded the value is not a result: Optuna failed
        it and runs it again. Say so on its run, so MLflow and Optuna agree."""
        from optuna.trial import TrialState

        complete = {str(t.number) for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
        for run in self._trial_runs():
            number = run.data.tags.get(Tag.TRIAL_NUMBER)
            if run.data.tags.get(Tag.TRIAL_STATE) == "COMPLETE" and number not in complete and number not in live:
                self.store.kill(run.info.run_id,
                                "Optuna never recorded this trial's value (its process died); it was run again",
                                tags={Tag.TRIAL_STATE: "FAIL"})

    def _end_abandoned_sweep_runs(self) -> None:
        """Sweep runs of this study left RUNNING by a process killed while starting it."""
        runs = self.store.find_runs(self.plan.experiment_id, kind=Kind.SWEEP, tags={Tag.STUDY: self.plan.study_name},
                                    status="RUNNING", max_results=1000)
        for run in runs:
            if run.info.run_id != self.sweep_run_id:
                self.store.kill(run.info.run_id, "the process died before the run ended")

    # -- the run ----------------------------------------------------------------------
    def run(self) -> JobResult:
        from tracking.runs import attach, tracked_run

        created = self._open_study()
        extraction = self.plan.extraction
        if created:
            with tracked_run(self.store, self.plan.experiment_id, Kind.SWEEP,
                             run_name=f"sweep · layer {self.plan.layer} · {self.plan.objective}",
                             parent_run_id=self.config.parent_run or extraction.run_id,
                             source_run_id=extraction.run_id, tags=self._sweep_tags()) as log:
                self.sweep_run_id = log.run_id
                log.params(self._sweep_params())
                self.study.set_user_attr(_ATTR_SWEEP_RUN, log.run_id)
                self._enqueue_default()
                return self._work(log, created=True)
        self.sweep_run_id = self._wait_for_sweep_run()
        if self.config.join:
            if self.sweep_run_id is None:
                raise UsageError(f"study {self.plan.study_name} has no sweep run", "start the sweep again")
            return self._work(None)
        if self.sweep_run_id is None:
            if not self.config.resume:
                raise UsageError(f"study {self.plan.study_name} has no sweep run (its first worker died while "
                                 "starting)", "run again with --resume")
            with tracked_run(self.store, self.plan.experiment_id, Kind.SWEEP,
                             run_name=f"sweep · layer {self.plan.layer} · {self.plan.objective}",
                             parent_run_id=self.config.parent_run or extraction.run_id,
                             source_run_id=extraction.run_id, tags=self._sweep_tags()) as log:
                self.sweep_run_id = log.run_id
                log.params(self._sweep_params())
                self.study.set_user_attr(_ATTR_SWEEP_RUN, log.run_id)
                return self._work(log)
        with attach(self.store, self.sweep_run_id) as log:
            return self._work(log)

    def _sweep_tags(self) -> dict[str, Any]:
        return {**self.plan.extraction.lineage_tags(), Tag.LAYER: self.plan.layer, Tag.STUDY: self.plan.study_name}

    def _sweep_params(self) -> dict[str, Any]:
        base = self.plan.base
        return {
            Param.LAYER: self.plan.layer, Param.TRIALS: self.config.trials, Param.OBJECTIVE: self.plan.objective,
            Param.DIRECTION: self.plan.direction, Param.SAMPLER: f"TPESampler(seed={self.config.seed}, constant_liar=True)",
            Param.STORAGE: masked(self.plan.storage_url), Param.STUDY_NAME: self.plan.study_name,
            Param.SEARCH_SPACE: self.plan.space.to_json(), Param.SEED: self.config.seed,
            Param.N_JOBS: self.config.n_jobs, Param.WORKERS: self.config.workers,
            Param.SEARCH_EPOCHS: self.plan.search_epochs, Param.REFIT_EPOCHS: self.plan.refit_epochs,
            Param.REDUCER: base.reducer, Param.CLUSTERER: base.clusterer,
            Param.NOISE_POLICY: base.noise_policy, Param.KNN: base.knn, Param.KNN_K: base.knn_k,
            Param.SCORE_K: base.score_k, Param.SCORE_SAMPLE: base.score_sample, Param.HOLDOUT: self.config.holdout,
        }

    def _enqueue_default(self) -> None:
        # The default map is the first trial: the best is never worse than the defaults.
        point = self.plan.default_point()
        if point is not None:
            self.study.enqueue_trial(point, skip_if_exists=True)

    def _work(self, log, *, created: bool = False) -> JobResult:
        """Run trials until the study has its target; the last process logs the best map.
        ``log`` is the sweep run (None in a --workers helper process)."""
        if self.config.resume:
            self._end_abandoned_sweep_runs()
            self._settle_stale()
        if not self.config.join and (created or not self.config.resume):
            self.study.set_user_attr(_ATTR_QUOTA + self.worker_id, self.config.trials)
        self._start_helpers()
        try:
            return self._work_here(log)
        finally:
            self._stop_helpers()

    def _load(self) -> None:
        """Load the layer once; share k-NN graphs and score references across trials."""
        from jobs.core.mapping import NeighbourCache

        self.x = self.plan.extraction.embedding(self.plan.layer)
        # With --holdout no map gets the labels: _fit scores the tuning rows only.
        self.labels = self.plan.labels if self.plan.tune is None else None
        hint = int(self.plan.space.largest(Param.reducer_param("n_neighbors"), self.plan.base.knn_width or 0) or 0)
        self.cache = NeighbourCache(self.x, hint_k=hint if self.plan.base.knn != "none" else 0)

    def _work_here(self, log) -> JobResult:
        self._load()

        # One BLAS/OpenMP thread per map, set once for the whole process (not per map:
        # trial threads would undo each other's limits); parallelism is across trials.
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            self.writer = self.store.writer()
            try:
                if self.config.resume:
                    self._log_unlogged_trials()
                self._optimize_until_done()
                if self._wait_for_helpers() and not self.writer.failed:
                    # A helper died: its running trial goes stale, its recorded but
                    # unwritten trial is logged, then this process runs what is missing.
                    self.writer.flush()  # this process's own runs end before orphans are sought
                    self._settle_stale()
                    self._log_unlogged_trials()
                    self._optimize_until_done()
            except BaseException:
                with contextlib.suppress(Exception):
                    self.writer.close()
                raise
            self.writer.close()  # every trial run written (or the first failure raised)
            if self.config.join:
                return self._result({"study": self.plan.study_name, "trials_here": self.ran})
            return self._finish(log)

    def _optimize_until_done(self) -> None:
        complete, _ = self._counts()
        remaining = max(0, self.target() - complete)
        if remaining:
            self._optimize(remaining)

    # -- --workers: helper processes ----------------------------------------------------
    def _start_helpers(self) -> None:
        """Start --workers - 1 processes on the study, each its own sampler seed. Processes,
        not threads: a seeded UMAP layout is single-threaded and holds the GIL. New
        interpreters (not fork: this process holds database connections and library
        threads; not multiprocessing: it re-runs an unguarded calling script)."""
        import dataclasses
        import subprocess

        if self.config.join or self.config.workers <= 1:
            return
        for index in range(1, self.config.workers):
            config = dataclasses.replace(self.config, join=True, workers=1, resume=False, progress=False,
                                         study=self.plan.study_name, storage=self.plan.storage_url,
                                         sampler_offset=self.sampler_offset + index)
            order = json.dumps({"config": dataclasses.asdict(config), "tracking_uri": self.store.uri,
                                "experiment": self.plan.experiment_name})
            process = subprocess.Popen([sys.executable, "-c", "from jobs.sweep import _helper_main; _helper_main()"],
                                       stdin=subprocess.PIPE, text=True)
            process.stdin.write(order)
            process.stdin.close()
            self.helpers.append(process)

    def _wait_for_helpers(self) -> bool:
        """Wait for the helper processes; True when one of them failed."""
        codes = [process.wait() for process in self.helpers]
        return any(code != 0 for code in codes)

    def _stop_helpers(self) -> None:
        """On the way out (done, failed or interrupted): end helpers still running; each
        ends its trial run KILLED on SIGTERM."""
        import subprocess

        for process in self.helpers:
            if process.poll() is None:
                process.terminate()
        for process in self.helpers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    def _optimize(self, remaining: int) -> None:
        from jobs._progress import progress

        bar_context = progress(remaining, "sweep trials", unit="trial") if self.config.progress \
            else contextlib.nullcontext(None)
        self._complete_before = self._counts()[0]
        with bar_context as bar:
            self.bar = bar
            # Loop: a stop can come while a sibling thread's trial is still running, and
            # that trial may fail; go on until the study's trials are complete or in flight.
            while self.failures_in_a_row < _MAX_CONSECUTIVE_FAILURES and not self.writer.failed:
                complete, running = self._counts()
                if complete + len(running) >= self.target():
                    break
                self.study.optimize(self._objective, n_trials=None, n_jobs=self.config.n_jobs, catch=(Exception,),
                                    callbacks=[self._after_trial], gc_after_trial=False)

    def _enough(self, number: int) -> bool:
        complete, running = self._counts()
        return complete + sum(1 for n in running if n < number) >= self.target()

    def _after_trial(self, study, trial) -> None:
        from optuna.trial import TrialState

        complete, running = self._counts()
        if trial.state == TrialState.COMPLETE:
            self.failures_in_a_row = 0
            if self.bar is not None:  # the whole study's progress, other processes' trials too
                self.bar.update(max(0, min(self.bar.total, complete - self._complete_before) - self.bar.n))
        elif trial.state == TrialState.FAIL:
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= _MAX_CONSECUTIVE_FAILURES:
                study.stop()
        if complete + len(running) >= self.target():
            study.stop()

    def _objective(self, trial) -> float:
        import optuna

        from jobs.core.mapping import ConfigError

        if self.writer.failed:  # the tracking store is gone: stop rather than lose trials
            trial.study.stop()
            self.writer.check()
        if self._enough(trial.number):
            trial.study.stop()
            raise optuna.TrialPruned(_SURPLUS)
        started = time.perf_counter()
        plan = self.plan
        point = plan.space.suggest(trial)
        # The trial's params are its fully resolved config (`map --from-run TRIAL` replays
        # them); they, its scores and its state go in one batch at the end (a config.json
        # artifact per trial cost ~50 ms on local SQLite), written by the writer thread
        # while the next trial runs.
        with self._open_trial_run(trial.number) as run:
            config = None
            try:
                config = plan.config_of(point)
                result = self._fit(config, with_view=False)
            except BaseException as error:
                params = self._params(config) if config is not None else {}
                run.log(params=params, tags={Tag.TRIAL_STATE: "FAIL"})
                if isinstance(error, ConfigError):
                    raise ValueError(str(error)) from None
                raise
            value = float(result.scores[plan.objective])
            self._log_trial(run, config, result, "COMPLETE" if math.isfinite(value) else "FAIL", started)
        with self.lock:
            self.ran += 1
        return value

    def _open_trial_run(self, number: int, tags: dict[str, Any] | None = None):
        """The run of trial ``number`` (a child of the sweep run), written by the writer thread."""
        from tracking.runs import background_run

        return background_run(self.writer, self.plan.experiment_id, Kind.TRIAL, run_name=f"trial {number}",
                              parent_run_id=self.sweep_run_id, source_run_id=self.plan.extraction.run_id,
                              tags={**self._sweep_tags(), Tag.TRIAL_NUMBER: number, **(tags or {})})

    def _log_trial(self, run, config, result, state: str, started: float) -> None:
        """A fitted trial's settings (its replayable config), state, scores and duration."""
        run.log(params=self._params(config), tags={Tag.TRIAL_STATE: state},
                metrics={**result.scores, **result.durations, Metric.TRIAL_SECONDS: time.perf_counter() - started})

    def _fit(self, config, *, with_view: bool):
        """One map of the layer; with --holdout its label scores read the tuning rows only."""
        from jobs._trust import score_rows
        from jobs.core.mapping import fit_map

        result = fit_map(self.x, self.labels, config, cache=self.cache, with_view=with_view, threads=None)
        return result if self.plan.tune is None else score_rows(result, self.plan.labels, self.plan.tune)

    def _params(self, config) -> dict[str, Any]:
        """A trial's params: its resolved map config, and the held-out fraction (replays need it)."""
        from jobs.map import map_params

        return {**map_params(config, self.plan.layer), Param.HOLDOUT: self.config.holdout}

    # -- the end ---------------------------------------------------------------------
    def _finish(self, log) -> JobResult:
        from optuna.trial import TrialState

        complete, running = self._counts()
        target = self.target()
        trials = self.study.get_trials(deepcopy=False)
        failed = sum(1 for t in trials if t.state == TrialState.FAIL)
        details: dict[str, Any] = {"study": self.plan.study_name, "storage": masked(self.plan.storage_url),
                                   "trials_here": self.ran, "complete": f"{complete}/{target}"}
        log.metrics({Metric.N_TRIALS_COMPLETE: complete, Metric.N_TRIALS_FAILED: failed})
        if self.ran:  # this process's trials: MLflow time on their path, and on the writer thread
            log.metrics({Metric.MLFLOW_MS_PER_TRIAL: 1000 * self.writer.path_s / self.ran,
                         Metric.MLFLOW_WRITER_MS_PER_TRIAL: 1000 * self.writer.busy_s / self.ran})
        if complete == 0:
            errors = [t for t in trials if t.state == TrialState.FAIL]
            raise RuntimeError(f"no trial completed ({len(errors)} failed); see the error tags of the trial runs")
        if running or complete < target:
            # Another worker is still running trials: it writes the final tables.
            details["note"] = "other workers still running; the last one logs the best map"
            return self._result(details)
        self._log_best(log)
        details.update(self._best_details)
        return self._result(details)

    def _result(self, details: dict[str, Any]) -> JobResult:
        scores = dict(self._best_scores)
        best = None
        with contextlib.suppress(ValueError):
            best = self.study.best_trial
        if best is not None:
            details.setdefault("best_trial", best.number)
            scores = scores or {self.plan.objective: best.value}
        return JobResult(kind=Kind.SWEEP.value, run_id=self.sweep_run_id, experiment=self.plan.experiment_name,
                         scores=scores, details=details)

    def _log_best(self, log) -> None:
        from jobs.map import KEY_SCORES, collapse_warning, config_payload, log_cluster_table, map_frame, max_abs_diff

        from jobs.core.mapping import with_view

        plan = self.plan
        best = self.study.best_trial
        # Replay the best trial from its logged settings: the scores must agree.
        trial_config = plan.searched_config(best.params)
        replay = self._fit(trial_config, with_view=False)
        runs = self._runs_by_trial()
        best_run = runs.get(best.number)
        diff = max_abs_diff(replay.scores, best_run.data.metrics) if best_run is not None else math.nan
        best, result = self._choose_map(best, replay, log) if plan.refit_epochs is not None else (best, replay)
        result = with_view(self.x, result, cache=self.cache)
        config = result.config

        log.metrics({**result.scores, Metric.BEST_VALUE: best.value, Metric.BEST_TRIAL: best.number,
                     Metric.REPLAY_MAX_ABS_DIFF: diff})
        # How far to trust the best map: chance baselines of its (tuning) label scores, and
        # its scores over the held-out samples, whose labels the search never read.
        from jobs._trust import TrustSettings, holdout_metrics, map_trust

        log.metrics(map_trust(self.x, plan.labels, result, TrustSettings(), rows=plan.tune))
        warning = collapse_warning(result.scores, plan.labels, SWEEP_COLLAPSE_FIX)
        if warning:
            print(f"latentscape sweep: warning: {warning}", file=sys.stderr)
            log.tags({Tag.WARNING: warning})
        held_out = holdout_metrics(plan.labels, result.clusters, plan.held) if plan.held is not None else {}
        log.metrics(held_out)
        self._log_best_params(log, best)
        log.table(Artifact.MAP, map_frame(plan.extraction, result.coords, result.clusters))
        log_cluster_table(log, plan.extraction, result)  # clusters.parquet of the best map
        log.table(Artifact.TRIALS, self._trials_frame(runs))
        log.table(Artifact.IMPORTANCES, self._importances())
        payload = config_payload(config, source_run=plan.extraction.run_id, layer=plan.layer)
        payload[Kind.SWEEP.value] = {**plan.spec, "study": plan.study_name, "storage": masked(plan.storage_url),
                                     "best_trial": best.number, "best_value": best.value}
        log.json(Artifact.CONFIG, payload)
        self._best_scores = {k: result.scores[k] for k in KEY_SCORES if k in result.scores}
        self._best_scores.update({k: v for k, v in held_out.items() if k == Metric.holdout(plan.objective)})
        self._best_details = {"best_trial": best.number, **({Tag.WARNING: warning} if warning else {}),
                              "best_params": ", ".join(f"{k}={v}" for k, v in best.params.items()),
                              Metric.REPLAY_MAX_ABS_DIFF: diff}

    def _choose_map(self, best, replay, log):
        """Fewer epochs were searched: re-fit the best trial, and the default trial, at the
        full epochs (``refit_value``, step = trial number). The sweep's map is the one with
        the best objective among those and the best trial as searched (``replay``), so it
        is never worse than the search found nor than the defaults at full epochs; its
        config, epochs included, replays it. Returns (its trial, its map)."""
        from optuna.trial import TrialState

        point = self.plan.default_point()
        default = next((t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                        if t.params == point), None)
        candidates = [(best, replay)]
        for trial in [best] + ([default] if default is not None and default.number != best.number else []):
            refit = self._fit(self.plan.best_config(trial.params), with_view=False)
            log.metric_rows([(Metric.REFIT_VALUE, refit.scores[self.plan.objective], trial.number)])
            candidates.append((trial, refit))
        sign = 1 if self.plan.direction == "maximize" else -1

        def objective(candidate) -> float:
            value = candidate[1].scores[self.plan.objective]
            return sign * value if math.isfinite(value) else -math.inf

        return max(candidates, key=objective)  # ties: the first, the best trial as searched

    def _log_best_params(self, log, best) -> None:
        # Params are immutable: the first finish logs best.*; a later one (more trials
        # added to the study) records a changed best as tags of the same names.
        run = self.store.get_run(self.sweep_run_id)
        wanted = {Param.BEST_PREFIX + k: v for k, v in best.params.items()}
        wanted[Param.BEST_PREFIX + "trial"] = best.number
        fresh = {k: v for k, v in wanted.items() if k not in run.data.params}
        changed = {k: v for k, v in wanted.items() if k in run.data.params and run.data.params[k] != str(v)}
        if fresh:
            log.params(fresh)
        if changed:
            log.tags(changed)

    def _log_unlogged_trials(self) -> None:
        """--resume: a COMPLETE trial whose run was never written (its process died between
        Optuna's record and the writer thread's) is replayed from its settings and logged."""
        from optuna.trial import TrialState

        runs = self._runs_by_trial()
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            run = runs.get(trial.number)
            if run is not None and run.info.status == "FINISHED" and run.data.tags.get(Tag.TRIAL_STATE) == "COMPLETE":
                continue
            config = self.plan.searched_config(trial.params)
            started = time.perf_counter()
            result = self._fit(config, with_view=False)
            note = "logged by --resume: a replay of the trial, whose process died before its run was written"
            with self._open_trial_run(trial.number, {Tag.NOTE: note}) as pending:
                self._log_trial(pending, config, result, "COMPLETE", started)
        self.writer.flush()

    def _runs_by_trial(self) -> dict[int, Any]:
        """Trial number -> its MLflow run (a finished one where a number has several)."""
        found: dict[int, Any] = {}
        for run in self._trial_runs():
            number = run.data.tags.get(Tag.TRIAL_NUMBER)
            if number is None:
                continue
            if int(number) not in found or run.info.status == "FINISHED":
                found[int(number)] = run
        return found

    def _score_names(self) -> tuple[str, ...]:
        """The scores a trial logs (the columns of trials.parquet after the params)."""
        from jobs.core.scores import SCORE_NAMES

        return tuple(SCORE_NAMES)

    def _trials_frame(self, runs: dict[int, Any]):
        """``trials.parquet``: trial, state, value, duration_s, run_id, each param, each score."""
        import pandas as pd

        rows = []
        for t in self.study.get_trials(deepcopy=False):
            duration = (t.datetime_complete - t.datetime_start).total_seconds() \
                if t.datetime_complete and t.datetime_start else None
            run = runs.get(t.number)
            row = {Column.TRIAL: t.number, Column.STATE: t.state.name, Column.VALUE: t.value,
                   Column.DURATION: duration, Column.RUN_ID: run.info.run_id if run is not None else None}
            row.update(t.params)
            metrics = run.data.metrics if run is not None else {}
            row.update({name: metrics.get(name, math.nan) for name in self._score_names()})
            rows.append(row)
        return pd.DataFrame(rows)

    def _importances(self):
        import warnings

        import optuna
        import pandas as pd

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                evaluator = optuna.importance.FanovaImportanceEvaluator(seed=self.config.seed)
                found = optuna.importance.get_param_importances(self.study, evaluator=evaluator)
        except Exception:  # too few complete trials, or no parameter varied
            found = {}
        return pd.DataFrame({Column.PARAM: list(found), Column.IMPORTANCE: [float(v) for v in found.values()]})


def _helper_main() -> None:
    """A --workers process: join the study its first process names on stdin (JSON: the
    config, tracking URI and experiment) and run trials until the study has its target."""
    from jobs.cli import _quiet_libraries
    from tracking.runs import open_store

    _quiet_libraries()
    order = json.loads(sys.stdin.read())
    try:
        sweep(SweepConfig(**order["config"]), store=open_store(order["tracking_uri"]), experiment=order["experiment"])
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException as error:  # one line, as the CLI prints it; the first process goes on
        from tracking.runs import one_line

        print(f"latentscape sweep (worker process): failed: {one_line(error)}", file=sys.stderr)
        sys.exit(1)
