"""What the latentscape app (tracking/auth_app.py) costs and changes at login.

Two ``mlflow server`` processes on their own SQLite stores, one worker each, the same
auth ini: MLflow's ``--app-name basic-auth`` (plain) and ``--app-name latentscape``
(the same app inside the team guard: throttle counters in the auth database, read-only
and artifact-location checks). Three figures each:

- an authenticated request whose password is cached (every request of a job after its
  first): median of alternating requests on keep-alive connections;
- a wrong password for a known user and for an unknown one (the second is what tells a
  guesser which names exist when it is cheaper);
- 50 wrong passwords for the known user in a row (the issue's probe: 6.3 s, no refusal).

    .venv/bin/python bench/auth_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import Row, print_rows  # noqa: E402

ADMIN_PASSWORD = secrets.token_urlsafe(16)
USER, PASSWORD = "alice", secrets.token_urlsafe(16)


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(app: str, folder: Path) -> tuple[subprocess.Popen, str]:
    folder.mkdir()
    ini = folder / "auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{folder / 'auth.db'}\n"
                   "admin_username = admin\nauthorization_function = "
                   "mlflow.server.auth:authenticate_request_basic_auth\nauth_cache_ttl_seconds = 60\n")
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": "bench",
           "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    port = _port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--app-name", app, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "wb"), start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


def _ready(url: str, process: subprocess.Popen) -> None:
    import requests

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server for {url} exited")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    created = requests.post(f"{url}/api/2.0/mlflow/users/create", auth=("admin", ADMIN_PASSWORD), timeout=60,
                            json={"username": USER, "password": PASSWORD})
    created.raise_for_status()


def _timed(session, url: str, auth) -> float:
    started = time.perf_counter()
    session.get(f"{url}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "Default"},
                auth=auth, timeout=60)
    return time.perf_counter() - started


def main(quick: bool = False) -> list[Row]:
    import requests

    cached_n, wrong_n = (40, 4) if quick else (200, 10)

    with tempfile.TemporaryDirectory() as tmp:
        servers = {app: _start(app, Path(tmp) / app) for app in ("basic-auth", "latentscape")}
        try:
            for process, url in servers.values():
                _ready(url, process)
            sessions = {app: requests.Session() for app in servers}
            cached = {app: [] for app in servers}
            known = {app: [] for app in servers}
            unknown = {app: [] for app in servers}
            for app, (_, url) in servers.items():  # warm: the first check of a password hashes it
                _timed(sessions[app], url, (USER, PASSWORD))
            for _ in range(cached_n):
                for app, (_, url) in servers.items():
                    cached[app].append(_timed(sessions[app], url, (USER, PASSWORD)))
            for i in range(wrong_n):
                for app, (_, url) in servers.items():
                    known[app].append(_timed(sessions[app], url, (USER, f"wrong-{i}-password")))
                    unknown[app].append(_timed(sessions[app], url, (f"nobody-{uuid.uuid4().hex[:8]}", "wrong-pw-1")))
            fifty = {}
            for app, (_, url) in servers.items():
                started = time.perf_counter()
                statuses = [sessions[app].get(f"{url}/api/2.0/mlflow/experiments/get-by-name", timeout=60,
                                              params={"experiment_name": "Default"},
                                              auth=(USER, f"wrong-{i}-password")).status_code
                            for i in range(50)]
                fifty[app] = (time.perf_counter() - started, statuses.count(429))
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(30)

    median = {name: {app: statistics.median(values[app]) for app in servers}
              for name, values in (("cached", cached), ("known", known), ("unknown", unknown))}
    for app in servers:
        print(f"{app:>12}: cached request {median['cached'][app] * 1000:.1f} ms, wrong password "
              f"{median['known'][app]:.3f} s (known user) / {median['unknown'][app]:.3f} s (unknown), "
              f"50 wrong in a row {fifty[app][0]:.1f} s ({fifty[app][1]} answered 429)")
    plain, ours = median["unknown"]["basic-auth"] / median["known"]["basic-auth"], \
        median["unknown"]["latentscape"] / median["known"]["latentscape"]
    return [
        Row("authenticated request, password cached", median["cached"]["basic-auth"], median["cached"]["latentscape"],
            "same answer", True),
        Row("wrong password, unknown user", median["unknown"]["basic-auth"], median["unknown"]["latentscape"],
            f"unknown/known time {plain:.2f} vs {ours:.2f}", 0.7 < ours < 1.3),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    print_rows(main(parser.parse_args().quick))
