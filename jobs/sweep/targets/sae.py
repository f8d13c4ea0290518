"""``sweep --target sae``: the sweep's Optuna machinery (study, trial runs as children of
one sweep run, --resume, --workers) searching a sparse autoencoder's settings instead
of a map's.

Only what differs from a map sweep lives here: the plan (:func:`sae_plan`: the layer's
rows, an :class:`~latentscape.jobs.core.search_space.SaeSpace`, the objective among the sae job's
scores, ``holdout.variance_explained`` by default) and the target (:class:`SaeTarget`),
whose trial is :func:`latentscape.jobs.sae.fit` and whose best trial is re-trained from its
settings (the scores must agree: ``replay_max_abs_diff``) and logged whole in the sweep
run: weights, features.parquet, feature_labels.parquet, activations.parquet, beside
trials.parquet and importances.parquet. Every trial's params are its resolved settings,
so ``latentscape sae --from-run TRIAL`` replays it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from latentscape.jobs.sweep._planning import _Plan, study_name_for
from latentscape.jobs.sweep.targets import TrialColumns
from latentscape.tracking.contract import Artifact, Kind, Metric, Param
from latentscape.tracking.errors import UsageError
from latentscape.tracking.studies import masked

if TYPE_CHECKING:
    from latentscape.jobs.sweep import SweepConfig
    from latentscape.jobs.sweep.targets import SweepRecords

__all__ = ["DEFAULT_OBJECTIVE", "sae_plan", "SaePlan", "SaeTarget"]

DEFAULT_OBJECTIVE = Metric.holdout(Metric.VARIANCE_EXPLAINED)


def objective_of(config) -> str:
    """The sweep's objective for an SAE: the map default (ami) means "not chosen"."""
    return DEFAULT_OBJECTIVE if config.objective == Metric.AMI else config.objective


@dataclasses.dataclass
class SaePlan(_Plan):
    """A map sweep's plan with the SAE's default settings (``base``: SaeConfig)."""

    def config_of(self, point: dict):
        from latentscape.jobs.sae import settings_for

        config = dataclasses.replace(self.base, **{**self.space.fixed, **point})
        settings_for(config, self.space.width)  # k above features: a failed trial, not a crash
        return config

    def searched_config(self, trial_params: dict):
        return self.config_of(trial_params)

    def best_config(self, trial_params: dict):
        return self.config_of(trial_params)

    def default_point(self) -> dict | None:
        from latentscape.jobs.sae import settings_for

        settings = settings_for(self.base, self.space.width)
        return self.space.point_of({Param.FEATURES: settings.features, Param.K: settings.k,
                                    Param.LEARNING_RATE: settings.learning_rate, Param.EPOCHS: settings.epochs,
                                    Param.BATCH_SIZE: settings.batch_size, Param.AUX_COEF: settings.aux_coef})


def sae_plan(config, store, experiment: str | None) -> SaePlan:
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.core.mapping import ConfigError
    from latentscape.jobs.core.search_space import parse_sae_space
    from latentscape.jobs.sae import DIRECTIONS, SaeConfig

    extraction = load_extraction(store, config.run)
    layer = max(extraction.layers) if config.layer is None else extraction.check_layer(config.layer)
    width = int(extraction.params.get(Param.DIM) or extraction.embedding(layer).shape[1])
    try:
        space = parse_sae_space(config.space, width)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    objective = objective_of(config)
    direction = config.direction or DIRECTIONS[objective]
    base = SaeConfig(run=extraction.run_id, layer=layer, seed=config.seed)
    spec = {"run": extraction.run_id, "layer": layer, "objective": objective, "direction": direction,
            "space": space.to_dict(), "seed": config.seed, "target": "sae"}
    storage_url = config.storage or store.backend.optuna_url
    experiment_id = store.experiment_id(experiment) if experiment else extraction.experiment_id
    return SaePlan(extraction, layer, None, space, base, objective, direction, spec,
                   config.study or study_name_for(spec), storage_url, experiment_id,
                   experiment or extraction.experiment_name, labels=extraction.labels)


class SaeTarget:
    """A sweep whose trials train sparse autoencoders (a
    :class:`~latentscape.jobs.sweep.targets.SweepTarget`)."""

    def __init__(self, config: SweepConfig, plan: SaePlan):
        self.config, self.plan = config, plan
        self.data = None  # the layer's rows (SaeData), loaded once per process

    @staticmethod
    def precheck(config: SweepConfig) -> None:
        """What can be checked before the store is opened."""
        from latentscape.jobs.sae import DIRECTIONS

        objective = objective_of(config)
        if objective not in DIRECTIONS:
            raise UsageError(f"unknown objective {objective!r} for --target sae",
                             f"choose one of {', '.join(DIRECTIONS)}")
        if config.fixed:
            raise UsageError("-r/-c pin map settings; --target sae takes its settings from --space",
                             "write them in a --space file (target: sae, params: {k: 32, ...})")
        if config.search_sample is not None:
            raise UsageError("--search-sample subsamples a map sweep's trials and --target sae trains on every row",
                             "drop --search-sample")
        if config.holdout is not None or config.search_epochs is not None:
            raise UsageError("--holdout and --search-epochs are map sweep settings",
                             "drop them: an SAE trial scores its own held-out rows (holdout.<score>)")

    @staticmethod
    def make_plan(config: SweepConfig, store, experiment: str | None) -> SaePlan:
        return sae_plan(config, store, experiment)

    # -- trials ------------------------------------------------------------------------
    def load(self) -> None:
        from latentscape.jobs.sae import load_data

        self.data = load_data(self.plan.extraction, self.plan.layer)

    def fit(self, config):
        from latentscape.jobs.sae import fit, settings_for

        return fit(self.data, settings_for(config, self.plan.space.width))

    def params(self, config) -> dict[str, Any]:
        from latentscape.jobs.sae import sae_params, settings_for

        return sae_params(config, settings_for(config, self.plan.space.width), self.data)

    def sweep_params(self) -> dict[str, Any]:
        plan, config = self.plan, self.config
        return {
            Param.TARGET: "sae", Param.LAYER: plan.layer, Param.TRIALS: config.trials,
            Param.OBJECTIVE: plan.objective, Param.DIRECTION: plan.direction,
            Param.SAMPLER: f"TPESampler(seed={config.seed}, constant_liar=True)",
            Param.STORAGE: masked(plan.storage_url), Param.STUDY_NAME: plan.study_name,
            Param.SEARCH_SPACE: plan.space.to_json(), Param.SEED: config.seed,
            Param.N_JOBS: config.n_jobs, Param.WORKERS: config.workers,
        }

    def trials_columns(self) -> TrialColumns:
        """The searched settings as ``params_<name>`` (Optuna's own trials_dataframe naming,
        which the Sweeps page reads), not bare score-like names; then the sae job's scores."""
        from latentscape.jobs.sae import SCORE_NAMES

        return TrialColumns(scores=tuple(SCORE_NAMES), param_prefix="params_")

    # -- the best SAE ------------------------------------------------------------------
    def log_best(self, log, records: SweepRecords) -> tuple[dict[str, float], dict[str, Any]]:
        """Re-train the best trial from its settings and log it whole in the sweep run."""
        from latentscape.jobs.sae import find_directions, log_fit, replay_diff, settings_for

        plan = self.plan
        best = records.study.best_trial
        config = plan.searched_config(best.params)
        result = self.fit(config)
        runs = records.runs_by_trial()
        best_run = runs.get(best.number)
        diff = float("nan")
        if best_run is not None:
            diff = replay_diff(records.store, best_run.id, best_run, result, b"")
        directions = (find_directions(records.store, plan.extraction, plan.layer, None)[1]
                      if plan.labels is not None else None)
        scores, _ = log_fit(log, result, self.data, top=config.top_samples, directions=directions)
        log.metrics({Metric.BEST_VALUE: best.value, Metric.BEST_TRIAL: best.number, Metric.REPLAY_MAX_ABS_DIFF: diff})
        records.log_best_params(log, best)
        log.table(Artifact.TRIALS, records.trials_frame(runs))
        log.table(Artifact.IMPORTANCES, records.importances())
        settings = settings_for(config, plan.space.width)
        log.json(Artifact.CONFIG, {**dataclasses.asdict(config), Param.FEATURES: settings.features,
                                   Kind.SWEEP.value: {**plan.spec, "study": plan.study_name,
                                                      "best_trial": best.number, "best_value": best.value}})
        details = {"best_trial": best.number,
                   "best_params": ", ".join(f"{k}={v}" for k, v in best.params.items()),
                   Metric.REPLAY_MAX_ABS_DIFF: diff}
        return scores, details
