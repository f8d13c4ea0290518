"""The end of a study (a mixin of the worker): replay the best trial from its logged
settings (the scores must agree), re-fit it and the default trial at the full epochs
when fewer were searched, and log the best map in the sweep run."""

from __future__ import annotations

import math
import sys

from latentscape.tracking.contract import Artifact, Kind, Metric, Param, Tag
from latentscape.tracking.studies import masked

# Study system attribute claimed by the one worker that logs the best map for a target
# (the study's summed --trials): + the target, so a study extended later is logged again.
_ATTR_BEST_CLAIM = "latentscape.best_map_for."

SWEEP_COLLAPSE_FIX = ("sweep with --clusterer kmeans, or a --space whose min_cluster_size range stays below a "
                      "class's size")


class _Best:
    """The best map of the study; uses the worker's plan, study, store and sweep run."""

    def _claim_best(self, target: int) -> bool:
        """True for exactly one of the workers that finish the study's ``target`` together.

        A compare-and-set in the study's own storage: one INSERT of the study system
        attribute ``latentscape.best_map_for.<target>``; ``study_system_attributes`` is
        unique on (study_id, key), so the second worker's INSERT fails with IntegrityError
        whatever the timing (PostgreSQL: unique index; SQLite: BEGIN IMMEDIATE here).
        Optuna's own ``set_study_system_attr`` is no such claim: it updates an existing row.
        MLflow's params were not one either (immutable, but once per run, and a study can
        be extended later)."""
        import json

        from optuna.storages._rdb import models
        from sqlalchemy import exc, insert

        table = models.StudySystemAttributeModel.__table__
        study_id = self.storage.get_study_id_from_name(self.plan.study_name)
        try:
            with self.storage.engine.begin() as connection:
                connection.execute(insert(table).values(study_id=study_id, key=f"{_ATTR_BEST_CLAIM}{target}",
                                                        value_json=json.dumps(self.worker_id)))
        except exc.IntegrityError:
            return False
        return True

    def _release_best(self, target: int) -> None:
        """Give the claim back when logging the best map failed, so that a later worker can."""
        import contextlib

        from optuna.storages._rdb import models
        from sqlalchemy import delete

        table = models.StudySystemAttributeModel.__table__
        with contextlib.suppress(Exception):
            study_id = self.storage.get_study_id_from_name(self.plan.study_name)
            with self.storage.engine.begin() as connection:
                connection.execute(delete(table).where(table.c.study_id == study_id,
                                                       table.c.key == f"{_ATTR_BEST_CLAIM}{target}"))

    def _log_best(self, log) -> None:
        from latentscape.jobs.map import KEY_SCORES, collapse_warning, config_payload, log_cluster_table, map_frame, max_abs_diff

        from latentscape.jobs.core.mapping import with_view

        plan = self.plan
        best = self.study.best_trial
        # Replay the best trial from its logged settings: the scores must agree.
        trial_config = plan.searched_config(best.params)
        replay = self._fit(trial_config, with_view=False)
        runs = self._runs_by_trial()
        best_run = runs.get(best.number)
        diff = max_abs_diff(replay.scores, best_run.metrics) if best_run is not None else math.nan
        best, result = self._choose_map(best, replay, log) if plan.refit_epochs is not None else (best, replay)
        result = with_view(self.x, result, cache=self.cache)
        config = result.config

        log.metrics({**result.scores, Metric.BEST_VALUE: best.value, Metric.BEST_TRIAL: best.number,
                     Metric.REPLAY_MAX_ABS_DIFF: diff})
        # How far to trust the best map: chance baselines of its (tuning) label scores, and
        # its scores over the held-out samples, whose labels the search never read.
        from latentscape.jobs._trust import TrustSettings, holdout_metrics, map_trust

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
        fresh = {k: v for k, v in wanted.items() if k not in run.params}
        changed = {k: v for k, v in wanted.items() if k in run.params and run.params[k] != str(v)}
        if fresh:
            log.params(fresh)
        if changed:
            log.tags(changed)
