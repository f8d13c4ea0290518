"""The run as the rest of the project sees it: :class:`RunRecord`, our own record.

The store hands out records, not MLflow's ``Run`` (``run.info.*`` / ``run.data.*``), so jobs,
the notebook API and the UI never depend on MLflow's entity shapes; :func:`run_record` is
the one place that reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from latentscape.tracking.contract import MLFLOW_PARENT_RUN_ID, Tag

__all__ = ["RunRecord", "run_record"]


@dataclass(frozen=True, eq=False)
class RunRecord:
    """One tracked run, read once.

    ``status``: MLflow's run status (RUNNING, FINISHED, FAILED, KILLED, SCHEDULED);
    ``tags`` / ``params``: strings as logged; ``metrics``: the latest value of each metric
    (infinities come back as +-1.8e308, NaN stays NaN); ``start_ms`` / ``end_ms``:
    milliseconds since the epoch, ``end_ms`` None while the run has not ended. The three
    mappings are read-only views."""

    id: str
    experiment_id: str
    name: str
    status: str
    tags: Mapping[str, str]
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    start_ms: int | None
    end_ms: int | None
    artifact_uri: str

    @property
    def kind(self) -> str | None:
        """The run's ``kind`` tag (a :class:`~latentscape.tracking.contract.Kind` value), None
        for a run latentscape did not make."""
        return self.tags.get(Tag.KIND)

    @property
    def parent_id(self) -> str | None:
        """The id of the run this one is a child of (MLflow's parent link), else None."""
        return self.tags.get(MLFLOW_PARENT_RUN_ID)

    @property
    def source_run_id(self) -> str | None:
        """The run this one was computed from (its ``source_run`` tag; None or "" if none)."""
        return self.tags.get(Tag.SOURCE_RUN)

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"


def run_record(run: Any) -> RunRecord:
    """A :class:`RunRecord` of an ``mlflow.entities.Run``: the only reader of MLflow's shape."""
    info, data = run.info, run.data
    return RunRecord(
        id=info.run_id, experiment_id=str(info.experiment_id), name=info.run_name or "", status=info.status,
        tags=MappingProxyType(dict(data.tags)), params=MappingProxyType(dict(data.params)),
        metrics=MappingProxyType(dict(data.metrics)), start_ms=info.start_time, end_ms=info.end_time,
        artifact_uri=info.artifact_uri or "",
    )
