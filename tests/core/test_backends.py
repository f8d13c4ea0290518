"""A store URL is resolved once into its backend: dialect, SQLite file, Optuna storage,
artifact root, auth database. Pure: nothing is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from latentscape.tracking.backends import Backend, resolve_tracking_uri, tracking_backend


@pytest.mark.parametrize(("url", "dialect"), [
    ("sqlite:///mlflow.db", "sqlite"), ("sqlite:////abs/mlflow.db", "sqlite"), ("sqlite://", "sqlite"),
    ("postgresql://u@db/x", "postgres"), ("postgres://u@db/x", "postgres"), ("postgresql+psycopg2://u@db/x", "postgres"),
    ("POSTGRESQL://u@db/x", "postgres"), ("http://mlflow:5000", "http"), ("https://mlflow.example", "http"),
    ("file:///srv/mlruns", "file"), ("./mlruns", "file"), ("mysql+pymysql://u@db/x", "other"),
])
def test_each_url_has_one_dialect(url, dialect):
    backend = Backend.of(url)
    assert backend.dialect == dialect
    assert backend.is_server == (dialect == "http") and backend.is_postgres == (dialect == "postgres")
    assert (backend.sqlite_path is not None) == url.startswith("sqlite:///")


def test_postgres_is_pinned_to_psycopg2_and_other_urls_pass_as_given():
    assert Backend.of("postgres://u:p@db:5432/runs").url == "postgresql+psycopg2://u:p@db:5432/runs"
    for url in ("http://mlflow:5000", "sqlite:///a.db", "mysql+pymysql://u@db/x", "./mlruns"):
        assert Backend.of(url).url == url


def test_a_local_store_keeps_its_neighbours_beside_it(tmp_path):
    backend = tracking_backend(f"sqlite:///{tmp_path}/runs/mlflow.db")
    assert backend.sqlite_path == tmp_path / "runs" / "mlflow.db" and backend.folder == tmp_path / "runs"
    assert backend.optuna_url == f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}"
    assert backend.artifact_location("my study / 2") == (tmp_path / "runs" / "mlartifacts" / "my-study-2").as_uri()
    assert backend.auth_database_url() == f"sqlite:///{tmp_path / 'runs' / 'basic_auth.db'}"


def test_a_remote_store_leaves_artifacts_to_the_server_and_the_study_to_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for url in ("http://mlflow:5000", "postgresql://u@db/runs"):
        backend = Backend.of(url)
        assert backend.folder is None and backend.artifact_location("digits") is None
        assert backend.optuna_url == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert Backend.of("postgresql://u:p@db:5432/runs").auth_database_url() == \
        "postgresql+psycopg2://u:p@db:5432/runs_auth"


def test_the_tracking_store_follows_mlflows_convention_and_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_tracking_uri("sqlite:///sub/x.db") == f"sqlite:///{tmp_path / 'sub' / 'x.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team:5000")
    assert tracking_backend() == Backend(url="http://team:5000", dialect="http")
    assert Path(tracking_backend("sqlite:///y.db").sqlite_path).is_absolute()


def test_a_password_never_shows_in_the_backends_repr():
    assert "secret" not in repr(Backend.of("postgresql://u:secret@db/x"))
