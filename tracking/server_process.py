"""``mlflow server`` as the team runs it: its configuration validated once
(:class:`ServerConfig`), the basic-auth ini, the command line and environment (store URLs
and secrets off the command line), and the child process supervised (:class:`ServerProcess`).

Facts relied on (MLflow 3.17.2, read from its code): ``mlflow server`` reads its store URLs
from ``MLFLOW_BACKEND_STORE_URI`` / ``MLFLOW_ARTIFACTS_DESTINATION``; its GenAI job runner
(huey consumers, ~7 processes) is switched off here unless
``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from latentscape.tracking.auth_app import APP_NAME
from latentscape.tracking.backends import Backend
from latentscape.tracking.errors import UsageError
from latentscape.tracking.privacy import telemetry_off
from latentscape.tracking.team_users import (
    DEFAULT_ADMIN,
    DEFAULT_PERMISSIONS,
    ENV_ADMIN_PASSWORD,
    MIN_PASSWORD_LENGTH,
)

__all__ = ["ServerConfig", "auth_config_text", "write_auth_config", "server_command", "store_environment",
           "server_environment", "wait_until_ready", "ServerProcess"]

# Environment variables read here (MLflow's own names where MLflow reads them).
ENV_SECRET_KEY = "MLFLOW_FLASK_SERVER_SECRET_KEY"
ENV_AUTH_CONFIG = "MLFLOW_AUTH_CONFIG_PATH"
ENV_JOB_EXECUTION = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
ENV_MLFLOW_BACKEND = "MLFLOW_BACKEND_STORE_URI"  # mlflow server's own: its store URLs travel by environment
ENV_MLFLOW_ARTIFACTS = "MLFLOW_ARTIFACTS_DESTINATION"
ENV_BACKEND = "LATENTSCAPE_BACKEND_STORE_URI"


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
