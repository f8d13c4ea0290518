"""Who may connect to which of team mode's PostgreSQL databases (least privilege).

``latentscape server`` keeps three databases: runs (``--backend-store-uri``), users and
permissions (``<runs>_auth``) and the sweeps' Optuna studies (``--optuna-storage``).

- The run and auth databases belong to the server's role alone: PUBLIC's CONNECT (which
  PostgreSQL gives every new database) is revoked, so a role granted nothing cannot
  connect to them, sweep workers' role included. The server's role owns them, having
  created them.
- The Optuna database is reached by the role named in ``--optuna-storage``'s URL, the
  workers' role. The server creates that role if it is missing (its password from that
  URL), creates the database and Optuna's tables as its own role, and grants the workers'
  role CONNECT on that database and row access (SELECT, INSERT, UPDATE, DELETE, and the
  sequences) to Optuna's tables: no DDL, nothing on the other databases.
- When both URLs name the same role, it says so in one line: the workers then hold the
  keys to every run and every password hash.

Facts relied on (PostgreSQL 15): GRANT and REVOKE on a database need its owner (or a
superuser); CREATE ROLE needs CREATEROLE; a superuser connects whatever is granted.
"""

from __future__ import annotations

from collections.abc import Callable

from latentscape.tracking.backends import Backend
from latentscape.tracking.errors import UsageError

__all__ = ["secure_databases", "same_server"]

_TABLE_RIGHTS = "SELECT, INSERT, UPDATE, DELETE"
_SEQUENCE_RIGHTS = "USAGE, SELECT, UPDATE"


def _parsed(url: str):
    from sqlalchemy.engine import make_url

    return make_url(Backend.of(url).url)


def same_server(first, second) -> bool:
    """Whether two parsed URLs reach the same PostgreSQL server."""
    return ((first.host or "localhost"), (first.port or 5432)) == ((second.host or "localhost"), (second.port or 5432))


def secure_databases(backend_url: str, auth_url: str, optuna_url: str | None, *,
                     say: Callable[[str], None], create_database: bool = True) -> None:
    """Lock the run and auth databases to their owner and give the Optuna database (made
    here, tables included, when ``optuna_url`` is given) to the workers' role. Only
    PostgreSQL URLs are touched. ``say`` prints one line (warnings, roles created)."""
    from latentscape.tracking.databases import ensure_database, ensure_optuna_storage

    for url in (backend_url, auth_url):
        if Backend.of(url).is_postgres:
            _revoke_public(_parsed(url), say)
    if not optuna_url:
        return
    if not Backend.of(optuna_url).is_postgres:
        ensure_optuna_storage(optuna_url, create_database=create_database)
        return
    server, workers = _parsed(backend_url), _parsed(optuna_url)
    if not (Backend.of(backend_url).is_postgres and same_server(server, workers)):
        # Another server: its roles are its administrator's; make the tables as before.
        ensure_optuna_storage(optuna_url, create_database=create_database)
        return
    if (workers.username or "") == (server.username or ""):
        say(f"warning: --optuna-storage uses the server's own role {server.username or '(default)'!r}: sweep "
            "workers holding it can read and change every run and user; give them a role of their own, e.g. "
            f"postgresql://optuna:PASSWORD@{workers.host or 'localhost'}:{workers.port or 5432}/{workers.database}")
        ensure_optuna_storage(optuna_url, create_database=create_database)
        _revoke_public(workers, say)
        return
    owner = server.set(database=workers.database)  # the Optuna database, reached as the server's role
    _ensure_role(server, workers.username, workers.password, say)
    owner_url = owner.render_as_string(hide_password=False)
    if create_database:
        ensure_database(owner_url)
    _revoke_public(owner, say, grant_to=workers.username)
    ensure_optuna_storage(owner_url, create_database=False)  # the tables belong to the server's role
    _grant_tables(owner, workers.username, say)


def _connect(url, database: str | None = None):
    from latentscape.tracking.databases import connect_maintenance

    if database is None:
        return connect_maintenance(url, timeout=30.0)
    import psycopg2

    return psycopg2.connect(host=url.host or "localhost", port=url.port or 5432, user=url.username,
                            password=url.password, dbname=database, connect_timeout=10)


def _revoke_public(url, say, *, grant_to: str | None = None) -> None:
    """REVOKE CONNECT (and TEMPORARY) on ``url``'s database from PUBLIC; GRANT CONNECT to
    ``grant_to``. Not its owner: one warning line, the server still starts."""
    import psycopg2
    from psycopg2 import sql

    database = sql.Identifier(url.database)
    connection = _connect(url)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            try:
                cursor.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(database))
                if grant_to:
                    cursor.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        database, sql.Identifier(grant_to)))
            except psycopg2.errors.InsufficientPrivilege:
                say(f"warning: role {url.username!r} does not own database {url.database!r}, so every role may "
                    f"still connect to it; as its owner run: REVOKE CONNECT ON DATABASE {url.database} FROM PUBLIC")
    finally:
        connection.close()


def _ensure_role(server, role: str | None, password: str | None, say) -> None:
    """Create the workers' login role if it is missing (an existing role is left as it is:
    its password is its administrator's)."""
    import psycopg2
    from psycopg2 import sql

    if not role:
        raise UsageError("--optuna-storage names no role for the sweep workers",
                         "write the workers' role in its URL, e.g. postgresql://optuna:PASSWORD@HOST:5432/optuna")
    connection = _connect(server)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if cursor.fetchone():
                return
            statement = sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role))
            try:
                if password:
                    cursor.execute(statement + sql.SQL(" PASSWORD %s"), (password,))
                else:
                    cursor.execute(statement)
            except psycopg2.errors.DuplicateObject:  # another server start made it meanwhile
                return
            except psycopg2.errors.InsufficientPrivilege as error:
                raise UsageError(f"role {role!r} of --optuna-storage does not exist and role {server.username!r} "
                                 "may not create it",
                                 f"create it (CREATE ROLE {role} LOGIN PASSWORD '...') or grant "
                                 f"{server.username} CREATEROLE") from error
    finally:
        connection.close()
    say(f"created role {role} for the sweep workers (Optuna database only)")


def _grant_tables(owner, role: str, say) -> None:
    """Row access to Optuna's tables (and their id sequences) for ``role``, now and for
    tables the server's role creates later (an Optuna upgrade's migration)."""
    import psycopg2
    from psycopg2 import sql

    grantee = sql.Identifier(role)
    connection = _connect(owner, owner.database)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            try:
                for statement in (
                    "GRANT USAGE ON SCHEMA public TO {}",
                    f"GRANT {_TABLE_RIGHTS} ON ALL TABLES IN SCHEMA public TO {{}}",
                    f"GRANT {_SEQUENCE_RIGHTS} ON ALL SEQUENCES IN SCHEMA public TO {{}}",
                    f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {_TABLE_RIGHTS} ON TABLES TO {{}}",
                    f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {_SEQUENCE_RIGHTS} ON SEQUENCES TO {{}}",
                ):
                    cursor.execute(sql.SQL(statement).format(grantee))
            except psycopg2.errors.InsufficientPrivilege:
                say(f"warning: role {owner.username!r} does not own Optuna's tables in {owner.database!r}, so role "
                    f"{role!r} may lack access to them; as their owner grant it {_TABLE_RIGHTS} on them")
    finally:
        connection.close()
