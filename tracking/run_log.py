"""Writing one run: :func:`tracked_run` opens a run and :func:`attach` resumes one; both
yield a :class:`RunLog` and end the run FINISHED, FAILED (error tag) or KILLED (Ctrl-C,
SIGTERM), uploading its staged artifacts in every case.

Jobs log with an explicit run id (``MlflowClient``), never the fluent API's per-thread
active run, so the same code works from Optuna worker threads.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latentscape.tracking.contract import MLFLOW_PARENT_RUN_ID, MLFLOW_USER, Kind, Tag
from latentscape.tracking.errors import UsageError
from latentscape.tracking.privacy import masked, masked_values

if TYPE_CHECKING:
    import pandas as pd

    from latentscape.tracking.runs import Store

__all__ = ["RunLog", "tracked_run", "attach", "Outcome", "one_line", "param_text", "run_tags", "error_tag",
           "record_error"]

# MLflow's log_batch limits (measured in MLflow 3.17: 100 params/tags, 1000 metrics).
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAM_LENGTH = 6000


def one_line(error: BaseException) -> str:
    """An exception as one line: its type and first line of message."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, UsageError) else f"{type(error).__name__}: {text}"


def _param_items(values: Mapping[str, Any]) -> list:
    from mlflow.entities import Param as MlflowParam

    return [MlflowParam(k, param_text(v)) for k, v in values.items() if v is not None]


def _tag_items(values: Mapping[str, Any]) -> list:
    from mlflow.entities import RunTag

    return [RunTag(k, masked(str(v))) for k, v in values.items() if v is not None]


def _metric_items(rows: list[tuple[str, float, int]]) -> list:
    """MLflow metrics of ``(name, value, step)`` rows, stamped now; None and infinities
    are skipped (MLflow's stores do not keep an infinity as it is), NaN kept."""
    from mlflow.entities import Metric as MlflowMetric

    now = int(time.time() * 1000)
    return [MlflowMetric(name, float(value), now, int(step)) for name, value, step in rows
            if value is not None and not math.isinf(float(value))]


def param_text(value: Any) -> str:
    """``value`` as the string MLflow keeps for a param (what a search by param compares)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = repr(value)
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)
    return masked(text)[:_MAX_PARAM_LENGTH]  # a URL's password never reaches a param, whoever logs it


@dataclass
class RunLog:
    """Logging into one run, in batches. Artifacts are staged locally and uploaded
    together by :meth:`flush` (called when the run ends, failed or not)."""

    client: Any
    run_id: str
    _staging: Path | None = field(default=None, repr=False)

    # -- values -------------------------------------------------------------------
    def params(self, values: Mapping[str, Any]) -> None:
        items = _param_items(values)
        for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + _MAX_PARAMS_PER_BATCH])

    def tags(self, values: Mapping[str, Any]) -> None:
        items = _tag_items(values)
        for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=items[start:start + _MAX_PARAMS_PER_BATCH])

    def metrics(self, values: Mapping[str, float], *, step: int = 0) -> None:
        """Log ``values`` at ``step``; None is skipped, NaN kept (MLflow stores it)."""
        self.metric_rows([(name, value, step) for name, value in values.items()])

    def metric_rows(self, rows: list[tuple[str, float, int]]) -> None:
        """Log ``(name, value, step)`` rows in as few batches as MLflow allows."""
        items = _metric_items(rows)
        for start in range(0, len(items), _MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[start:start + _MAX_METRICS_PER_BATCH])

    def batch(self, *, params: Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None,
              tags: Mapping[str, Any] | None = None) -> None:
        """Params, metrics (step 0) and tags in ONE MLflow call: within log_batch's limits
        (100 params and tags, 1,000 metrics), else as several batches."""
        param_items, tag_items = _param_items(params or {}), _tag_items(tags or {})
        metric_items = _metric_items([(name, value, 0) for name, value in (metrics or {}).items()])
        if len(param_items) + len(tag_items) > _MAX_PARAMS_PER_BATCH or len(metric_items) > _MAX_METRICS_PER_BATCH:
            self.params(params or {})
            self.metrics(metrics or {})
            self.tags(tags or {})
            return
        self.client.log_batch(self.run_id, params=param_items, metrics=metric_items, tags=tag_items)

    def curve(self, name: str, values_by_step: Mapping[int, float]) -> None:
        """One metric over steps (layers), e.g. ``curve("ami", {0: .2, 1: .5})``."""
        self.metric_rows([(name, value, step) for step, value in values_by_step.items()])

    # -- artifacts ----------------------------------------------------------------
    def _stage(self, artifact_path: str) -> Path:
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="latentscape-"))
        target = self._staging / artifact_path
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def table(self, artifact_path: str, frame: pd.DataFrame) -> None:
        frame.to_parquet(self._stage(artifact_path), index=False)

    def array(self, artifact_path: str, values: np.ndarray) -> None:
        np.save(self._stage(artifact_path), np.ascontiguousarray(values), allow_pickle=False)

    def json(self, artifact_path: str, payload: Any) -> None:
        self._stage(artifact_path).write_text(json.dumps(masked_values(payload), indent=2, default=str))

    def text(self, artifact_path: str, content: str) -> None:
        self._stage(artifact_path).write_text(content)

    def file(self, artifact_path: str, source: Path) -> None:
        shutil.copyfile(source, self._stage(artifact_path))

    def bytes(self, artifact_path: str, content: bytes) -> None:
        self._stage(artifact_path).write_bytes(content)

    def folder(self, artifact_path: str, source: Path) -> None:
        """Every file under the folder ``source``, as the artifact folder ``artifact_path``."""
        shutil.copytree(source, self._stage(artifact_path), dirs_exist_ok=True)

    def flush(self) -> None:
        """Upload the staged artifacts in one call."""
        if self._staging is None:
            return
        staging, self._staging = self._staging, None
        try:
            if any(staging.iterdir()):
                self.client.log_artifacts(self.run_id, str(staging))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def dataset(self, frame: pd.DataFrame, *, name: str, source: str, digest: str,
                targets: str | None = None, context: str = "training") -> None:
        """Log a data set with MLflow's ``log_input`` (name, source, digest, schema, size)."""
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        import warnings

        with warnings.catch_warnings():
            # A plain path or name matches two local source types; either is right.
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=source, targets=targets, name=name, digest=digest)
        self.client.log_inputs(
            self.run_id,
            datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])],
        )


class _Terminated(BaseException):
    """SIGTERM turned into an exception so the run ends KILLED, not RUNNING."""


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def tracked_run(
    store: Store,
    experiment_id: str,
    kind: Kind,
    *,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    source_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[RunLog]:
    """Open a run of ``kind``; end it FINISHED, FAILED (error in the ``error`` tag) or
    KILLED (Ctrl-C, SIGTERM). Staged artifacts are uploaded in every case."""
    all_tags = run_tags(kind, parent_run_id, source_run_id, tags)
    try:
        run = store.client.create_run(experiment_id, tags=all_tags, run_name=run_name)
    except Exception as error:  # a team server's 401 / 403 said in people's words
        raise store.explain(error, experiment_id=experiment_id) from error
    with _until_ended(store, run.info.run_id) as log:
        yield log


@contextlib.contextmanager
def attach(store: Store, run_id: str) -> Iterator[RunLog]:
    """Log into the existing run ``run_id`` (resumed, or joined by another process): it is
    RUNNING while the block runs, then ends as a :func:`tracked_run` does."""
    store.client.update_run(run_id, status="RUNNING")
    with _until_ended(store, run_id) as log:
        yield log


@contextlib.contextmanager
def _until_ended(store: Store, run_id: str) -> Iterator[RunLog]:
    # A run just created is RUNNING already: tracked_run comes here without attach's update.
    log = RunLog(store.client, run_id)
    outcome = Outcome()
    try:
        with outcome.watch(lambda error: record_error(log, error)):
            yield log
    finally:
        try:
            log.flush()
        finally:
            store.client.set_terminated(run_id, status=outcome.status)


class Outcome:
    """How a run ends: FINISHED, or FAILED / KILLED (Ctrl-C, SIGTERM) when the block
    :meth:`watch` guards raises; ``record(error)`` is called first, then it re-raises."""

    def __init__(self):
        self.status = "FINISHED"

    @contextlib.contextmanager
    def watch(self, record) -> Iterator[None]:
        try:
            with _sigterm_as_exception():
                yield
        except (KeyboardInterrupt, _Terminated) as error:
            self.status = "KILLED"
            record(error)
            raise
        except BaseException as error:
            self.status = "FAILED"
            record(error)
            raise


def run_tags(kind: Kind, parent_run_id: str | None, source_run_id: str | None,
             tags: Mapping[str, Any] | None) -> dict[str, str]:
    """A new run's tags: its kind, source, user and parent link, then ``tags`` (masked)."""
    all_tags = {Tag.KIND: kind.value, Tag.SOURCE_RUN: source_run_id or "", MLFLOW_USER: _user()}
    if parent_run_id:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    all_tags.update({k: masked(str(v)) for k, v in (tags or {}).items() if v is not None})
    return all_tags


def _user() -> str:
    """Who runs this: the team server's user name where one is set (MLflow's own client
    variable), else the OS user, as MLflow's fluent API tags a run. MlflowClient.create_run
    copies this ``mlflow.user`` tag into the run's user id; without it the id is "unknown"."""
    import getpass

    try:
        return os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()
    except (KeyError, OSError):  # no user name (a container without a passwd entry)
        return "unknown"


def record_error(log: RunLog, error: BaseException) -> None:
    with contextlib.suppress(Exception):
        log.tags(error_tag(error))


def error_tag(error: BaseException) -> dict[str, str]:
    """The ``error`` tag of a run that ended with ``error``: one line, within MLflow's tag size."""
    return {Tag.ERROR: masked(one_line(error))[:5000]}
