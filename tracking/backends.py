"""Where a store lives: a URL resolved once into a :class:`Backend`.

Every question about what a URL points at (a local SQLite file, MLflow's file store, a
PostgreSQL server, an MLflow tracking server over HTTP) is answered here, from the URL's
scheme read once, not by ``url.startswith(...)`` wherever the answer is needed. The
backend knows the Optuna storage that goes with it, where a new experiment's artifacts
go, the empty database a new local store is copied from, and builds every
``MlflowClient`` the project uses. Importing this module imports neither MLflow nor
SQLAlchemy (``open_store`` stays cheap, tracking/errors.py's rule).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentscape.tracking.contract import DEFAULT_TRACKING_URI
from latentscape.tracking.errors import UsageError
from latentscape.tracking.privacy import masked

__all__ = [
    "Backend",
    "DIALECTS",
    "tracking_backend",
    "resolve_tracking_uri",
    "mlflow_client",
    "use_write_ahead_log",
]

# sqlite: a local database file; file: MLflow's file store (a folder); postgres: a
# PostgreSQL database; http: an MLflow tracking server; other: any other SQLAlchemy
# database MLflow accepts (MySQL, SQL Server), passed through as given.
DIALECTS = ("sqlite", "file", "postgres", "http", "other")
_POSTGRES_SCHEMES = ("postgres", "postgresql")
# SQLAlchemy 2.1 (MLflow's and Optuna's engine) maps postgresql:// to psycopg 3, which is
# not installed: PostgreSQL URLs are pinned to the psycopg2 driver we ship.
_PSYCOPG2 = "postgresql+psycopg2"
_SQLITE_PREFIX = "sqlite:///"


def _dialect(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep:
        return "file"  # MLflow reads a bare path as a file store
    family = scheme.lower().split("+")[0]
    if family == "sqlite":
        return "sqlite"
    if family in _POSTGRES_SCHEMES:
        return "postgres"
    if family in ("http", "https"):
        return "http"
    if family == "file":
        return "file"
    return "other"


@dataclass(frozen=True)
class Backend:
    """One store URL, read once. ``url`` is what MLflow, Optuna or SQLAlchemy is given:
    PostgreSQL pinned to psycopg2 (``postgres://`` and ``postgresql://`` become
    ``postgresql+psycopg2://``), every other URL as it came."""

    url: str
    dialect: str

    @classmethod
    def of(cls, url: str) -> Backend:
        """The backend of ``url`` as given (see :func:`tracking_backend` for the tracking store)."""
        dialect = _dialect(url)
        if dialect == "postgres":
            url = f"{_PSYCOPG2}://{url.partition('://')[2]}"
        return cls(url=url, dialect=dialect)

    def __repr__(self) -> str:
        return f"Backend({self.dialect}, {masked(self.url)!r})"

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a ``sqlite:///`` URL (relative as written), else None."""
        if self.dialect != "sqlite" or not self.url.startswith(_SQLITE_PREFIX):
            return None
        return Path(self.url[len(_SQLITE_PREFIX):])

    @property
    def is_server(self) -> bool:
        """Whether this is an MLflow tracking server (HTTP): credentials and HTTP errors apply."""
        return self.dialect == "http"

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgres"

    @property
    def folder(self) -> Path | None:
        """The folder of a local SQLite store, where its neighbours (Optuna's study, the
        catalog, artifacts) live; None for any other store."""
        path = self.sqlite_path
        return None if path is None else path.parent

    @property
    def optuna_url(self) -> str:
        """The sweeps' default Optuna storage: ``optuna.db`` beside a local SQLite store,
        else in the working folder (a team passes its PostgreSQL study with --storage)."""
        folder = self.folder if self.folder is not None else Path.cwd()
        return f"sqlite:///{(folder / 'optuna.db').resolve()}"

    def artifact_location(self, experiment_name: str) -> str | None:
        """Where a new experiment's artifacts go: beside a local SQLite store (so that it is
        self-contained, not wherever the first job ran from); None (the store's or server's
        own default) for any other."""
        if self.folder is None:
            return None
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment_name).strip("-") or "experiment"
        return (self.folder / "mlartifacts" / slug).resolve().as_uri()

    def auth_database_url(self) -> str:
        """The auth app's database beside this run store: ``<database>_auth`` on the same
        PostgreSQL server, or ``basic_auth.db`` beside a SQLite file."""
        from sqlalchemy.engine import make_url

        url = make_url(self.url)
        if url.get_backend_name() == "sqlite":
            folder = Path(url.database or ".").resolve().parent
            return f"sqlite:///{folder / 'basic_auth.db'}"
        return url.set(database=f"{url.database}_auth").render_as_string(hide_password=False)

    def optuna_engine_kwargs(self) -> dict[str, Any]:
        """SQLAlchemy engine arguments for an Optuna storage here.

        PostgreSQL: ``NullPool`` (a connection only while a query runs: twenty workers that
        mostly fit maps hold few at once, and none idle) with ``pool_pre_ping``. SQLite: wait
        for another process's write instead of failing with "database is locked" (a file,
        no connection limit)."""
        if self.dialect == "sqlite":
            return {"connect_args": {"timeout": 120}}
        from sqlalchemy.pool import NullPool

        return {"poolclass": NullPool, "pool_pre_ping": True}

    def prepare(self) -> None:
        """Make a local SQLite store ready: created from the template if missing, in WAL
        mode. Other stores are left to MLflow (or to ``latentscape server``)."""
        path = self.sqlite_path
        if path is None:
            return
        if not path.exists():
            if not path.parent.exists():
                raise UsageError(f"the folder of the tracking database {path} does not exist",
                                 "create it or pass another --tracking-uri")
            _place_new_database(path)
        use_write_ahead_log(path)

    def mlflow_client(self) -> Any:
        return mlflow_client(self.url)


def tracking_backend(uri: str | None = None) -> Backend:
    """The tracking store, MLflow's convention: ``uri``, else ``MLFLOW_TRACKING_URI``, else
    ``sqlite:///mlflow.db`` in the working folder. A relative SQLite path becomes absolute,
    so that the URL keeps meaning the same store after a ``chdir``."""
    found = Backend.of(uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)
    path = found.sqlite_path
    return found if path is None else Backend(url=f"{_SQLITE_PREFIX}{path.resolve()}", dialect="sqlite")


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The URL of :func:`tracking_backend`."""
    return tracking_backend(uri).url


def mlflow_client(url: str) -> Any:
    """An ``MlflowClient`` on ``url``: the one place the project builds one (MLflow's
    imports, 2-4 s in a new process, are paid here, at the first query)."""
    if Backend.of(url).is_server:  # its writes survive an answer broken off mid-way
        from latentscape.tracking.server_client import server_client

        return server_client(url)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url)


def use_write_ahead_log(path: Path, *, timeout: float = 30) -> None:
    """Put a SQLite database in WAL mode (a persistent property of the file).

    In the default rollback-journal mode a reader blocks writers, so a UI or a second
    job reading while a sweep writes makes MLflow fail with "database is locked"; in
    WAL mode readers never block the writer and writers wait their turn."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path, timeout=timeout)) as connection:
        if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            connection.execute("PRAGMA journal_mode=WAL")


def _template_database() -> Path:
    """An empty, fully migrated MLflow database, made once per MLflow version.

    Copying it instead of migrating a new database saves ~1.6 s per new store
    (measured, MLflow 3.17 on SQLite). The version is read from the package metadata:
    importing MLflow only to name the file cost seconds of every new store."""
    from importlib.metadata import version

    from latentscape.tracking.cache_folder import cache_root

    cache = cache_root()
    template = cache / f"mlflow-{version('mlflow')}-empty.db"
    if not template.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            fresh = Path(scratch) / "empty.db"
            mlflow_client(f"{_SQLITE_PREFIX}{fresh}").search_experiments()
            _dispose_sqlalchemy_engines()
            os.replace(fresh, template)
    return template


def _dispose_sqlalchemy_engines() -> None:
    # MLflow caches one store (and its engine) per URI; nothing to do when absent.
    with contextlib.suppress(Exception):
        from mlflow.tracking._tracking_service import utils

        utils._tracking_store_registry._get_store_with_resolved_uri.cache_clear()


def _place_new_database(path: Path) -> None:
    """Put a copy of the empty template at ``path`` unless a database got there first.

    The copy is made beside ``path`` and hard-linked into place, which fails if ``path``
    exists: two processes creating one store at once both end up using one complete file
    (copying straight to ``path`` let the second truncate what the first was writing)."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".latentscape-new-") as scratch:
        staged = Path(scratch) / path.name
        shutil.copyfile(_template_database(), staged)
        try:
            os.link(staged, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: a smaller window, not none
            if not path.exists():
                os.replace(staged, path)
