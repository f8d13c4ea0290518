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
