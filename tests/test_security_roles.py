"""Team mode's secrets and database roles (issue 31): one masking function for every URL
the project logs or shows, no password on any command line, least-privilege PostgreSQL
roles (the workers' role reaches the Optuna database only), the users file as the whole
truth, and MLflow's usage telemetry off by default.

Pure tests (masking, the users file, the server's command) need no server; the rest run
one ``latentscape server`` on the real PostgreSQL with a server role that has a password
and a workers' role that the server creates itself.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from latentscape.tracking.privacy import masked

REPO = Path(__file__).resolve().parents[1]


def _latentscape(*args: str) -> list[str]:
    return [sys.executable, "-m", "latentscape.jobs.cli", *args]


# -- masking: property tests --------------------------------------------------------
_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=12)
_SCHEMES = st.sampled_from(["postgresql", "postgresql+psycopg2", "postgres", "mysql+pymysql", "http", "https",
                            "redis", "s3"])
# Raw passwords may hold anything but whitespace (SQLAlchemy takes "/", "?", "#", ":" and
# "@" raw in a password); quoted ones are what a careful user writes.
_RAW_PASSWORD = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=6, max_size=24)
_QUERY_PASSWORD = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="&;#"),
                          min_size=6, max_size=24)


def _case(draw, word: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c for c in word)


@st.composite
def _urls_with_password(draw) -> tuple[str, str]:
    """A URL that holds a password (in its userinfo or a query parameter) and that password."""
    from urllib.parse import quote

    scheme, host, database = draw(_SCHEMES), draw(_WORD), draw(_WORD)
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    where = draw(st.sampled_from(["userinfo", "empty-user", "query"]))
    password = draw(_QUERY_PASSWORD if where == "query" else _RAW_PASSWORD)
    if draw(st.booleans()):
        password = quote(password, safe="")
    others = [f"{draw(_WORD)}={draw(_WORD)}" for _ in range(draw(st.integers(0, 3)))]
    authority = f"{host}:{port}" if port else host
    slot = "\x00"  # where the password goes; no generated part holds it
    if where == "query":
        key = _case(draw, draw(st.sampled_from(["password", "sslpassword"])))
        others.insert(draw(st.integers(0, len(others))), f"{key}={slot}")
        template = f"{scheme}://{authority}/{database}?{'&'.join(others)}"
    else:
        user = "" if where == "empty-user" else draw(_WORD)
        query = f"?{'&'.join(others)}" if others else ""
        template = f"{scheme}://{user}:{slot}@{authority}/{database}{query}"
    url, without = template.replace(slot, password), template.replace(slot, "")
    assume(password not in without)  # the password must be found where it was put, not by chance
    return url, password


@settings(max_examples=400, deadline=None)
@given(_urls_with_password(), st.text(alphabet=" abc:=,\n'\"", max_size=8), st.text(alphabet=" xyz:=,\n", max_size=8))
def test_no_password_survives_masking(url_and_password, before, after):
    url, password = url_and_password
    quoted = json.dumps(url)[1:-1]  # the URL as it appears inside a JSON string
    for text, inside in ((url, url), (f"{before} {url} {after}", url), (f"cannot open {url}: refused", url),
                         (json.dumps({"storage": url}), quoted)):
        if password in text.replace(inside, "\x00"):
            continue  # the words around the URL contain the password by chance: not a secret there
        shown = masked(text)
        assert password not in shown, (text, shown)
        assert masked(shown) == shown  # idempotent


@settings(max_examples=200, deadline=None)
@given(_SCHEMES, _WORD, _WORD, st.lists(st.tuples(_WORD, _WORD), max_size=3))
def test_urls_without_a_password_are_unchanged(scheme, host, database, query):
    assume(not any("password" in key.lower() for key, _ in query))
    url = f"{scheme}://{host}:5432/{database}" + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
    assert masked(url) == url
    assert masked(f"{scheme}://alice@{host}/{database}") == f"{scheme}://alice@{host}/{database}"


def test_masking_examples():
    assert masked("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert masked("postgresql://:pw@h/db") == "postgresql://:***@h/db"
    assert masked("postgresql://h/db?user=u&PassWord=pw&sslmode=require") == \
        "postgresql://h/db?user=u&PassWord=***&sslmode=require"
    assert masked("postgresql://h/db?sslpassword=key&x=1") == "postgresql://h/db?sslpassword=***&x=1"
    assert masked("host=h password=pw dbname=d") == "host=h password=*** dbname=d"  # a libpq DSN
    assert masked("sqlite:////tmp/optuna.db") == "sqlite:////tmp/optuna.db"


# -- the users file ------------------------------------------------------------------
def _load(tmp_path, text: str, **environ):
    from latentscape.tracking.team_users import load_users

    (tmp_path / "users.yaml").write_text(text)
    return {user.username: user for user in load_users(tmp_path / "users.yaml", environ={"PW": "p" * 16, **environ})}


def test_users_file_accepts_deny_and_read_only(tmp_path):
    users = _load(tmp_path, "users:\n  carol:\n    password: ${PW}\n    read_only: true\n"
                            "    experiments: {private: deny, other: NO_PERMISSIONS, shared: READ}\n")
    carol = users["carol"]
    assert carol.read_only is True and carol.admin is False
    assert carol.experiments == {"private": "DENY", "other": "DENY", "shared": "READ"}  # MLflow grants no NO_PERMISSIONS
    assert _load(tmp_path, "users:\n  dave:\n    password: ${PW}\n")["dave"].read_only is False


@pytest.mark.parametrize(("text", "message"), [
    ("users:\n  carol:\n    password: ${PW}\n    readonly: true\n",
     "user 'carol' in .* has unknown key 'readonly'; use only password, admin, experiments, read_only"),
    ("users:\n  carol:\n    password: ${PW}\n    admin: 'no'\n", "admin is 'no'; write admin: true or false"),
    ("users:\n  carol:\n    password: ${PW}\nadmins: [carol]\n", "unknown key 'admins'"),
    ("users:\n  carol:\n    password: ${PW}\n    experiments: {x: OWNER}\n", "unknown permission 'OWNER'.*DENY"),
])
def test_users_file_mistakes_are_one_line_errors(tmp_path, text, message):
    from latentscape.tracking.errors import UsageError

    with pytest.raises(UsageError, match=message) as caught:
        _load(tmp_path, text)
    assert "\n" not in str(caught.value)


def test_the_example_users_file_grants_least_privilege():
    import yaml

    from latentscape.tracking.team_users import load_users

    document = yaml.safe_load((REPO / "docker" / "users.example.yaml").read_text())
    names = re.findall(r"\$\{([A-Z_]+)\}", (REPO / "docker" / "users.example.yaml").read_text())
    users = load_users(REPO / "docker" / "users.example.yaml", environ={name: "x" * 16 for name in names})
    assert users and not any(user.admin for user in users)
    for user in users:
        wide = user.experiments.get("*")
        assert wide in (None, "READ", "DENY"), f"{user.username} gets {wide} on every experiment"
    assert any(user.read_only for user in users), "the example shows a read-only account"
    assert set(document["users"]) == {user.username for user in users}


# -- telemetry -------------------------------------------------------------------------
def test_telemetry_is_off_unless_the_user_opted_in(tmp_path):
    from latentscape.tracking.server_process import server_environment

    probe = ("import os, latentscape; from mlflow.telemetry.utils import is_telemetry_disabled; "
             "print(os.environ.get('MLFLOW_DISABLE_TELEMETRY'), is_telemetry_disabled())")
    clean = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}
    off = subprocess.run([sys.executable, "-c", probe], env=clean, capture_output=True, text=True, timeout=120)
    assert off.stdout.split() == ["true", "True"], off.stderr[-2000:]
    opted_in = subprocess.run([sys.executable, "-c", probe], env={**clean, "MLFLOW_DISABLE_TELEMETRY": "false"},
                              capture_output=True, text=True, timeout=120)
    assert opted_in.stdout.split()[0] == "false", opted_in.stderr[-2000:]
    secrets_env = {"MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32, "MLFLOW_AUTH_ADMIN_PASSWORD": "a" * 16}
    assert server_environment(tmp_path / "ini", environ=secrets_env)["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert server_environment(tmp_path / "ini", environ={**secrets_env, "MLFLOW_DISABLE_TELEMETRY": "false"}
                              )["MLFLOW_DISABLE_TELEMETRY"] == "false"


# -- the running server: roles, command lines, users ----------------------------------
USERS_FILE = """\
users:
  alice:
    password: ${ALICE_PASSWORD}
    experiments: {team-sweep: EDIT}
  carol:
    password: ${CAROL_PASSWORD}
    admin: true
    experiments: {team-sweep: MANAGE}
"""


class _Roles:
    """Three PostgreSQL roles of this module's own: the server's (with a password,
    CREATEDB and CREATEROLE), the workers' (left for the server to create) and one that
    is granted nothing."""

    def __init__(self, postgres):
        tag = uuid.uuid4().hex[:8]
        self.postgres = postgres
        self.server = (f"ls_server_{tag}", f"Srv{secrets.token_hex(12)}")
        self.workers = (f"ls_workers_{tag}", f"Wrk{secrets.token_hex(12)}")
        self.nobody = (f"ls_nobody_{tag}", f"Nob{secrets.token_hex(12)}")

    def _execute(self, *statements) -> None:
        import psycopg2

        connection = psycopg2.connect(host=self.postgres.host, port=self.postgres.port, user=self.postgres.user,
                                      dbname="postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                for statement, values in statements:
                    cursor.execute(statement, values)
        finally:
            connection.close()

    def create(self) -> None:
        from psycopg2 import sql

        self._execute(
            (sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD %s").format(sql.Identifier(self.server[0])),
             (self.server[1],)),
            (sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(self.nobody[0])), (self.nobody[1],)),
        )

    def drop(self) -> None:
        from psycopg2 import sql

        self._execute(*[(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)), None)
                        for name, _ in (self.workers, self.nobody, self.server)])


@pytest.fixture(scope="module")
def roles(postgres):
    if not postgres.answers():
        pytest.skip(f"team-mode tests need PostgreSQL on {postgres.host}:{postgres.port}, which does not answer")
    made = _Roles(postgres)
    made.create()
    yield made
    made.drop()  # after team_servers dropped the databases these roles own (set up after this fixture)


@pytest.fixture(scope="module")
def team(roles, team_servers):
    return team_servers(USERS_FILE, users=("alice", "carol"), server_role=roles.server, optuna_role=roles.workers)


def _connect(postgres, role, database: str):
    import psycopg2

    return psycopg2.connect(host=postgres.host, port=postgres.port, user=role[0], password=role[1], dbname=database,
                            connect_timeout=10)


def _process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (children of all its threads)."""
    found, queue = set(), [pid]
    while queue:
        current = queue.pop()
        found.add(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            queue += [int(child) for child in children.read_text().split()]
    return sorted(found)


@pytest.mark.postgres
def test_no_database_password_on_any_command_line(team, roles, postgres):
    tree = _process_tree(team.process.pid)
    commands = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                for pid in tree if Path(f"/proc/{pid}/cmdline").exists()}
    assert any("mlflow" in line and "server" in line for line in commands.values()), commands
    assert len(commands) >= 3, commands  # latentscape server, mlflow server, its uvicorn worker(s)
    everyone = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=30).stdout
    for _, password in (roles.server, roles.workers):
        assert all(password not in line for line in commands.values())
        assert password not in everyone
    # ... yet the server did use that role: it owns the run database.
    connection = _connect(postgres, roles.server, team.database)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (team.database,))
            assert cursor.fetchone() == (roles.server[0],)
    finally:
        connection.close()


@pytest.mark.postgres
def test_only_the_server_role_reaches_the_run_and_auth_databases(team, roles, postgres):
    import psycopg2

    log = team.logs[-1].read_text(errors="replace")
    assert f"created role {roles.workers[0]} for the sweep workers" in log
    assert "uses the server's own role" not in log
    for database in (team.database, f"{team.database}_auth"):
        _connect(postgres, roles.server, database).close()
        for role in (roles.workers, roles.nobody):
            with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
                _connect(postgres, role, database)
    optuna = f"{team.database}_optuna"
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        _connect(postgres, roles.nobody, optuna)
    connection = _connect(postgres, roles.workers, optuna)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM studies")  # Optuna's rows: yes
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cursor.execute("CREATE TABLE workers_own (x int)")  # its schema: no
    finally:
        connection.close()


@pytest.mark.postgres
def test_one_warning_when_the_workers_share_the_servers_role(postgres, roles):
    """--optuna-storage on the server's own role: one warning line; PUBLIC still loses
    CONNECT on all three databases."""
    import psycopg2

    from latentscape.tracking.roles import secure_databases
    from latentscape.tracking.databases import ensure_database

    name = f"ls_same_{uuid.uuid4().hex[:10]}"
    databases = [name, f"{name}_auth", f"{name}_optuna"]
    said: list[str] = []
    try:
        for database in databases[:2]:
            ensure_database(postgres.url(database))
        secure_databases(*(postgres.url(database) for database in databases), say=said.append)
        warnings = [line for line in said if "warning" in line]
        assert len(warnings) == 1 and "the server's own role 'postgres'" in warnings[0], said
        assert "\n" not in warnings[0]
        for database in databases:
            with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
                _connect(postgres, roles.nobody, database)
    finally:
        for database in databases:
            postgres.drop(database)


@pytest.mark.postgres
def test_a_sweep_on_the_workers_role_completes_and_its_password_is_nowhere(team, roles, postgres, tmp_path,
                                                                          monkeypatch):
    """A real sweep through the server, its Optuna storage reached as the workers' role with
    the password as a ``?password=`` query parameter: the sweep completes, and the password
    is in no param, tag, artifact, output, server log or catalog."""
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from latentscape.tracking.catalog import Catalog
    from latentscape.tracking.contract import Artifact, Param
    from latentscape.tracking.studies import opened_storage, study_trials

    name, secret = roles.workers
    assert f"{name}:{secret}@" in team.optuna_storage  # the workers' role, as the server was given it
    storage = f"postgresql://{postgres.host}:{postgres.port}/{team.database}_optuna?user={name}&password={secret}"
    extract = subprocess.run(_latentscape("extract", "--data", "digits", "--experiment", "team-sweep", "--json"),
                             env=team.env("alice"), capture_output=True, text=True, timeout=300, cwd=team.tmp)
    assert extract.returncode == 0, extract.stderr[-3000:]
    run_id = json.loads(extract.stdout.strip().splitlines()[-1])["run_id"]
    sweep = subprocess.run(_latentscape(
        "sweep", "--run", run_id, "--storage", storage, "--trials", "2", "--layer", "0", "--reducer",
        "pca", "--clusterer", "kmeans", "-c", "n_init=1", "--score-sample", "300", "--experiment", "team-sweep",
        "--json"), env=team.env("alice"), capture_output=True, text=True, timeout=400, cwd=team.tmp)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    result = json.loads(sweep.stdout.strip().splitlines()[-1])
    with opened_storage(team.optuna_storage) as reader:  # one engine, disposed
        trials = study_trials(reader, result["details"]["study"])
    assert sum(trial.state == TrialState.COMPLETE for trial in trials) == 2

    # Output and the server's log.
    assert "password=***" in result["details"]["storage"]
    assert secret not in extract.stdout + extract.stderr + sweep.stdout + sweep.stderr
    assert secret not in team.logs[-1].read_text(errors="replace")
    # Every param and tag of every run of the experiment (the sweep, its trials, the best map).
    for key, value in team.env("alice").items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(tracking_uri=team.url)
    experiment = client.get_experiment_by_name("team-sweep")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(runs) >= 4  # the extraction, the sweep, two trials
    for run in runs:
        assert not [k for k, v in {**run.data.params, **run.data.tags}.items() if secret in v], run.info.run_id
    assert "password=***" in client.get_run(result["run_id"]).data.params[Param.STORAGE]
    # Every artifact, byte for byte, where the server keeps them.
    leaks = [path for path in team.artifacts.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]
    assert not leaks, f"the password is in {leaks}"
    # The catalog: every text column of every table, and the config.json it downloads.
    catalog = Catalog.open(tracking_uri=team.url, path=tmp_path / "catalog.duckdb")
    try:
        catalog.refresh()
        config = catalog.artifact(result["run_id"], Artifact.CONFIG)
        assert config is not None and "password=***" in Path(config).read_text()
        cursor = catalog.cursor()
        columns = cursor.execute("SELECT table_name, column_name FROM information_schema.columns "
                                 "WHERE data_type = 'VARCHAR'").fetchall()
        assert ("params", "value") in columns
        for table, column in columns:
            hits = cursor.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}" LIKE ?', [f"%{secret}%"]).fetchall()
            assert hits == [(0,)], f"the password is in the catalog's {table}.{column}"
    finally:
        catalog.close()
    leaks = [path for path in tmp_path.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]
    assert not leaks, f"the password is in {leaks}"


@pytest.mark.postgres
def test_a_user_removed_from_the_file_is_locked_out(team):
    """carol (an admin) leaves the users file: after provisioning she cannot log in."""
    import requests

    search = f"{team.url}/api/2.0/mlflow/experiments/search"
    assert requests.get(search, params={"max_results": 1}, auth=team.auth("carol"), timeout=10).status_code == 200
    (team.tmp / "users.yaml").write_text(USERS_FILE.split("  carol:")[0])
    env = {**team.server_env, "MLFLOW_TRACKING_URI": team.url}
    done = subprocess.run(_latentscape("server", "--provision-only", "--users", str(team.tmp / "users.yaml")),
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "user carol: removed" in done.stderr
    deadline = time.monotonic() + 30
    while requests.get(search, params={"max_results": 1}, auth=team.auth("carol"), timeout=10).status_code != 401:
        assert time.monotonic() < deadline, "carol still logs in after she left the users file"
        time.sleep(0.5)
    assert requests.get(search, params={"max_results": 1}, auth=team.auth("alice"), timeout=10).status_code == 200
    admin = ("admin", team.server_env["MLFLOW_AUTH_ADMIN_PASSWORD"])
    listed = requests.get(f"{team.url}/api/2.0/mlflow/users/list", auth=admin, timeout=10).json()["users"]
    assert sorted(user["username"] for user in listed) == ["admin", "alice"]
