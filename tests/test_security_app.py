"""The app on a team server lets no one in where they don't belong (issue 31).

A real ``latentscape server`` (PostgreSQL, basic auth) holds alice's experiment and bob's;
bob is DENIED alice's experiment (granted by the admin through MLflow's auth client). The
app runs as ``latentscape ui`` does, reading with a ``viewer`` service account whose
password is in the tracking URI. In headless Chromium (Debian's chromium):

- a visitor who has not logged in gets the login form on every page and direct link, and
  no byte of alice's or bob's runs crosses the WebSocket;
- alice logs in and sees her experiment; she logs out and sees nothing again;
- bob logs in and sees none of alice's experiment, on every page and direct link to her run.

"Sees" is what the browser receives: every WebSocket frame the app sends is searched for
the run's name, its experiment's name and a param value (a dataframe is drawn on a canvas,
so the page's HTML alone would miss it). The same search finds them in alice's frames.

On the same app: a foreign Host header is refused over raw HTTP and on the WebSocket
handshake (Host and Origin both foreign), the app listens on 127.0.0.1 by default, and the
viewer's password appears neither in the pages nor in the app's log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

USERS_FILE = """\
users:
  alice:
    password: ${ALICE_PASSWORD}
  bob:
    password: ${BOB_PASSWORD}
  viewer:
    password: ${VIEWER_PASSWORD}
"""
# What must never reach a browser that may not read alice's experiment.
ALICE_RUN, ALICE_EXPERIMENT, ALICE_PARAM = "alice-secret-run", "alice-exp", "alice-private-value"
BOB_RUN = "bob-own-run"
PAGES = ("", "layers", "maps", "sweeps", "interpolation", "directions", "features", "training", "compare")
LOGIN_CAPTION = "Log in with your team account"


# -- pure parts ---------------------------------------------------------------------
def test_the_host_allow_list_is_the_servers_default_and_matching():
    from mlflow.server.security_utils import get_default_allowed_hosts, is_allowed_host_header

    from latentscape.tracking.access import DEFAULT_ALLOWED_HOSTS, allowed_hosts, host_allowed

    assert list(DEFAULT_ALLOWED_HOSTS) == get_default_allowed_hosts()  # latentscape server's default
    for host in ("localhost", "localhost:8501", "127.0.0.1:80", "[::1]:8501", "10.0.0.7:8501", "172.31.0.1",
                 "172.32.0.1", "192.168.1.2:1", "ui.example.org", "localhost.evil.example", "", "fd00::1"):
        assert host_allowed(host, DEFAULT_ALLOWED_HOSTS) == is_allowed_host_header(get_default_allowed_hosts(), host)
    assert allowed_hosts("ui.example.org, localhost:*") == ("ui.example.org", "localhost:*")
    assert host_allowed("ui.example.org", allowed_hosts("ui.example.org,localhost:*"))
    assert not host_allowed("evil.example", allowed_hosts("ui.example.org,localhost:*"))


def test_a_restricted_cursor_shows_every_catalog_table_only_for_its_experiments(tmp_path):
    """Every table of the catalog that holds run data is shadowed (a new table must be added
    to access.restrict, or this fails), and each keeps only the rows of the given experiments."""
    import duckdb

    from latentscape.tracking import access
    from latentscape.tracking.catalog import _SCHEMA

    path = tmp_path / "catalog.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(_SCHEMA)
        for experiment in ("1", "2"):
            run = f"run-{experiment}"
            con.execute("INSERT INTO experiments (experiment_id, name) VALUES (?, ?)", [experiment, f"e{experiment}"])
            con.execute("INSERT INTO sync_state VALUES (?, 0)", [experiment])
            con.execute("INSERT INTO runs (run_id, experiment_id, name) VALUES (?, ?, ?)", [run, experiment, run])
            con.execute("INSERT INTO deleted_runs VALUES (?, ?, 0, 0)", [f"gone-{experiment}", experiment])
            for table in ("params", "tags"):
                con.execute(f"INSERT INTO {table} VALUES (?, 'k', 'v')", [run])
            for table in ("latest_metrics", "metrics"):
                con.execute(f"INSERT INTO {table} VALUES (?, 'k', 1.0, 0, 0)", [run])
        tables = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert tables - {"meta"} == set(access._BY_EXPERIMENT) | set(access._BY_RUN)
    reader = duckdb.connect(":memory:")
    reader.execute(f"ATTACH '{path}' AS catalog (READ_ONLY)")
    cursor = reader.cursor()
    cursor.execute("USE catalog")
    access.restrict(cursor, {"1"})
    for table in tables - {"meta"}:
        for name in (table, f"main.{table}"):
            rows = cursor.execute(f"SELECT * FROM {name}").fetchall()
            assert len(rows) == 1 and not any("2" in str(value) for value in rows[0]), (name, rows)
    assert cursor.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    nothing = reader.cursor()
    nothing.execute("USE catalog")
    access.restrict(nothing, set())
    assert all(nothing.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,) for table in tables - {"meta"})
    # Another cursor of the same connection is not restricted by the first one's views.
    whole = reader.cursor()
    whole.execute("USE catalog")
    assert whole.execute("SELECT count(*) FROM runs").fetchone() == (2,)


def test_bad_allowed_hosts_and_credentials_in_uris():
    from latentscape.tracking.access import allowed_hosts, is_shared, without_credentials
    from latentscape.tracking.errors import UsageError

    with pytest.raises(UsageError, match="names no host"):
        allowed_hosts(" , ")
    assert without_credentials("http://viewer:secret@mlflow:5000/x") == "http://mlflow:5000/x"
    assert without_credentials("https://u:p@[::1]:5000") == "https://[::1]:5000"
    assert without_credentials("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert is_shared("https://mlflow.example.org") and is_shared("HTTP://x:5000")
    assert not is_shared("sqlite:///mlflow.db") and not is_shared("file:///tmp/mlruns") and not is_shared("/tmp/mlruns")


def test_the_app_listens_on_loopback_unless_told(tmp_path):
    from latentscape.jobs.cli import build_parser
    from latentscape.jobs.serve import ui_command

    command = ui_command(port=8600)
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    args = build_parser().parse_args(["ui"])
    assert args.address == "127.0.0.1"


# -- the team server, its runs and the app --------------------------------------------
@contextlib.contextmanager
def _as(team, user: str, password: str | None = None):
    """MLflow's credential variables of ``user`` in this process for the block."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
                                            "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(MLFLOW_TRACKING_URI=team.url, MLFLOW_TRACKING_USERNAME=user,
                      MLFLOW_TRACKING_PASSWORD=password or team.passwords[user])
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _log_map_run(team, user: str, experiment: str, name: str, param: str) -> str:
    import numpy as np
    import pandas as pd

    from latentscape.tracking.contract import Artifact, Column, Kind, Param
    from latentscape.tracking.run_log import tracked_run
    from latentscape.tracking.runs import open_store

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({Column.SAMPLE_ID: [f"s{i}" for i in range(40)], Column.X: rng.normal(size=40),
                          Column.Y: rng.normal(size=40), Column.CLUSTER: np.arange(40) % 2,
                          Column.LABEL: ["a", "b"] * 20, Column.TEXT: [f"text {i}" for i in range(40)]})
    with _as(team, user):
        store = open_store(team.url)
        with tracked_run(store, store.experiment_id(experiment), Kind.MAP, run_name=name) as log:
            log.params({Param.LAYER: 1, Param.REDUCER: "pca", "note": param})
            log.metrics({"trust": 0.5})
            log.table(Artifact.MAP, frame)
            return log.run_id


@pytest.fixture(scope="module")
def team(team_servers):
    team = team_servers(USERS_FILE, users=("alice", "bob", "viewer"))
    team.alice_run = _log_map_run(team, "alice", ALICE_EXPERIMENT, ALICE_RUN, ALICE_PARAM)
    team.bob_run = _log_map_run(team, "bob", "bob-exp", BOB_RUN, "bob-value")
    from mlflow.server import get_app_client

    with _as(team, "admin", team.server_env["MLFLOW_AUTH_ADMIN_PASSWORD"]):
        import mlflow

        experiment_id = mlflow.MlflowClient(team.url).get_experiment_by_name(ALICE_EXPERIMENT).experiment_id
        get_app_client("basic-auth", tracking_uri=team.url).grant_user_permission("bob", "experiment", experiment_id,
                                                                                 "DENY")
    return team


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app(team, tmp_path_factory):
    """``latentscape ui`` on the team server, reading as the viewer (its password in the URI),
    its catalog synced before it starts. Yields (url, port, log path, viewer's URI, catalog path)."""
    from latentscape.jobs.serve import ui_command, ui_environment
    from latentscape.tracking.catalog import Catalog

    folder = tmp_path_factory.mktemp("security-app")
    viewer_uri = team.url.replace("http://", f"http://viewer:{team.passwords['viewer']}@")
    Catalog.open(viewer_uri, folder / "catalog.duckdb").refresh()
    port = _free_port()
    log = folder / "ui.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LATENTSCAPE_"))}
    with open(log, "wb") as output:
        process = subprocess.Popen(ui_command(port=port), cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
                                   env=ui_environment(tracking_uri=viewer_uri, catalog=folder / "catalog.duckdb",
                                                      base=base))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.read().strip() == b"ok":
                        break
            assert time.monotonic() < deadline, "the app did not answer within 90 s"
            time.sleep(0.3)
        yield url, port, log, viewer_uri, folder / "catalog.duckdb"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- Host headers and the listening address ----------------------------------------------
def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        return connection.recv(4096)


def _handshake(host: str, origin: str) -> bytes:
    return (f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: streamlit\r\n\r\n").encode()


def test_a_foreign_host_is_refused_on_http_and_on_the_websocket(app):
    _, port, log, _, _ = app
    assert _raw(port, b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n").startswith(b"HTTP/1.1 403")
    assert _raw(port, b"GET /_stcore/health HTTP/1.1\r\nHost: evil.example:8501\r\n\r\n").startswith(b"HTTP/1.1 403")
    refused = _raw(port, _handshake("evil.example", "http://evil.example"))
    assert not refused.startswith(b"HTTP/1.1 101"), refused[:200]
    assert refused.startswith(b"HTTP/1.1 403"), refused[:200]
    # The same requests on an allowed name are served: the check refuses the name, not the request.
    assert _raw(port, f"GET /_stcore/health HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode()).startswith(
        b"HTTP/1.1 200")
    accepted = _raw(port, _handshake(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"))
    assert accepted.startswith(b"HTTP/1.1 101"), accepted[:200]
    assert "evil.example" in log.read_text(errors="replace")  # refusals are logged


def test_the_app_listens_on_loopback_only(app):
    _, port, _, _, _ = app
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    listening.append(local.rsplit(":", 1)[0])
    assert listening == ["0100007F"], listening  # 127.0.0.1 alone


# -- the login in Chromium ---------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium_browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (`apt-get install -y chromium`, or `make browser`)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


class Tab:
    """A browser tab that keeps every WebSocket frame the app sent it."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.received: list[bytes] = []
        self.page.on("websocket", lambda ws: ws.on("framereceived", self._keep))

    def _keep(self, payload) -> None:
        self.received.append(payload if isinstance(payload, bytes) else str(payload).encode())

    def seen(self, text: str) -> bool:
        """``text`` reached this tab: in a frame from the app, or in the page."""
        return any(text.encode() in frame for frame in self.received) or text in self.page.content()

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.page.get_by_test_id("stAppViewContainer").wait_for(timeout=60_000)

    def settle(self, timeout_s: float = 60) -> None:
        """Wait until the script has finished its run (no status widget, no skeleton)."""
        deadline = time.monotonic() + timeout_s
        self.page.wait_for_timeout(500)
        while time.monotonic() < deadline:
            if not self.page.get_by_test_id("stStatusWidget").count() and not self.page.get_by_test_id(
                    "stSkeleton").count():
                self.page.wait_for_timeout(300)
                if not self.page.get_by_test_id("stStatusWidget").count():
                    return
            self.page.wait_for_timeout(250)
        raise AssertionError("the app kept running")

    def log_in(self, team, user: str) -> None:
        self.page.get_by_text(LOGIN_CAPTION).wait_for(timeout=60_000)
        self.page.get_by_label("User name").fill(user)
        self.page.get_by_label("Password", exact=True).fill(team.passwords[user])
        self.page.get_by_role("button", name="Log in").click()
        self.page.get_by_role("button", name="Log out").wait_for(timeout=60_000)
        self.settle()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(chromium_browser):
    opened = Tab(chromium_browser)
    yield opened
    opened.close()


def _link(url: str, path: str, **params) -> str:
    return f"{url}/{path}" + ("?" + urlencode(params, doseq=True) if params else "")


def _secrets_of_alice() -> tuple[str, ...]:
    return ALICE_RUN, ALICE_EXPERIMENT, ALICE_PARAM


def test_a_visitor_sees_no_run_on_any_page_or_link(app, team, tab):
    url, _, _, _, _ = app
    for path in PAGES:
        tab.open(_link(url, path, run=team.alice_run, exp=ALICE_EXPERIMENT))
        tab.page.get_by_text(LOGIN_CAPTION).wait_for(timeout=60_000)
        tab.settle()
        assert tab.page.get_by_test_id("stSidebarNav").count() == 0
    for text in (*_secrets_of_alice(), BOB_RUN, "bob-exp"):
        assert not tab.seen(text), f"{text!r} reached a visitor who has not logged in"


def test_alice_sees_her_experiment_and_logging_out_hides_it(app, team, tab):
    url, _, _, _, _ = app
    tab.open(_link(url, "compare", run=team.alice_run))
    tab.log_in(team, "alice")
    # her run in the run picker, named for people with its short id (ui/labels.run_label)
    tab.page.get_by_text(team.alice_run[:8]).first.wait_for(timeout=60_000)
    # What the search for leaks looks for is there for her: the experiment, the param, and the
    # run under its name for people (ui/labels.run_label ends in the short id; the MLflow run
    # name itself is no longer shown, so a leak of it is sought but cannot be proved visible).
    assert all(tab.seen(text) for text in (ALICE_EXPERIMENT, ALICE_PARAM, team.alice_run[:8]))
    assert "viewer:***@" in tab.page.content()  # the sidebar's store, masked
    assert team.passwords["viewer"] not in tab.page.content()
    assert not any(team.passwords["viewer"].encode() in frame for frame in tab.received)

    tab.received.clear()
    tab.page.get_by_role("button", name="Log out").click()
    tab.page.get_by_text(LOGIN_CAPTION).wait_for(timeout=30_000)
    tab.settle()
    assert tab.page.get_by_text(ALICE_RUN).count() == 0
    assert not any(ALICE_RUN.encode() in frame for frame in tab.received)


def test_bob_denied_alices_experiment_sees_none_of_it_on_any_page_or_link(app, team, tab):
    url, _, log, _, _ = app
    for path in PAGES:
        tab.open(_link(url, path, run=team.alice_run))
        tab.log_in(team, "bob")  # a link opened afresh is a new session: it asks again
    tab.open(_link(url, "maps", run=team.bob_run))
    tab.log_in(team, "bob")
    tab.page.get_by_text(team.bob_run[:8]).first.wait_for(timeout=60_000)  # his own run is there
    for text in _secrets_of_alice():
        assert not tab.seen(text), f"{text!r} reached bob, who is denied {ALICE_EXPERIMENT}"
    # A link naming her experiment (the URL echoes the name bob typed, so only the rest is sought).
    tab.open(_link(url, "", exp=ALICE_EXPERIMENT, q="alice"))
    tab.log_in(team, "bob")
    for text in (ALICE_RUN, ALICE_PARAM):
        assert not tab.seen(text), f"{text!r} reached bob, who is denied {ALICE_EXPERIMENT}"
    assert team.passwords["viewer"] not in log.read_text(errors="replace")


def test_a_wrong_password_is_refused_and_logged(app, team, tab):
    url, _, log, _, _ = app
    tab.open(_link(url, "maps", run=team.alice_run))
    tab.page.get_by_text(LOGIN_CAPTION).wait_for(timeout=60_000)
    tab.page.get_by_label("User name").fill("alice")
    tab.page.get_by_label("Password", exact=True).fill("not-alices-password")
    tab.page.get_by_role("button", name="Log in").click()
    tab.page.get_by_text("Login failed").wait_for(timeout=30_000)
    tab.settle()
    assert not tab.seen(ALICE_RUN)
    assert "login refused for user 'alice'" in log.read_text(errors="replace")


def test_a_login_expires_after_its_ttl(app, team, monkeypatch):
    """Streamlit's AppTest on the same server and catalog, with a 3 s session TTL."""
    from streamlit.testing.v1 import AppTest

    _, _, _, viewer_uri, catalog = app
    monkeypatch.setenv("MLFLOW_TRACKING_URI", viewer_uri)
    monkeypatch.setenv("LATENTSCAPE_CATALOG", str(catalog))
    monkeypatch.setenv("LATENTSCAPE_SESSION_TTL", "3")
    at = AppTest.from_file(str(REPO / "ui" / "app.py"), default_timeout=120).run()
    assert not at.metric and not at.sidebar.button  # the login form alone
    at.text_input(key="login.username").input("alice")
    at.text_input(key="login.password").input(team.passwords["alice"])
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert [button.label for button in at.sidebar.button if button.key == "logout"] == ["Log out"]
    assert at.metric and at.metric[0].value == "2"  # her run and bob's (READ by default)
    time.sleep(3.5)
    at.run()
    assert not at.metric and not at.sidebar.button
    assert any("session expired" in info.value for info in at.info)
