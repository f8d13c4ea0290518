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
and the better one is the sweep's map, so it is never worse than the defaults.
``--search-sample N``: every trial maps the same seeded subsample of N samples (stratified
by label, from the tuning part with ``--holdout``; drawn alike in every process), with the
space and defaults of the subsample's shape; the best trial is replayed on it, then it and
the default trial are re-fitted on all samples: the best's searched settings as they are
except HDBSCAN's min_cluster_size and min_samples, counts of samples, scaled by
samples / N (logged as ``refit.<name>``), the default trial as the map's defaults on all
samples (:mod:`._planning` states the rule). The better of the two is the sweep's map,
every sample in its map.parquet, its scores the sweep's. Each trial's run is created by a
background thread while the trial's map is fitted, and its one batch and end are written
before Optuna records the trial: a COMPLETE trial always has
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

from latentscape.jobs._options import add_options, check_options, from_args, option, parse_number
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


def _search_epochs(text: str | int | None) -> int | None:
    if text is None or isinstance(text, int):
        return text
    return 0 if text == "full" else parse_number(text, int, "--search-epochs")


@dataclass(frozen=True)
class SweepConfig:
    """A sweep as asked for. ``space``: a parsed YAML mapping (None: the defaults);
    ``fixed``: map settings pinned for every trial (flat ``reducer.x`` names)."""

    # Checked by the command line with its own message (no extraction to sweep).
    run: str = option(help="the extract run to sweep (its id)", required=False)
    layer: int | None = option(None, help="layer to map (default: the last one)")
    target: str = option("map", choices=tuple(TARGETS), help=(
        "what each trial fits: a map (default) or a sparse autoencoder (sae: searches features, k and "
        "learning_rate; objective holdout.variance_explained unless --objective names another sae score; "
        "--space takes 'target: sae' and params named as the sae run's)"))
    trials: int = option(30, low=1, help="trials this process adds to the study")
    objective: str = option(Metric.AMI, help="score to optimise")
    direction: str | None = option(None, choices=("maximize", "minimize"),
                                   help="maximize or minimize (default: the score's natural direction)")
    reducer: str = option("umap", help="reducer when no --space names one")
    clusterer: str = option("hdbscan", help="clusterer when no --space names one")
    space: dict | None = option(None, metavar="FILE", cli=lambda path: _read_space(path),
                                help="search space YAML (default: each parameter's usual range)")
    fixed: dict = field(default_factory=dict)
    seed: int = option(0, help="seed of the sampler and of every map")
    storage: str | None = option(None, metavar="URL", help=(
        "Optuna storage URL (default: $LATENTSCAPE_OPTUNA_STORAGE, which keeps a password off the command line, "
        "else sqlite optuna.db beside the MLflow database)"))
    study: str | None = option(None, metavar="NAME", help="study name (default: derived from run, layer and settings)")
    resume: bool = option(False, help="complete an interrupted study without adding trials")
    workers: int = option(1, low=1, help="processes working on the study, this one included (one core each); one "
                          "per core is fastest")
    search_epochs: int | None = option(None, metavar="N|full", low=0, cli=_search_epochs, help=(
        f"UMAP layout epochs of every trial; the best map is then re-fitted at the full epochs (default "
        f"{DEFAULT_SEARCH_EPOCHS} when the space leaves n_epochs alone; 'full': search at the full epochs, no refit)"))
    search_sample: int | None = option(None, metavar="N", low=100, help=(
        "every trial maps the same seeded subsample of N samples (stratified by label; with --holdout drawn from the "
        "tuning part); the best map is then re-fitted on all samples, HDBSCAN's searched min_cluster_size and "
        "min_samples scaled by samples / N (default: every trial maps all samples; N at or above the samples: the "
        "same)"))
    n_jobs: int = option(1, low=1, help="trials in parallel threads in this process")
    heartbeat: int = option(5, low=1, help="seconds between trial heartbeats; a trial silent 3x as long is dead")
    score_k: int | None = option(None, help="neighbours for trustworthiness / k-NN preservation (default 15)")
    score_sample: int | None = option(None, help="sample size of the geometry scores (default 1000)")
    holdout: float | None = option(None, metavar="FRACTION", above=0, below=1, help=(
        "hold this fraction of the samples out of tuning (stratified by label, seeded by --seed): trials are "
        "scored on the rest; the best map's held-out scores are logged as holdout.<score>"))
    progress: bool = True
    parent_run: str | None = None  # the sweep run's parent (None: the extraction; layers --tune: its run)
    # Internal: a process started by --workers joins the study, adds no trials, never
    # touches the sweep run, and draws from its own sampler seed.
    join: bool = False
    sampler_offset: int = 0

    def __post_init__(self):
        check_options(self)


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
        "  latentscape sweep --run EXTRACT_RUN --trials 30 --search-sample 5000  # search on 5,000, refit on all\n"
        "  latentscape sweep --run EXTRACT_RUN --storage postgresql://user@db/optuna --trials 20  # each worker\n\n"
        f"objectives: {', '.join(SCORE_NAMES)}\n"
        "space.yaml:\n  reducer: umap\n  clusterer: hdbscan\n  params:\n"
        "    reducer.n_neighbors: {low: 5, high: 100, log: true}\n    reducer.metric: {choices: [euclidean, cosine]}\n"
        "    reducer.n_epochs: 200        # fixed\n    clusterer.min_cluster_size: {low: 5, high: 100, log: true}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser, SweepConfig)
    # Pinned map settings: several flags make one field, as on `latentscape map`.
    parser.add_argument("-r", "--reducer-param", action="append", metavar="NAME=VALUE",
                        help="pin a reducer setting for every trial, e.g. -r n_epochs=100 (repeatable)")
    parser.add_argument("-c", "--clusterer-param", action="append", metavar="NAME=VALUE",
                        help="pin a clusterer setting for every trial (repeatable)")
    parser.set_defaults(handler=_run_cli)


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
    from latentscape.jobs.map import parse_assignments

    if not args.run:
        raise UsageError("no extraction to sweep", "pass --run EXTRACT_RUN (an id printed by `latentscape extract`)")
    fixed = {Param.reducer_param(k): v for k, v in parse_assignments(args.reducer_param, "--reducer-param").items()}
    fixed |= {Param.clusterer_param(k): v
              for k, v in parse_assignments(args.clusterer_param, "--clusterer-param").items()}
    config = from_args(SweepConfig, args, fixed=fixed,
                       storage=args.storage or os.environ.get("LATENTSCAPE_OPTUNA_STORAGE") or None)
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
