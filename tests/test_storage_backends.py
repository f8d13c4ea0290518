"""One storage suite over every backend, as Optuna runs its storage tests: the run
lifecycle, the DuckDB catalog and a sweep, each against

- ``sqlite``: a local SQLite file, the single-user default;
- ``file``: MLflow's plain folder store (an ``mlruns`` folder), which MLflow 3 refuses unless
  ``MLFLOW_ALLOW_FILE_STORE=true``;
- ``postgres``: MLflow's tracking store straight on PostgreSQL (127.0.0.1:5432);
- ``http``: ``latentscape server`` (basic auth, proxied artifacts) on PostgreSQL.

Each backend is opened once per session, in fresh databases that are dropped after;
tests tell their runs apart by a tag of their own. PostgreSQL being down fails the
PostgreSQL and HTTP cases with one line (CI starts it: .ci/run), it never skips them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latentscape.tracking.contract import Kind, Tag

EXPERIMENT = "backends"
ADMIN_PASSWORD = secrets.token_urlsafe(16)
BACKENDS = [
    "sqlite",
    "file",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("http", marks=pytest.mark.postgres),
]


@dataclass
class Backend:
    """A tracking store, the Optuna storage its sweeps use (None: the default beside a
    SQLite store) and the environment a client of it needs."""

    name: str
    uri: str
    optuna_storage: str | None
    env: dict[str, str] = field(default_factory=dict)


# -- PostgreSQL ---------------------------------------------------------------------
@contextlib.contextmanager
def _databases(postgres, *suffixes: str):
    """Fresh PostgreSQL database names (created by whoever uses them), dropped after."""
    postgres.require()
    base = f"ls_backends_{uuid.uuid4().hex[:10]}"
    names = [f"{base}{suffix}" for suffix in suffixes]
    try:
        yield names
    finally:
        for name in [*names, f"{base}_auth"]:  # _auth: the server's users, beside its store
            postgres.drop(name)


def _optuna_storage(url: str) -> str:
    from latentscape.tracking.databases import ensure_optuna_storage

    ensure_optuna_storage(url)  # database and tables made once, before any worker opens it
    return url


# -- the backends -------------------------------------------------------------------
@contextlib.contextmanager
def _sqlite(tmp: Path, postgres):
    yield Backend("sqlite", f"sqlite:///{tmp / 'mlflow.db'}", optuna_storage=None)


@contextlib.contextmanager
def _file(tmp: Path, postgres):
    yield Backend("file", (tmp / "mlruns").as_uri(), optuna_storage=f"sqlite:///{tmp / 'optuna.db'}",
                  env={"MLFLOW_ALLOW_FILE_STORE": "true"})


@contextlib.contextmanager
def _postgres(tmp: Path, postgres):
    from mlflow.tracking import MlflowClient

    from latentscape.tracking import backends
    from latentscape.tracking.databases import ensure_database

    with _databases(postgres, "", "_optuna") as (store_db, optuna_db):
        uri = backends.Backend.of(postgres.url(store_db)).url
        ensure_database(uri)
        # MLflow puts a database store's artifacts under ./mlruns of the working folder;
        # the experiment is made here, with its artifacts in the session's folder instead.
        MlflowClient(tracking_uri=uri).create_experiment(EXPERIMENT, artifact_location=(tmp / "artifacts").as_uri())
        yield Backend("postgres", uri, optuna_storage=_optuna_storage(postgres.url(optuna_db)))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _http(tmp: Path, postgres):
    """``latentscape server`` on fresh PostgreSQL databases; clients log in as its admin."""
    from latentscape.tracking.team_users import DEFAULT_ADMIN

    with _databases(postgres, "", "_optuna") as (store_db, optuna_db):
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LATENTSCAPE_"))}
        env.update(MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16), MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
                   PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "latentscape.jobs.cli", "server", "--backend-store-uri", postgres.url(store_db),
                   "--artifacts-destination", str(tmp / "artifacts"), "--port", str(port), "--workers", "1",
                   "--allowed-hosts", "127.0.0.1:*,localhost:*"]
        log = tmp / "server.log"
        with open(log, "wb") as output:
            server = subprocess.Popen(command, env=env, cwd=tmp, stdout=output, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            started = time.monotonic()
            while "MLflow answers at" not in log.read_text(errors="replace"):
                if server.poll() is not None or time.monotonic() - started > 120:
                    pytest.fail(f"latentscape server did not come up:\n{log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.25)
            yield Backend("http", f"http://127.0.0.1:{port}", optuna_storage=_optuna_storage(postgres.url(optuna_db)),
                          env={"MLFLOW_TRACKING_USERNAME": DEFAULT_ADMIN, "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD})
        finally:
            # SIGTERM: `latentscape server` stops its MLflow process group itself.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


OPENERS = {"sqlite": _sqlite, "file": _file, "postgres": _postgres, "http": _http}


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request, tmp_path_factory, postgres):
    """One backend for the session (a server start costs 10-25 s on 2 busy cores)."""
    tmp = tmp_path_factory.mktemp(f"backend-{request.param}")
    with OPENERS[request.param](tmp, postgres) as opened:
        yield opened


@pytest.fixture
def backend_store(backend, monkeypatch):
    """A ``latentscape.tracking.runs.Store`` on ``backend``, its client's environment set for this test
    only; the test fails if it leaves a run of the experiment RUNNING."""
    from latentscape.tracking.runs import open_store

    for name, value in backend.env.items():
        monkeypatch.setenv(name, value)
    try:
        store = open_store(backend.uri)
        store.experiment_id(EXPERIMENT)
    except Exception as error:
        if backend.name != "file":
            raise
        pytest.skip(f"MLflow's file store does not open here even with MLFLOW_ALLOW_FILE_STORE=true: {error}")
    yield store
    running = store.find_runs(store.experiment_id(EXPERIMENT), status="RUNNING")
    assert not running, f"runs left RUNNING: {[run.id for run in running]}"


def _case() -> dict[str, str]:
    """A tag that tells one test's runs from the others' in the shared store."""
    return {"case": uuid.uuid4().hex}


# -- runs ---------------------------------------------------------------------------
def test_a_run_logs_everything_and_ends_finished(backend_store):
    from latentscape.tracking.run_log import tracked_run
    from latentscape.tracking.runs import load_table

    store = backend_store
    experiment_id = store.experiment_id(EXPERIMENT)
    points = pd.DataFrame({"x": np.arange(5, dtype=float), "label": list("abcab")})
    with tracked_run(store, experiment_id, Kind.MAP, run_name="logged", tags=_case()) as log:
        log.params({"reducer.n_neighbors": 15, "clusterer": "kmeans"})
        log.metrics({"ami": 0.5}, step=0)
        log.metrics({"ami": 0.75}, step=3)
        log.tags({"note": "written"})
        log.table("tables/points.parquet", points)
        run_id = log.run_id

    run = store.get_run(run_id)
    assert run.status == "FINISHED"
    assert run.tags[Tag.KIND] == Kind.MAP.value and run.tags["note"] == "written"
    assert run.params == {"reducer.n_neighbors": "15", "clusterer": "kmeans"}
    assert run.metrics["ami"] == 0.75
    history = store.client.get_metric_history(run_id, "ami")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.5), (3, 0.75)]
    assert store.artifact_paths(run_id, "tables") == ["tables/points.parquet"]
    pd.testing.assert_frame_equal(load_table(store, run_id, "tables/points.parquet"), points)


def test_a_raised_error_ends_the_run_failed_with_its_error(backend_store):
    from latentscape.tracking.run_log import tracked_run

    store = backend_store
    with pytest.raises(RuntimeError, match="boom"):
        with tracked_run(store, store.experiment_id(EXPERIMENT), Kind.MAP, tags=_case()) as log:
            run_id = log.run_id
            raise RuntimeError("boom")
    run = store.get_run(run_id)
    assert run.status == "FAILED"
    assert "boom" in run.tags[Tag.ERROR]


def test_find_runs_by_kind_and_tags_even_with_quotes(backend_store):
    from latentscape.tracking.run_log import tracked_run

    store = backend_store
    experiment_id = store.experiment_id(EXPERIMENT)
    case = _case()
    notes = {"plain": "plain", "single": "it's", "both": "it's \"quoted\""}
    ids = {}
    for key, note in notes.items():
        with tracked_run(store, experiment_id, Kind.MAP, tags={**case, "note": note}) as log:
            ids[key] = log.run_id
    with tracked_run(store, experiment_id, Kind.SWEEP, tags=case) as log:
        sweep_id = log.run_id

    def found(**query) -> set[str]:
        return {run.id for run in store.find_runs(experiment_id, **query)}

    assert found(kind=Kind.MAP, tags=case) == set(ids.values())
    assert found(kind=Kind.SWEEP, tags=case) == {sweep_id}
    for key, note in notes.items():
        assert found(tags={**case, "note": note}) == {ids[key]}, note
    assert found(tags={**case, "note": "it'"}) == set()
    assert found(kind=Kind.MAP, tags=case, status="FINISHED", newest_first=True, max_results=2) <= set(ids.values())


def test_attach_resumes_a_run_and_kill_ends_one_killed(backend_store):
    from latentscape.tracking.run_log import attach, tracked_run

    store = backend_store
    experiment_id = store.experiment_id(EXPERIMENT)
    with tracked_run(store, experiment_id, Kind.SWEEP, tags=_case()) as log:
        log.metrics({"ami": 0.25})
        run_id = log.run_id
    with attach(store, run_id) as log:
        assert store.get_run(run_id).status == "RUNNING"
        log.metrics({"ami": 0.5}, step=1)
    resumed = store.get_run(run_id)
    assert resumed.status == "FINISHED" and resumed.metrics["ami"] == 0.5

    with tracked_run(store, experiment_id, Kind.TRIAL, parent_run_id=run_id, tags=_case()) as log:
        child_id = log.run_id
    store.kill(child_id, "withdrawn: its sweep was restarted", tags={"note": "stale"})
    killed = store.get_run(child_id)
    assert killed.status == "KILLED"
    assert killed.tags[Tag.ERROR] == "withdrawn: its sweep was restarted"
    assert killed.tags["note"] == "stale"
    assert [run.id for run in store.find_runs(experiment_id, parent_run_id=run_id)] == [child_id]


# -- catalog ------------------------------------------------------------------------
def test_the_catalog_syncs_runs_and_queries_return_them(backend_store, tmp_path):
    from latentscape.tracking import queries
    from latentscape.tracking.catalog import Catalog
    from latentscape.tracking.run_log import tracked_run

    store = backend_store
    experiment_id = store.experiment_id(EXPERIMENT)
    case = _case()
    with tracked_run(store, experiment_id, Kind.EXTRACT, run_name="source", tags=case) as log:
        log.params({"data": "digits"})
        source_id = log.run_id
    with tracked_run(store, experiment_id, Kind.MAP, run_name="it's a map", source_run_id=source_id,
                     parent_run_id=source_id, tags=case) as log:
        log.metrics({"ami": 0.5}, step=2)
        log.table("tables/points.parquet", pd.DataFrame({"x": [1.0, 2.0]}))
        map_id = log.run_id

    catalog = Catalog.open(store.uri, tmp_path / "catalog.duckdb", cache_dir=tmp_path / "cache")
    try:
        assert catalog.refresh().new >= 2
        runs = queries.runs(catalog, experiments=[EXPERIMENT], run_ids=[source_id, map_id]).set_index("run_id")
        assert runs.loc[source_id, "kind"] == Kind.EXTRACT.value and runs.loc[map_id, "kind"] == Kind.MAP.value
        assert set(runs.status) == {"FINISHED"}
        assert list(queries.children(catalog, source_id).run_id) == [map_id]
        assert list(queries.runs(catalog, text="it's a map", run_ids=[map_id]).run_id) == [map_id]
        metrics = queries.metrics(catalog, [map_id], keys=["ami"])
        assert metrics["value"].tolist() == [0.5]
        params = queries.params(catalog, [source_id])
        assert dict(zip(params["key"], params["value"])) == {"data": "digits"}
        points = catalog.artifact(map_id, "tables/points.parquet")
        assert points is not None and pd.read_parquet(points)["x"].tolist() == [1.0, 2.0]

        # A run logged now reaches the catalog on its next, incremental, refresh.
        with tracked_run(store, experiment_id, Kind.MAP, parent_run_id=source_id, tags=case) as log:
            later_id = log.run_id
        assert catalog.refresh().new == 1
        assert set(queries.children(catalog, source_id).run_id) == {map_id, later_id}
    finally:
        catalog.close()


# -- sweep --------------------------------------------------------------------------
def test_a_small_sweep_completes_with_its_trials_as_children(backend, backend_store):
    from latentscape.jobs.extract import ExtractConfig, extract
    from latentscape.jobs.sweep import SweepConfig, sweep

    store = backend_store
    extraction = extract(ExtractConfig(data="digits", limit=120), store=store, experiment=EXPERIMENT)
    result = sweep(SweepConfig(run=extraction.run_id, trials=2, reducer="pca", clusterer="kmeans", progress=False,
                               storage=backend.optuna_storage), store=store, experiment=EXPERIMENT)
    experiment_id = store.experiment_id(EXPERIMENT)
    run = store.get_run(result.run_id)
    assert run.status == "FINISHED" and run.tags[Tag.KIND] == Kind.SWEEP.value
    trials = store.find_runs(experiment_id, kind=Kind.TRIAL, parent_run_id=result.run_id)
    assert len(trials) == 2 and {trial.status for trial in trials} == {"FINISHED"}
    assert {trial.tags[Tag.STUDY] for trial in trials} == {run.tags[Tag.STUDY]}

