"""Team mode against the real PostgreSQL on 127.0.0.1:5432: ``latentscape server`` (MLflow
with basic auth, proxied artifacts, PostgreSQL backend store), two users, jobs and the
catalog through the server, sweep workers sharing one Optuna study on PostgreSQL, and a
server crash in the middle of a sweep.

The topology of docker/compose.yaml, as processes. Every module run makes its own
databases (unique names) and drops them after; passwords are generated per run and
reach the server only through its environment and a users file that refers to them.
One server serves the whole module (a start costs 10-25 s on 2 busy cores); the crash tests
run last and restart it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.postgres


# -- helpers ------------------------------------------------------------------------
def _latentscape(*args: str) -> list[str]:
    return [sys.executable, "-m", "latentscape.jobs.cli", *args]


USERS_FILE = """\
users:
  alice:
    password: ${ALICE_PASSWORD}
    experiments: {team-sweep: EDIT}
  bob:
    password: ${BOB_PASSWORD}
    experiments: {team-sweep: EDIT}
"""


@pytest.fixture(scope="module")
def team(team_servers):
    """One team server for the module: fresh databases, two users (alice, bob)."""
    return team_servers(USERS_FILE, users=("alice", "bob"))


@pytest.fixture(scope="module")
def digits_run(team) -> str:
    """``latentscape extract --data digits`` as alice, through the server (run id)."""
    done = subprocess.run(_latentscape("extract", "--data", "digits", "--experiment", "team-digits", "--json"),
                          env=team.env("alice"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json must print one stdout line, got {lines}"  # MLflow prints run URLs otherwise
    return json.loads(lines[0])["run_id"]


# -- pure parts ---------------------------------------------------------------------
def test_postgres_urls_pin_the_installed_driver():
    from latentscape.tracking.backends import Backend

    assert Backend.of("postgresql://u:p@db:5432/mlflow").url == "postgresql+psycopg2://u:p@db:5432/mlflow"
    assert Backend.of("postgres://u@db/mlflow").url == "postgresql+psycopg2://u@db/mlflow"
    assert Backend.of("postgresql+psycopg2://u@db/x").url == "postgresql+psycopg2://u@db/x"
    assert Backend.of("sqlite:///tmp/mlflow.db").url == "sqlite:///tmp/mlflow.db"
    assert Backend.of("postgresql://u:p@db:5432/mlflow").auth_database_url() == "postgresql+psycopg2://u:p@db:5432/mlflow_auth"


def test_server_command_and_auth_config_are_team_mode_and_hold_no_secret(tmp_path):
    from latentscape.tracking.server_process import (
        ServerConfig,
        auth_config_text,
        server_command,
        store_environment,
        write_auth_config,
    )

    config = ServerConfig(backend_store_uri="postgresql://mlflow:pw@db:5432/mlflow", artifacts_destination="s3://bucket/a",
                          host="0.0.0.0", allowed_hosts="mlflow,mlflow:*")
    command = server_command(config)
    for flag, value in [("--app-name", "latentscape"), ("--allowed-hosts", "mlflow,mlflow:*"), ("--host", "0.0.0.0")]:
        assert command[command.index(flag) + 1] == value
    assert "--serve-artifacts" in command
    # The store URLs (and a password in them) travel by environment, which `ps` does not show.
    assert not any("postgresql" in part or "s3://" in part for part in command)
    assert store_environment(config) == {"MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg2://mlflow:pw@db:5432/mlflow",
                                         "MLFLOW_ARTIFACTS_DESTINATION": "s3://bucket/a"}
    config = ServerConfig(backend_store_uri="postgresql://mlflow@db:5432/mlflow")
    ini = auth_config_text(config)
    assert "database_uri = postgresql+psycopg2://mlflow@db:5432/mlflow_auth" in ini
    assert "password" not in ini
    path = write_auth_config(config, tmp_path)
    assert path.stat().st_mode & 0o077 == 0  # the database URL may carry a password


def test_users_come_from_a_file_and_the_environment_never_from_code(tmp_path):
    from latentscape.tracking.team_users import load_users
    from latentscape.tracking.errors import UsageError

    (tmp_path / "users.yaml").write_text(USERS_FILE)
    environ = {"ALICE_PASSWORD": "a" * 12, "BOB_PASSWORD": "b" * 12, "LATENTSCAPE_USERS": "carol:" + "c" * 12}
    users = {user.username: user for user in load_users(tmp_path / "users.yaml", environ=environ)}
    assert sorted(users) == ["alice", "bob", "carol"]
    assert users["alice"].password == "a" * 12 and users["alice"].experiments == {"team-sweep": "EDIT"}
    assert "aaaa" not in repr(users["alice"])
    with pytest.raises(UsageError, match=r"\$\{BOB_PASSWORD\}, which is not set"):
        load_users(tmp_path / "users.yaml", environ={"ALICE_PASSWORD": "a" * 12})
    with pytest.raises(UsageError, match="shorter than 12"):
        load_users(None, environ={"LATENTSCAPE_USERS": "dave:short"})


def test_the_server_refuses_to_start_without_its_secrets(monkeypatch, capsys, postgres):
    from latentscape.jobs.cli import main

    for name in ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert main(["server", "--backend-store-uri", postgres.url("never_created")]) == 2
    error = capsys.readouterr().err
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY and MLFLOW_AUTH_ADMIN_PASSWORD not set" in error
    assert "Traceback" not in error


def test_missing_databases_are_created_once(postgres):
    from latentscape.tracking.databases import ensure_database

    if not postgres.answers():
        pytest.skip(f"team-mode tests need PostgreSQL on {postgres.host}:{postgres.port}, which does not answer")
    name = f"ls_team_{uuid.uuid4().hex[:10]}"
    try:
        assert ensure_database(postgres.url(name)) is True
        assert ensure_database(postgres.url(name)) is False
    finally:
        postgres.drop(name)


def test_the_docker_files_describe_the_tested_topology():
    """docker/ cannot run here (no container engine): check that it says what the tests run."""
    import re

    import yaml

    docker = REPO / "docker"
    compose = yaml.safe_load((docker / "compose.yaml").read_text())
    services = compose["services"]
    assert {"db", "mlflow", "ui", "worker"} <= set(services)
    assert services["db"]["image"].startswith("postgres:")
    assert services["mlflow"]["command"][:2] == ["latentscape", "server"]
    assert services["ui"]["command"][:2] == ["latentscape", "ui"]
    worker = services["worker"]["command"][-1]
    assert "latentscape sweep" in worker and "--resume" in worker
    # The workers' storage is theirs alone (not the server's role) and off their command line.
    assert "--storage" not in worker and "POSTGRES_PASSWORD" not in str(compose["x-worker-env"])
    assert "${OPTUNA_USER" in compose["x-worker-env"]["LATENTSCAPE_OPTUNA_STORAGE"]
    assert "replicas" not in str(services["worker"]) and "container_name" not in services["worker"]  # --scale works
    # Secrets only by reference, each required (${NAME:?...}) and listed in .env.example.
    text = (docker / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert {"POSTGRES_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD",
            "WORKER_PASSWORD", "UI_PASSWORD"} <= required
    example = dict(line.split("=", 1) for line in (docker / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert required <= set(example)
    assert all("change-me" in example[name] for name in required if "PASSWORD" in name or "KEY" in name)
    dockerfile = (docker / "Dockerfile").read_text()
    assert [line for line in dockerfile.splitlines() if line.startswith("FROM")] == ["FROM python:3.11-slim"]
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in dockerfile
    assert "-c constraints.txt" in dockerfile


# -- the running server -------------------------------------------------------------
def test_a_request_without_credentials_is_refused(team):
    import requests

    search = f"{team.url}/api/2.0/mlflow/experiments/search"
    assert requests.get(search, params={"max_results": 1}, timeout=10).status_code == 401
    assert requests.get(search, params={"max_results": 1}, auth=("alice", "wrong-password-1"), timeout=10).status_code == 401
    assert requests.get(search, params={"max_results": 1}, auth=team.auth("alice"), timeout=10).status_code == 200
    # --allowed-hosts: a Host header outside the list is refused (DNS rebinding)
    spoofed = requests.get(search, params={"max_results": 1}, auth=team.auth("alice"), timeout=10,
                           headers={"Host": "evil.example.com"})
    assert spoofed.status_code == 403


def test_read_permission_cannot_write_to_another_users_experiment(team):
    import requests

    api = f"{team.url}/api/2.0/mlflow"

    def post(user, path, payload):
        return requests.post(f"{api}/{path}", json=payload, auth=team.auth(user), timeout=10)

    created = post("alice", "experiments/create", {"name": f"alice-private-{uuid.uuid4().hex[:6]}"})
    assert created.status_code == 200, created.text
    experiment_id = created.json()["experiment_id"]
    run = post("alice", "runs/create", {"experiment_id": experiment_id})
    assert run.status_code == 200
    run_id = run.json()["run"]["info"]["run_id"]

    # bob has the default permission, READ: he sees alice's experiment and run ...
    seen = requests.get(f"{api}/runs/get", params={"run_id": run_id}, auth=team.auth("bob"), timeout=10)
    assert seen.status_code == 200
    # ... and may change nothing in them
    assert post("bob", "runs/create", {"experiment_id": experiment_id}).status_code == 403
    metric = {"run_id": run_id, "key": "ami", "value": 1.0, "timestamp": 0, "step": 0}
    assert post("bob", "runs/log-metric", metric).status_code == 403
    assert post("alice", "runs/log-metric", metric).status_code == 200
    assert post("alice", "runs/update", {"run_id": run_id, "status": "FINISHED"}).status_code == 200


def test_jobs_with_credentials_log_normally(team, digits_run):
    from mlflow.tracking import MlflowClient

    from latentscape.tracking.contract import Artifact, Kind, Tag

    env = team.env("bob")  # any user may read
    with _environment(env):
        client = MlflowClient(tracking_uri=team.url)
        run = client.get_run(digits_run)
        assert run.info.status == "FINISHED"
        assert run.data.tags[Tag.KIND] == Kind.EXTRACT.value
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied, not a path on the client
        listed = {item.path for item in client.list_artifacts(digits_run)}
        assert Artifact.SAMPLES in listed
    # The bytes live under the server's --artifacts-destination.
    stored = list(team.artifacts.rglob(Path(Artifact.embedding(0)).name))
    assert stored, f"no embedding under {team.artifacts}"

    # bob may read alice's extraction but not log into her experiment: one line in people's
    # words (who, which experiment, the permission needed, how to get it), exit 2.
    denied = subprocess.run(_latentscape("extract", "--data", "digits", "--experiment", "team-digits", "--force"),
                            env=team.env("bob"), capture_output=True, text=True, timeout=300)
    assert denied.returncode == 2, denied.stderr[-2000:]
    lines = [line for line in denied.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, denied.stderr[-2000:]
    assert "user 'bob' may not log runs in experiment 'team-digits'" in lines[0]
    assert "needs EDIT permission" in lines[0] and "--provision-only --users FILE" in lines[0]
    assert "Traceback" not in denied.stderr

    # A wrong password: the server did not accept bob's credentials.
    wrong = {**team.env("bob"), "MLFLOW_TRACKING_PASSWORD": "not-his-password"}
    refused = subprocess.run(_latentscape("extract", "--data", "digits", "--experiment", "bob-digits"),
                             env=wrong, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "did not accept the credentials of user 'bob' (HTTP 401)" in refused.stderr, \
        refused.stderr[-2000:]


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_the_catalog_syncs_through_the_server(team, digits_run, tmp_path):
    import pandas as pd

    from latentscape.tracking import queries
    from latentscape.tracking.catalog import Catalog
    from latentscape.tracking.contract import Artifact, Kind
    from latentscape.tracking.run_log import tracked_run
    from latentscape.tracking.runs import open_store

    with _environment(team.env("bob")):  # the UI's account needs no more than READ
        catalog = Catalog.open(tracking_uri=team.url, path=tmp_path / "catalog.duckdb")
        first = catalog.refresh()
        runs = queries.runs(catalog).set_index("run_id")
        assert digits_run in runs.index and first.new >= 1
        assert runs.loc[digits_run, "kind"] == Kind.EXTRACT.value
        assert runs.loc[digits_run, "status"] == "FINISHED"
        samples = catalog.artifact(digits_run, Artifact.SAMPLES)  # downloaded through the proxy
        assert samples is not None and len(pd.read_parquet(samples)) == 1797

    # A run alice logs now reaches bob's catalog on its next (incremental) refresh.
    with _environment(team.env("alice")):
        store = open_store(team.url)
        with tracked_run(store, store.experiment_id("team-digits"), Kind.MAP, source_run_id=digits_run) as log:
            log.metrics({"ami": 0.5})
            new_run = log.run_id
    with _environment(team.env("bob")):
        second = catalog.refresh()
        assert second.new == 1
        assert new_run in set(queries.runs(catalog).run_id)
        catalog.close()


# -- sweeps: workers sharing one Optuna study on PostgreSQL ---------------------------
# Tiny and fast: PCA + one-start k-means on digits, a handful of trials per worker.
SWEEP_ARGS = ["--layer", "0", "--reducer", "pca", "--clusterer", "kmeans", "-c", "n_init=1", "--score-sample", "300",
              "--experiment", "team-sweep", "--heartbeat", "2", "--json"]


def _sweep_workers(team, digits_run, users, *extra, env=None):
    """Start one ``latentscape sweep`` process per user; returns the Popen objects."""
    command = _latentscape("sweep", "--run", digits_run, "--storage", team.optuna_storage, *SWEEP_ARGS, *extra)
    # A quicker backoff than MLflow's default (factor 2): same retries, shorter waits.
    env = {"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", **(env or {})}
    return [subprocess.Popen(command, env=team.env(user, **env),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=team.tmp)
            for user in users]


def _finish(process, timeout=400) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"sweep worker still running after {timeout} s:\n{err[-3000:]}")
    return process.returncode, out, err


def _result(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def studies(team):
    """The module's one Optuna storage on the team's study database (one engine, NullPool,
    disposed at the end): every poll of a study goes through it."""
    from latentscape.tracking.studies import opened_storage

    with opened_storage(team.optuna_storage) as storage:
        yield storage


def _optuna_trials(studies, study_name):
    from latentscape.tracking.studies import study_trials

    return study_trials(studies, study_name)


def _check_one_sweep(team, studies, sweep_run_id: str, expected_complete: int) -> None:
    """The study has exactly ``expected_complete`` COMPLETE trials and each has exactly
    one FINISHED child run under the one sweep run; no run is left RUNNING."""
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from latentscape.tracking.contract import MLFLOW_PARENT_RUN_ID, Kind, Param, Tag

    with _environment(team.env("alice")):
        client = MlflowClient(tracking_uri=team.url)
        sweep_run = client.get_run(sweep_run_id)
        study_name = sweep_run.data.params[Param.STUDY_NAME]
        experiment_id = sweep_run.info.experiment_id
        sweeps = client.search_runs([experiment_id], filter_string=f"tags.`{Tag.STUDY}` = '{study_name}' "
                                    f"and tags.`{Tag.KIND}` = '{Kind.SWEEP.value}'")
        children = client.search_runs([experiment_id], max_results=1000,
                                      filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{sweep_run_id}'")
        running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    assert [run.info.run_id for run in sweeps] == [sweep_run_id], "more than one sweep run for the study"
    assert sweep_run.info.status == "FINISHED"
    assert not running, f"runs left RUNNING: {[(r.info.run_name, r.data.tags.get(Tag.TRIAL_NUMBER)) for r in running]}"

    complete = {t.number: t for t in _optuna_trials(studies, study_name) if t.state == TrialState.COMPLETE}
    assert len(complete) == expected_complete
    finished = [run for run in children if run.info.status == "FINISHED"
                and run.data.tags.get(Tag.TRIAL_STATE) == "COMPLETE"]
    numbers = [int(run.data.tags[Tag.TRIAL_NUMBER]) for run in finished]
    assert sorted(numbers) == sorted(complete), "trials lost or duplicated between Optuna and MLflow"
    assert all(run.data.tags[Tag.KIND] == Kind.TRIAL.value for run in finished)


def test_three_workers_share_one_sweep(team, studies, digits_run):
    workers = _sweep_workers(team, digits_run, ["alice", "alice", "bob"], "--trials", "2")
    results = [_finish(worker) for worker in workers]
    for code, _, err in results:
        assert code == 0, err[-3000:]
    sweep_runs = {_result(out)["run_id"] for _, out, _ in results}
    assert len(sweep_runs) == 1, f"workers reported different sweep runs: {sweep_runs}"
    _check_one_sweep(team, studies, sweep_runs.pop(), expected_complete=6)  # 3 workers x 2 trials


def test_compose_workers_started_together_share_one_study(team, studies, digits_run):
    """docker/compose.yaml's worker command itself, three at once on a fresh study: each
    finds the extraction, and with ``--resume`` they share the study's --trials."""
    import shutil

    import yaml

    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    script = compose["services"]["worker"]["command"][-1].replace("$$", "$")  # compose's escape
    bin_dir = str(Path(sys.executable).parent)
    assert shutil.which("latentscape", path=bin_dir), "the venv's latentscape script is needed"
    env_extra = dict(PATH=f"{bin_dir}:{os.environ.get('PATH', '')}", LATENTSCAPE_OPTUNA_STORAGE=team.optuna_storage,
                     SWEEP_DATA="digits", SWEEP_EXPERIMENT="team-digits", SWEEP_TRIALS="4",
                     SWEEP_ARGS=" ".join(a for a in SWEEP_ARGS if a != "--json") + " --seed 5 --json",
                     MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1")
    before = _study_names(studies)
    workers = [subprocess.Popen(["sh", "-c", script], env=team.env("alice", **env_extra), cwd=team.tmp,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [_finish(worker) for worker in workers]
    for code, _, err in results:
        assert code == 0, err[-3000:]
    (study_name,) = _study_names(studies) - before
    sweep_run_id = _sweep_run_of(team, study_name)
    assert {_result(out)["run_id"] for _, out, _ in results} == {sweep_run_id}
    _check_one_sweep(team, studies, sweep_run_id, expected_complete=4)


def test_polling_and_a_sweep_leave_no_connection_behind(team, studies, digits_run, postgres):
    """Issue 25: ``optuna.load_study(storage=URL)`` in a poll loop built an engine per call
    and ran PostgreSQL out of connections. Counted in pg_stat_activity for this module's
    databases only (others share the server): 30 polls and a two-worker sweep leave no
    connection to the study database, the workers hold at most their budget while they
    run, and the tracking server stays within the formula ``latentscape server --help`` gives."""
    from optuna.trial import TrialState

    from latentscape.tracking.connections import DEFAULT_DB_POOL_SIZE, connections_to, server_connections, \
        sweep_connections

    optuna_db, server_dbs = [f"{team.database}_optuna"], [team.database, f"{team.database}_auth"]

    def count(databases) -> int:
        return connections_to(databases, maintenance_url=postgres.url("postgres"))

    before = count(optuna_db)
    names = _study_names(studies)
    for _ in range(30):  # the polling helper the crash test uses
        for name in names:
            _optuna_trials(studies, name)
    assert count(optuna_db) == before, "polling a study left connections open"

    workers = _sweep_workers(team, digits_run, ["alice", "bob"], "--trials", "2", "--seed", "11")
    seen = []
    while any(worker.poll() is None for worker in workers):
        seen.append((count(optuna_db), count(server_dbs)))
        time.sleep(0.2)
    for code, _, err in (_finish(worker) for worker in workers):
        assert code == 0, err[-3000:]
    after = count(optuna_db)
    assert after == before, f"the sweep left {after - before} connections to its study database"
    assert max(optuna for optuna, _ in seen) <= before + 2 * sweep_connections(1), seen
    assert max(server for _, server in seen) <= server_connections(1, DEFAULT_DB_POOL_SIZE), seen
    (study_name,) = _study_names(studies) - names
    assert sum(t.state == TrialState.COMPLETE for t in _optuna_trials(studies, study_name)) == 4


@pytest.mark.parametrize("client_retries", [None, 0], ids=["client-retries", "client-gives-up"])
def test_a_sweep_survives_a_server_crash(team, studies, digits_run, wait_for_progress, client_retries):
    """The server is SIGKILLed mid-sweep. With MLflow's retries (the default) the workers
    wait for the restarted server and finish; with none, and the server kept down until
    they stop, each ends with one clear line and ``--resume`` completes the study. Either
    way no trial is lost or counted twice. Runs last: it restarts the shared server."""
    from optuna.trial import TrialState

    extra = ["--trials", "4", "--seed", "7" if client_retries is None else "8"]  # a study of its own
    env = {} if client_retries is None else {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(client_retries)}
    before = _study_names(studies)
    workers = _sweep_workers(team, digits_run, ["alice", "bob"], *extra, env=env)
    # Crash once the study is under way (trials are in PostgreSQL, which stays up). One
    # storage polls (no engine per poll); the wait fails only when the sweep stops moving.
    found: list[str] = []

    def complete() -> int:
        found[:] = found or sorted(_study_names(studies) - before)
        return sum(t.state == TrialState.COMPLETE for t in _optuna_trials(studies, found[0])) if found else -1

    def under_way() -> bool:
        assert all(worker.poll() is None for worker in workers), "a worker ended before the crash"
        return complete() >= 2

    wait_for_progress(under_way, progress=lambda: (len(found), complete()), stall_s=180,
                      what="the sweep before the crash")
    study_name = found[0]
    team.crash()

    if client_retries is None:
        time.sleep(1.0)
        team.start()
        results = [_finish(worker) for worker in workers]
        for code, _, err in results:
            assert code == 0, err[-3000:]
    else:
        results = [_finish(worker, timeout=120) for worker in workers]  # the server stays down meanwhile
        for code, _, err in results:
            assert code != 0
            last = [line for line in err.replace("\r", "\n").splitlines() if line.strip()][-1]
            assert last.startswith("latentscape sweep: error: cannot reach the tracking server http"), err[-3000:]
            assert "Traceback" not in err  # Optuna's warning for the failed trial is one line too
        team.start()
        resumed = _finish(_sweep_workers(team, digits_run, ["alice"], *extra, "--resume")[0])
        assert resumed[0] == 0, resumed[2][-3000:]
        results = [resumed]
    sweep_run_id = _sweep_run_of(team, study_name)
    assert {_result(out)["run_id"] for _, out, _ in results} == {sweep_run_id}
    _check_one_sweep(team, studies, sweep_run_id, expected_complete=8)  # 2 workers x 4 trials


def _sweep_run_of(team, study_name: str) -> str:
    from mlflow.tracking import MlflowClient

    from latentscape.tracking.contract import Kind, Tag

    with _environment(team.env("alice")):
        client = MlflowClient(tracking_uri=team.url)
        experiment = client.get_experiment_by_name("team-sweep")
        runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{Tag.STUDY}` = '{study_name}' "
                                  f"and tags.`{Tag.KIND}` = '{Kind.SWEEP.value}'")
    assert len(runs) == 1, f"{len(runs)} sweep runs for study {study_name}"
    return runs[0].info.run_id


def _study_names(studies) -> set[str]:
    from latentscape.tracking.studies import study_names

    return study_names(studies)
