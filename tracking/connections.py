"""The connection budget of team mode: how many PostgreSQL connections each process of
latentscape may hold, set in one place, and the one-line error when PostgreSQL says no.

Who connects, and how many (PostgreSQL's ``max_connections`` is 100 by default):

- ``latentscape server`` with W workers and ``--db-pool-size P``: MLflow builds every
  engine (runs store, model registry, basic-auth users) through
  ``mlflow.store.db.utils.create_sqlalchemy_engine``, which reads
  ``MLFLOW_SQLALCHEMYSTORE_POOL_SIZE`` / ``_MAX_OVERFLOW``; the server sets them from P.
  Each engine keeps at most P connections idle and opens at most 3P under a burst (the
  overflow is 2P, not 0: MLflow's runs store opens a second session inside a request
  (``create_run`` reads the experiment, ``log_batch`` logs params in their own session),
  so an engine capped at its request concurrency waits for itself until SQLAlchemy's
  30 s pool timeout; measured with a cap of 2 x 3 and 25 concurrent clients: 7 requests
  failed "QueuePool limit ... reached"). MLflow also reads ``_MAX_OVERFLOW`` only when it
  is not 0, so a cap equal to the pool size cannot be asked for.
  The launcher process (``mlflow server`` itself) checks the runs store and the model
  registry once at start and keeps one connection each; every worker has a runs-store
  engine and an auth engine (the model registry's opens only on a registry request), and
  the login throttle's one connection to the auth database (tracking/login_throttle.py):
  :func:`server_connections` = ``2 + (2 * 3P + 1) * W``.
- A sweep process: Optuna's RDB storage is built once per process with ``NullPool``
  (a connection only while a query runs; ``pool_pre_ping``), so at most one per thread
  that touches the study: ``2 * n_jobs`` (a trial thread and its heartbeat thread).
- Readers (the UI, ``ls.runs()``) reach runs through the server's HTTP API: none.
"""

from __future__ import annotations

import os

from latentscape.tracking.errors import UsageError

__all__ = [
    "DB_POOL_ENV",
    "DEFAULT_DB_POOL_SIZE",
    "server_pool_environment",
    "server_connections",
    "sweep_connections",
    "refused_for_connections",
    "connection_refusal",
    "connections_to",
]

DB_POOL_ENV = "LATENTSCAPE_DB_POOL_SIZE"
DEFAULT_DB_POOL_SIZE = 3
_OVERFLOW_PER_POOL = 2  # overflow = 2 x pool: room for MLflow's nested session per request
_LAUNCHER_CONNECTIONS = 2  # the `mlflow server` launcher: runs store + model registry, one each
_ENGINES_PER_WORKER = 2  # runs store and basic-auth users (the registry's only on registry requests)
THROTTLE_CONNECTIONS_PER_WORKER = 1  # the login throttle's counters (tracking/login_throttle.py)

# What PostgreSQL says when it refuses a connection for their number (max_connections,
# the slots reserved for superusers, a role's or a database's CONNECTION LIMIT).
_REFUSALS = ("too many clients", "remaining connection slots are reserved", "too many connections for role",
             "too many connections for database")


def default_pool_size(environ=None) -> int:
    """``$LATENTSCAPE_DB_POOL_SIZE``, else :data:`DEFAULT_DB_POOL_SIZE`."""
    value = (os.environ if environ is None else environ).get(DB_POOL_ENV)
    if not value:
        return DEFAULT_DB_POOL_SIZE
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{DB_POOL_ENV}={value!r} is not a number", f"set {DB_POOL_ENV} to e.g. 3") from None


def check_pool_size(pool_size: int) -> int:
    if pool_size < 1:
        raise UsageError(f"--db-pool-size {pool_size} must be at least 1", "pass e.g. --db-pool-size 3")
    return pool_size


def server_pool_environment(pool_size: int) -> dict[str, str]:
    """The environment that bounds every engine the MLflow server builds (runs store,
    model registry, basic-auth users): ``pool_size`` idle, ``3 * pool_size`` at most."""
    check_pool_size(pool_size)
    return {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(pool_size),
            "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(_OVERFLOW_PER_POOL * pool_size)}


def server_connections(workers: int, pool_size: int) -> int:
    """The most PostgreSQL connections ``latentscape server --workers W --db-pool-size P``
    holds: ``2 + (2 * 3P + 1) * W``."""
    per_worker = _ENGINES_PER_WORKER * (1 + _OVERFLOW_PER_POOL) * pool_size + THROTTLE_CONNECTIONS_PER_WORKER
    return _LAUNCHER_CONNECTIONS + per_worker * workers


def sweep_connections(n_jobs: int = 1) -> int:
    """The most connections one sweep process holds on a PostgreSQL study: ``2 * n_jobs``."""
    return 2 * n_jobs


def refused_for_connections(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is PostgreSQL refusing a connection for their number."""
    seen = 0
    while error is not None and seen < 10:
        text = str(error).lower()
        if any(sign in text for sign in _REFUSALS):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def connection_refusal(error: BaseException, *, where: str) -> UsageError | None:
    """PostgreSQL's "too many clients" as one line naming the settings that change it,
    or None when ``error`` is something else. ``where``: what was connecting."""
    if not refused_for_connections(error):
        return None
    return UsageError(
        f"PostgreSQL refused {where} a connection: it has no connection left (too many clients)",
        f"lower the server's pool (`latentscape server --db-pool-size`, ${DB_POOL_ENV}; it uses "
        f"2 + (6 x pool + 1) x --workers) or the number of sweep workers (2 connections each), or raise PostgreSQL's "
        "max_connections (or the role's CONNECTION LIMIT); see docker/README.md, 'Connection budget'")


def connections_to(databases, *, maintenance_url: str) -> int:
    """Connections open now to ``databases`` (names), read from ``pg_stat_activity``
    through one short psycopg2 connection to ``maintenance_url`` (not counted)."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(maintenance_url)
    connection = psycopg2.connect(host=url.host or "localhost", port=url.port or 5432, user=url.username,
                                  password=url.password, dbname=url.database or "postgres", connect_timeout=10)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
                           (list(databases),))
            return int(cursor.fetchone()[0])
    finally:
        connection.close()
