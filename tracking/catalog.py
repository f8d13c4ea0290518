"""The run catalog: a DuckDB file synced incrementally from MLflow's API, and a local
cache of the Parquet artifacts the UI reads. The UI's only way to the data
(docs/CATALOG_API.md); queries live in :mod:`latentscape.tracking.queries`.

Why through the API: DuckDB cannot load its sqlite/postgres scanners offline, and
reading MLflow's tables directly would bypass its auth and schema migrations. The same
code therefore syncs a local SQLite store and a remote ``mlflow server`` (credentials
from MLflow's usual ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` variables).

What a refresh asks MLflow for, per experiment (a never-synced experiment is fetched
whole, with a progress bar):

- runs that started since the last sync (``attributes.start_time``), minus the ids the
  catalog already holds from that window;
- runs that ended since the last sync (``attributes.end_time``), minus the known ones;
- runs that were RUNNING (or SCHEDULED) at the last sync, by id, and runs RUNNING now
  (a finished run may be resumed);
- runs deleted since (``ViewType.DELETED_ONLY`` minus the known deleted ids), and known
  deleted runs that were restored.

The window reaches ``slack_s`` (default 5 min) before the previous sync started, for
clock skew between clients and transactions that commit late. A fetched run whose
fingerprint (status, times, name, params, tags, latest metrics) is unchanged is not
written again. Per-step history (``get_metric_history``) is fetched only for metrics
logged at a step other than 0, and only when the metric's latest value changed.

What only ``refresh(full=True)`` sees: tags or metrics added to a run long after it
finished, runs created with an explicit ``start_time`` older than the window, and runs
purged by ``mlflow gc``. MLflow keeps no per-run change time, so nothing cheaper can.

Readers and writers: a refresh builds the new state in a temporary file beside the
catalog (a copy of the current one, or a new one), then swaps it in with
``os.replace``. Readers attach the file read-only and keep the version they opened
until their next :meth:`Catalog.cursor`; they are never blocked, and a refresh that
crashes leaves the previous file untouched (its temporary file is removed by the next
refresh). Refreshes from several processes take turns on a lock file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit

import duckdb
import pandas as pd

from latentscape.tracking.contract import MLFLOW_PARENT_RUN_ID, MLFLOW_USER, Tag
from latentscape.tracking.errors import UsageError
from latentscape.tracking.privacy import masked
from latentscape.tracking.backends import Backend, mlflow_client, resolve_tracking_uri

__all__ = ["Catalog", "RefreshStats", "ArtifactNotFound", "default_catalog_path", "SCHEMA_VERSION"]

SCHEMA_VERSION = "2"

# MLflow's run statuses and lifecycle stages (its own vocabulary, not ours).
_UNFINISHED = ("RUNNING", "SCHEDULED")
_DELETED = "deleted"
_ACTIVE = "active"

_PAGE = 1000  # runs per search_runs page (progress moves once a page)
_MAX_EXCLUDE = 5000  # ids in one NOT IN filter (measured: 2,000 ids add ~80 ms on SQLite)
_IN_CHUNK = 500  # ids in one IN filter
_HISTORY_THREADS = 8  # concurrent get_metric_history calls (mostly waiting on I/O)
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A bound list of ids as a semi-join (a hash join: list_contains would compare every pair).
_IDS = "(SELECT unnest(?::VARCHAR[]))"

_SCHEMA = """
CREATE TABLE meta (key VARCHAR, value VARCHAR);
CREATE TABLE experiments (
    experiment_id VARCHAR, name VARCHAR, lifecycle_stage VARCHAR, artifact_location VARCHAR,
    creation_time TIMESTAMP, last_update_time TIMESTAMP);
CREATE TABLE sync_state (experiment_id VARCHAR, horizon_ms BIGINT);
CREATE TABLE runs (
    run_id VARCHAR, experiment_id VARCHAR, name VARCHAR, status VARCHAR, "user" VARCHAR,
    start_time TIMESTAMP, end_time TIMESTAMP, start_ms BIGINT, end_ms BIGINT,
    parent_run_id VARCHAR, source_run VARCHAR, kind VARCHAR, model VARCHAR, dataset_name VARCHAR,
    dataset_digest VARCHAR, pooling VARCHAR, layer INTEGER, error VARCHAR,
    artifact_uri VARCHAR, fingerprint VARCHAR, search_text VARCHAR);
CREATE TABLE params (run_id VARCHAR, key VARCHAR, value VARCHAR);
CREATE TABLE tags (run_id VARCHAR, key VARCHAR, value VARCHAR);
CREATE TABLE latest_metrics (run_id VARCHAR, key VARCHAR, value DOUBLE, step BIGINT, timestamp BIGINT);
CREATE TABLE metrics (run_id VARCHAR, key VARCHAR, value DOUBLE, step BIGINT, timestamp BIGINT);
CREATE TABLE deleted_runs (run_id VARCHAR, experiment_id VARCHAR, start_ms BIGINT, end_ms BIGINT);
"""
_EXPERIMENT_KEY = ("experiment_id", "name", "lifecycle_stage", "artifact_location")  # a change rewrites them
_RUN_TABLES = ("params", "tags", "latest_metrics", "metrics", "runs")
_RUN_FRAME_COLUMNS = (
    "run_id", "experiment_id", "name", "status", "user", "start_ms", "end_ms", "parent_run_id",
    "source_run", "kind", "model", "dataset_name", "dataset_digest", "pooling", "layer", "error",
    "artifact_uri", "fingerprint", "search_text",
)
# Text search (queries.runs(text=)) looks in these, lower-cased once when written;
# joined by a separator no typed text contains.
_SEARCHED = ("name", "run_id", "kind", "model", "dataset_name", "dataset_digest", "user", "pooling", "status")
_SEPARATOR = "\x1f"


class ArtifactNotFound(LookupError):
    """The run is not in the catalog, or has no such artifact."""


@dataclass(frozen=True)
class RefreshStats:
    """What a refresh did. ``new``/``changed``/``deleted`` count runs; ``seconds`` wall time.

    ``fetched``: runs MLflow returned; ``histories``: metric histories fetched;
    ``written``: whether a new catalog file was swapped in (False: nothing changed);
    ``full``: experiments fetched whole; ``total``: runs in the catalog afterwards."""

    new: int
    changed: int
    deleted: int
    seconds: float
    fetched: int = 0
    histories: int = 0
    written: bool = False
    full: int = 0
    total: int = 0


def default_catalog_path(tracking_uri: str) -> Path:
    """``$LATENTSCAPE_CATALOG``, else ``<folder of the sqlite db, or the cache folder>/
    catalog-<hash(uri)>.duckdb``. The hash ignores credentials in the URI."""
    explicit = os.environ.get("LATENTSCAPE_CATALOG")
    if explicit:
        return Path(explicit).expanduser()
    folder = Backend.of(tracking_uri).folder
    if folder is None:
        folder = Path(os.environ.get("LATENTSCAPE_CACHE", Path.home() / ".cache" / "latentscape")).expanduser()
    return folder / f"catalog-{_uri_hash(tracking_uri)}.duckdb"


def _public_uri(uri: str) -> str:
    """``uri`` without credentials (never written into the catalog file)."""
    parts = urlsplit(uri)
    if not (parts.username or parts.password):
        return uri  # unchanged: a split/unsplit round trip would turn sqlite://// into sqlite://
    return urlunsplit(parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else "")))


def _uri_hash(uri: str) -> str:
    return hashlib.sha256(_public_uri(uri).encode()).hexdigest()[:12]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _quote_literal(text: str) -> str:
    """A SQL string literal (only for file paths we chose, which DuckDB's ATTACH cannot bind)."""
    return "'" + text.replace("'", "''") + "'"


# -- progress ---------------------------------------------------------------------------

ProgressCallback = Callable[[str, int, "int | None"], None]


class _Progress:
    """``progress=True``: tqdm bars on stderr (``LATENTSCAPE_PROGRESS=0`` turns them off);
    a callable: called as ``progress(stage, done, total_or_None)``; False: silent."""

    def __init__(self, progress: bool | ProgressCallback):
        self._callback = progress if callable(progress) else None
        self._bars = bool(progress) and not callable(progress) and os.environ.get("LATENTSCAPE_PROGRESS", "1") != "0"

    @contextlib.contextmanager
    def stage(self, name: str, total: int | None, unit: str) -> Iterator[Callable[[int], None]]:
        done = [0]
        bar = None
        if self._bars:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=name, unit=unit, file=sys.stderr, mininterval=0.5,
                       dynamic_ncols=True, leave=False)

        def advance(n: int) -> None:
            done[0] += n
            if bar is not None:
                bar.update(n)
            if self._callback is not None:
                self._callback(name, done[0], total)

        try:
            yield advance
        finally:
            if bar is not None:
                bar.close()


# -- reading MLflow ----------------------------------------------------------------------

@dataclass
class _RunRows:
    """One MLflow run flattened into catalog rows."""

    run: dict[str, Any]
    params: list[tuple[str, str]]
    tags: list[tuple[str, str]]
    latest: list[tuple[str, float, int, int]]  # key, value, step, timestamp

    @property
    def run_id(self) -> str:
        return self.run["run_id"]

    def stepped_keys(self) -> list[str]:
        """Metrics logged at a step other than 0: their history is worth fetching
        (MLflow's latest value is the one at the highest step)."""
        return [key for key, _, step, _ in self.latest if step != 0]


def _metric_objects(data) -> list:
    # RunData keeps the Metric entities (value, step, timestamp) it was built from;
    # the public ``metrics`` dict has the values only.
    objects = getattr(data, "_metric_objs", None)
    if objects is not None:
        return list(objects)
    return list(data.to_proto().metrics)


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def _flatten(run) -> _RunRows:
    info, data = run.info, run.data
    # Masked again here: runs logged before masking covered every URL may hold a password.
    tags = {key: masked(value) for key, value in data.tags.items()}
    params = sorted((key, masked(value)) for key, value in data.params.items())
    latest = sorted((m.key, float(m.value), int(m.step or 0), int(m.timestamp or 0)) for m in _metric_objects(data))
    row = {
        "run_id": info.run_id,
        "experiment_id": str(info.experiment_id),
        "name": info.run_name or "",
        "status": info.status,
        "user": info.user_id or tags.get(MLFLOW_USER) or "",
        "start_ms": info.start_time,
        "end_ms": info.end_time,
        "parent_run_id": tags.get(MLFLOW_PARENT_RUN_ID) or None,
        "source_run": tags.get(Tag.SOURCE_RUN) or None,
        "kind": tags.get(Tag.KIND),
        "model": tags.get(Tag.MODEL),
        "dataset_name": tags.get(Tag.DATASET_NAME),
        "dataset_digest": tags.get(Tag.DATASET_DIGEST),
        "pooling": tags.get(Tag.POOLING),
        "layer": _int_or_none(tags.get(Tag.LAYER)),
        "error": tags.get(Tag.ERROR),
        "artifact_uri": info.artifact_uri,
    }
    digest = hashlib.blake2b(repr((
        row["status"], row["start_ms"], row["end_ms"], row["name"], row["user"], row["artifact_uri"],
        row["experiment_id"], params, sorted(tags.items()), latest,
    )).encode(), digest_size=16).hexdigest()
    row["fingerprint"] = digest
    row["search_text"] = _SEPARATOR.join(str(row[key] or "") for key in _SEARCHED).lower()
    return _RunRows(run=row, params=params, tags=sorted(tags.items()), latest=latest)


class _MlflowReader:
    """The few MLflow calls a refresh makes, paged."""

    def __init__(self, client):
        from mlflow.entities import ViewType

        self.client = client
        self.view = ViewType

    def experiments(self) -> list:
        found, token = [], None
        while True:
            page = self.client.search_experiments(view_type=self.view.ALL, max_results=1000, page_token=token)
            found += list(page)
            token = page.token
            if not token:
                return found

    def search(self, experiment_ids: Sequence[str], filter_string: str = "", *, view=None,
               advance: Callable[[int], None] | None = None) -> list:
        """Every run matching ``filter_string``, oldest first. ViewType.ALL by default so
        that a run deleted while we page does not shift the pages under us."""
        runs, token = [], None
        view = self.view.ALL if view is None else view
        while True:
            page = self.client.search_runs(
                list(experiment_ids), filter_string=filter_string, run_view_type=view, max_results=_PAGE,
                order_by=["attributes.start_time ASC"], page_token=token,
            )
            runs += list(page)
            if advance is not None:
                advance(len(page))
            token = page.token
            if not token:
                return runs

    def by_ids(self, experiment_ids: Sequence[str], run_ids: Sequence[str], *, view=None) -> list:
        runs = []
        for start in range(0, len(run_ids), _IN_CHUNK):
            chunk = run_ids[start:start + _IN_CHUNK]
            runs += self.search(experiment_ids, f"attributes.run_id IN ({_id_list(chunk)})", view=view)
        return runs

    def history(self, run_id: str, key: str) -> list[tuple[str, str, float, int, int]]:
        return [(run_id, key, float(m.value), int(m.step or 0), int(m.timestamp or 0))
                for m in self.client.get_metric_history(run_id, key)]


def _id_list(run_ids: Iterable[str]) -> str:
    # Run ids come from MLflow or from our own catalog; still, only plain ids pass.
    return ", ".join(f"'{run_id}'" for run_id in run_ids if _RUN_ID.match(run_id))


def _window_filter(attribute: str, since_ms: int, exclude: Sequence[str]) -> str:
    text = f"attributes.{attribute} >= {int(since_ms)}"
    if exclude:
        text += f" AND attributes.run_id NOT IN ({_id_list(exclude)})"
    return text


# -- the previous catalog, as the refresh sees it ----------------------------------------

class _Snapshot:
    """Read-only view of the current catalog file (or of nothing, for a first sync)."""

    def __init__(self, con: duckdb.DuckDBPyConnection | None):
        self.con = con

    @property
    def usable(self) -> bool:
        return self.con is not None

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        if self.con is None:
            return []
        return self.con.execute(sql, list(params)).fetchall()

    def horizons(self) -> dict[str, int]:
        return dict(self.rows("SELECT experiment_id, horizon_ms FROM sync_state"))

    def experiment_ids_with_runs(self) -> set[str]:
        return {row[0] for row in self.rows(
            "SELECT DISTINCT experiment_id FROM runs UNION SELECT experiment_id FROM sync_state "
            "UNION SELECT DISTINCT experiment_id FROM deleted_runs")}

    def recent(self, experiment_ids: list[str], column: str, since_ms: int) -> list[tuple[str, int]]:
        """(run_id, time) of known runs (deleted ones too) with ``column`` >= since, newest first."""
        assert column in ("start_ms", "end_ms")
        return self.rows(
            f"SELECT run_id, {column} FROM runs WHERE experiment_id IN {_IDS} AND {column} >= ? "
            f"UNION ALL SELECT run_id, {column} FROM deleted_runs WHERE experiment_id IN {_IDS} "
            f"AND {column} >= ? ORDER BY 2 DESC",
            [experiment_ids, since_ms, experiment_ids, since_ms])

    def unfinished(self, experiment_ids: list[str]) -> list[str]:
        return [row[0] for row in self.rows(
            f"SELECT run_id FROM runs WHERE experiment_id IN {_IDS} AND list_contains(?, status)",
            [experiment_ids, list(_UNFINISHED)])]

    def deleted(self, experiment_ids: list[str]) -> list[str]:
        return [row[0] for row in self.rows(
            f"SELECT run_id FROM deleted_runs WHERE experiment_id IN {_IDS}", [experiment_ids])]

    def all_deleted(self) -> set[str]:
        return {row[0] for row in self.rows("SELECT run_id FROM deleted_runs")}

    def run_ids(self, experiment_ids: list[str]) -> set[str]:
        return {row[0] for row in self.rows(
            f"SELECT run_id FROM runs WHERE experiment_id IN {_IDS}", [experiment_ids])}

    def fingerprints(self, run_ids: list[str]) -> dict[str, tuple[str, str]]:
        return {run_id: (fingerprint, status) for run_id, fingerprint, status in self.rows(
            f"SELECT run_id, fingerprint, status FROM runs WHERE run_id IN {_IDS}", [run_ids])}

    def latest(self, run_ids: list[str]) -> dict[tuple[str, str], tuple[float, int, int]]:
        return {(r, k): (v, s, t) for r, k, v, s, t in self.rows(
            f"SELECT run_id, key, value, step, timestamp FROM latest_metrics WHERE run_id IN {_IDS}", [run_ids])}

    def histories(self, run_ids: list[str]) -> list[tuple]:
        return self.rows(f"SELECT run_id, key, value, step, timestamp FROM metrics WHERE run_id IN {_IDS}", [run_ids])

    def experiment_rows(self) -> list[tuple] | None:
        if self.con is None:
            return None
        return self.rows(f"SELECT {', '.join(_EXPERIMENT_KEY)} FROM experiments ORDER BY experiment_id")


# -- what a refresh changes --------------------------------------------------------------

@dataclass
class _Delta:
    experiments: pd.DataFrame
    experiments_changed: bool
    reset_experiments: list[str] = field(default_factory=list)  # fetched whole: replace their rows
    gone_experiments: list[str] = field(default_factory=list)  # deleted or vanished: drop their rows
    synced: list[str] = field(default_factory=list)  # experiments whose horizon moves
    upserts: list[_RunRows] = field(default_factory=list)
    metric_rows: list[tuple] = field(default_factory=list)
    removed: set[str] = field(default_factory=set)
    deleted: dict[str, tuple[str, int | None, int | None]] = field(default_factory=dict)  # newly known deleted
    undeleted: set[str] = field(default_factory=set)
    new: int = 0
    changed: int = 0
    fetched: int = 0
    histories: int = 0

    def empty(self) -> bool:
        return not (self.experiments_changed or self.reset_experiments or self.gone_experiments or self.upserts
                    or self.removed or self.deleted or self.undeleted)


# -- the catalog -------------------------------------------------------------------------

class Catalog:
    """A DuckDB file synced from one MLflow tracking location. Thread-safe; share one
    per process (``cursor()`` gives each reader its own cursor)."""

    def __init__(self, tracking_uri: str, path: Path, *, slack_s: float = 300.0, cache_dir: Path | None = None):
        self.tracking_uri = tracking_uri
        self.path = Path(path)
        self.cache_dir = Path(cache_dir) if cache_dir else self.path.with_name(self.path.stem + "-artifacts")
        self.slack_s = float(slack_s)
        self._reader_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._reader_signature: tuple | None = None
        self._client = None
        self._absent: set[tuple[str, str]] = set()  # artifacts known missing from finished runs

    # -- opening and reading ------------------------------------------------------------
    @classmethod
    def open(cls, tracking_uri: str | None = None, path: str | os.PathLike | None = None, *,
             slack_s: float = 300.0, cache_dir: str | os.PathLike | None = None) -> Catalog:
        """The catalog of ``tracking_uri`` (default as ``latentscape.tracking.backends.resolve_tracking_uri``)
        in ``path`` (default :func:`default_catalog_path`). A missing or incompatible file
        becomes an empty catalog; nothing is fetched until :meth:`refresh`."""
        uri = resolve_tracking_uri(tracking_uri)
        target = Path(path).expanduser() if path else default_catalog_path(uri)
        if not target.parent.exists():
            raise UsageError(f"the folder of the catalog {target} does not exist",
                             "create it or set LATENTSCAPE_CATALOG to another file")
        catalog = cls(uri, target.resolve(), slack_s=slack_s, cache_dir=Path(cache_dir) if cache_dir else None)
        # A usable file opens without the lock: a refresh elsewhere (minutes on a large
        # remote store) must not hold up a reader, and it swaps its file in atomically.
        snapshot = catalog._load_snapshot()
        if snapshot is not None:
            snapshot.close()
            return catalog
        with catalog._refresh_lock, catalog._file_lock():
            snapshot = catalog._load_snapshot()  # again: another process may have made it meanwhile
            if snapshot is None:
                catalog._swap_in(catalog._new_file())
            else:
                snapshot.close()
        return catalog

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB cursor on the latest catalog (read-only) for one reader. A cursor keeps
        the version it was opened on; ask for a new one to see a later refresh."""
        with self._reader_lock:
            signature = self._signature()  # before attaching: a swap in between re-attaches next time
            if self._reader is None or signature != self._reader_signature:
                # Old cursors keep their own reference to the old file; nothing is closed here.
                self._reader = self._attach(self.path)
                self._reader_signature = signature
            cursor = self._reader.cursor()
        cursor.execute("USE catalog")
        return cursor

    def close(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
            self._reader, self._reader_signature = None, None

    def _signature(self) -> tuple | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    @staticmethod
    def _attach(path: Path) -> duckdb.DuckDBPyConnection:
        # An in-memory database with the catalog attached read-only: DuckDB caches
        # databases opened with connect(path) by path, which would keep serving the old
        # file after a swap.
        con = duckdb.connect(":memory:")
        con.execute(f"ATTACH {_quote_literal(str(path))} AS catalog (READ_ONLY)")
        return con

    @property
    def last_refresh(self) -> float | None:
        """Unix time of the last refresh that wrote the catalog, or None."""
        row = self.cursor().execute("SELECT value FROM meta WHERE key = ?", ["refreshed_at"]).fetchone()
        return float(row[0]) if row else None

    # -- artifacts ----------------------------------------------------------------------
    def artifact(self, run_id: str, artifact_path: str) -> Path | None:
        """A local copy of a run's artifact (file or folder), or None when the run is not
        in the catalog or has no such artifact. Local stores are read in place; remote
        artifacts are downloaded once into ``cache_dir/<run_id>/`` (again while the run is
        unfinished, since its artifacts may still change)."""
        relative = _safe_relative(artifact_path)
        if relative is None or not isinstance(run_id, str) or not _RUN_ID.match(run_id):
            return None
        row = self.cursor().execute("SELECT artifact_uri, status FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if row is None:
            return None
        root, status = row
        local_root = _local_root(root)
        if local_root is not None:
            local = local_root.joinpath(*relative.parts)
            return local if local.exists() else None
        target = self.cache_dir / run_id / Path(*relative.parts)
        finished = status not in _UNFINISHED
        if finished and target.exists():
            return target
        if finished and (run_id, str(relative)) in self._absent:
            return None
        fetched = self._download(run_id, str(relative), target)
        if fetched is None and finished:
            self._absent.add((run_id, str(relative)))
        return fetched

    def _download(self, run_id: str, artifact_path: str, target: Path) -> Path | None:
        import mlflow.artifacts

        scratch_root = self.cache_dir / ".incoming"
        scratch_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(os.path.realpath(scratch_root / uuid.uuid4().hex))
        try:
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=artifact_path, dst_path=str(scratch), tracking_uri=self.tracking_uri)
            except Exception:  # MLflow raises its own errors for a missing artifact
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            os.replace(local, target)  # atomic: a concurrent reader sees all or nothing
            return target
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _forget_artifacts(self, run_ids: Iterable[str]) -> None:
        for run_id in run_ids:
            if _RUN_ID.match(run_id):
                shutil.rmtree(self.cache_dir / run_id, ignore_errors=True)

    # -- refreshing ---------------------------------------------------------------------
    def refresh(self, experiments: Sequence[str] | None = None, progress: bool | ProgressCallback = False, *,
                full: bool = False) -> RefreshStats:
        """Sync from MLflow: all active experiments (``None``) or those named (names or ids;
        other experiments' rows are left as they are). ``full=True`` fetches them whole
        (a rebuild). ``progress``: True for bars on stderr, or ``callback(stage, done, total)``."""
        started = time.perf_counter()
        horizon_ms = _now_ms()
        if isinstance(experiments, str):
            experiments = [experiments]
        with self._refresh_lock, self._file_lock():
            _remove_temporaries(self.path)
            snapshot_con = self._load_snapshot()
            snapshot = _Snapshot(snapshot_con)
            try:
                delta = _Sync(self, snapshot, _Progress(progress), horizon_ms).run(experiments, full)
                fresh = not snapshot.usable or (full and experiments is None)
                written = False
                total = snapshot.rows("SELECT count(*) FROM runs")[0][0] if snapshot.usable else 0
                if not delta.empty() or fresh:
                    temporary = self._new_file() if fresh else self._copy_current()
                    try:
                        total = self._apply(temporary, delta, horizon_ms)
                    except BaseException:
                        _unlink_database(temporary)
                        raise
                    if snapshot_con is not None:
                        snapshot_con.close()
                        snapshot_con = None
                    self._swap_in(temporary)
                    written = True
            finally:
                if snapshot_con is not None:
                    snapshot_con.close()
        if written:
            self._forget_artifacts(delta.removed)
        return RefreshStats(new=delta.new, changed=delta.changed, deleted=len(delta.removed),
                            seconds=time.perf_counter() - started, fetched=delta.fetched,
                            histories=delta.histories, written=written, full=len(delta.reset_experiments),
                            total=int(total))

    def _mlflow(self):
        if self._client is None:
            self._client = mlflow_client(self.tracking_uri)
        return self._client

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """One refresh at a time across processes (the kernel drops the lock if we die)."""
        import fcntl

        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _load_snapshot(self) -> duckdb.DuckDBPyConnection | None:
        """A read-only cursor on the current file, if it exists and was made by this
        schema for this URI (the readers' connection: no second attach)."""
        if not self.path.exists():
            return None
        try:
            cursor = self.cursor()
        except duckdb.Error:  # not a DuckDB file (or a broken one): rebuilt
            return None
        try:
            meta = dict(cursor.execute("SELECT key, value FROM meta").fetchall())
        except duckdb.Error:
            meta = {}
        if meta.get("schema_version") != SCHEMA_VERSION or meta.get("tracking_uri") != _public_uri(self.tracking_uri):
            cursor.close()
            return None
        return cursor

    def _temporary_path(self) -> Path:
        return self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")

    def _new_file(self) -> Path:
        temporary = self._temporary_path()
        con = duckdb.connect(str(temporary))
        try:
            con.execute(_SCHEMA)
            _set_meta(con, {"schema_version": SCHEMA_VERSION, "tracking_uri": _public_uri(self.tracking_uri)})
            con.execute("CHECKPOINT")
        finally:
            con.close()
        return temporary

    def _copy_current(self) -> Path:
        temporary = self._temporary_path()
        shutil.copyfile(self.path, temporary)
        return temporary

    def _swap_in(self, temporary: Path) -> None:
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        with contextlib.suppress(OSError):
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def _apply(self, database: Path, delta: _Delta, horizon_ms: int) -> int:
        """Write ``delta`` into ``database`` in one transaction, then checkpoint it so
        the file is complete on its own (no WAL beside it). Returns the number of runs."""
        con = duckdb.connect(str(database))
        try:
            con.execute("BEGIN TRANSACTION")
            _write_delta(con, delta, horizon_ms)
            con.execute("COMMIT")
            con.execute("CHECKPOINT")
            total = con.execute("SELECT count(*) FROM runs").fetchone()[0]
        finally:
            con.close()
        if Path(f"{database}.wal").exists():  # pragma: no cover - DuckDB checkpoints on close
            raise RuntimeError(f"DuckDB left a write-ahead log beside {database}")
        return int(total)


def _set_meta(con: duckdb.DuckDBPyConnection, values: dict[str, str]) -> None:
    con.execute(f"DELETE FROM meta WHERE key IN {_IDS}", [list(values)])
    con.executemany("INSERT INTO meta VALUES (?, ?)", [[k, str(v)] for k, v in values.items()])


def _remove_temporaries(path: Path) -> None:
    """Temporary files of refreshes that died (we hold the lock: no refresh is running)."""
    for leftover in path.parent.glob(f"{_glob_escape(path.name)}.tmp-*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _unlink_database(path: Path) -> None:
    for leftover in (path, Path(f"{path}.wal")):
        with contextlib.suppress(OSError):
            leftover.unlink()


def _safe_relative(artifact_path: str) -> PurePosixPath | None:
    """``artifact_path`` as a relative path inside the run, or None (absolute, ``..``,
    backslashes, control characters)."""
    if not isinstance(artifact_path, str) or not artifact_path or len(artifact_path) > 1000:
        return None
    if "\\" in artifact_path or any(ord(ch) < 32 for ch in artifact_path):
        return None
    relative = PurePosixPath(artifact_path)
    if relative.is_absolute() or any(part in ("..", "") for part in relative.parts) or relative == PurePosixPath("."):
        return None
    return relative


def _local_root(artifact_uri: str | None) -> Path | None:
    """The folder of a local artifact root (``file://`` or a plain path), else None."""
    if not artifact_uri:
        return None
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(artifact_uri)
    return None


# -- one refresh ---------------------------------------------------------------------------

class _Sync:
    """Works out what changed since the previous catalog, asking MLflow as little as it can."""

    def __init__(self, catalog: Catalog, snapshot: _Snapshot, progress: _Progress, horizon_ms: int):
        self.catalog = catalog
        self.snapshot = snapshot
        self.progress = progress
        self.horizon_ms = horizon_ms
        self.mlflow = _MlflowReader(catalog._mlflow())

    def run(self, requested: Sequence[str] | None, full: bool) -> _Delta:
        experiments = self.mlflow.experiments()
        scope, gone = self._scope(experiments, requested)
        frame = _experiments_frame(experiments)
        changed = self.snapshot.experiment_rows() != [
            tuple(row) for row in frame[list(_EXPERIMENT_KEY)].itertuples(index=False)]
        delta = _Delta(experiments=frame, experiments_changed=changed, gone_experiments=gone)

        horizons = self.snapshot.horizons()
        whole = [e for e in scope if full or e not in horizons]
        by_horizon: dict[int, list[str]] = {}
        for experiment_id in scope:
            if experiment_id not in whole:
                by_horizon.setdefault(horizons[experiment_id], []).append(experiment_id)

        fetched: dict[str, Any] = {}
        deleted: dict[str, Any] = {}
        purged: set[str] = set()
        if whole:
            delta.reset_experiments = whole
            with self.progress.stage("catalog: runs", None, "run") as advance:
                for run in self.mlflow.search(whole, advance=advance):
                    self._classify(run, fetched, deleted)
        for horizon, group in sorted(by_horizon.items()):
            self._incremental(group, horizon, fetched, deleted, purged, delta)
        delta.synced = list(scope)
        delta.fetched = len(fetched) + len(deleted)
        self._decide(delta, fetched, deleted, purged, whole, full)
        return delta

    # -- which experiments ----------------------------------------------------------------
    def _scope(self, experiments: list, requested: Sequence[str] | None) -> tuple[list[str], list[str]]:
        active = {e.experiment_id for e in experiments if e.lifecycle_stage == _ACTIVE}
        if requested is None:
            scope = sorted(active)
            gone = sorted(self.snapshot.experiment_ids_with_runs() - active)
            return scope, gone
        by_name = {e.name: e.experiment_id for e in experiments}
        every = {e.experiment_id for e in experiments}
        scope, gone = [], []
        for item in requested:
            experiment_id = item if item in every else by_name.get(item)
            if experiment_id is None:
                raise UsageError(f"no experiment named {str(item)[:200]!r} in {masked(self.catalog.tracking_uri)}",
                                 "check the experiment name (or pass its id)")
            (scope if experiment_id in active else gone).append(experiment_id)
        return sorted(set(scope)), sorted(set(gone))

    # -- what to ask MLflow ---------------------------------------------------------------
    def _incremental(self, group: list[str], horizon_ms: int, fetched, deleted, purged, delta: _Delta) -> None:
        since = horizon_ms - int(self.catalog.slack_s * 1000)
        mlflow, snapshot = self.mlflow, self.snapshot
        queries: list[Callable[[], list]] = []
        for attribute, column in (("start_time", "start_ms"), ("end_time", "end_ms")):
            known = snapshot.recent(group, column, since)
            window = since
            if len(known) > _MAX_EXCLUDE:
                # Too many to exclude: narrow the window to the newest known ones; older
                # runs in the window were seen by the previous sync.
                known = known[:_MAX_EXCLUDE]
                window = known[-1][1]
            exclude = [run_id for run_id, _ in known]
            queries.append(lambda a=attribute, w=window, x=exclude: mlflow.search(group, _window_filter(a, w, x)))
        unfinished = snapshot.unfinished(group)
        queries.append(lambda: mlflow.by_ids(group, unfinished))
        queries.append(lambda: mlflow.search(group, "attributes.status = 'RUNNING'", view=mlflow.view.ACTIVE_ONLY))
        known_deleted = snapshot.deleted(group)
        exclude = known_deleted if len(known_deleted) <= _MAX_EXCLUDE else []
        deleted_filter = f"attributes.run_id NOT IN ({_id_list(exclude)})" if exclude else ""
        queries.append(lambda: mlflow.search(group, deleted_filter, view=mlflow.view.DELETED_ONLY))
        queries.append(lambda: mlflow.by_ids(group, known_deleted, view=mlflow.view.ACTIVE_ONLY))
        # Independent calls: in parallel for a remote server's latency.
        with ThreadPoolExecutor(max_workers=len(queries)) as pool:
            results = list(pool.map(lambda query: query(), queries))
        for runs in results:
            for run in runs:
                self._classify(run, fetched, deleted)
        seen = {run.info.run_id for runs in results for run in runs}
        purged.update(run_id for run_id in unfinished if run_id not in seen)

    @staticmethod
    def _classify(run, fetched: dict, deleted: dict) -> None:
        if run.info.lifecycle_stage == _DELETED:
            deleted[run.info.run_id] = run
            fetched.pop(run.info.run_id, None)
        elif run.info.run_id not in deleted:
            fetched[run.info.run_id] = run

    # -- what to write --------------------------------------------------------------------
    def _decide(self, delta: _Delta, fetched: dict, deleted: dict, purged: set[str], whole: list[str],
                full: bool) -> None:
        snapshot = self.snapshot
        whole_set = set(whole)
        rows = [_flatten(run) for run in fetched.values()]
        ids = [row.run_id for row in rows]
        previous = snapshot.fingerprints(ids)
        known_deleted = snapshot.all_deleted()
        for row in rows:
            old = previous.get(row.run_id)
            if old is None:
                delta.new += 1
            elif old[0] != row.run["fingerprint"]:
                delta.changed += 1
            elif row.run["experiment_id"] not in whole_set:
                continue  # fetched again, unchanged
            delta.upserts.append(row)
            if row.run_id in known_deleted:
                delta.undeleted.add(row.run_id)
        old_ids_of_whole = snapshot.run_ids(whole) if whole else set()
        present = snapshot.fingerprints(list(deleted))
        for run_id, run in deleted.items():
            if run_id not in known_deleted or run.info.experiment_id in whole_set:
                delta.deleted[run_id] = (str(run.info.experiment_id), run.info.start_time, run.info.end_time)
            if run_id in present or run_id in old_ids_of_whole:
                delta.removed.add(run_id)
        delta.removed |= {run_id for run_id in purged}
        fetched_ids = set(ids)
        delta.removed |= {run_id for run_id in old_ids_of_whole if run_id not in fetched_ids}
        if delta.gone_experiments:
            delta.removed |= snapshot.run_ids(delta.gone_experiments)
        delta.metric_rows = self._metrics(delta, previous, reuse=not full)

    def _metrics(self, delta: _Delta, previous: dict, *, reuse: bool) -> list[tuple]:
        """Metric rows of the written runs: the full history of stepped metrics (fetched
        again only when their latest value moved), the latest value of the others."""
        upserts = delta.upserts
        old_latest = self.snapshot.latest([row.run_id for row in upserts if row.run_id in previous]) if reuse else {}
        reusable: set[tuple[str, str]] = set()
        wanted: list[tuple[str, str]] = []
        rows: list[tuple] = []
        for row in upserts:
            stepped = set(row.stepped_keys())
            was_finished = row.run_id in previous and previous[row.run_id][1] not in _UNFINISHED
            for key, value, step, timestamp in row.latest:
                if key not in stepped:
                    rows.append((row.run_id, key, value, step, timestamp))
                elif reuse and was_finished and old_latest.get((row.run_id, key)) == (value, step, timestamp):
                    reusable.add((row.run_id, key))
                else:
                    wanted.append((row.run_id, key))
        if reusable:
            rows += [r for r in self.snapshot.histories(sorted({run_id for run_id, _ in reusable}))
                     if (r[0], r[1]) in reusable]
        if wanted:
            with self.progress.stage("catalog: metric histories", len(wanted), "metric") as advance, \
                    ThreadPoolExecutor(max_workers=_HISTORY_THREADS) as pool:
                for history in pool.map(lambda pair: self.mlflow.history(*pair), wanted):
                    rows += history
                    advance(1)
        delta.histories = len(wanted)
        return rows


def _experiments_frame(experiments: list) -> pd.DataFrame:
    rows = sorted((str(e.experiment_id), e.name, e.lifecycle_stage, e.artifact_location or None, e.creation_time,
                   e.last_update_time) for e in experiments)
    return pd.DataFrame(rows, columns=[*_EXPERIMENT_KEY, "creation_ms", "last_update_ms"], dtype=object)


def _write_delta(con: duckdb.DuckDBPyConnection, delta: _Delta, horizon_ms: int) -> None:
    """The catalog tables after ``delta`` (inside the caller's transaction)."""
    # Experiments: the whole list (a few rows), written always (a new file needs them too).
    con.execute("DELETE FROM experiments")
    _insert(con, "experiments", delta.experiments.astype({"creation_ms": "Int64", "last_update_ms": "Int64"}),
            "experiment_id, name, lifecycle_stage, artifact_location, epoch_ms(creation_ms) AS creation_time, "
            "epoch_ms(last_update_ms) AS last_update_time")

    # Runs whose rows go (and come back, for upserts).
    reset = delta.reset_experiments + delta.gone_experiments
    affected = sorted(delta.removed | {row.run_id for row in delta.upserts})
    if affected or reset:
        con.execute("CREATE TEMP TABLE affected AS SELECT unnest(?::VARCHAR[]) AS run_id", [affected])
        if reset:
            con.execute(f"INSERT INTO affected SELECT run_id FROM runs WHERE experiment_id IN {_IDS}", [reset])
            con.execute(f"DELETE FROM deleted_runs WHERE experiment_id IN {_IDS}", [reset])
        for table in _RUN_TABLES:
            con.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT run_id FROM affected)")
        con.execute("DROP TABLE affected")
    if delta.gone_experiments:
        con.execute(f"DELETE FROM sync_state WHERE experiment_id IN {_IDS}", [delta.gone_experiments])

    if delta.upserts:
        runs = pd.DataFrame([row.run for row in delta.upserts], columns=list(_RUN_FRAME_COLUMNS))
        runs = runs.astype({"start_ms": "Int64", "end_ms": "Int64", "layer": "Int64"})
        _insert(con, "runs", runs, "*, epoch_ms(start_ms) AS start_time, epoch_ms(end_ms) AS end_time")
        _insert(con, "params", pd.DataFrame(
            [(row.run_id, key, value) for row in delta.upserts for key, value in row.params],
            columns=["run_id", "key", "value"]))
        _insert(con, "tags", pd.DataFrame(
            [(row.run_id, key, value) for row in delta.upserts for key, value in row.tags],
            columns=["run_id", "key", "value"]))
        _insert(con, "latest_metrics", pd.DataFrame(
            [(row.run_id, *metric) for row in delta.upserts for metric in row.latest],
            columns=["run_id", "key", "value", "step", "timestamp"]))
        _insert(con, "metrics", pd.DataFrame(delta.metric_rows, columns=["run_id", "key", "value", "step", "timestamp"]))

    # Deleted runs we know of (so that the next refresh asks only for newer ones).
    gone_from_deleted = sorted(delta.undeleted | set(delta.deleted))
    if gone_from_deleted:
        con.execute(f"DELETE FROM deleted_runs WHERE run_id IN {_IDS}", [gone_from_deleted])
    if delta.deleted:
        frame = pd.DataFrame([(run_id, *values) for run_id, values in delta.deleted.items()],
                             columns=["run_id", "experiment_id", "start_ms", "end_ms"])
        _insert(con, "deleted_runs", frame.astype({"start_ms": "Int64", "end_ms": "Int64"}))

    # The next refresh looks back from this one's start.
    if delta.synced:
        con.execute(f"DELETE FROM sync_state WHERE experiment_id IN {_IDS}", [delta.synced])
        con.executemany("INSERT INTO sync_state VALUES (?, ?)", [[e, horizon_ms] for e in delta.synced])
    _set_meta(con, {"refreshed_at": f"{time.time():.3f}"})


def _insert(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame, select: str = "*") -> None:
    if frame.empty:
        return
    name = f"{table}_frame"
    con.register(name, frame)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT {select} FROM {name}")
    finally:
        con.unregister(name)
