"""``sweep --target map`` (the default): each trial a map of the layer
(:func:`latentscape.jobs.core.mapping.fit_map`: reduce, cluster, score).

The plan is :func:`latentscape.jobs.sweep._planning._plan` (objective among the map scores,
search space, UMAP search and refit epochs, ``--holdout``'s split, ``--search-sample``'s rows).
Trials share the layer's k-NN graphs (:class:`~latentscape.jobs.core.mapping.NeighbourCache`);
with ``--holdout`` their label scores read the tuning rows only; with ``--search-sample`` they
map the plan's subsample. The best trial is replayed from its logged config, re-fitted with
the default trial at the full epochs when fewer were searched, and on all samples when the
trials mapped a subsample (the plan's ``best_config`` says how), and logged in the sweep run:
map.parquet (every sample), clusters.parquet, its trust and held-out scores.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

from latentscape.jobs.sweep._planning import _plan
from latentscape.jobs.sweep.targets import TrialColumns
from latentscape.tracking.contract import Artifact, Kind, Metric, Param, Tag
from latentscape.tracking.errors import UsageError
from latentscape.tracking.studies import masked

if TYPE_CHECKING:
    from latentscape.jobs.sweep import SweepConfig
    from latentscape.jobs.sweep._planning import _Plan
    from latentscape.jobs.sweep.targets import SweepRecords

__all__ = ["MapTarget", "SWEEP_COLLAPSE_FIX"]

SWEEP_COLLAPSE_FIX = ("sweep with --clusterer kmeans, or a --space whose min_cluster_size range stays below a "
                      "class's size")


class MapTarget:
    """A sweep whose trials fit maps (a :class:`~latentscape.jobs.sweep.targets.SweepTarget`)."""

    def __init__(self, config: SweepConfig, plan: _Plan):
        self.config, self.plan = config, plan
        self.x = None  # (rows, n_features): the rows every trial maps (the layer, or its subsample)
        self.labels = None  # (rows,) the labels a trial's map reads (None: unlabelled, or --holdout on all rows)
        self.cache = None  # the k-NN graphs and score references every trial shares
        self._all = None  # --search-sample: (every sample's x, its NeighbourCache), for the refit

    @staticmethod
    def precheck(config: SweepConfig) -> None:
        """What can be checked before the store is opened: objective, names, pinned settings."""
        from latentscape.jobs.core.mapping import ConfigError, check_settings
        from latentscape.jobs.core.scores import SCORE_NAMES
        from latentscape.jobs.core.search_space import SearchSpace

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

    @staticmethod
    def make_plan(config: SweepConfig, store, experiment: str | None) -> _Plan:
        return _plan(config, store, experiment)

    # -- trials ------------------------------------------------------------------------
    def load(self) -> None:
        """Load the layer once; share k-NN graphs and score references across trials."""
        from latentscape.jobs.core.mapping import NeighbourCache

        plan = self.plan
        x = plan.extraction.embedding(plan.layer)
        if plan.sample is None:
            # With --holdout no map gets the labels: fit scores the tuning rows only.
            self.x, self.labels = x, plan.labels if plan.tune is None else None
        else:  # a subsample of tuning rows only: its labels are all the trials' scores read
            self.x, self.labels = x[plan.sample], None if plan.labels is None else plan.labels[plan.sample]
        self.cache = NeighbourCache(self.x, hint_k=self._hint(), store=self._graph_store())

    def _graph_store(self):
        from latentscape.jobs._knn_store import layer_graph_store

        return layer_graph_store(self.plan.extraction, self.plan.layer)

    def _hint(self) -> int:
        width = self.plan.base.knn_width or 0
        return int(self.plan.space.largest(Param.reducer_param("n_neighbors"), width) or 0) \
            if self.plan.base.knn != "none" else 0

    def fit(self, config):
        """One map of the trials' rows; with --holdout its label scores read the tuning rows only."""
        scored = self.plan.tune if self.plan.sample is None else None
        return self._fit(self.x, self.labels, self.cache, config, scored)

    def fit_all(self, config):
        """One map of every sample (the refit of a search on a subsample), scored as ``fit`` scores."""
        if self.plan.sample is None:
            return self.fit(config)
        from latentscape.jobs.core.mapping import NeighbourCache

        if self._all is None:
            x = self.plan.extraction.embedding(self.plan.layer)
            self._all = x, NeighbourCache(x, hint_k=self._hint(), store=self._graph_store())
        x, cache = self._all
        labels = self.plan.labels if self.plan.tune is None else None
        return self._fit(x, labels, cache, config, self.plan.tune)

    def _all_samples(self):
        """(x, cache) of every sample: the layer the sweep's map is of."""
        return (self.x, self.cache) if self._all is None else self._all

    def _fit(self, x, labels, cache, config, scored):
        from latentscape.jobs._trust import score_rows
        from latentscape.jobs.core.mapping import fit_map

        result = fit_map(x, labels, config, cache=cache, with_view=False, threads=None)
        return result if scored is None else score_rows(result, self.plan.labels, scored)

    def _search_sample(self) -> int | None:
        return None if self.plan.sample is None else len(self.plan.sample)

    def params(self, config) -> dict[str, Any]:
        """A trial's params: its resolved map config, the held-out fraction (replays need it)
        and the rows of its subsample (--search-sample)."""
        from latentscape.jobs.map import map_params

        return {**map_params(config, self.plan.layer), Param.HOLDOUT: self.config.holdout,
                Param.SEARCH_SAMPLE: self._search_sample()}

    def sweep_params(self) -> dict[str, Any]:
        plan, config, base = self.plan, self.config, self.plan.base
        return {
            Param.LAYER: plan.layer, Param.TRIALS: config.trials, Param.OBJECTIVE: plan.objective,
            Param.DIRECTION: plan.direction, Param.SAMPLER: f"TPESampler(seed={config.seed}, constant_liar=True)",
            Param.STORAGE: masked(plan.storage_url), Param.STUDY_NAME: plan.study_name,
            Param.SEARCH_SPACE: plan.space.to_json(), Param.SEED: config.seed,
            Param.N_JOBS: config.n_jobs, Param.WORKERS: config.workers,
            Param.SEARCH_EPOCHS: plan.search_epochs, Param.REFIT_EPOCHS: plan.refit_epochs,
            Param.SEARCH_SAMPLE: self._search_sample(),
            Param.REDUCER: base.reducer, Param.CLUSTERER: base.clusterer,
            Param.NOISE_POLICY: base.noise_policy, Param.KNN: base.knn, Param.KNN_K: base.knn_k,
            Param.SCORE_K: base.score_k, Param.SCORE_SAMPLE: base.score_sample, Param.HOLDOUT: config.holdout,
        }

    def trials_columns(self) -> TrialColumns:
        """Optuna's param names as they are (``reducer.n_neighbors``), then every map score."""
        from latentscape.jobs.core.scores import SCORE_NAMES

        return TrialColumns(scores=tuple(SCORE_NAMES))

    # -- the best map ------------------------------------------------------------------
    def log_best(self, log, records: SweepRecords) -> tuple[dict[str, float], dict[str, Any]]:
        from latentscape.jobs.map import KEY_SCORES, collapse_warning, config_payload, log_cluster_table, map_frame, max_abs_diff

        from latentscape.jobs.core.mapping import with_view

        plan = self.plan
        best = records.study.best_trial
        scaled = plan.scaled_counts(best.params)  # refit.<name>: the searched best's counts on all samples
        # Replay the best trial from its logged settings: the scores must agree.
        trial_config = plan.searched_config(best.params)
        replay = self.fit(trial_config)
        runs = records.runs_by_trial()
        best_run = runs.get(best.number)
        diff = max_abs_diff(replay.scores, best_run.metrics) if best_run is not None else math.nan
        best, result = self._choose_map(records.study, best, replay, log) if plan.refits else (best, replay)
        x, cache = self._all_samples()
        result = with_view(x, result, cache=cache)
        config = result.config

        log.metrics({**result.scores, Metric.BEST_VALUE: best.value, Metric.BEST_TRIAL: best.number,
                     Metric.REPLAY_MAX_ABS_DIFF: diff})
        # How far to trust the best map: chance baselines of its (tuning) label scores, and
        # its scores over the held-out samples, whose labels the search never read.
        from latentscape.jobs._trust import TrustSettings, holdout_metrics, map_trust

        log.metrics(map_trust(x, plan.labels, result, TrustSettings(), rows=plan.tune))
        warning = collapse_warning(result.scores, plan.labels, SWEEP_COLLAPSE_FIX)
        if warning:
            print(f"latentscape sweep: warning: {warning}", file=sys.stderr)
            log.tags({Tag.WARNING: warning})
        held_out = holdout_metrics(plan.labels, result.clusters, plan.held) if plan.held is not None else {}
        log.metrics(held_out)
        records.log_best_params(log, best, scaled)
        log.table(Artifact.MAP, map_frame(plan.extraction, result.coords, result.clusters))
        log_cluster_table(log, plan.extraction, result)  # clusters.parquet of the best map
        log.table(Artifact.TRIALS, records.trials_frame(runs))
        log.table(Artifact.IMPORTANCES, records.importances())
        payload = config_payload(config, source_run=plan.extraction.run_id, layer=plan.layer)
        payload[Kind.SWEEP.value] = {**plan.spec, "study": plan.study_name, "storage": masked(plan.storage_url),
                                     "best_trial": best.number, "best_value": best.value}
        log.json(Artifact.CONFIG, payload)
        scores = {k: result.scores[k] for k in KEY_SCORES if k in result.scores}
        scores.update({k: v for k, v in held_out.items() if k == Metric.holdout(plan.objective)})
        details = {"best_trial": best.number, **({Tag.WARNING: warning} if warning else {}),
                   "best_params": ", ".join(f"{k}={v}" for k, v in best.params.items()),
                   Metric.REPLAY_MAX_ABS_DIFF: diff}
        return scores, details

    def _choose_map(self, study, best, replay, log):
        """Fewer epochs were searched, or a subsample: re-fit the best trial, and the default
        trial, at the full epochs and on all samples (``refit_value``, step = trial number).
        The sweep's map is the one with the best objective among those and the best trial as
        searched (``replay``, a candidate only when it mapped every sample), so it is never
        worse than the search found nor than the defaults at full epochs; its config, epochs
        included, replays it. Returns (its trial, its map)."""
        from optuna.trial import TrialState

        point = self.plan.default_point()
        default = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                        if t.params == point), None)
        candidates = [(best, replay)] if self.plan.sample is None else []
        configs = [(best, self.plan.best_config(best.params))]
        if default is not None:
            default_config = self.plan.best_config(default.params, default=True)
            if default_config != configs[0][1]:
                configs.append((default, default_config))
        for trial, config in configs:
            refit = self.fit_all(config)
            log.metric_rows([(Metric.REFIT_VALUE, refit.scores[self.plan.objective], trial.number)])
            candidates.append((trial, refit))
        sign = 1 if self.plan.direction == "maximize" else -1

        def objective(candidate) -> float:
            value = candidate[1].scores[self.plan.objective]
            return sign * value if math.isfinite(value) else -math.inf

        return max(candidates, key=objective)  # ties: the first, the best trial as searched
