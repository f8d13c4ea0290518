"""Thin MLflow adapter: where runs live, how a job opens and ends one, how it logs.

Jobs log through :class:`RunLog` with an explicit run id (``MlflowClient``), never the
fluent API's per-thread active run, so the same code works from Optuna worker threads.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from latentscape.tracking.backends import Backend, tracking_backend
from latentscape.tracking.contract import (
    DEFAULT_EXPERIMENT,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_USER,
    Kind,
    Tag,
)
from latentscape.tracking.errors import UsageError
from latentscape.tracking.privacy import masked, masked_values
from latentscape.tracking.records import RunRecord, run_record

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Store",
    "RunLog",
    "open_store",
    "RunQuery",
    "attach",
    "tracked_run",
    "one_line",
    "RunWriter",
    "background_run",
]

# MLflow's log_batch limits (measured in MLflow 3.17: 100 params/tags, 1000 metrics).
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAM_LENGTH = 6000


class Store:
    """One MLflow tracking location and the experiment a job writes to.

    ``client`` (an ``mlflow.MlflowClient``) is made on first use: importing MLflow and its
    SQL store is nearly all of what opening a store costs (measured 2-4 s of a new
    process; the connection and schema check ~0.15 s), and a job that stops on bad input
    after opening its store never pays it."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._client: Any = None
        self._client_lock = threading.Lock()

    @property
    def uri(self) -> str:
        return self.backend.url

    @property
    def client(self) -> Any:
        with self._client_lock:  # RunWriter threads may ask first
            if self._client is None:
                self._client = self.backend.mlflow_client()
            return self._client

    def __repr__(self) -> str:
        return f"Store(uri={masked(self.uri)!r})"

    def experiment_id(self, name: str | None = None, *, create: bool = True) -> str:
        """Id of the experiment ``name`` (default ``latentscape``), created if missing."""
        name = name or DEFAULT_EXPERIMENT
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                raise UsageError(
                    f"experiment {name!r} is deleted",
                    "restore it with `mlflow experiments restore` or choose another --experiment",
                )
            return experiment.experiment_id
        if not create:
            raise UsageError(f"no experiment named {name!r}", "check --experiment")
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, artifact_location=self.backend.artifact_location(name))
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(name).experiment_id  # another process created it

    def explain(self, error: BaseException, *, experiment_id: str | None = None) -> BaseException:
        """``error`` as :func:`latentscape.tracking.errors.server_error` words it (naming the
        experiment when the server lets us read its name), else ``error`` itself."""
        from latentscape.tracking.errors import server_error

        experiment = None
        if experiment_id is not None:
            try:
                experiment = self.client.get_experiment(experiment_id).name
            except Exception:  # noqa: BLE001 - the name is a courtesy; the id will do
                experiment = experiment_id
        return server_error(error, uri=self.uri, experiment=experiment) or error

    def run_log(self, run_id: str) -> RunLog:
        return RunLog(self.client, run_id)

    def find_runs(self, experiment_ids: str | Sequence[str], *, kind: Kind | None = None,
                  tags: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
                  status: str | None = None, parent_run_id: str | None = None, newest_first: bool = False,
                  max_results: int = 1000) -> list[RunRecord]:
        """Runs in ``experiment_ids`` whose tags and params equal the given values (compared
        as strings), of ``kind``, ``status`` and parent when given; newest first if asked,
        else in MLflow's default order. At most ``max_results`` (MLflow allows 50,000)."""
        ids = [experiment_ids] if isinstance(experiment_ids, str) else list(experiment_ids)
        query = RunQuery.of(kind=kind, tags=tags, params=params, status=status, parent_run_id=parent_run_id)
        runs = self.client.search_runs(
            ids, filter_string=query.filter_string(), order_by=["attributes.start_time DESC"] if newest_first else None,
            max_results=_MAX_SEARCH_RESULTS if query.loose else max_results,
        )
        records = [run_record(run) for run in runs]
        return [record for record in records if query.matches(record)][:max_results] if query.loose else records

    def experiment_ids(self) -> list[str]:
        """The ids of the active experiments (as many as one MLflow page holds)."""
        return [experiment.experiment_id for experiment in self.client.search_experiments()]

    def experiment_name(self, experiment_id: str) -> str:
        return self.client.get_experiment(experiment_id).name

    def artifact_paths(self, run_id: str, folder: str | None = None) -> list[str]:
        """Paths (from the run's artifact root) of what lies directly in ``folder`` (the root
        when None); empty when there is no such folder."""
        return [item.path for item in self.client.list_artifacts(run_id, folder)]

    def kill(self, run_id: str, reason: str, *, tags: Mapping[str, Any] | None = None) -> None:
        """End a run KILLED, ``reason`` in its ``error`` tag (with ``tags``, in one call first):
        for a run whose process died, or whose result was withdrawn."""
        self.run_log(run_id).tags({**(tags or {}), Tag.ERROR: reason})
        self.client.set_terminated(run_id, status="KILLED")

    def writer(self) -> RunWriter:
        """A :class:`RunWriter` on this store."""
        return RunWriter(self.client)

    def get_run(self, run_id: str) -> RunRecord:
        from mlflow.exceptions import MlflowException

        try:
            return run_record(self.client.get_run(run_id))
        except MlflowException as error:
            if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise  # a server that is down or refuses us is not a wrong run id
            raise UsageError(
                f"no run with id {run_id!r} in {self.uri}",
                "pass a run id printed by an earlier job (or set --tracking-uri)",
            ) from error


@dataclass(frozen=True)
class RunQuery:
    """Runs whose tags and params equal these strings, and of this status: the one place
    an MLflow filter string is built, so that every value is quoted safely.

    MLflow's parser strips a value's quotes and unescapes nothing: a value holding ``'``
    is written in double quotes, and one holding both quotes (or a backslash, which could
    end the quoted string early) is matched with ``LIKE``, its awkward characters as
    ``_``; :meth:`matches` then keeps the exact matches (``loose`` says when it must)."""

    tags: Mapping[str, str]
    params: Mapping[str, str]
    status: str | None = None

    @classmethod
    def of(cls, *, kind: Kind | None = None, tags: Mapping[str, Any] | None = None,
           params: Mapping[str, Any] | None = None, status: str | None = None,
           parent_run_id: str | None = None) -> RunQuery:
        wanted = {key: str(value) for key, value in (tags or {}).items()}
        if kind is not None:
            wanted[Tag.KIND] = kind.value
        if parent_run_id is not None:
            wanted[MLFLOW_PARENT_RUN_ID] = parent_run_id
        return cls(tags=wanted, params={key: str(value) for key, value in (params or {}).items()}, status=status)

    @property
    def loose(self) -> bool:
        return not all(_quotable(value) for value in [*self.tags.values(), *self.params.values()])

    def filter_string(self) -> str:
        clauses = [_clause("tags", key, value) for key, value in self.tags.items()]
        clauses += [_clause("params", key, value) for key, value in self.params.items()]
        if self.status is not None:
            clauses.append(_clause("attributes", "status", self.status))
        return " and ".join(clauses)

    def matches(self, run: RunRecord) -> bool:
        return (all(run.tags.get(key) == value for key, value in self.tags.items())
                and all(run.params.get(key) == value for key, value in self.params.items()))


_MAX_SEARCH_RESULTS = 50000  # MLflow's most in one search_runs call
_AWKWARD = re.compile(r"['\"\\]")


def _quotable(value: str) -> bool:
    """Whether MLflow's parser reads ``value`` back exactly from single or double quotes."""
    return "\\" not in value and not ("'" in value and '"' in value)


def _clause(entity: str, key: str, value: str) -> str:
    if "`" in key:  # MLflow's parser has no escape inside backquotes
        raise ValueError(f"an MLflow key holding a backquote cannot be searched: {key!r}")
    name = key if entity == "attributes" else f"`{key}`"
    if not _quotable(value):
        return f"{entity}.{name} LIKE '{_AWKWARD.sub('_', value)}'"
    quote = '"' if "'" in value else "'"
    return f"{entity}.{name} = {quote}{value}{quote}"


def open_store(uri: str | None = None) -> Store:
    """Connect to the tracking location (:func:`~latentscape.tracking.backends.tracking_backend`),
    creating a local SQLite store if missing (MLflow itself is imported at the store's first
    query, see :class:`Store`)."""
    backend = tracking_backend(uri)
    backend.prepare()
    return Store(backend)


def one_line(error: BaseException) -> str:
    """An exception as one line: its type and first line of message."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, UsageError) else f"{type(error).__name__}: {text}"


def _param_items(values: Mapping[str, Any]) -> list:
    from mlflow.entities import Param as MlflowParam

    return [MlflowParam(k, _clean_param(v)) for k, v in values.items() if v is not None]


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


def _clean_param(value: Any) -> str:
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
    all_tags = _run_tags(kind, parent_run_id, source_run_id, tags)
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


def _run_tags(kind: Kind, parent_run_id: str | None, source_run_id: str | None,
              tags: Mapping[str, Any] | None) -> dict[str, str]:
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


class RunWriter:
    """MLflow writes done by one background thread, in the order they were submitted.

    A small run written whole (create, one batch, end) costs ~40 ms of MLflow's
    SQLAlchemy store on local SQLite (measured, MLflow 3.17) and three round trips to a
    tracking server; written here, the work that produced it goes on meanwhile. Every
    write is attempted even after one failed; the first failure is raised again by the
    next :meth:`check`, or by :meth:`flush` / :meth:`close` / :meth:`wait`.

    ``path_s`` is the time submitters spent handing writes over and waiting for them,
    ``busy_s`` the CPU time the thread spent writing."""

    def __init__(self, client):
        import queue
        import threading

        self.client = client
        self.path_s = 0.0
        self.busy_s = 0.0
        self._error: BaseException | None = None
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="latentscape-mlflow-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._jobs.get()
            try:
                if item is None:
                    return
                job, done = item
                started = time.thread_time()  # CPU time: waits for the GIL are not MLflow's
                try:
                    job()
                finally:
                    self.busy_s += time.thread_time() - started
                    done.set()
            except BaseException as error:  # kept for the submitting thread
                if self._error is None:
                    self._error = error
            finally:
                self._jobs.task_done()

    def submit(self, job):
        """Queue ``job``; returns an event set once it has run (or failed)."""
        started = time.perf_counter()
        done = threading.Event()
        self._jobs.put((job, done))
        self.path_s += time.perf_counter() - started
        return done

    def wait(self, done) -> None:
        """Wait for one submitted job (and those before it), then raise any failure."""
        started = time.perf_counter()
        done.wait()
        self.path_s += time.perf_counter() - started
        self.check()

    def check(self) -> None:
        """Raise the first write that failed, if one did (without waiting)."""
        if self._error is not None:
            raise self._error

    @property
    def failed(self) -> bool:
        return self._error is not None

    def flush(self) -> None:
        self._jobs.join()
        self.check()

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        self.check()


class PendingRun:
    """What a :func:`background_run` logs when it ends: params, metrics, tags."""

    def __init__(self):
        self.run_id: str | None = None  # set by the writer thread once created
        self.params: dict[str, Any] = {}
        self.metrics: dict[str, float] = {}
        self.tags: dict[str, Any] = {}

    def log(self, *, params: Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None,
            tags: Mapping[str, Any] | None = None) -> None:
        self.params.update(params or {})
        self.metrics.update(metrics or {})
        self.tags.update(tags or {})


@contextlib.contextmanager
def background_run(writer: RunWriter, experiment_id: str, kind: Kind, *, run_name: str | None = None,
                   parent_run_id: str | None = None, source_run_id: str | None = None,
                   tags: Mapping[str, Any] | None = None) -> Iterator[PendingRun]:
    """:func:`tracked_run` for small runs written by a :class:`RunWriter`: the run is
    created (RUNNING) on the writer's thread while the block works; what is logged into
    the yielded :class:`PendingRun` goes in one batch when the block ends, then the run
    ends FINISHED, FAILED (error tag) or KILLED (Ctrl-C, SIGTERM), as tracked_run's do.

    The block ends only once that end is written (a failed write is raised): what the
    caller records next, such as Optuna's state of the trial, never runs ahead of the run.
    """
    client = writer.client
    run = PendingRun()
    all_tags = _run_tags(kind, parent_run_id, source_run_id, tags)

    def create() -> None:
        run.run_id = client.create_run(experiment_id, tags=all_tags, run_name=run_name).info.run_id

    writer.submit(create)
    outcome = Outcome()
    try:
        with outcome.watch(lambda error: run.log(tags=_error_tag(error))):
            yield run
    finally:
        params, metrics, tags_now = dict(run.params), dict(run.metrics), dict(run.tags)

        def finish() -> None:
            if run.run_id is None:  # its creation failed (and was recorded)
                return
            try:
                RunLog(client, run.run_id).batch(params=params, metrics=metrics, tags=tags_now)
            finally:
                client.set_terminated(run.run_id, status=outcome.status)

        writer.wait(writer.submit(finish))


def record_error(log: RunLog, error: BaseException) -> None:
    with contextlib.suppress(Exception):
        log.tags(_error_tag(error))


def _error_tag(error: BaseException) -> dict[str, str]:
    """The ``error`` tag of a run that ended with ``error``: one line, within MLflow's tag size."""
    return {Tag.ERROR: masked(one_line(error))[:5000]}


def download(store: Store, run_id: str, artifact_path: str) -> Path:
    """A run's artifact as a local path (local stores are read in place)."""
    import mlflow.artifacts

    root = store.get_run(run_id).artifact_uri
    if root.startswith("file://"):
        local = Path(urlparse(root).path) / artifact_path
        if local.exists():
            return local
    cache = Path(tempfile.gettempdir()) / "latentscape-artifacts" / run_id
    target = cache / artifact_path
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        # Into a private folder, then moved into place: MLflow writes the file in place, and
        # several processes (sweep workers on one machine) may fetch the same artifact at once.
        scratch = Path(tempfile.mkdtemp(dir=cache, prefix=".incoming-"))
        try:
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=artifact_path, dst_path=str(scratch),
                    tracking_uri=store.uri,
                )
            except Exception as error:
                raise UsageError(
                    f"run {run_id} has no artifact {artifact_path!r}",
                    "check that the run finished and is of the right kind",
                ) from error
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(local, target)
            except OSError:
                if not target.exists():  # else another process put the same artifact there first
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def load_table(store: Store, run_id: str, artifact_path: str) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(download(store, run_id, artifact_path))


def load_array(store: Store, run_id: str, artifact_path: str) -> np.ndarray:
    return np.load(download(store, run_id, artifact_path), allow_pickle=False)
