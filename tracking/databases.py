"""Team mode's databases made to exist: a PostgreSQL database created if missing
(:func:`ensure_database`), and the sweeps' Optuna tables made once before workers start
(:func:`ensure_optuna_storage`). Who may use them is :mod:`latentscape.tracking.roles`."""

from __future__ import annotations

import time

from latentscape.tracking.backends import Backend
from latentscape.tracking.errors import UsageError

__all__ = ["connect_maintenance", "ensure_database", "ensure_optuna_storage"]


def connect_maintenance(url, *, timeout: float):
    """A psycopg2 connection to the ``postgres`` database of ``url``'s server, retried
    until ``timeout`` (a database container may still be starting)."""
    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg2.connect(
                host=url.host or "localhost", port=url.port or 5432, user=url.username,
                password=url.password, dbname="postgres", connect_timeout=5,
            )
        except psycopg2.OperationalError as error:
            if time.monotonic() >= deadline:
                where = f"{url.host or 'localhost'}:{url.port or 5432}"
                raise UsageError(
                    f"PostgreSQL at {where} refused the connection ({' '.join(str(error).split())[:200]})",
                    "start PostgreSQL or fix the host, port, user or password in the URL",
                ) from error
            time.sleep(1.0)


def ensure_database(url: str, *, timeout: float = 30.0) -> bool:
    """Create the PostgreSQL database named in ``url`` if it is missing.

    Returns True when it was created. Non-PostgreSQL URLs are left to their store
    (SQLite creates its file). Safe when several processes race to create it."""
    if not Backend.of(url).is_postgres:
        return False
    import psycopg2
    from psycopg2 import errors, sql
    from sqlalchemy.engine import make_url

    parsed = make_url(Backend.of(url).url)
    if not parsed.database:
        raise UsageError(f"the URL {parsed.render_as_string()} names no database",
                         "end it with /DATABASE, e.g. postgresql://mlflow@db:5432/mlflow")
    connection = connect_maintenance(parsed, timeout=timeout)
    try:
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,))
            if cursor.fetchone():
                return False
            try:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(parsed.database)))
            except errors.DuplicateDatabase:
                return False
            except psycopg2.errors.InsufficientPrivilege as error:
                raise UsageError(
                    f"user {parsed.username!r} may not create database {parsed.database!r}",
                    "create it yourself (createdb) or grant the user CREATEDB",
                ) from error
            except psycopg2.errors.UniqueViolation:  # a concurrent CREATE won the race
                return False
        return True
    finally:
        connection.close()


def ensure_optuna_storage(url: str, *, create_database: bool = True) -> None:
    """Create the Optuna database (if missing and ``create_database``) and its tables
    once, here: workers that
    open a fresh PostgreSQL storage together race to create them and fail with
    ``duplicate key ... pg_type_typname_nsp_index`` (optuna/optuna#1092; measured here
    with 3 workers). Optuna's maintainers advise migrating before starting workers."""
    import warnings

    import optuna

    if create_database:
        ensure_database(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = optuna.storages.RDBStorage(Backend.of(url).url)
    storage.engine.dispose()
