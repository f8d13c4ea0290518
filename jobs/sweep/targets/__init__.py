"""What a sweep's trials fit (``latentscape sweep --target``): one registry entry a target.

The sweep's machinery (:mod:`latentscape.jobs.sweep._study`'s worker and its mixins: the
Optuna study, one trial run per trial under one sweep run, ``--resume``, ``--workers``, the
claim of the best-map log) is the same for every target; what a trial fits, scores and logs
comes from a :class:`SweepTarget`, looked up by name in :data:`TARGETS`:

- ``map`` (:mod:`.map`): a map of the layer (reduce, cluster, score), the default;
- ``sae`` (:mod:`.sae`): a sparse autoencoder of the layer (``latentscape sae``'s training).

``--target``'s choices, :func:`latentscape.jobs.sweep.precheck` and
:func:`latentscape.jobs.sweep.sweep` derive from :data:`TARGETS`: a new target is one module
here and one line in :data:`TARGETS` (docs/DEVELOPING.md, "A sweep target").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from latentscape.jobs.sweep import SweepConfig
    from latentscape.jobs.sweep._planning import _Plan

__all__ = ["TARGETS", "SweepTarget", "SweepRecords", "TrialColumns"]


@dataclass(frozen=True)
class TrialColumns:
    """How ``trials.parquet`` names a target's columns, after trial, state, value,
    duration_s and run_id: each searched setting as ``param_prefix + name`` (Optuna's
    params), then each of ``scores`` (a trial run's metric; NaN where it has none)."""

    scores: tuple[str, ...]
    param_prefix: str = ""


class SweepRecords(Protocol):
    """What :meth:`SweepTarget.log_best` reads from the sweep's worker once the study has
    all its trials: the study, the store, the trials' runs and tables."""

    study: Any  # the optuna Study (best_trial, get_trials)
    store: Any  # the tracking Store

    def runs_by_trial(self) -> dict[int, Any]:
        """Trial number -> its trial run (a RunRecord)."""

    def trials_frame(self, runs: dict[int, Any]) -> Any:
        """``trials.parquet`` (a DataFrame) of every trial, named as :class:`TrialColumns` says."""

    def importances(self) -> Any:
        """``importances.parquet`` (a DataFrame: param, importance; empty when too few trials)."""

    def log_best_params(self, log, best, refit: dict | None = None) -> None:
        """The best trial's settings as ``best.<name>`` params of the sweep run, and ``refit``
        (settings re-fitted otherwise) as ``refit.<name>`` (tags once logged)."""


class SweepTarget(Protocol):
    """What one trial of a sweep fits. The worker calls, in this order:

    1. ``precheck(config)`` (static): what can be checked before the store is opened
       (objective, pinned settings); raises UsageError.
    2. ``make_plan(config, store, experiment)`` (static): the study's plan (a ``_Plan``: the
       extraction and layer, objective and direction, search space, ``spec``, study name and
       storage), resolved before the study is touched. The plan turns Optuna's points into a
       trial's config: ``config_of(point)``, ``searched_config(trial.params)``,
       ``default_point()`` (the first trial: the best is never worse than the defaults).
    3. ``Target(config, plan)``: this process's target; ``load()`` once, before its first
       trial: the data every trial shares (the layer's rows, shared neighbour graphs).
    4. For each trial: ``fit(trial_config)``, a result with ``scores`` and ``durations``
       (``{metric: float}``; the objective is ``scores[plan.objective]``), and
       ``params(trial_config)``, the trial run's params: the resolved config, which replays it.
    5. ``sweep_params()``: the sweep run's params; ``trials_columns()``: trials.parquet's
       columns.
    6. ``log_best(log, records)`` in the one process that logs the best trial: re-fit it
       from its settings (the scores must agree: ``replay_max_abs_diff``) and log it whole
       in the sweep run ``log``, trials.parquet and importances.parquet included; returns
       (scores, details) of the sweep's JobResult.
    """

    config: SweepConfig
    plan: _Plan

    def __init__(self, config: SweepConfig, plan: _Plan) -> None: ...

    @staticmethod
    def precheck(config: SweepConfig) -> None: ...

    @staticmethod
    def make_plan(config: SweepConfig, store, experiment: str | None) -> _Plan: ...

    def load(self) -> None: ...

    def fit(self, config) -> Any: ...

    def params(self, config) -> dict[str, Any]: ...

    def sweep_params(self) -> dict[str, Any]: ...

    def trials_columns(self) -> TrialColumns: ...

    def log_best(self, log, records: SweepRecords) -> tuple[dict[str, float], dict[str, Any]]: ...


# Imported after the protocol: the targets' modules name TrialColumns.
from latentscape.jobs.sweep.targets.map import MapTarget  # noqa: E402
from latentscape.jobs.sweep.targets.sae import SaeTarget  # noqa: E402

TARGETS: dict[str, type[SweepTarget]] = {"map": MapTarget, "sae": SaeTarget}
