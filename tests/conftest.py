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

import contextlib
import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LATENTSCAPE_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

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


def _save_tiny(model, folder: Path) -> Path:
    from transformers import AutoTokenizer

    from latentscape.jobs._embedding import default_model_path

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(folder)
    return folder


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
