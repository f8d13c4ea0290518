"""One process's part of a study (:class:`_Worker`): create or join the study, open or
attach the sweep run, run trials until the study has its target (every process's
quotas summed), and, in the last process, log the best trial. What a trial fits, its
params and scores, and what is logged of the best trial come from the sweep's target
(:class:`~latentscape.jobs.sweep.targets.SweepTarget`); the worker is the same for all."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from latentscape.jobs._result import JobResult
from latentscape.jobs.sweep._best import _Best
from latentscape.jobs.sweep._bookkeeping import _Bookkeeping
from latentscape.jobs.sweep._workers import _Helpers
from latentscape.tracking.contract import Kind, Metric, Tag
from latentscape.tracking.errors import UsageError
from latentscape.tracking.studies import dispose, masked, open_storage

if TYPE_CHECKING:
    from latentscape.jobs.sweep import SweepConfig
    from latentscape.jobs.sweep.targets import SweepTarget

# Optuna user attributes (the study's and each trial's), shared by every worker process.
_ATTR_SWEEP_RUN = "latentscape.sweep_run_id"
_ATTR_SPEC = "latentscape.spec"
_ATTR_QUOTA = "latentscape.quota."  # + worker id -> trials that worker asked for
_SURPLUS = "surplus: the study already has its trials"

_JOIN_WAIT_S = 60.0
_MAX_CONSECUTIVE_FAILURES = 10


class _Worker(_Bookkeeping, _Helpers, _Best):
    """One process's part of a study: its trials, and the final logging if it is last.
    Its run bookkeeping, helper processes and best-trial claim are the mixins it is made
    of; ``target`` fits the trials (its ``plan`` is the study's). To the target's
    ``log_best`` it is the :class:`~latentscape.jobs.sweep.targets.SweepRecords`."""

    def __init__(self, config: SweepConfig, target: SweepTarget, store):
        self.config, self.target, self.plan, self.store = config, target, target.plan, store
        self.worker_id = uuid.uuid4().hex[:12]
        self.sweep_run_id: str | None = None
        self.study = None
        self.storage = None  # the process's one Optuna storage (one engine), disposed when run() ends
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
    def _sampler(self, offset: int):
        import optuna

        # Each worker its own seed: two workers with one seed would propose the same points;
        # the constant liar keeps parallel workers from proposing near the others' running trials.
        self.sampler_offset = offset
        return optuna.samplers.TPESampler(seed=self.config.seed + offset, constant_liar=True)

    def _open_study(self) -> bool:
        """Create the study (True) or load the existing one (False)."""
        import optuna

        storage = self.storage = open_storage(self.plan.storage_url, self.config.heartbeat, self._on_stale)
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

    def study_target(self) -> int:
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

    # -- the run -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _new_sweep_run(self):
        """Open the study's sweep run (child of --tune's layers run, else of the extraction)
        and record it in the study, so other workers find it."""
        from latentscape.tracking.run_log import tracked_run

        extraction = self.plan.extraction
        with tracked_run(self.store, self.plan.experiment_id, Kind.SWEEP,
                         run_name=f"sweep · layer {self.plan.layer} · {self.plan.objective}",
                         parent_run_id=self.config.parent_run or extraction.run_id,
                         source_run_id=extraction.run_id, tags=self._sweep_tags()) as log:
            self.sweep_run_id = log.run_id
            log.params(self.target.sweep_params())
            self.study.set_user_attr(_ATTR_SWEEP_RUN, log.run_id)
            yield log

    def run(self) -> JobResult:
        """Work on the study; its storage's connections are closed however it ends, and
        PostgreSQL refusing a connection ("too many clients") is one line naming the setting."""
        from latentscape.tracking.connections import connection_refusal

        try:
            return self._run()
        except Exception as error:
            refused = connection_refusal(error, where="a sweep worker")
            if refused is not None:
                raise refused from None
            raise
        finally:
            dispose(self.storage)

    def _run(self) -> JobResult:
        from latentscape.tracking.run_log import attach

        created = self._open_study()
        if created:
            with self._new_sweep_run() as log:
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
            with self._new_sweep_run() as log:
                return self._work(log)
        with attach(self.store, self.sweep_run_id) as log:
            return self._work(log)

    def _sweep_tags(self) -> dict[str, Any]:
        return {**self.plan.extraction.lineage_tags(), Tag.LAYER: self.plan.layer, Tag.STUDY: self.plan.study_name}

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

    def _work_here(self, log) -> JobResult:
        self.target.load()  # the data every trial of this process shares

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
                    # A helper died: its running trial goes stale and its run ends KILLED,
                    # then this process runs what is missing.
                    self.writer.flush()  # this process's own runs end before orphans are sought
                    self._settle_stale()
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
        remaining = max(0, self.study_target() - complete)
        if remaining:
            self._optimize(remaining)

    def _optimize(self, remaining: int) -> None:
        from latentscape.jobs._progress import progress

        bar_context = progress(remaining, "sweep trials", unit="trial") if self.config.progress \
            else contextlib.nullcontext(None)
        self._complete_before = self._counts()[0]
        with bar_context as bar:
            self.bar = bar
            # Loop: a stop can come while a sibling thread's trial is still running, and
            # that trial may fail; go on until the study's trials are complete or in flight.
            while self.failures_in_a_row < _MAX_CONSECUTIVE_FAILURES and not self.writer.failed:
                complete, running = self._counts()
                if complete + len(running) >= self.study_target():
                    break
                self.study.optimize(self._objective, n_trials=None, n_jobs=self.config.n_jobs, catch=(Exception,),
                                    callbacks=[self._after_trial], gc_after_trial=False)

    def _enough(self, number: int) -> bool:
        complete, running = self._counts()
        return complete + sum(1 for n in running if n < number) >= self.study_target()

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
        if complete + len(running) >= self.study_target():
            study.stop()

    def _objective(self, trial) -> float:
        import optuna

        from latentscape.jobs.core.mapping import ConfigError

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
        # artifact per trial cost ~50 ms on local SQLite). The writer thread creates the
        # run while the map is fitted; the block ends once the run is written, so Optuna
        # records no trial whose run another worker could take for lost.
        with self._open_trial_run(trial.number) as run:
            config = None
            try:
                config = plan.config_of(point)
                result = self.target.fit(config)
            except BaseException as error:
                params = self.target.params(config) if config is not None else {}
                run.log(params=params, tags={Tag.TRIAL_STATE: "FAIL"})
                if isinstance(error, ConfigError):
                    raise ValueError(str(error)) from None
                raise
            value = float(result.scores[plan.objective])
            self._log_trial(run, config, result, "COMPLETE" if math.isfinite(value) else "FAIL", started)
        with self.lock:
            self.ran += 1
        return value

    # -- the end -----------------------------------------------------------------------
    def _finish(self, log) -> JobResult:
        from optuna.trial import TrialState

        complete, running = self._counts()
        target = self.study_target()
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
        if not self._claim_best(target):  # a worker that finished at the same moment logs it
            details["note"] = "another worker finished at the same moment and logs the best map"
            return self._result(details)
        try:
            self._best_scores, self._best_details = self.target.log_best(log, self)
        except BaseException:
            self._release_best(target)  # the next worker to finish (or --resume) logs it instead
            raise
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
