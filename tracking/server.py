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

Users file (keys: password, admin, experiments, read_only; any other is an error)::

    users:
      alice:
        password: ${ALICE_PASSWORD}
        experiments: {digits: MANAGE, private: DENY}   # name or "*" -> READ|USE|EDIT|MANAGE|DENY
      bob:
        password: ${BOB_PASSWORD}
        admin: false
      viewer:
        password: ${VIEWER_PASSWORD}
        read_only: true    # reads what it is granted, writes nothing (tracking/auth_app.py)

Facts this module relies on (MLflow 3.17.2, SQLAlchemy 2.1, read from their code):
SQLAlchemy 2.1 maps ``postgresql://`` to the psycopg 3 driver, which is not installed:
URLs are rewritten to ``postgresql+psycopg2://`` (:class:`~latentscape.tracking.backends.Backend`). Passwords
need 12 characters or more. A grant that exists already is refused, so changing one
is revoke + grant. The server's GenAI job runner (huey consumers, ~7 processes) is
switched off unless ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentscape.tracking.auth_app import APP_NAME, app_environment
from latentscape.tracking.backends import Backend, mlflow_client
from latentscape.tracking.errors import UsageError
from latentscape.tracking.privacy import masked, telemetry_off

__all__ = [
    "ServerConfig",
    "UserSpec",
    "PERMISSIONS",
    "ensure_database",
    "ensure_optuna_storage",
    "auth_config_text",
    "write_auth_config",
    "server_command",
    "store_environment",
    "server_environment",
    "load_users",
    "provision_users",
    "ServerProcess",
    "wait_until_ready",
    "serve",
    "add_server_parser",
    "add_parser",
]

# Environment variables read here (MLflow's own names where MLflow reads them).
ENV_SECRET_KEY = "MLFLOW_FLASK_SERVER_SECRET_KEY"
ENV_ADMIN_USERNAME = "MLFLOW_AUTH_ADMIN_USERNAME"
ENV_ADMIN_PASSWORD = "MLFLOW_AUTH_ADMIN_PASSWORD"
ENV_AUTH_CONFIG = "MLFLOW_AUTH_CONFIG_PATH"
ENV_JOB_EXECUTION = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
ENV_MLFLOW_BACKEND = "MLFLOW_BACKEND_STORE_URI"  # mlflow server's own: its store URLs travel by environment
ENV_MLFLOW_ARTIFACTS = "MLFLOW_ARTIFACTS_DESTINATION"
ENV_BACKEND = "LATENTSCAPE_BACKEND_STORE_URI"
ENV_AUTH_DB = "LATENTSCAPE_AUTH_DB_URI"
ENV_ARTIFACTS = "LATENTSCAPE_ARTIFACTS_DESTINATION"
ENV_ALLOWED_HOSTS = "LATENTSCAPE_ALLOWED_HOSTS"
ENV_USERS_FILE = "LATENTSCAPE_USERS_FILE"
ENV_USERS = "LATENTSCAPE_USERS"
ENV_OPTUNA = "LATENTSCAPE_OPTUNA_STORAGE"

DEFAULT_ADMIN = "admin"
# Grantable on an experiment (MLflow 3.17's RESOURCE_GRANTABLE_PERMISSIONS). DENY hides an
# experiment from a user whatever the default permission says.
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "DENY")
DEFAULT_PERMISSIONS = (*PERMISSIONS[:-1], "NO_PERMISSIONS")
# MLflow no longer grants NO_PERMISSIONS on a resource; written in a users file it means
# what DENY does (no capability at all), so it is granted as DENY.
_PERMISSION_ALIASES = {"NO_PERMISSIONS": "DENY"}
# What a user's entry in the users file may say; anything else is an error (a misspelt
# key would otherwise be ignored silently, e.g. a read_only that protects nothing).
USER_KEYS = ("password", "admin", "experiments", "read_only")
MIN_PASSWORD_LENGTH = 12  # MLflow 3.17's policy (mlflow.utils.validation._validate_password)
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# -- databases ---------------------------------------------------------------------
def _connect_maintenance(url, *, timeout: float):
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
    connection = _connect_maintenance(parsed, timeout=timeout)
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


# -- configuration -----------------------------------------------------------------
def _pool_size(value: int | None) -> int:
    from latentscape.tracking.connections import check_pool_size, default_pool_size

    return check_pool_size(default_pool_size() if value is None else value)


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``mlflow server`` is started with, validated once.

    ``backend_store_uri``: SQLAlchemy URL (PostgreSQL in team mode; SQLite works for
    a trial); ``artifacts_destination``: folder or object-store URI that the server
    proxies; ``allowed_hosts``: Host headers the server accepts (None: MLflow's
    default, localhost and private IPs)."""

    backend_store_uri: str
    artifacts_destination: str = "./mlartifacts"
    auth_database_uri: str | None = None
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    allowed_hosts: str | None = None
    default_permission: str = "READ"
    auth_config: str | None = None  # an ini of the user's own instead of the one written here
    auth_cache_seconds: int = 60
    optuna_storage: str | None = None  # the sweeps' Optuna database, created with the others
    db_pool_size: int | None = None  # every MLflow engine's pool (tracking/connections.py); None: the default

    def __post_init__(self):
        if not self.backend_store_uri:
            raise UsageError("no backend store given",
                             f"pass --backend-store-uri postgresql://USER@HOST:5432/DB or set ${ENV_BACKEND}")
        backend = Backend.of(self.backend_store_uri)
        object.__setattr__(self, "backend_store_uri", backend.url)
        auth_uri = self.auth_database_uri or backend.auth_database_url()
        object.__setattr__(self, "auth_database_uri", Backend.of(auth_uri).url)
        if self.optuna_storage:
            object.__setattr__(self, "optuna_storage", Backend.of(self.optuna_storage).url)
        object.__setattr__(self, "db_pool_size", _pool_size(self.db_pool_size))
        if self.default_permission not in DEFAULT_PERMISSIONS:
            raise UsageError(f"unknown default permission {self.default_permission!r}",
                             f"choose one of {', '.join(DEFAULT_PERMISSIONS)}")
        if not 0 < self.port < 65536:
            raise UsageError(f"--port {self.port} is out of range", "pass 1-65535 (default 5000)")
        if self.workers < 1:
            raise UsageError(f"--workers {self.workers} must be positive", "pass 1 or more (default 2)")
        if self.auth_cache_seconds < 0:
            raise UsageError(f"--auth-cache-seconds {self.auth_cache_seconds} is negative", "pass 0 (off) or more")
        if self.auth_config and not Path(self.auth_config).is_file():
            raise UsageError(f"auth config {self.auth_config} does not exist", "pass an existing ini file")

    @property
    def databases(self) -> list[str]:
        """Every database the team uses: runs, users, Optuna studies."""
        return [url for url in (self.backend_store_uri, self.auth_database_uri, self.optuna_storage) if url]

    @property
    def url(self) -> str:
        """Where clients on this machine reach the server."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"


def auth_config_text(config: ServerConfig, *, admin_username: str = DEFAULT_ADMIN) -> str:
    """The basic-auth app's ini. It holds no password: MLflow reads the admin's from
    ``MLFLOW_AUTH_ADMIN_PASSWORD`` on first start."""
    return "\n".join([
        "[mlflow]",
        f"default_permission = {config.default_permission}",
        f"database_uri = {config.auth_database_uri}",
        f"admin_username = {admin_username}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        # Measured: without the cache every request pays a scrypt check (werkzeug's
        # scrypt:32768:8:1), 0.11 s of server CPU, 0.3-0.4 s of wall time on 2 busy cores
        # (a trial's ~10 requests: seconds). A cached check goes stale for at most this
        # long after a password change on another worker.
        f"auth_cache_ttl_seconds = {config.auth_cache_seconds}",
        "",
    ])


def write_auth_config(config: ServerConfig, folder: Path | None = None, *,
                      admin_username: str = DEFAULT_ADMIN) -> Path:
    """Write :func:`auth_config_text` to a private file (mode 0600: the database URL
    may carry a password) and return its path."""
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="latentscape-server-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "basic_auth.ini"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(auth_config_text(config, admin_username=admin_username))
    return path


def server_command(config: ServerConfig, *, python: str | None = None) -> list[str]:
    """The ``mlflow server`` command line. No store URL on it (a database URL may carry a
    password, and ``ps`` shows every argument to every user): those travel by
    environment, :func:`store_environment`."""
    command = [
        python or sys.executable, "-m", "mlflow", "server",
        "--serve-artifacts",
        "--app-name", APP_NAME,  # MLflow's basic-auth app with the team's rules (tracking/auth_app.py)
        "--host", config.host, "--port", str(config.port), "--workers", str(config.workers),
    ]
    if config.allowed_hosts:
        command += ["--allowed-hosts", config.allowed_hosts]
    return command


def store_environment(config: ServerConfig) -> dict[str, str]:
    """The store URLs as ``mlflow server`` reads them from its environment (its click
    options declare ``MLFLOW_BACKEND_STORE_URI`` and ``MLFLOW_ARTIFACTS_DESTINATION``):
    only the server's own user (and root) can read a process's environment."""
    artifacts = config.artifacts_destination
    if "://" not in artifacts:  # a folder: absolute, so the server's working folder does not matter
        artifacts = str(Path(artifacts).expanduser().resolve())
    return {ENV_MLFLOW_BACKEND: config.backend_store_uri, ENV_MLFLOW_ARTIFACTS: artifacts}


def server_environment(auth_config_path: Path | str, *,
                       environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ours plus the auth ini's path. Fails with a clear
    error when a secret the auth app needs is missing."""
    env = dict(os.environ if environ is None else environ)
    missing = [name for name in (ENV_SECRET_KEY, ENV_ADMIN_PASSWORD) if not env.get(name)]
    if missing:
        raise UsageError(
            f"{' and '.join(missing)} not set",
            "export them (e.g. from docker/.env); generate a key with "
            "python -c 'import secrets; print(secrets.token_hex(32))'",
        )
    if len(env[ENV_ADMIN_PASSWORD]) < MIN_PASSWORD_LENGTH:
        raise UsageError(f"{ENV_ADMIN_PASSWORD} is shorter than {MIN_PASSWORD_LENGTH} characters",
                         "choose a longer password (MLflow's policy)")
    env[ENV_AUTH_CONFIG] = str(auth_config_path)
    env.setdefault(ENV_JOB_EXECUTION, "false")  # GenAI job runner: ~7 processes nobody here uses
    telemetry_off(env)  # the server's usage telemetry, unless the operator opted in
    return env


# -- users -------------------------------------------------------------------------
@dataclass(frozen=True)
class UserSpec:
    """One user of the team server. ``experiments``: experiment name (or ``*`` for
    all) -> permission; others get the server's default permission."""

    username: str
    password: str = field(repr=False)
    admin: bool = False
    experiments: Mapping[str, str] = field(default_factory=dict)
    read_only: bool = False  # reads what it is granted, writes nothing (enforced by tracking/auth_app.py)

    def __post_init__(self):
        object.__setattr__(self, "experiments", {
            name: _PERMISSION_ALIASES.get(permission, permission) for name, permission in self.experiments.items()})
        if not self.username or any(ch.isspace() or ch == ":" for ch in self.username):
            raise UsageError(f"bad user name {self.username!r}", "use a name without spaces or colons")
        if self.read_only and self.admin:
            raise UsageError(f"user {self.username!r} is both admin and read_only", "drop one of the two")
        if len(self.password) < MIN_PASSWORD_LENGTH:
            raise UsageError(f"the password of user {self.username!r} is shorter than {MIN_PASSWORD_LENGTH} characters",
                             "choose a longer one (MLflow's policy)")
        for experiment, permission in self.experiments.items():
            if permission not in PERMISSIONS:
                raise UsageError(f"user {self.username!r}: unknown permission {permission!r} on {experiment!r}",
                                 f"choose one of {', '.join(PERMISSIONS)}")


def _expand(text: str, environ: Mapping[str, str], where: str) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in environ:
            raise UsageError(f"{where} refers to ${{{name}}}, which is not set", f"export {name}")
        return environ[name]

    return _VARIABLE.sub(value, text)


def _users_from_file(path: Path, environ: Mapping[str, str]) -> list[UserSpec]:
    import yaml

    if not path.is_file():
        raise UsageError(f"users file {path} does not exist", "pass an existing YAML file to --users")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UsageError(f"users file {path} is not valid YAML ({' '.join(str(error).split())[:200]})",
                         "fix its syntax") from error
    entries = document.get("users") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        raise UsageError(f"users file {path} has no 'users:' mapping", "see the example in docker/users.example.yaml")
    unknown = sorted(str(key) for key in document if key != "users")
    if unknown:
        raise UsageError(f"users file {path} has unknown key {unknown[0]!r}", "the file has one key, users:")
    users = []
    for name, entry in entries.items():
        entry = entry or {}
        unknown = sorted(str(key) for key in entry if key not in USER_KEYS) if isinstance(entry, dict) else []
        if unknown:
            raise UsageError(f"user {name!r} in {path} has unknown key {unknown[0]!r}",
                             f"use only {', '.join(USER_KEYS)}")
        if not isinstance(entry, dict) or not isinstance(entry.get("password"), str):
            raise UsageError(f"user {name!r} in {path} has no password", "add password: ${SOME_VARIABLE}")
        for key in ("admin", "read_only"):
            if not isinstance(entry.get(key, False), bool):
                raise UsageError(f"user {name!r} in {path}: {key} is {entry[key]!r}", f"write {key}: true or false")
        experiments = entry.get("experiments") or {}
        if not isinstance(experiments, dict):
            raise UsageError(f"user {name!r} in {path}: experiments must map names to permissions",
                             "e.g. experiments: {digits: EDIT}")
        users.append(UserSpec(
            username=str(name),
            password=_expand(entry["password"], environ, f"the password of {name!r} in {path}"),
            admin=entry.get("admin", False),
            experiments={str(k): str(v).upper() for k, v in experiments.items()},
            read_only=entry.get("read_only", False),
        ))
    return users


def _users_from_variable(text: str) -> list[UserSpec]:
    users = []
    for entry in re.split(r"[,\s]+", text.strip()):
        if not entry:
            continue
        name, sep, password = entry.partition(":")
        if not sep:
            raise UsageError(f"${ENV_USERS} entry {name!r} has no password",
                             "write name:password entries separated by commas")
        users.append(UserSpec(username=name, password=password))
    return users


def load_users(path: str | Path | None = None, *, environ: Mapping[str, str] | None = None) -> list[UserSpec]:
    """Users from the YAML file ``path`` (default ``$LATENTSCAPE_USERS_FILE``) and from
    ``$LATENTSCAPE_USERS``; a name given twice is an error."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(ENV_USERS_FILE)
    users = _users_from_file(Path(path), environ) if path else []
    users += _users_from_variable(environ.get(ENV_USERS, ""))
    names = [user.username for user in users]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UsageError(f"user(s) {', '.join(twice)} given twice", f"keep one entry in the users file or ${ENV_USERS}")
    return users


@contextlib.contextmanager
def _credentials(username: str, password: str) -> Iterator[None]:
    """MLflow's clients read credentials from the environment only: set them for the
    duration, then restore (the server process does nothing else meanwhile)."""
    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict(zip(names, (username, password))))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def provision_users(tracking_uri: str, users: Sequence[UserSpec], *, admin_username: str | None = None,
                    admin_password: str | None = None, remove_others: bool = False) -> dict[str, Any]:
    """Make the server's users match ``users``, as the admin: create missing users,
    set passwords and admin flags, grant experiment permissions (creating the named
    experiments if missing). With ``remove_others`` (a users file or ``$LATENTSCAPE_USERS``
    was given: it is the truth), every other user but the admin is deleted, and with them
    their grants and admin flag: they can no longer log in. Idempotent. Returns what it
    did, per user (``{"user": "removed"}`` for the removed)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    admin_username = admin_username or os.environ.get(ENV_ADMIN_USERNAME) or DEFAULT_ADMIN
    admin_password = admin_password or os.environ.get(ENV_ADMIN_PASSWORD)
    if not admin_password:
        raise UsageError(f"{ENV_ADMIN_PASSWORD} not set", "export the admin's password to manage users")
    done: dict[str, Any] = {}
    with _credentials(admin_username, admin_password):
        auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
        client = mlflow_client(tracking_uri)
        try:
            auth.get_user(admin_username)
        except MlflowException as error:
            raise UsageError(f"the server refused the admin {admin_username!r} ({error.error_code})",
                             f"set {ENV_ADMIN_PASSWORD} to the admin's current password") from error
        for user in users:
            try:
                auth.get_user(user.username)
                auth.update_user_password(user.username, user.password)
                action = "updated"
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                auth.create_user(user.username, user.password)
                action = "created"
            auth.update_user_admin(user.username, user.admin)
            grants = {}
            for name, permission in user.experiments.items():
                resource = "*" if name == "*" else _experiment_id(client, name)
                try:
                    auth.grant_user_permission(user.username, "experiment", resource, permission)
                except MlflowException as error:  # a grant exists: replace it, unless it is this one
                    if error.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    # Revoking first leaves the user without it for a moment: a worker of
                    # theirs logging then, as the server restarts, got a 403. So only a changed
                    # grant is replaced.
                    current = auth.get_user_permission(user.username, "experiment", resource).permission
                    if current != permission:
                        auth.revoke_user_permission(user.username, "experiment", resource)
                        auth.grant_user_permission(user.username, "experiment", resource, permission)
                grants[name] = permission
            done[user.username] = {"user": action, "admin": user.admin, "experiments": grants}
        if remove_others:
            keep = {admin_username, *(user.username for user in users)}
            for name in sorted(set(_server_usernames(tracking_uri)) - keep):
                auth.delete_user(name)  # MLflow deletes the user's grants with it
                done[name] = {"user": "removed", "admin": False, "experiments": {}}
    return done


def _server_usernames(tracking_uri: str) -> list[str]:
    """Every user the server knows (MLflow's admin-only ``users/list``; its Python client
    has no call for it). Run with the admin's credentials set."""
    from mlflow.server.auth.routes import LIST_USERS
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    response = verify_rest_response(http_request(get_default_host_creds(tracking_uri), LIST_USERS, "GET"), LIST_USERS)
    return [entry["username"] for entry in response.json().get("users", [])]


def _experiment_id(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name)
    return experiment.experiment_id


# -- the server process ------------------------------------------------------------
def wait_until_ready(url: str, *, timeout: float = 120.0, process: subprocess.Popen | None = None) -> float:
    """Poll ``url``/health until it answers 200; returns the seconds waited. Raises
    RuntimeError if ``process`` exits first or ``timeout`` passes."""
    import urllib.error
    import urllib.request

    started = time.monotonic()
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the MLflow server exited with code {process.returncode} before it answered")
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the MLflow server at {url} did not answer within {timeout:.0f} s")
        time.sleep(0.25)


class ServerProcess:
    """``mlflow server`` as a child process in its own process group, so that stopping
    it stops its uvicorn workers too."""

    def __init__(self, config: ServerConfig, *, env: Mapping[str, str], log: Path | None = None):
        self.config = config
        self.env = dict(env)
        self.log = log
        self.process: subprocess.Popen | None = None

    def launch(self) -> None:
        """Start the process without waiting (see :meth:`wait_until_ready`)."""
        output = open(self.log, "ab") if self.log else None  # noqa: SIM115 (closed in stop)
        self._output = output
        env = {**self.env, **store_environment(self.config)}  # store URLs (and passwords) off the command line
        self.process = subprocess.Popen(server_command(self.config), env=env, stdout=output,
                                        stderr=subprocess.STDOUT if output else None, start_new_session=True)

    def wait_until_ready(self, *, timeout: float = 120.0) -> float:
        """Wait until it answers; returns the seconds waited. Stops it on failure."""
        try:
            return wait_until_ready(self.config.url, timeout=timeout, process=self.process)
        except BaseException:
            self.stop()
            raise

    def start(self, *, timeout: float = 120.0) -> float:
        """Start and wait until it answers; returns the seconds waited."""
        self.launch()
        return self.wait_until_ready(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the whole group: a crash, as far as clients can tell."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._close()

    def stop(self, *, timeout: float = 10.0) -> int | None:
        """SIGTERM the group, SIGKILL after ``timeout``; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # uvicorn workers left behind by a parent that died first
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._close()
        return self.process.returncode

    def _close(self) -> None:
        output = getattr(self, "_output", None)
        if output is not None:
            output.close()
            self._output = None


# -- CLI ---------------------------------------------------------------------------
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
