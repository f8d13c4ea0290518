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

Here: the files, the lock, the swap and the readers' cursors. What a refresh reads from
MLflow is in :mod:`latentscape.tracking._catalog_reader`, what it changes and writes in
:mod:`latentscape.tracking._catalog_sync`, the artifact cache in
:mod:`latentscape.tracking._catalog_artifacts`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import duckdb

from latentscape.tracking._catalog_artifacts import ArtifactCache, safe_relative
from latentscape.tracking._catalog_reader import RUN_ID
from latentscape.tracking._catalog_sync import Delta, Progress, ProgressCallback, Snapshot, Sync, set_meta, write_delta
from latentscape.tracking.backends import Backend, mlflow_client, resolve_tracking_uri
from latentscape.tracking.errors import UsageError

__all__ = ["Catalog", "RefreshStats", "ArtifactNotFound", "default_catalog_path", "SCHEMA_VERSION"]

SCHEMA_VERSION = "2"

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
        from latentscape.tracking.cache_folder import cache_root

        folder = cache_root()
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
        self._artifacts = ArtifactCache(tracking_uri, self.cache_dir)

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
        relative = safe_relative(artifact_path)
        if relative is None or not isinstance(run_id, str) or not RUN_ID.match(run_id):
            return None
        row = self.cursor().execute("SELECT artifact_uri, status FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if row is None:
            return None
        root, status = row
        return self._artifacts.local_copy(run_id, relative, root, status)

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
            snapshot = Snapshot(snapshot_con)
            try:
                delta = Sync(self, snapshot, Progress(progress), horizon_ms).run(experiments, full)
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
            self._artifacts.forget(delta.removed)
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
            set_meta(con, {"schema_version": SCHEMA_VERSION, "tracking_uri": _public_uri(self.tracking_uri)})
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

    def _apply(self, database: Path, delta: Delta, horizon_ms: int) -> int:
        """Write ``delta`` into ``database`` in one transaction, then checkpoint it so
        the file is complete on its own (no WAL beside it). Returns the number of runs."""
        con = duckdb.connect(str(database))
        try:
            con.execute("BEGIN TRANSACTION")
            write_delta(con, delta, horizon_ms)
            con.execute("COMMIT")
            con.execute("CHECKPOINT")
            total = con.execute("SELECT count(*) FROM runs").fetchone()[0]
        finally:
            con.close()
        if Path(f"{database}.wal").exists():  # pragma: no cover - DuckDB checkpoints on close
            raise RuntimeError(f"DuckDB left a write-ahead log beside {database}")
        return int(total)


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


