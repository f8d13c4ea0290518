"""Search by a new text: the run's own model, pooling and layer; exact matches come first."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from latentscape.jobs.search import place_by_neighbours, search
from latentscape.tracking.contract import Column


def test_a_samples_own_text_finds_it_first_at_distance_zero(text_extraction):
    for row in (0, 17):
        text = text_extraction.texts[row]
        result = search(text_extraction.store, text_extraction.run_id, text, layer=6, k=5)
        first = result.details["neighbours"][0]
        assert first[Column.SAMPLE_ID] == text_extraction.ids[row]
        assert first[Column.DISTANCE] == pytest.approx(0.0, abs=1e-5)
        distances = [n[Column.DISTANCE] for n in result.details["neighbours"]]
        assert distances == sorted(distances)


def test_a_topic_query_finds_samples_of_that_topic(text_extraction):
    result = search(text_extraction.store, text_extraction.run_id,
                    "Simmer the onions in butter, then add the stock and stir the soup.", layer=6, k=5)
    labels = [n[Column.LABEL] for n in result.details["neighbours"]]
    assert labels.count("cooking") >= 3


def test_placement_is_on_an_exact_neighbour_and_inside_the_neighbours_otherwise():
    xy = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    assert place_by_neighbours(xy, np.array([0.3, 0.0, 0.5])).tolist() == [2.0, 0.0]
    point = place_by_neighbours(xy, np.array([0.1, 0.4, 0.4]))
    assert 0 <= point[0] < 1 and 0 <= point[1] < 1 and point.sum() <= 2


def test_search_cli_errors_and_json(text_extraction, digits_extraction):
    base = [sys.executable, "-m", "latentscape.jobs.cli", "search", "--tracking-uri", text_extraction.store.uri]
    done = subprocess.run([*base, "--run", text_extraction.run_id, "--text", "soup"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "pass --layer" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run([*base, "--run", digits_extraction.run_id, "--layer", "0", "--text", "seven"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "tabular" in done.stderr
    done = subprocess.run([*base, "--run", text_extraction.run_id, "--layer", "3", "--text", "rain tomorrow",
                           "--k", "3", "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert len(payload["details"]["neighbours"]) == 3


# --- the app's warm search workers (ui/search_workers.py): real `latentscape search --serve` processes


def _workers(store_uri: str, *, capacity: int = 2, command=None):
    import os

    from latentscape.ui.search_workers import SearchWorkers, serve_command

    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "LATENTSCAPE_PROGRESS": "0",
           "TOKENIZERS_PARALLELISM": "false"}
    return SearchWorkers(command or serve_command(sys.executable), env, capacity=capacity)


def test_a_warm_worker_answers_every_text_in_one_process_and_survives_bad_requests(text_extraction):
    from latentscape.tracking.contract import Reply

    run = text_extraction.run_id
    workers = _workers(text_extraction.store.uri)
    try:
        first, pid, _ = workers.ask("minilm", {Reply.RUN_ID: run, Reply.TEXT: text_extraction.texts[3],
                                               Reply.LAYER: 6, Reply.K: 3}, timeout=300)
        neighbours = first[Reply.DETAILS][Reply.NEIGHBOURS]
        assert len(neighbours) == 3 and neighbours[0][Column.SAMPLE_ID] == text_extraction.ids[3]
        assert first[Reply.DETAILS][Reply.WORKER] == pid
        second, again, _ = workers.ask("minilm", {Reply.RUN_ID: run, Reply.TEXT: "stir the soup and add salt",
                                                  Reply.LAYER: 6}, timeout=300)
        assert again == pid and second[Reply.DETAILS][Reply.WORKER] == pid, "a new text is answered by the warm worker"
        assert len(second[Reply.DETAILS][Reply.NEIGHBOURS]) == 10
        # Bad input is a one-line reply; the worker goes on answering.
        refused, same, _ = workers.ask("minilm", {Reply.RUN_ID: run, Reply.TEXT: "soup", Reply.LAYER: 99}, timeout=300)
        assert same == pid and "has no layer 99" in refused[Reply.ERROR] and "\n" not in refused[Reply.ERROR]
        malformed, same, _ = workers.ask("minilm", {Reply.TEXT: "soup"}, timeout=300)
        assert same == pid and "malformed request" in malformed[Reply.ERROR]
        assert workers.worker("minilm").requests == 4
    finally:
        workers.close()
    assert workers.worker("minilm") is None


def test_workers_are_one_per_model_bounded_and_a_dead_one_is_replaced(text_extraction):
    import os
    import signal

    from latentscape.tracking.contract import Reply
    from latentscape.ui.search_workers import WorkerFailed

    workers = _workers(text_extraction.store.uri, capacity=1)
    cheap = {Reply.TEXT: "no run: answered without loading a model"}
    try:
        _, first_pid, _ = workers.ask("model-a", cheap, timeout=300)
        first = workers.worker("model-a")
        _, other_pid, _ = workers.ask("model-b", cheap, timeout=300)
        assert other_pid != first_pid and workers.worker("model-a") is None
        first._process.wait(timeout=30)  # evicted: closed, its process gone
        assert not first.alive()
        killed = workers.worker("model-b")
        os.kill(other_pid, signal.SIGKILL)
        killed._process.wait(timeout=30)
        _, replaced, _ = workers.ask("model-b", cheap, timeout=300)
        assert replaced not in (first_pid, other_pid)
    finally:
        workers.close()
    # A worker that cannot start says why in one line, not with a traceback.
    broken = _workers(text_extraction.store.uri, command=[sys.executable, "-c",
                                                         "import sys; sys.exit('latentscape search: error: no model')"])
    try:
        with pytest.raises(WorkerFailed, match=r"^latentscape search: error: no model$"):
            broken.ask("m", cheap, timeout=60)
    finally:
        broken.close()
