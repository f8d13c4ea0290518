"""A tracking server's refusals said in people's words: 401, 403, unreachable, not MLflow."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from latentscape.tracking.errors import server_error

REPO = Path(__file__).resolve().parents[1]
URI = "http://mlflow.example:5000"


def _refusal(status: int, endpoint: str) -> MlflowException:
    # MLflow's own wording of a refused REST call (mlflow.utils.rest_utils).
    return MlflowException(f"API request to endpoint {endpoint} failed with error code {status} != 200. "
                           "Response body: 'Permission denied'")


def test_403_names_the_user_the_experiment_the_permission_and_how_to_get_it():
    found = server_error(_refusal(403, "/api/2.0/mlflow/runs/create"), uri=URI, user="bob", experiment="team")
    text = str(found)
    assert text.startswith("user 'bob' may not log runs in experiment 'team' on http://mlflow.example:5000")
    assert "needs EDIT permission (HTTP 403)" in text and "experiments: {team: EDIT}" in text
    assert "--experiment NAME" in text and "\n" not in text
    deleting = str(server_error(_refusal(403, "/api/2.0/mlflow/experiments/delete"), uri=URI, user="bob"))
    assert "may not delete the experiment in this experiment" in deleting and "MANAGE" in deleting
    reading = str(server_error(_refusal(403, "/api/2.0/mlflow/runs/search"), uri=URI, user="bob", experiment="x"))
    assert "may not read runs" in reading and "READ permission" in reading


def test_the_team_apps_refusals_say_what_they_are():
    from mlflow.exceptions import RestException

    def refusal(code: str, message: str) -> RestException:  # what MLflow's client raises for a JSON error
        return RestException({"error_code": code, "message": message})

    text = str(server_error(refusal("PERMISSION_DENIED", "user 'viewer' is read-only: POST /x would write"),
                            uri=URI, user="viewer"))
    assert text.startswith("user 'viewer' is read-only on http://mlflow.example:5000") and "EDIT" not in text
    text = str(server_error(refusal("PERMISSION_DENIED", "artifact_location 'file:///x' is outside this server's "
                                    "artifact store; leave it empty"), uri=URI, user="bob"))
    assert "artifact location outside its artifact store" in text
    retried = MlflowException("API request to http://mlflow.example:5000/api/2.0/mlflow/runs/create failed with "
                              "exception HTTPConnectionPool(host='mlflow.example', port=5000): Max retries exceeded "
                              "with url: /api/2.0/mlflow/runs/create (Caused by ResponseError('too many 429 error "
                              "responses'))")
    assert "too many failed logins" in str(server_error(retried, uri=URI, user="bob"))


def test_401_says_the_credentials_were_not_accepted(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    text = str(server_error(_refusal(401, "/api/2.0/mlflow/experiments/get-by-name"), uri=URI))
    assert "did not accept the credentials of no user (MLFLOW_TRACKING_USERNAME is unset)" in text
    assert "MLFLOW_TRACKING_PASSWORD" in text


def test_other_errors_are_left_alone():
    assert server_error(ValueError("boom"), uri=URI) is None
    assert server_error(_refusal(500, "/api/2.0/mlflow/runs/create"), uri=URI) is None
    # "Connection refused" from a local SQLite store is not a server problem.
    assert server_error(OSError("Connection refused"), uri="sqlite:///mlflow.db") is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _latentscape(*args: str, uri: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LATENTSCAPE_PROGRESS": "0", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    return subprocess.run([sys.executable, "-m", "latentscape.jobs.cli", *args, "--tracking-uri", uri], capture_output=True,
                          text=True, cwd=REPO, timeout=120, env=env)


def test_an_unreachable_server_is_one_line_and_exit_2():
    done = _latentscape("extract", "--data", "digits", uri=f"http://127.0.0.1:{_free_port()}")
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "error: cannot reach the tracking server http://127.0.0.1:" in lines[0]
    assert "latentscape server" in lines[0]


@pytest.fixture
def not_mlflow():
    """A plain web server on 127.0.0.1: it answers, but knows nothing of MLflow's API."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    server.RequestHandlerClass.log_message = lambda *args: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_server_that_is_not_mlflow_is_named_so(not_mlflow):
    done = _latentscape("extract", "--data", "digits", uri=not_mlflow)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "it is not an MLflow tracking server" in lines[0], done.stderr[-2000:]


def test_the_python_api_raises_the_same_line_for_an_unreachable_server(monkeypatch):
    import latentscape as ls

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(ls.UsageError, match=r"^cannot reach the tracking server http://127\.0\.0\.1:") as raised:
        ls.extract(data="digits", limit=50, tracking_uri=f"http://127.0.0.1:{_free_port()}")
    assert "\n" not in str(raised.value)
