"""The run store: where runs live and how the project reads them.

:func:`open_store` gives a :class:`Store` on the tracking URL's
:class:`~latentscape.tracking.backends.Backend`; the store finds runs (:class:`RunQuery`, the
one place a filter string is built), hands them out as
:class:`~latentscape.tracking.records.RunRecord`, ends runs KILLED and reads artifacts
(:func:`download`, :func:`load_table`, :func:`load_array`). Writing a run is
:mod:`latentscape.tracking.run_log` (``tracked_run``, ``attach``, ``RunLog``) and, for many
small runs, :mod:`latentscape.tracking.run_writer`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from latentscape.tracking.backends import Backend, tracking_backend
from latentscape.tracking.contract import DEFAULT_EXPERIMENT, MLFLOW_PARENT_RUN_ID, Kind, Tag
from latentscape.tracking.errors import UsageError
from latentscape.tracking.privacy import masked
from latentscape.tracking.records import RunRecord, run_record
from latentscape.tracking.run_log import RunLog
from latentscape.tracking.run_writer import RunWriter

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Store", "RunQuery", "open_store", "download", "load_table", "load_array"]


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
        as strings), as :class:`~latentscape.tracking.records.RunRecord`, of ``kind``,
        ``status`` and parent when given; newest first if asked,
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
        """The run ``run_id`` as a :class:`~latentscape.tracking.records.RunRecord`; a
        :class:`UsageError` when the store has no such run."""
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
