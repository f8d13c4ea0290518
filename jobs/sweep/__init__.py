"""``latentscape sweep``: an Optuna study for the map settings that maximise a score.

Recipe: load the layer; check the search space and objective; create or join the study
(Optuna RDB storage: a SQLite file beside the MLflow database by default, any database
URL with ``--storage``); run trials, each one map (:func:`latentscape.jobs.core.mapping.fit_map`)
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
Workers that finish together log the best map once: the one whose claim of the study's
target (a unique study system attribute, inserted in one transaction) commits first.

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
trial's run is created by a background thread while the trial's map is fitted, and its
one batch and end are written before Optuna records the trial: a COMPLETE trial always has
its run, so a worker started with ``--resume`` never takes another worker's trial for one
whose run was lost (``--resume`` still replays and logs a COMPLETE trial whose run was
deleted).

The package, one job a module: this file (the config, the command line, :func:`sweep`);
``targets`` (what a trial fits, one module a target: ``map``, the default, and ``sae``,
``--target sae``; the registry ``TARGETS`` and the protocol its entries implement);
``_planning`` (the plan: objective, space, default point, epochs); ``_study`` (the
worker: its study, its trials, the loop until the study has its target);
``_bookkeeping`` (trial runs, stale, orphan and abandoned runs, trials without a run,
trials.parquet and importances.parquet); ``_workers`` (the --workers helper processes);
``_best`` (which worker logs the best trial, and its best.* params).
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from latentscape.jobs._result import JobResult
from latentscape.jobs.sweep._planning import DEFAULT_SEARCH_EPOCHS, study_name_for
from latentscape.jobs.sweep._study import _Worker
from latentscape.jobs.sweep._workers import _helper_main
from latentscape.jobs.sweep.targets import TARGETS
from latentscape.jobs.sweep.targets.map import SWEEP_COLLAPSE_FIX
from latentscape.tracking.contract import Metric, Param
from latentscape.tracking.errors import UsageError

__all__ = ["SweepConfig", "sweep", "add_parser", "study_name_for"]

# Also importable from here: DEFAULT_SEARCH_EPOCHS, SWEEP_COLLAPSE_FIX, TARGETS (what a
# trial fits: latentscape.jobs.sweep.targets), _helper_main (the --workers processes'
# entry point, run as `python -c "from latentscape.jobs.sweep import _helper_main; ..."`).


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
    target: str = "map"  # what a trial fits: a map, or a sparse autoencoder (latentscape.jobs.sweep.targets)
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
    from latentscape.jobs.core.scores import SCORE_NAMES

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
    parser.add_argument("--target", choices=tuple(TARGETS), default="map",
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
    parser.add_argument("--storage", metavar="URL", default=os.environ.get("LATENTSCAPE_OPTUNA_STORAGE") or None,
                        help="Optuna storage URL (default: $LATENTSCAPE_OPTUNA_STORAGE, which keeps a password off "
                        "the command line, else sqlite optuna.db beside the MLflow database)")
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
    from latentscape.jobs.map import int_option, parse_assignments

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
    from latentscape.tracking.runs import open_store

    return sweep(config, store=open_store(args.tracking_uri), experiment=args.experiment)


# -- the sweep ------------------------------------------------------------------------
def precheck(config: SweepConfig) -> None:
    """What can be checked before the store is opened (the target's checks: objective,
    names, pinned settings)."""
    TARGETS[config.target].precheck(config)


def sweep(config: SweepConfig, *, store, experiment: str | None = None) -> JobResult:
    """Run (or join, or resume) the study ``config`` describes; returns the sweep run."""
    import optuna

    precheck(config)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _one_line_optuna_warnings()
    target = TARGETS[config.target]
    worker = _Worker(config, target(config, target.make_plan(config, store, experiment)), store)
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
