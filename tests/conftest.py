"""Shared fixtures: real MLflow stores in temporary folders, real (tiny) models.

- ``store``: a fresh SQLite MLflow store per test (a copy of a pre-migrated empty
  database, as MLflow's own tests do), with a guard that fails any test leaving a
  run RUNNING.
- ``tiny_bert`` / ``tiny_gpt2``: randomly initialised models built from a config,
  saved as Hugging Face folders with the bundled MiniLM tokenizer.
- ``digits_extraction`` / ``text_extraction``: session-wide extract runs that
  downstream job tests build on (read-only: tests that write use ``store``).
- ``postgres``: the PostgreSQL on 127.0.0.1:5432 (trust auth) that the team and
  storage-backend tests make their own databases on.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LATENTSCAPE_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite's own cache folder (k-NN graphs, catalogs of folderless stores, staging), set before
# any job runs or subprocess starts, so no test writes into the user's ~/.cache/latentscape
# nor reads what a user's runs left there; removed when the session's process ends.
os.environ["LATENTSCAPE_CACHE"] = tempfile.mkdtemp(prefix="latentscape-test-cache-")
atexit.register(shutil.rmtree, os.environ["LATENTSCAPE_CACHE"], ignore_errors=True)

REPO = Path(__file__).resolve().parents[1]


def assert_no_running_runs(store) -> None:
    experiments = [e.experiment_id for e in store.client.search_experiments()]
    running = store.client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")
    assert not running, f"runs left RUNNING: {[r.info.run_id for r in running]}"


@pytest.fixture
def store(tmp_path):
    """A fresh local MLflow store; the test fails if it leaves a run RUNNING."""
    from latentscape.tracking.runs import open_store

    opened = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield opened
    assert_no_running_runs(opened)


class Postgres:
    """The test PostgreSQL server: URLs of its databases, and dropping them. Tests make
    databases of their own (unique names) and drop them after."""

    host, port, user = "127.0.0.1", 5432, "postgres"

    def url(self, database: str, *, user: str | None = None, password: str | None = None) -> str:
        login = f"{user or self.user}:{password}" if password else (user or self.user)
        return f"postgresql://{login}@{self.host}:{self.port}/{database}"

    def answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1):
            return True
        return False

    def require(self) -> None:
        """Fail (never skip) with one line when it does not answer: CI starts it (.ci/run)."""
        if not self.answers():
            pytest.fail(f"PostgreSQL on {self.host}:{self.port} does not answer; start it (.ci/run does)",
                        pytrace=False)

    def drop(self, name: str) -> None:
        import psycopg2
        from psycopg2 import sql

        connection = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:  # FORCE: a server's pooled connections may linger
                cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        finally:
            connection.close()


@pytest.fixture(scope="session")
def postgres() -> Postgres:
    """The PostgreSQL on 127.0.0.1:5432 (whether it answers is for each test to check)."""
    return Postgres()


# -- polling with a deadline that follows the work --------------------------------
def _wait_for_progress(done, *, progress, stall_s: float, what: str, poll_s: float = 0.5):
    """Poll ``done()`` until it is true. The deadline follows the work, not the clock: it
    fails only after ``stall_s`` seconds in which ``progress()`` (a value that grows while
    the work goes on, e.g. complete trials) did not change. Returns ``done()``'s value."""
    last, since = progress(), time.monotonic()
    while True:
        value = done()
        if value:
            return value
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > stall_s:
            pytest.fail(f"{what}: no progress in {stall_s:.0f} s (last seen: {last})")
        time.sleep(poll_s)


@pytest.fixture(scope="session")
def wait_for_progress():
    """``wait_for_progress(done, progress=, stall_s=, what=)``: poll until ``done()``, failing
    only when ``progress()`` stood still for ``stall_s`` s (a busy machine is slow, not stuck)."""
    return _wait_for_progress


def _wait_for_health(url: str, process, *, log: Path, timeout_s: float, poll_s: float = 0.5,
                     probe_s: float = 2) -> None:
    """Poll ``url``/health until it answers 200; RuntimeError with ``log``'s tail when
    ``process`` ended or ``timeout_s`` (a hang guard) passed first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=probe_s) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(poll_s)


@pytest.fixture(scope="session")
def wait_for_health():
    """``wait_for_health(url, process, log=, timeout_s=)``: a started server's /health is ok."""
    return _wait_for_health


# -- team mode: a running `latentscape server` ---------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def latentscape_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "latentscape.jobs.cli", *args]


def child_pids(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


@dataclass
class Team:
    """A running ``latentscape server`` and how to reach it as each user."""

    tmp: Path
    port: int
    database: str
    optuna_storage: str  # plain postgresql:// as a user would write it (the sweep must pin psycopg2 itself)
    passwords: dict[str, str]
    server_env: dict[str, str]
    args: list[str]
    users: tuple[str, ...] = ("alice", "bob")
    process: subprocess.Popen | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def artifacts(self) -> Path:
        return self.tmp / "artifacts"

    def env(self, user: str, **extra: str) -> dict[str, str]:
        """A job's environment: the server and the user's credentials, nothing else of ours."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(MLFLOW_TRACKING_URI=self.url, MLFLOW_TRACKING_USERNAME=user,
                   MLFLOW_TRACKING_PASSWORD=self.passwords[user], LATENTSCAPE_PROGRESS="0",
                   HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **extra)
        return env

    def auth(self, user: str) -> tuple[str, str]:
        return user, self.passwords[user]

    def start(self, *, timeout: float = 120.0) -> float:
        """Start ``latentscape server`` and wait until it answers and has provisioned its
        users; returns the seconds it took."""
        self.starts += 1
        log = self.tmp / f"server-{self.starts}.log"
        self.logs.append(log)
        started = time.monotonic()
        with open(log, "wb") as output:
            self.process = subprocess.Popen(latentscape_cli("server", *self.args), env=self.server_env, cwd=self.tmp,
                                            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        # The deadline follows the boot, not the clock: ``timeout`` s without a new line in
        # its log (a busy machine boots slowly; a stuck server says nothing).
        last_size, since = -1, time.monotonic()
        while f"user {self.users[-1]}:" not in log.read_text(errors="replace"):
            size = log.stat().st_size
            if size != last_size:
                last_size, since = size, time.monotonic()
            if self.process.poll() is not None or time.monotonic() - since > timeout:
                self.stop()
                pytest.fail(f"latentscape server did not come up:\n{self.log_tail()}")
            time.sleep(0.25)
        return time.monotonic() - started

    def crash(self) -> None:
        """SIGKILL the MLflow server's process group (uvicorn and all): a crash."""
        for child in child_pids(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child, signal.SIGKILL)
        self.process.wait(30)  # `latentscape server` notices and exits non-zero

    def stop(self) -> None:
        if self.process is None:
            return
        children = child_pids(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for child in children:  # whatever outlived its parent
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child, signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.logs[-1].read_text(errors="replace").splitlines()[-lines:]) if self.logs else ""

@pytest.fixture(scope="module")
def team_servers(tmp_path_factory, postgres):
    """Start ``latentscape server`` on fresh PostgreSQL databases: ``team_servers(users_file,
    users=("alice", "bob"), extra_args=())`` returns a running :class:`Team`. The users file
    refers to each user's password as ``${<USER>_PASSWORD}``; passwords are generated per call.
    ``server_role`` / ``optuna_role`` (name, password): PostgreSQL roles for the store and the
    workers' Optuna URL (default: postgres for both). The store URLs reach the server through its
    environment, as compose passes them, never its command line.
    Every server is stopped and its databases dropped when the module's tests end."""
    if not postgres.answers():
        pytest.skip(f"team-mode tests need PostgreSQL on {postgres.host}:{postgres.port}, which does not answer")
    started: list[Team] = []

    def start(users_file: str, *, users: tuple[str, ...], extra_args: tuple[str, ...] = (),
              env: dict[str, str] | None = None, server_role: tuple[str, str] | None = None,
              optuna_role: tuple[str, str] | None = None) -> Team:
        tmp = tmp_path_factory.mktemp("team")
        database = f"ls_team_{uuid.uuid4().hex[:10]}"
        passwords = {user: secrets.token_urlsafe(16) for user in users}
        (tmp / "users.yaml").write_text(users_file)
        server_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LATENTSCAPE_"))}
        server_env.update(MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
                          MLFLOW_AUTH_ADMIN_PASSWORD=secrets.token_urlsafe(16), PYTHONUNBUFFERED="1",
                          **{f"{user.upper()}_PASSWORD": password for user, password in passwords.items()},
                          **(env or {}))
        port = free_port()
        optuna_storage = postgres.url(f"{database}_optuna", **dict(zip(("user", "password"), optuna_role or ())))
        server_env.update(LATENTSCAPE_OPTUNA_STORAGE=optuna_storage, LATENTSCAPE_BACKEND_STORE_URI=postgres.url(
            database, **dict(zip(("user", "password"), server_role or ()))))
        args = ["--artifacts-destination", str(tmp / "artifacts"),
                "--port", str(port), "--workers", "1", "--users", str(tmp / "users.yaml"),
                "--allowed-hosts", "127.0.0.1:*,localhost:*", *extra_args]
        team = Team(tmp=tmp, port=port, database=database, optuna_storage=optuna_storage, passwords=passwords,
                    server_env=server_env, args=args, users=tuple(users))
        started.append(team)
        team.start()
        return team

    try:
        yield start
    finally:
        for team in started:
            team.stop()
            for name in (team.database, f"{team.database}_auth", f"{team.database}_optuna"):
                postgres.drop(name)



def _save_tiny(model, folder: Path) -> Path:
    from transformers import AutoTokenizer

    from latentscape.jobs._embedding import default_model_path

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(folder)
    return folder


class NotebookSession:
    """A documented session run twice, as a notebook in a Jupyter kernel and as CLI jobs,
    each on a store of its own (the notebook tests compare their scores)."""

    @staticmethod
    def cli(folder: Path, *argv: str) -> dict:
        """``latentscape <argv> --json`` against ``folder``'s store: its answer."""
        import json

        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "LATENTSCAPE_PROGRESS": "0"}
        done = subprocess.run([sys.executable, "-m", "latentscape.jobs.cli", *argv, "--json"], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    @staticmethod
    def run_notebook(path: Path, folder: Path, parameters: str, *, progress: bool = False):
        """Execute the notebook at ``path`` in ``folder`` with ``parameters`` appended to its
        cell tagged ``parameters``; the executed notebook."""
        import nbformat
        from nbclient import NotebookClient

        notebook = nbformat.read(path, as_version=4)
        (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        cell.source += "\n" + parameters
        client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(folder)}})
        client.execute(env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
                            "LATENTSCAPE_PROGRESS": "1" if progress else "0"})
        return notebook

    @staticmethod
    def differences(ours: dict, theirs: dict) -> list[str]:
        """Every score that differs beyond float noise (timings, which differ run to run, aside)."""
        import math

        found = []
        for key in sorted(set(ours) | set(theirs)):
            if key.endswith(("_seconds", "_per_s")):
                continue
            a, b = ours.get(key), theirs.get(key)
            if a is None or b is None:
                found.append(f"{key}: {a} vs {b}")
            elif not (math.isnan(a) and math.isnan(b)) and not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
                found.append(f"{key}: {a!r} vs {b!r}")
        return found


@pytest.fixture(scope="session")
def notebook_session() -> type[NotebookSession]:
    return NotebookSession


@pytest.fixture(scope="session")
def long_tail_csv(tmp_path_factory) -> Path:
    """60 demo sentences labelled as natural data is: three rows without a label, a class
    of one ("a class of one") and a class of two ("a pair"); the rest as in demo."""
    import pandas as pd

    from latentscape.jobs.datasets import load_dataset

    demo = load_dataset("demo", limit=60)
    labels = demo.labels.astype(object).copy()
    labels[:3] = None
    labels[3] = "a class of one"
    labels[4:6] = "a pair"
    path = tmp_path_factory.mktemp("long-tail") / "long-tail.csv"
    pd.DataFrame({"text": demo.texts, "label": labels}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-block, 32-wide BERT with random weights (encoder)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    return _save_tiny(BertModel(config), tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A 2-block, 32-wide GPT-2 with random weights (decoder-only)."""
    import torch
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=30522, n_embd=32, n_layer=2, n_head=2, n_positions=128)
    return _save_tiny(GPT2Model(config), tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def session_store(tmp_path_factory):
    """One store for the session's shared extractions (treat as read-only)."""
    from latentscape.tracking.runs import open_store

    opened = open_store(f"sqlite:///{tmp_path_factory.mktemp('session-store') / 'mlflow.db'}")
    yield opened
    assert_no_running_runs(opened)


@pytest.fixture(scope="session")
def digits_extraction(session_store):
    """The ``digits`` data set tracked as layer 0 (1,797 x 64); returns the Extraction."""
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract

    result = extract(ExtractConfig(data="digits"), store=session_store, experiment="digits")
    return load_extraction(session_store, result.run_id)


@pytest.fixture(scope="session")
def text_extraction(session_store):
    """240 demo sentences (24 per class) through the bundled MiniLM, all 7 layers."""
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract

    result = extract(ExtractConfig(data="demo", limit=240, batch_size=32), store=session_store, experiment="demo")
    return load_extraction(session_store, result.run_id)
