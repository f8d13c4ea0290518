"""A tracking server whose answer breaks off mid-way (as a server killed while answering):
the project's client makes its writes again, each lands once; MLflow's own client fails."""

from __future__ import annotations

import http.client
import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class BreakingProxy:
    """Forwards every request to ``upstream``; the next ``breaks[path_end]`` answers to a
    request whose path ends so are cut after their headers and half the body (the write has
    happened upstream, the client cannot know)."""

    def __init__(self, upstream: str):
        self.breaks: dict[str, int] = {}
        self.drops: dict[str, int] = {}  # answers never sent: the connection closes after 1 s
        self.broken: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                host, port = upstream.removeprefix("http://").split(":")
                connection = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                connection.request(self.command, self.path, body=body or None, headers=headers)
                answer = connection.getresponse()
                payload = answer.read()
                connection.close()
                path = self.path.split("?")[0]
                dropped = next((end for end, left in proxy.drops.items() if left and path.endswith(end)), None)
                if dropped is not None:  # a server dying after its write: no answer at all
                    proxy.drops[dropped] -= 1
                    proxy.broken.append(f"dropped {dropped}")
                    time.sleep(1.0)
                    self.close_connection = True
                    return
                ending = next((end for end, left in proxy.breaks.items() if left and path.endswith(end)), None)
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                if ending is None:
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                proxy.breaks[ending] -= 1
                proxy.broken.append(ending)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.close_connection = True

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory, wait_for_health):
    """A plain ``mlflow server`` on SQLite (one worker)."""
    folder = tmp_path_factory.mktemp("server-client")
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
         f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "w"))
    url = f"http://127.0.0.1:{port}"
    try:
        # a hang guard: a busy machine starts it slowly
        wait_for_health(url, process, log=folder / "server.log", timeout_s=300, probe_s=5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture
def proxy(tracking_server):
    opened = BreakingProxy(tracking_server)
    yield opened
    opened.close()


def test_writes_whose_answer_broke_off_land_once(proxy, tracking_server):
    from mlflow.entities import Metric, Param

    from latentscape.tracking.backends import mlflow_client

    client = mlflow_client(proxy.url)
    experiment = client.create_experiment(f"broken-{time.time_ns()}")
    proxy.breaks = {"runs/create": 1, "runs/log-batch": 1, "runs/update": 1}
    run = client.create_run(experiment, run_name="trial 1", tags={"kind": "trial"})
    client.log_batch(run.info.run_id, metrics=[Metric("ami", 0.5, 1234, 0)], params=[Param("seed", "7")])
    client.set_terminated(run.info.run_id, status="FINISHED")
    assert sorted(proxy.broken) == ["runs/create", "runs/log-batch", "runs/update"], "every answer broke once"

    direct = mlflow_client(tracking_server)
    (found,) = direct.search_runs([experiment])  # one run, though create_run's answer broke
    assert found.info.run_id == run.info.run_id and found.info.run_name == "trial 1"
    assert found.info.status == "FINISHED" and found.data.params == {"seed": "7"}
    assert [(m.value, m.step) for m in direct.get_metric_history(run.info.run_id, "ami")] == [(0.5, 0)]


def test_mlflow_own_client_fails_on_the_same_break_and_so_does_ours_when_told_not_to_retry(proxy, monkeypatch):
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from latentscape.tracking.backends import mlflow_client

    plain = MlflowClient(tracking_uri=proxy.url)
    experiment = plain.create_experiment(f"plain-{time.time_ns()}")
    run = plain.create_run(experiment)
    proxy.breaks = {"runs/log-batch": 1}
    with pytest.raises(MlflowException, match="Connection broken|IncompleteRead"):
        plain.log_batch(run.info.run_id, params=[Param("seed", "7")])

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    proxy.breaks = {"runs/log-batch": 1}
    with pytest.raises(MlflowException, match="Connection broken|IncompleteRead"):
        mlflow_client(proxy.url).log_batch(run.info.run_id, params=[Param("seed", "7")])


def test_a_run_created_twice_by_mlflow_retries_leaves_no_twin_running(proxy, tracking_server):
    """The server writes the run and dies before answering: MLflow's urllib3 retries send
    the creation again and a second run is made. The twin is ended FAILED with a note."""
    from latentscape.tracking.backends import mlflow_client

    client = mlflow_client(proxy.url)
    experiment = client.create_experiment(f"twins-{time.time_ns()}")
    proxy.drops = {"runs/create": 1}
    run = client.create_run(experiment, run_name="trial 2")
    assert proxy.broken == ["dropped runs/create"]
    runs = mlflow_client(tracking_server).search_runs([experiment])
    assert len(runs) == 2, "MLflow's own retry made the run twice"
    (twin,) = [found for found in runs if found.info.run_id != run.info.run_id]
    assert twin.info.status == "FAILED" and run.info.run_id in twin.data.tags["note"]
    assert mlflow_client(tracking_server).get_run(run.info.run_id).info.status == "RUNNING"
