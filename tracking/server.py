"""``latentscape server``: the team-mode MLflow tracking server.

One process a team shares: ``mlflow server`` with PostgreSQL as backend store, proxied
artifact serving (``--artifacts-destination``: a folder or an object store) and
MLflow's basic-auth app. Jobs and the UI reach it with ``MLFLOW_TRACKING_URI`` and
MLflow's own credential variables ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``; Optuna sweeps keep their study in the same PostgreSQL.

Secrets never live in code or on the command line:

- ``MLFLOW_FLASK_SERVER_SECRET_KEY`` (CSRF key of the auth app) and
  ``MLFLOW_AUTH_ADMIN_PASSWORD`` (the admin, created on first start) come from the
  environment; ``MLFLOW_AUTH_ADMIN_USERNAME`` optionally names the admin (``admin``).
- Users come from a YAML file (``--users``, ``$LATENTSCAPE_USERS_FILE``) whose
  passwords may be ``${VARIABLES}`` read from the environment, or from
  ``$LATENTSCAPE_USERS`` (``name:password`` entries separated by commas or spaces).
  Every start makes the server match them: users created, passwords and admin flags
  updated, experiment permissions granted (MLflow's auth REST API, as the admin), and
  users in neither deleted (the admin excepted).
- Store URLs reach ``mlflow server`` through its environment; database roles are set by
  :mod:`latentscape.tracking.roles` (run and auth databases for the server's role alone).

The parts: :mod:`~latentscape.tracking.server_process` (configuration, command line,
environment, the supervised process), :mod:`~latentscape.tracking.team_users` (the users
file and provisioning), :mod:`~latentscape.tracking.databases` and
:mod:`~latentscape.tracking.roles` (PostgreSQL databases and their roles); this module is
the command line and the order of a start.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from latentscape.tracking.auth_app import app_environment
from latentscape.tracking.backends import Backend
from latentscape.tracking.databases import ensure_database
from latentscape.tracking.errors import UsageError
from latentscape.tracking.privacy import masked
from latentscape.tracking.server_process import (
    ENV_BACKEND,
    ServerConfig,
    ServerProcess,
    server_command,
    server_environment,
    store_environment,
    write_auth_config,
)
from latentscape.tracking.team_users import (
    DEFAULT_ADMIN,
    ENV_ADMIN_USERNAME,
    ENV_USERS,
    ENV_USERS_FILE,
    UserSpec,
    load_users,
    provision_users,
)

__all__ = ["serve", "add_server_parser", "add_parser"]

ENV_AUTH_DB = "LATENTSCAPE_AUTH_DB_URI"
ENV_ARTIFACTS = "LATENTSCAPE_ARTIFACTS_DESTINATION"
ENV_ALLOWED_HOSTS = "LATENTSCAPE_ALLOWED_HOSTS"
ENV_OPTUNA = "LATENTSCAPE_OPTUNA_STORAGE"


def add_server_parser(subparsers, parents=()) -> argparse.ArgumentParser:
    """Register ``latentscape server``. ``parents`` (the jobs' common options) is not
    used: a server has no experiment and its own --tracking-uri meaning."""
    parser = subparsers.add_parser(
        "server", help="start the team's MLflow tracking server (PostgreSQL, basic auth, proxied artifacts)",
        description="Start `mlflow server` for a team: PostgreSQL backend store (databases created if "
        "missing), proxied artifact serving, MLflow's basic-auth app, users from a file or the environment. "
        "Secrets come from the environment: MLFLOW_FLASK_SERVER_SECRET_KEY, MLFLOW_AUTH_ADMIN_PASSWORD "
        "(and MLFLOW_AUTH_ADMIN_USERNAME, default admin). Clients then set MLFLOW_TRACKING_URI, "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.",
        epilog="examples:\n"
        "  latentscape server --backend-store-uri postgresql://mlflow@db:5432/mlflow \\\n"
        "      --artifacts-destination /srv/mlartifacts --users users.yaml --host 0.0.0.0\n"
        "  latentscape server --users users.yaml --provision-only --tracking-uri http://mlflow:5000\n"
        "  latentscape server --backend-store-uri postgresql://mlflow@db/mlflow --print-command",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env = os.environ
    parser.add_argument("--backend-store-uri", metavar="URL", default=env.get(ENV_BACKEND),
                        help=f"PostgreSQL URL of the run store (default ${ENV_BACKEND})")
    parser.add_argument("--auth-db", metavar="URL", default=env.get(ENV_AUTH_DB),
                        help="database of users and permissions (default: <backend database>_auth on the same server)")
    parser.add_argument("--artifacts-destination", metavar="URI", default=env.get(ENV_ARTIFACTS, "./mlartifacts"),
                        help=f"folder or object store the server proxies artifacts to (default ${ENV_ARTIFACTS}, "
                        "else ./mlartifacts)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; 0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    from latentscape.tracking.connections import DB_POOL_ENV, DEFAULT_DB_POOL_SIZE, server_connections

    parser.add_argument("--db-pool-size", type=int, metavar="P", default=None,
                        help=f"connections each database engine of the server keeps (runs store, users; at most "
                        f"3P under a burst; default ${DB_POOL_ENV}, else {DEFAULT_DB_POOL_SIZE}). The server holds "
                        f"at most 2 + (6 x P + 1) x --workers PostgreSQL connections ({server_connections(2, DEFAULT_DB_POOL_SIZE)}"
                        " with the defaults); each sweep worker on a PostgreSQL study 2 more")
    parser.add_argument("--allowed-hosts", default=env.get(ENV_ALLOWED_HOSTS),
                        help="Host headers to accept, e.g. 'mlflow,mlflow:*,localhost:*' "
                        f"(default ${ENV_ALLOWED_HOSTS}, else MLflow's: localhost and private IPs)")
    parser.add_argument("--optuna-storage", metavar="URL", default=env.get(ENV_OPTUNA),
                        help=f"the sweeps' Optuna database, created if missing like the others (default ${ENV_OPTUNA})")
    parser.add_argument("--users", metavar="FILE", default=None,
                        help=f"YAML users file (default ${ENV_USERS_FILE}); also reads ${ENV_USERS}=name:password,...")
    parser.add_argument("--default-permission", default="READ",
                        help="what users may do in experiments they were granted nothing on (default READ)")
    parser.add_argument("--auth-cache-seconds", type=int, default=60,
                        help="cache a verified password this long (0: check every request, ~0.4 s each; default 60)")
    parser.add_argument("--auth-config", metavar="INI", help="use this basic-auth ini instead of writing one")
    parser.add_argument("--no-create-databases", dest="create_databases", action="store_false",
                        help="do not create missing PostgreSQL databases")
    parser.add_argument("--provision-only", action="store_true",
                        help="apply the users to the running server at --tracking-uri and exit")
    parser.add_argument("--tracking-uri", metavar="URL", help="with --provision-only: the server (default $MLFLOW_TRACKING_URI)")
    parser.add_argument("--print-command", action="store_true",
                        help="print the mlflow server command line (with its store variables, passwords masked) and exit")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of unexpected errors")
    parser.set_defaults(handler=_run_cli)
    return parser


def add_parser(subparsers, parents=()) -> None:
    """Sub-command hook, called by ``latentscape.jobs.serve`` (``JOB_MODULES["server"]``)."""
    add_server_parser(subparsers, parents)


def _config_from_args(args) -> ServerConfig:
    return ServerConfig(
        backend_store_uri=args.backend_store_uri or "", artifacts_destination=args.artifacts_destination,
        auth_database_uri=args.auth_db, host=args.host, port=args.port, workers=args.workers,
        allowed_hosts=args.allowed_hosts, default_permission=args.default_permission.upper(),
        auth_config=args.auth_config, auth_cache_seconds=args.auth_cache_seconds,
        optuna_storage=args.optuna_storage, db_pool_size=args.db_pool_size,
    )


def _say(message: str) -> None:
    print(f"latentscape server: {message}", file=sys.stderr, flush=True)


def _run_cli(args) -> None:
    users = load_users(args.users)
    if args.provision_only:
        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri or not Backend.of(uri).is_server:
            raise UsageError("--provision-only needs the server's http(s) URL", "pass --tracking-uri http://HOST:PORT")
        for name, what in provision_users(uri, users, remove_others=_users_given(args)).items():
            _say(f"user {name}: {what['user']}, experiments {what['experiments'] or '-'}")
        return None
    config = _config_from_args(args)
    if args.print_command:
        variables = [f"{name}={value}" for name, value in store_environment(config).items()]
        print(masked(" ".join([*variables, *server_command(config)])))
        return None
    serve(config, users=users, create_databases=args.create_databases, remove_others=_users_given(args))
    return None


def _users_given(args) -> bool:
    """Whether a users file or ``$LATENTSCAPE_USERS`` was given: then it is the whole team,
    and users not in it are removed. Without either, users managed in MLflow's own UI stay."""
    return bool(args.users or os.environ.get(ENV_USERS_FILE) or os.environ.get(ENV_USERS, "").strip(" ,"))


def serve(config: ServerConfig, *, users: Sequence[UserSpec] = (), create_databases: bool = True,
          remove_others: bool = False) -> None:
    """Run the server in the foreground until it exits or we are interrupted."""
    admin = os.environ.get(ENV_ADMIN_USERNAME) or DEFAULT_ADMIN
    # Secrets first, before any database is touched; the ini goes in a private folder.
    server_environment("", environ=os.environ)
    state = Path(tempfile.mkdtemp(prefix="latentscape-server-"))
    ini = Path(config.auth_config) if config.auth_config else write_auth_config(config, state, admin_username=admin)
    try:
        app_env = app_environment(users)
    except ValueError as error:
        raise UsageError(str(error), "fix that setting (a limit reads like '20 per 10 minutes')") from error
    from latentscape.tracking.connections import server_pool_environment

    # One setting bounds every engine MLflow builds (runs store, registry, auth users).
    server = ServerProcess(config, env={**server_environment(ini), **app_env,
                                        **server_pool_environment(config.db_pool_size)})
    try:
        _serve(server, config, users=users, admin=admin, create_databases=create_databases,
               remove_others=remove_others)
    finally:
        with contextlib.suppress(OSError):
            (state / "basic_auth.ini").unlink(missing_ok=True)
            state.rmdir()


def _serve(server: ServerProcess, config: ServerConfig, *, users: Sequence[UserSpec], admin: str,
           create_databases: bool, remove_others: bool) -> None:
    from sqlalchemy.engine import make_url

    from latentscape.tracking.roles import secure_databases

    # Databases: runs and users created if missing (Optuna's below, with its role).
    if create_databases:
        for url in (config.backend_store_uri, config.auth_database_uri):
            if ensure_database(url):
                _say(f"created database {make_url(url).database}")
    stop_requested = []

    def on_signal(signum, frame):  # SIGTERM (docker stop) and Ctrl-C: stop the server cleanly
        stop_requested.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        started = time.monotonic()
        server.launch()
        # While the server boots (~10 s): database roles, Optuna's database and tables, and ~3 s
        # of imports for provisioning.
        secure_databases(config.backend_store_uri, config.auth_database_uri, config.optuna_storage,
                         say=_say, create_database=create_databases)
        import mlflow.server  # noqa: F401

        server.wait_until_ready()
        seconds = time.monotonic() - started
        _say(masked(f"MLflow answers at {config.url} after {seconds:.1f} s (basic auth on, artifacts proxied to "
                    f"{config.artifacts_destination})"))
        for name, what in provision_users(config.url, users, admin_username=admin, remove_others=remove_others).items():
            _say(f"user {name}: {what['user']}, experiments {what['experiments'] or '-'}")
        code = server.process.wait()
        if code != 0:
            raise RuntimeError(f"the MLflow server exited with code {code}")
    except KeyboardInterrupt:
        if not stop_requested:
            raise
        _say("stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
