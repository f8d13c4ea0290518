"""The MLflow side of a study's trials (a mixin of the sweep's worker): each trial's
run, the runs a dead process left behind (stale trials, orphan and abandoned runs,
trials Optuna never recorded, recorded trials whose run is missing), and the
tables of all trials (trials.parquet, importances.parquet)."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from typing import Any

from latentscape.tracking.contract import Column, Kind, Metric, Tag


class _Bookkeeping:
    """Trial runs and their cleanup; uses the worker's store, plan, target, study, writer
    and sweep run."""

    # -- trial runs --------------------------------------------------------------------
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
                if run.tags.get(Tag.TRIAL_NUMBER) == str(trial.number):
                    self.store.kill(run.id, "the process running this trial died (no heartbeat)",
                                    tags={Tag.TRIAL_STATE: "FAIL"})

    def _open_trial_run(self, number: int, tags: dict[str, Any] | None = None):
        """The run of trial ``number`` (a child of the sweep run), written by the writer thread."""
        from latentscape.tracking.run_writer import background_run

        return background_run(self.writer, self.plan.experiment_id, Kind.TRIAL, run_name=f"trial {number}",
                              parent_run_id=self.sweep_run_id, source_run_id=self.plan.extraction.run_id,
                              tags={**self._sweep_tags(), Tag.TRIAL_NUMBER: number, **(tags or {})})

    def _log_trial(self, run, config, result, state: str, started: float) -> None:
        """A fitted trial's settings (its replayable config), state, scores and duration."""
        run.log(params=self.target.params(config), tags={Tag.TRIAL_STATE: state},
                metrics={**result.scores, **result.durations, Metric.TRIAL_SECONDS: time.perf_counter() - started})

    def _log_unlogged_trials(self) -> None:
        """--resume: a COMPLETE trial without its run (deleted, or written by an older
        version, which recorded the trial before its run) is replayed from its settings
        and logged. A trial's run is written before Optuna records the trial, so a live
        worker's trial is never taken for one whose run was lost."""
        for trial in self._unwritten_trials():
            config = self.plan.searched_config(trial.params)
            started = time.perf_counter()
            result = self.target.fit(config)
            note = "logged by --resume: a replay of the trial, whose run was missing"
            with self._open_trial_run(trial.number, {Tag.NOTE: note}) as pending:
                self._log_trial(pending, config, result, "COMPLETE", started)

    def _unwritten_trials(self) -> list:
        """COMPLETE trials without a FINISHED run that says COMPLETE."""
        from optuna.trial import TrialState

        # Optuna first, then MLflow: every trial complete at the first read had its run
        # written before it, so the second read finds it.
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        written = {number for number, run in self.runs_by_trial().items()
                   if run.status == "FINISHED" and run.tags.get(Tag.TRIAL_STATE) == "COMPLETE"}
        return [t for t in complete if t.number not in written]

    def runs_by_trial(self) -> dict[int, Any]:
        """Trial number -> its MLflow run (a finished one where a number has several)."""
        found: dict[int, Any] = {}
        for run in self._trial_runs():
            number = run.tags.get(Tag.TRIAL_NUMBER)
            if number is None:
                continue
            if int(number) not in found or run.status == "FINISHED":
                found[int(number)] = run
        return found

    # -- stale trials ------------------------------------------------------------------
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
        """End the trial runs of processes that died, and withdraw the results Optuna
        never recorded, so MLflow and Optuna agree.

        MLflow is read first, then Optuna: a trial run is created after its trial starts
        and written before its trial ends, so a trial that is RUNNING or COMPLETE at the
        second read has a live or written run, and anything else was left by a dead process.
        """
        from optuna.trial import TrialState

        runs = self._trial_runs()
        states = {str(t.number): t.state for t in self.study.get_trials(deepcopy=False)}
        for run in runs:
            number = run.tags.get(Tag.TRIAL_NUMBER)
            if number is None or states.get(number) in (TrialState.RUNNING, TrialState.COMPLETE):
                continue
            if run.status == "RUNNING":
                # Read again: a trial that failed in its own process has its run ended by now.
                if self.store.get_run(run.id).status == "RUNNING":
                    self.store.kill(run.id, "the process died before the run ended",
                                    tags={Tag.TRIAL_STATE: "FAIL"})
            elif run.status == "FINISHED" and run.tags.get(Tag.TRIAL_STATE) == "COMPLETE":
                # Logged COMPLETE, but its process died (or lost the storage) before Optuna
                # recorded the value: not a result; Optuna failed it and runs it again.
                self.store.kill(run.id,
                                "Optuna never recorded this trial's value (its process died); it was run again",
                                tags={Tag.TRIAL_STATE: "FAIL"})

    def _end_abandoned_sweep_runs(self) -> None:
        """Sweep runs of this study left RUNNING by a process killed while starting it."""
        runs = self.store.find_runs(self.plan.experiment_id, kind=Kind.SWEEP, tags={Tag.STUDY: self.plan.study_name},
                                    status="RUNNING", max_results=1000)
        for run in runs:
            if run.id != self.sweep_run_id:
                self.store.kill(run.id, "the process died before the run ended")

    # -- the tables --------------------------------------------------------------------
    def trials_frame(self, runs: dict[int, Any]):
        """``trials.parquet``: trial, state, value, duration_s, run_id, each param, each score
        (named as the target's :class:`~latentscape.jobs.sweep.targets.TrialColumns` say)."""
        import pandas as pd

        columns = self.target.trials_columns()
        rows = []
        for t in self.study.get_trials(deepcopy=False):
            duration = (t.datetime_complete - t.datetime_start).total_seconds() \
                if t.datetime_complete and t.datetime_start else None
            run = runs.get(t.number)
            row = {Column.TRIAL: t.number, Column.STATE: t.state.name, Column.VALUE: t.value,
                   Column.DURATION: duration, Column.RUN_ID: run.id if run is not None else None}
            row.update({columns.param_prefix + name: value for name, value in t.params.items()})
            metrics = run.metrics if run is not None else {}
            row.update({name: metrics.get(name, math.nan) for name in columns.scores})
            rows.append(row)
        return pd.DataFrame(rows)

    def importances(self):
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
