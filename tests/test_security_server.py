"""The team server's own defences, against the real ``latentscape server`` and PostgreSQL:
read-only accounts, artifacts kept under the server's root, runs attributed to their login,
throttled and equal-time logins, the unauthenticated matrix and foreign Host headers.

One server for the module (``team_servers``), with four users: alice and bob write,
carol is the one whose password is guessed (so that nobody else is locked out), and viewer
is read-only. The pure policies of tracking/auth_app.py are checked without a server first.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.postgres

USERS_FILE = """\
users:
  alice:
    password: ${ALICE_PASSWORD}
  bob:
    password: ${BOB_PASSWORD}
  carol:
    password: ${CAROL_PASSWORD}
  viewer:
    password: ${VIEWER_PASSWORD}
    read_only: true
"""
# The per-address limit is lowered so that its test needs 12 failures, not 100 (each costs a
# password hash); the per-user limit keeps its default, the one the must-hold is about.
ADDRESS_LIMIT = 12


@pytest.fixture(scope="module")
def team(team_servers):
    return team_servers(USERS_FILE, users=("alice", "bob", "carol", "viewer"),
                        env={"LATENTSCAPE_LOGIN_LIMIT_ADDRESS": f"{ADDRESS_LIMIT} per 10 minutes"})


@pytest.fixture(scope="module")
def admin(team) -> tuple[str, str]:
    return "admin", team.server_env["MLFLOW_AUTH_ADMIN_PASSWORD"]


def _session(auth=None):
    import requests

    session = requests.Session()
    session.auth = auth
    return session


# -- the policies, without a server ----------------------------------------------------
def test_policies_classify_requests():
    from latentscape.tracking import auth_app

    routes = auth_app.mlflow_routes()
    assert "/api/2.0/mlflow/runs/search" in routes.read_posts
    assert "/ajax-api/2.0/mlflow/experiments/create" in routes.create_experiment
    assert not auth_app.is_write("GET", "/api/2.0/mlflow/experiments/get", routes)
    assert not auth_app.is_write("POST", "/api/2.0/mlflow/runs/search", routes)
    for method, path in [("POST", "/api/2.0/mlflow/runs/create"), ("PUT", "/api/2.0/mlflow-artifacts/artifacts/x"),
                         ("POST", "/api/2.0/mlflow/unknown-new-endpoint"), ("DELETE", "/anything")]:
        assert auth_app.is_write(method, path, routes), (method, path)
    query = json.dumps({"query": "query { mlflowGetExperiment(input: {experimentId: \"1\"}) "
                                 "{ experiment { name } } }"}).encode()
    echo = json.dumps({"query": "mutation { testMutation(inputString: \"x\") { output } }"}).encode()
    assert not auth_app.is_write("POST", "/graphql", routes, body=query)
    assert auth_app.is_write("POST", "/graphql", routes, body=echo)
    assert auth_app.is_write("POST", "/graphql", routes, body=b"not json")
    assert auth_app.is_write("GET", "/graphql", routes, query_string="query=mutation%20%7B%20testMutation%20%7D")
    assert auth_app.is_write("GET", "/graphql", routes, body=echo)  # MLflow reads a GET's JSON body too
    assert not auth_app.is_write("GET", "/graphql", routes, body=query)

    refuse = auth_app.artifact_location_refusal
    assert refuse(b'{"name": "x"}') is None
    assert refuse(b'{"name": "x", "artifact_location": "mlflow-artifacts:/team/x"}') is None
    for location in ["file:///tmp/x", "/tmp/x", "s3://bucket/x", "mlflow-artifacts:/a/../../x",
                     "mlflow-artifacts://elsewhere/x", "mlflow-artifacts:/a/%2e%2e/%2e%2e/x"]:
        assert refuse(json.dumps({"name": "x", "artifactLocation": location}).encode()), location
    assert refuse(b"[1, 2]")

    body = json.dumps({"experiment_id": "1", "userId": "alice",
                       "tags": [{"key": "mlflow.user", "value": "alice"}, {"key": "k", "value": "v"}]})
    rewritten = json.loads(auth_app.rewrite_run_user(body.encode(), "bob"))
    assert rewritten["user_id"] == "bob" and "userId" not in rewritten
    assert {(t["key"], t["value"]) for t in rewritten["tags"]} == {("mlflow.user", "bob"), ("k", "v")}
    with pytest.raises(ValueError):
        auth_app.rewrite_run_user(b"{", "bob")


def test_read_only_is_a_users_file_key_and_never_an_admin(tmp_path):
    from latentscape.tracking.auth_app import app_environment
    from latentscape.tracking.errors import UsageError
    from latentscape.tracking.team_users import load_users

    path = tmp_path / "users.yaml"
    path.write_text("users:\n  viewer:\n    password: ${P}\n    read_only: true\n  bob:\n    password: ${P}\n")
    users = {user.username: user for user in load_users(path, environ={"P": "x" * 12})}
    assert users["viewer"].read_only and not users["bob"].read_only
    # compose's viewer comes from $LATENTSCAPE_USERS: $LATENTSCAPE_READ_ONLY_USERS names it read-only
    env = app_environment(users.values(), environ={"LATENTSCAPE_READ_ONLY_USERS": "ui, viewer"})
    assert env == {"LATENTSCAPE_READ_ONLY_USERS": "ui,viewer"}
    with pytest.raises(ValueError, match="LATENTSCAPE_LOGIN_LIMIT_USER"):
        app_environment([], environ={"LATENTSCAPE_LOGIN_LIMIT_USER": "twenty a minute"})
    path.write_text("users:\n  viewer:\n    password: ${P}\n    read_only: true\n    admin: true\n")
    with pytest.raises(UsageError, match="both admin and read_only"):
        load_users(path, environ={"P": "x" * 12})
    path.write_text("users:\n  boss:\n    password: ${P}\n    admin: true\n")
    with pytest.raises(ValueError, match="boss"):
        app_environment(load_users(path, environ={"P": "x" * 12}), environ={"LATENTSCAPE_READ_ONLY_USERS": "boss"})


# -- read-only accounts --------------------------------------------------------------
ROUTE_DUMP = r"""
import json, sys
from latentscape.tracking.auth_app import create_app
from mlflow.server import app as flask_app

app = create_app()
found = set()

def walk(routes, prefix=""):
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:  # an included FastAPI router
            walk(inner.routes, prefix + route.include_context.prefix)
        elif getattr(route, "path", None):
            found.update((prefix + route.path, method) for method in getattr(route, "methods", None) or ())

walk(app.routes)
for rule in flask_app.url_map.iter_rules():
    found.update((rule.rule, method) for method in rule.methods)
print(json.dumps(sorted(found)))
"""


def _every_route(tmp_path) -> list[tuple[str, str]]:
    """Every (path, method) the app serves, from MLflow's own Flask url map and FastAPI
    routers, as built by our factory (in a child: it is MLflow's global app)."""
    ini = tmp_path / "auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{tmp_path / 'auth.db'}\n"
                   "admin_username = admin\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {**os.environ, "MLFLOW_FLASK_SERVER_SECRET_KEY": "k", "MLFLOW_AUTH_CONFIG_PATH": str(ini),
           "MLFLOW_AUTH_ADMIN_PASSWORD": secrets.token_urlsafe(16), "_MLFLOW_SGI_NAME": "uvicorn",
           "LATENTSCAPE_THROTTLE_STORAGE": "memory://"}
    done = subprocess.run([sys.executable, "-c", ROUTE_DUMP], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return [tuple(pair) for pair in json.loads(done.stdout.strip().splitlines()[-1])]


def _concrete(path: str) -> str:
    """A route's path with its parameters (``<id>``, ``<path:p>``, ``{id}``, ``{p:path}``) filled in."""
    return re.sub(r"<[^>]+>|\{[^}]+\}", "x1", path) or "/"


def test_a_read_only_account_gets_403_on_every_write(team, admin, tmp_path):
    from latentscape.tracking import auth_app

    routes = auth_app.mlflow_routes()
    served = _every_route(tmp_path)
    writes = sorted({(path, method) for path, method in served
                     if method not in ("HEAD", "OPTIONS") and auth_app.is_write(method, _concrete(path), routes)})
    # MLflow's REST and ajax writes, artifact uploads, registered models, user admin, gateway, OTel
    for expected in [("/api/2.0/mlflow/experiments/create", "POST"), ("/ajax-api/2.0/mlflow/runs/log-metric", "POST"),
                     ("/api/2.0/mlflow/registered-models/create", "POST"), ("/v1/traces", "POST"),
                     ("/api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}", "PUT"),
                     ("/api/2.0/mlflow/users/update-password", "PATCH")]:
        assert expected in writes, expected
    assert len(writes) > 250, len(writes)

    viewer = _session(team.auth("viewer"))
    answered = {}
    for path, method in writes:
        response = viewer.request(method, team.url + _concrete(path), json={"name": "x", "experiment_id": "0"},
                                  timeout=30)
        answered[(path, method)] = response.status_code
    wrong = {route: status for route, status in answered.items() if status != 403}
    assert not wrong, f"{len(wrong)} writes not refused to the read-only account: {sorted(wrong.items())[:20]}"

    # GraphQL: a mutation is refused, a query answers
    echo = {"query": 'mutation { testMutation(inputString: "x") { output } }'}
    assert viewer.post(f"{team.url}/graphql", json=echo, timeout=30).status_code == 403
    query = {"query": 'query { mlflowGetExperiment(input: {experimentId: "0"}) { experiment { name } } }'}
    assert viewer.post(f"{team.url}/graphql", json=query, timeout=30).status_code == 200

    # ...and it still reads what it is granted (the default READ)
    experiment = _session(team.auth("alice")).post(f"{team.url}/api/2.0/mlflow/experiments/create",
                                                   json={"name": f"alice-{uuid.uuid4().hex[:6]}"}, timeout=30)
    experiment_id = experiment.json()["experiment_id"]
    assert viewer.get(f"{team.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id},
                      timeout=30).status_code == 200
    assert viewer.post(f"{team.url}/api/2.0/mlflow/runs/search", json={"experiment_ids": [experiment_id]},
                       timeout=30).status_code == 200
    # nothing the viewer sent landed: it created no experiment
    everything = _session(admin).post(f"{team.url}/api/2.0/mlflow/experiments/search",
                                      json={"max_results": 1000}, timeout=30).json()["experiments"]
    assert [e["name"] for e in everything if e["name"] == "x"] == []


# -- artifacts stay under the root ---------------------------------------------------
def test_an_artifact_location_outside_the_root_is_refused_except_for_the_admin(team, admin, tmp_path):
    canary = tmp_path / "canary"
    bob = _session(team.auth("bob"))
    name = f"escape-{uuid.uuid4().hex[:6]}"
    for location in [canary.as_uri(), str(canary), "mlflow-artifacts:/../../escape"]:
        for prefix in ("/api", "/ajax-api"):
            refused = bob.post(f"{team.url}{prefix}/2.0/mlflow/experiments/create",
                               json={"name": name, "artifact_location": location}, timeout=30)
            assert refused.status_code == 403, (location, refused.status_code, refused.text)
            assert "outside this server's artifact store" in refused.json()["message"]
    assert bob.get(f"{team.url}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name},
                   timeout=30).status_code == 404
    assert not canary.exists()

    inside = bob.post(f"{team.url}/api/2.0/mlflow/experiments/create",
                      json={"name": name, "artifact_location": "mlflow-artifacts:/team/escape"}, timeout=30)
    assert inside.status_code == 200, inside.text
    chosen = _session(admin).post(f"{team.url}/api/2.0/mlflow/experiments/create",
                                  json={"name": f"{name}-admin", "artifact_location": canary.as_uri()}, timeout=30)
    assert chosen.status_code == 200, chosen.text


# -- a run's user is its login -------------------------------------------------------
def test_a_run_is_attributed_to_its_login_not_to_the_clients_claim(team):
    bob = _session(team.auth("bob"))
    experiment_id = bob.post(f"{team.url}/api/2.0/mlflow/experiments/create",
                             json={"name": f"bob-{uuid.uuid4().hex[:6]}"}, timeout=30).json()["experiment_id"]
    created = bob.post(f"{team.url}/api/2.0/mlflow/runs/create", timeout=30, json={
        "experiment_id": experiment_id, "user_id": "alice", "tags": [{"key": "mlflow.user", "value": "alice"}]})
    assert created.status_code == 200, created.text
    run = created.json()["run"]
    assert run["info"]["user_id"] == "bob"
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["mlflow.user"] == "bob"

    # the Python client's way, which sets the tag itself
    env = {**team.env("bob"), "LOGNAME": "alice", "USER": "alice"}
    code = ("import mlflow; c = mlflow.MlflowClient(); "
            f"r = c.create_run('{experiment_id}', tags={{'mlflow.user': 'alice'}}); "
            "print(r.info.user_id, r.data.tags['mlflow.user'])")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["bob", "bob"]

    run_id = run["info"]["run_id"]
    retag = bob.post(f"{team.url}/api/2.0/mlflow/runs/set-tag", timeout=30,
                     json={"run_id": run_id, "key": "mlflow.user", "value": "alice"})
    assert retag.status_code == 403
    batch = bob.post(f"{team.url}/api/2.0/mlflow/runs/log-batch", timeout=30,
                     json={"run_id": run_id, "tags": [{"key": "mlflow.user", "value": "alice"}]})
    assert batch.status_code == 403
    assert bob.post(f"{team.url}/api/2.0/mlflow/runs/set-tag", timeout=30,
                    json={"run_id": run_id, "key": "note", "value": "mine"}).status_code == 200


# -- the authorisation matrix through the API -------------------------------------------
def test_a_user_denied_an_experiment_sees_none_of_it_through_the_api(team, admin):
    """DENY holds at every door a client can knock on: the experiment, its runs, their
    metrics and artifacts, the searches and GraphQL; without DENY, another user's
    experiment is readable (the default READ) but not writable."""
    alice, bob = _session(team.auth("alice")), _session(team.auth("bob"))
    api = f"{team.url}/api/2.0/mlflow"
    name = f"alice-private-{uuid.uuid4().hex[:6]}"
    experiment = alice.post(f"{api}/experiments/create", json={"name": name}, timeout=30).json()["experiment_id"]
    run = alice.post(f"{api}/runs/create", json={"experiment_id": experiment}, timeout=30).json()["run"]["info"]
    logged = alice.post(f"{api}/runs/log-metric", timeout=30, json={
        "run_id": run["run_id"], "key": "secret_score", "value": 0.5, "timestamp": 0, "step": 0})
    assert logged.status_code == 200, logged.text
    artifact = f"{team.url}/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run['run_id']}/artifacts/secret.txt"
    assert alice.put(artifact, data=b"alice's secret", timeout=30).status_code == 200
    assert bob.get(f"{api}/runs/get", params={"run_id": run["run_id"]}, timeout=30).status_code == 200  # READ
    assert bob.post(f"{api}/runs/set-tag", timeout=30,
                    json={"run_id": run["run_id"], "key": "k", "value": "v"}).status_code == 403

    denied = _session(admin).post(f"{team.url}/api/3.0/mlflow/users/permissions/grant", timeout=30, json={
        "username": "bob", "resource_type": "experiment", "resource_id": experiment, "permission": "DENY"})
    assert denied.status_code == 200, denied.text
    for method, url, payload in [
        ("GET", f"{api}/experiments/get?experiment_id={experiment}", None),
        ("GET", f"{api}/experiments/get-by-name?experiment_name={name}", None),
        ("GET", f"{api}/runs/get?run_id={run['run_id']}", None),
        ("GET", f"{api}/metrics/get-history?run_id={run['run_id']}&metric_key=secret_score", None),
        ("GET", artifact, None),
        ("GET", f"{team.url}/api/2.0/mlflow/artifacts/list?run_id={run['run_id']}", None),
    ]:
        answer = bob.request(method, url, json=payload, timeout=30)
        assert answer.status_code == 403, (method, url, answer.status_code)
    # Searches answer, without the denied experiment's runs (MLflow filters what they return).
    found = bob.post(f"{api}/runs/search", json={"experiment_ids": [experiment]}, timeout=30)
    assert found.status_code == 403 or run["run_id"] not in found.text, found.text[:300]
    searched = bob.post(f"{api}/experiments/search", json={"max_results": 1000}, timeout=30).json()
    assert experiment not in {e["experiment_id"] for e in searched.get("experiments", [])}
    graphql = bob.post(f"{team.url}/graphql", timeout=30, json={
        "query": f'query {{ mlflowGetRun(input: {{runId: "{run["run_id"]}"}}) {{ run {{ info {{ runName }} }} }} }}'})
    assert run["run_name"] not in graphql.text and "secret_score" not in graphql.text
    assert alice.get(artifact, timeout=30).content == b"alice's secret"  # the owner still reads it


def test_artifact_paths_cannot_climb_out_of_the_root(team):
    """Dot segments, encoded or not, neither read a file beside the artifact root nor write one."""
    canary = team.artifacts.parent / f"canary-{uuid.uuid4().hex[:6]}.txt"
    canary.write_text("CANARY")
    written = team.artifacts.parent / "climbed.txt"
    token = base64.b64encode(f"alice:{team.passwords['alice']}".encode()).decode()
    connection = http.client.HTTPConnection("127.0.0.1", team.port, timeout=30)
    try:
        for climb in ("../", "%2e%2e/", "..%2f", "%2e%2e%2f", "1/../../"):
            for method, target, body in [("GET", canary.name, None), ("PUT", written.name, b"climbed")]:
                connection.request(method, f"/api/2.0/mlflow-artifacts/artifacts/{climb}{target}", body=body,
                                   headers={"Authorization": f"Basic {token}", "Host": f"127.0.0.1:{team.port}"})
                response = connection.getresponse()
                content = response.read()
                assert b"CANARY" not in content, (method, climb)
                assert response.status != 200 or method == "GET", (method, climb, response.status)
    finally:
        connection.close()
    assert canary.read_text() == "CANARY" and not written.exists()


# -- the unauthenticated matrix and foreign hosts ------------------------------------------
def test_without_valid_credentials_nothing_answers_but_health(team):
    anonymous = _session()
    wrong = _session(("alice", "not-her-password"))
    requests_ = [("GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"),
                 ("POST", "/api/2.0/mlflow/experiments/create"), ("POST", "/ajax-api/2.0/mlflow/runs/search"),
                 ("POST", "/graphql"), ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/x.txt"),
                 ("GET", "/api/2.0/mlflow-artifacts/artifacts/1/x.txt"), ("POST", "/v1/traces"),
                 ("GET", "/api/2.0/mlflow/users/get?username=alice"), ("GET", "/ajax-api/3.0/jobs/x")]
    for method, path in requests_:
        assert anonymous.request(method, team.url + path, json={}, timeout=30).status_code == 401, (method, path)
    for method, path in requests_[:3]:
        assert wrong.request(method, team.url + path, json={}, timeout=30).status_code == 401, (method, path)
    assert anonymous.get(f"{team.url}/health", timeout=30).status_code == 200


def test_a_foreign_host_header_is_refused(team):
    connection = http.client.HTTPConnection("127.0.0.1", team.port, timeout=30)
    token = base64.b64encode(f"alice:{team.passwords['alice']}".encode()).decode()
    for host in ("evil.example", "evil.example:5000"):
        connection.request("GET", "/api/2.0/mlflow/experiments/search?max_results=1",
                           headers={"Host": host, "Authorization": f"Basic {token}"})
        response = connection.getresponse()
        response.read()
        assert response.status in (400, 403), (host, response.status)
    connection.close()


# -- guessing ------------------------------------------------------------------------
def _attempt(port: int, user: str, password: str, source: str) -> tuple[int, float, object]:
    """One request from the loopback address ``source`` (the throttle counts addresses)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(source, 0))
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    started = time.perf_counter()
    connection.request("GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default",
                       headers={"Authorization": f"Basic {token}"})
    response = connection.getresponse()
    response.read()
    seconds = time.perf_counter() - started
    connection.close()
    return response.status, seconds, response.headers  # headers: case-insensitive


def test_the_31st_wrong_password_is_throttled_and_failures_are_logged(team):
    from latentscape.tracking.login_throttle import DEFAULT_LIMIT_USER, parse_limit

    # a guesser spread over 31 addresses: the per-user limit alone must stop it
    answers = [_attempt(team.port, "carol", f"wrong-{i}-password", f"127.0.1.{i + 1}") for i in range(31)]
    statuses = [status for status, _, _ in answers]
    assert 429 in statuses, statuses
    first = statuses.index(429)
    assert first == parse_limit(DEFAULT_LIMIT_USER).amount, statuses
    assert set(statuses[:first]) == {401} and set(statuses[first:]) == {429}, statuses
    retry_after = int(answers[-1][2]["Retry-After"])
    assert 0 < retry_after <= 600
    # blocked means blocked: the right password gets no other answer (no oracle for the guesser)
    assert _attempt(team.port, "carol", team.passwords["carol"], "127.0.2.1")[0] == 429
    log = team.logs[-1].read_text(errors="replace")
    assert "login failed for user 'carol' from 127.0.1.1" in log
    assert "too many failed logins" in log
    # carol's block is hers: alice, from an address carol's guesser used, still logs in
    assert _attempt(team.port, "alice", team.passwords["alice"], "127.0.1.1")[0] == 200


def test_one_address_guessing_many_names_is_throttled(team):
    statuses = [_attempt(team.port, f"nobody-{uuid.uuid4().hex[:8]}", "wrong-password-1", "127.0.0.3")[0]
                for _ in range(ADDRESS_LIMIT + 1)]
    assert statuses[:ADDRESS_LIMIT] == [401] * ADDRESS_LIMIT and statuses[-1] == 429, statuses


def test_known_and_unknown_users_fail_in_the_same_time(team):
    known, unknown = [], []
    for i in range(6):  # interleaved, so that the machine's load weighs on both alike
        known.append(_attempt(team.port, "bob", f"wrong-{i}-password", "127.0.0.4")[1])
        unknown.append(_attempt(team.port, f"ghost-{uuid.uuid4().hex[:8]}", "wrong-password-1", "127.0.0.4")[1])
    ratio = statistics.median(unknown) / statistics.median(known)
    # before: 0.048 s against 0.128 s (0.38); both now pay one scrypt hash
    assert ratio > 0.7, (statistics.median(known), statistics.median(unknown))


def test_a_read_only_job_stops_with_one_line_saying_so(team):
    done = subprocess.run([sys.executable, "-m", "latentscape.jobs.cli", "extract", "--data", "digits",
                           "--experiment", "viewer-digits"], env=team.env("viewer"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "user 'viewer' is read-only on" in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
