"""The end of a study (a mixin of the worker): the claim that makes exactly one of the
workers finishing together log the best trial, and the best trial's settings as params
of the sweep run. What is re-fitted and logged of the best trial is the target's
(:meth:`~latentscape.jobs.sweep.targets.SweepTarget.log_best`)."""

from __future__ import annotations

from latentscape.tracking.contract import Param

# Study system attribute claimed by the one worker that logs the best map for a target
# (the study's summed --trials): + the target, so a study extended later is logged again.
_ATTR_BEST_CLAIM = "latentscape.best_map_for."


class _Best:
    """The best trial's claim and params; uses the worker's plan, study, store, storage and
    sweep run."""

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

    def log_best_params(self, log, best, refit: dict | None = None) -> None:
        # Params are immutable: the first finish logs best.* (and refit.*: settings the
        # best map was re-fitted with where they differ); a later one (more trials added
        # to the study) records a changed best as tags of the same names.
        run = self.store.get_run(self.sweep_run_id)
        wanted = {Param.BEST_PREFIX + k: v for k, v in best.params.items()}
        wanted[Param.BEST_PREFIX + "trial"] = best.number
        wanted.update({Param.REFIT_PREFIX + k: v for k, v in (refit or {}).items()})
        fresh = {k: v for k, v in wanted.items() if k not in run.params}
        changed = {k: v for k, v in wanted.items() if k in run.params and run.params[k] != str(v)}
        if fresh:
            log.params(fresh)
        if changed:
            log.tags(changed)
