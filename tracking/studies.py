"""Optuna study storage: opening it so that several processes (one machine's workers, or a
team's) share it safely. Where a sweep's study lives by default is the tracking store's
:attr:`~latentscape.tracking.backends.Backend.optuna_url`."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from latentscape.tracking.backends import Backend, use_write_ahead_log
from latentscape.tracking.errors import UsageError
from latentscape.tracking.privacy import masked  # the project's one masking function, re-exported

__all__ = ["masked", "open_storage", "dispose", "opened_storage", "study_trials", "study_names"]


def _sqlite_wal(backend: Backend) -> None:
    """Put a local SQLite Optuna storage in WAL mode, as the MLflow store is."""
    import sqlite3

    path = backend.sqlite_path
    if path is None or str(path) in ("", ":memory:") or not path.parent.is_dir():
        return
    with contextlib.suppress(sqlite3.Error):  # optuna reports a storage it cannot open
        use_write_ahead_log(path, timeout=120)


def _begin_immediate(engine) -> None:
    """Start every transaction of this SQLite engine with BEGIN IMMEDIATE.

    Optuna hands an enqueued trial to one worker by reading it WAITING and updating it
    to RUNNING under SELECT ... FOR UPDATE, which SQLite ignores: two processes both read
    it WAITING and both ran it, and the second's ``tell`` failed with "Cannot tell a
    COMPLETE trial" (measured: 4 processes popping 40 queued trials took 16-20 twice).
    Holding the write lock from the start of the transaction makes the read and the
    update one step."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN below, not pysqlite's own

    @event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while the storage was set up lack the hooks


def open_storage(url: str, heartbeat: int, on_stale):
    """Optuna's RDB storage at ``url`` (SQLite, PostgreSQL, ...), trials beating a heartbeat
    every ``heartbeat`` s; ``on_stale(study, trial)`` is called for a trial whose process
    died. A URL that cannot be opened is a :class:`UsageError` (password masked)."""
    import warnings

    import optuna

    from latentscape.tracking.connections import connection_refusal

    backend = Backend.of(url)  # postgresql:// -> psycopg2, the driver we ship (SQLAlchemy 2.1 wants psycopg 3)
    url = backend.url
    # One engine per process, bounded (NullPool on PostgreSQL): the caller keeps this
    # storage for the whole sweep and disposes it (tracking/connections.py: the budget).
    engine_kwargs: dict[str, Any] = backend.optuna_engine_kwargs()
    if backend.dialect == "sqlite":
        _sqlite_wal(backend)  # readers (every worker polls the study) do not block the writer
    for attempt in range(6):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat arguments are "experimental"
            try:
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                    heartbeat_stale_trial_callback=on_stale,
                )
                if backend.dialect == "sqlite":
                    _begin_immediate(storage.engine)
                return storage
            except Exception as error:  # bad URL, unreachable server, missing driver
                refused = connection_refusal(error, where="the sweep's Optuna storage")
                if refused is not None:
                    raise refused from None
                # Two workers creating a new storage at once race on CREATE TABLE (seen with
                # SQLite: "table ... already exists"); the second try finds the tables made.
                racing = any(sign in str(error) for sign in ("already exists", "UNIQUE constraint", "locked"))
                if racing and attempt < 5:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise UsageError(masked(f"cannot open Optuna storage {url}: {' '.join(str(error).split())[:300]}"),
                                 "check --storage (e.g. sqlite:///optuna.db or postgresql://user@host/db)") from None
    raise AssertionError("unreachable")


def dispose(storage) -> None:
    """Close the connections of an Optuna storage from :func:`open_storage` (its engine
    reconnects if it is used again)."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


@contextlib.contextmanager
def opened_storage(url: str):
    """An Optuna storage at ``url`` for reading, disposed when the block ends: the way to
    look at a study from outside its workers. (``optuna.load_study(storage=URL)`` builds an
    engine and its pool on every call, which nothing closes: a loop of them ran a shared
    PostgreSQL out of connections, issue 25.)"""
    storage = open_storage(url, 60, None)
    try:
        yield storage
    finally:
        dispose(storage)


def study_trials(storage, study_name: str) -> list:
    """The trials of ``study_name`` (FrozenTrial, numbered) in ``storage`` (from :func:`opened_storage`)."""
    import optuna

    return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)


def study_names(storage) -> set[str]:
    """The names of the studies in ``storage``."""
    return {study.study_name for study in storage.get_all_studies()}
