"""``sweep --target sae``: the sweep's Optuna machinery (study, trial runs as children of
one sweep run, --resume, --workers) searching a sparse autoencoder's settings instead
of a map's.

Only what differs from a map sweep lives here: the plan (:func:`sae_plan`: the layer's
rows, an :class:`~latentscape.jobs.core.search_space.SaeSpace`, the objective among the sae job's
scores, ``holdout.variance_explained`` by default) and a worker (:class:`SaeWorker`)
whose trial is :func:`latentscape.jobs.sae.fit` and whose finish re-trains the best trial from its
settings (the scores must agree: ``replay_max_abs_diff``) and logs it whole in the sweep
run: weights, features.parquet, feature_labels.parquet, activations.parquet, beside
trials.parquet and importances.parquet. Every trial's params are its resolved settings,
so ``latentscape sae --from-run TRIAL`` replays it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from latentscape.jobs.sweep import _Plan, _Worker, study_name_for
from latentscape.tracking.contract import Artifact, Kind, Metric, Param
from latentscape.tracking.errors import UsageError
from latentscape.tracking.studies import masked

__all__ = ["DEFAULT_OBJECTIVE", "precheck", "sae_plan", "SaePlan", "SaeWorker"]

DEFAULT_OBJECTIVE = Metric.holdout(Metric.VARIANCE_EXPLAINED)


def objective_of(config) -> str:
    """The sweep's objective for an SAE: the map default (ami) means "not chosen"."""
    return DEFAULT_OBJECTIVE if config.objective == Metric.AMI else config.objective


def precheck(config) -> None:
    """What can be checked before the store is opened."""
    from latentscape.jobs.sae import DIRECTIONS

    objective = objective_of(config)
    if objective not in DIRECTIONS:
        raise UsageError(f"unknown objective {objective!r} for --target sae", f"choose one of {', '.join(DIRECTIONS)}")
    if config.fixed:
        raise UsageError("-r/-c pin map settings; --target sae takes its settings from --space",
                         "write them in a --space file (target: sae, params: {k: 32, ...})")
    if config.holdout is not None or config.search_epochs is not None:
        raise UsageError("--holdout and --search-epochs are map sweep settings",
                         "drop them: an SAE trial scores its own held-out rows (holdout.<score>)")


@dataclasses.dataclass
class SaePlan(_Plan):
    """A map sweep's plan with the SAE's data and default settings (``base``: SaeConfig)."""

    data: Any = None

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


class SaeWorker(_Worker):
    """A sweep worker whose trials train sparse autoencoders."""

    def _load(self) -> None:
        from latentscape.jobs.sae import load_data

        self.plan.data = load_data(self.plan.extraction, self.plan.layer)

    def _fit(self, config, *, with_view: bool = False):
        from latentscape.jobs.sae import fit, settings_for

        return fit(self.plan.data, settings_for(config, self.plan.space.width))

    def _params(self, config) -> dict[str, Any]:
        from latentscape.jobs.sae import sae_params, settings_for

        return sae_params(config, settings_for(config, self.plan.space.width), self.plan.data)

    def _score_names(self) -> tuple[str, ...]:
        from latentscape.jobs.sae import SCORE_NAMES

        return SCORE_NAMES

    def _sweep_params(self) -> dict[str, Any]:
        return {
            Param.TARGET: "sae", Param.LAYER: self.plan.layer, Param.TRIALS: self.config.trials,
            Param.OBJECTIVE: self.plan.objective, Param.DIRECTION: self.plan.direction,
            Param.SAMPLER: f"TPESampler(seed={self.config.seed}, constant_liar=True)",
            Param.STORAGE: masked(self.plan.storage_url), Param.STUDY_NAME: self.plan.study_name,
            Param.SEARCH_SPACE: self.plan.space.to_json(), Param.SEED: self.config.seed,
            Param.N_JOBS: self.config.n_jobs, Param.WORKERS: self.config.workers,
        }

    def _trials_frame(self, runs: dict[int, Any]):
        """trials.parquet with the searched settings as ``params_<name>`` (Optuna's own
        trials_dataframe naming, which the Sweeps page reads), not bare score-like names."""
        frame = super()._trials_frame(runs)
        names = {d.name for d in self.plan.space.dimensions} | set(self.plan.space.fixed)
        return frame.rename(columns={name: f"params_{name}" for name in names if name in frame})

    def _log_best(self, log) -> None:
        """Re-train the best trial from its settings and log it whole in the sweep run."""
        from latentscape.jobs.sae import find_directions, log_fit, replay_diff, settings_for

        plan = self.plan
        best = self.study.best_trial
        config = plan.searched_config(best.params)
        result = self._fit(config)
        runs = self._runs_by_trial()
        best_run = runs.get(best.number)
        diff = float("nan")
        if best_run is not None:
            diff = replay_diff(self.store, best_run.id, best_run, result, b"")
        directions = (find_directions(self.store, plan.extraction, plan.layer, None)[1]
                      if plan.labels is not None else None)
        scores, _ = log_fit(log, result, plan.data, top=config.top_samples, directions=directions)
        log.metrics({Metric.BEST_VALUE: best.value, Metric.BEST_TRIAL: best.number, Metric.REPLAY_MAX_ABS_DIFF: diff})
        self._log_best_params(log, best)
        log.table(Artifact.TRIALS, self._trials_frame(runs))
        log.table(Artifact.IMPORTANCES, self._importances())
        settings = settings_for(config, plan.space.width)
        log.json(Artifact.CONFIG, {**dataclasses.asdict(config), Param.FEATURES: settings.features,
                                   Kind.SWEEP.value: {**plan.spec, "study": plan.study_name,
                                                      "best_trial": best.number, "best_value": best.value}})
        self._best_scores = scores
        self._best_details = {"best_trial": best.number,
                              "best_params": ", ".join(f"{k}={v}" for k, v in best.params.items()),
                              Metric.REPLAY_MAX_ABS_DIFF: diff}
