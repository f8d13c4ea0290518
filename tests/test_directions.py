"""The directions job: a direction per label, projections, the cosines between them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from latentscape.jobs.directions import DirectionsConfig, directions
from latentscape.tracking.contract import MLFLOW_PARENT_RUN_ID, Artifact, Column, Kind, Metric, Param, Tag
from latentscape.tracking.runs import load_array, load_table


@pytest.mark.parametrize("fixture, layer", [("digits_extraction", 0), ("text_extraction", 6)])
def test_directions_separate_each_label_from_the_rest(request, fixture, layer):
    extraction = request.getfixturevalue(fixture)
    store = extraction.store
    result = directions(DirectionsConfig(run=extraction.run_id, layer=layer), store=store)
    run = store.get_run(result.run_id)
    assert run.tags[Tag.KIND] == Kind.DIRECTIONS.value
    assert run.tags[MLFLOW_PARENT_RUN_ID] == extraction.run_id == run.tags[Tag.SOURCE_RUN]
    classes = sorted(set(extraction.labels))
    assert run.params[Param.N_CLASSES] == str(len(classes))

    projections = load_table(store, result.run_id, Artifact.PROJECTIONS)
    assert len(projections) == len(extraction.ids) * len(classes) * 2
    assert set(projections[Column.METHOD]) == {"mean_difference", "probe"}
    assert set(projections[Column.DIRECTION]) == set(classes)
    for method in ("mean_difference", "probe"):
        vectors = load_array(store, result.run_id, Artifact.direction_vectors(method))
        assert vectors.shape == (len(classes), extraction.embedding(layer).shape[1])
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        # Samples of a label project higher on its direction than the rest do, on average.
        mine = projections[(projections[Column.METHOD] == method)
                           & (projections[Column.DIRECTION] == projections[Column.LABEL])]
        others = projections[(projections[Column.METHOD] == method)
                             & (projections[Column.DIRECTION] != projections[Column.LABEL])]
        assert mine[Column.PROJECTION].mean() > others[Column.PROJECTION].mean()
        assert run.metrics[Metric.qualified(Metric.DIRECTION_AUC, method)] > 0.9
        assert 0 <= run.metrics[Metric.qualified(Metric.MEAN_ABS_COSINE, method)] < 0.5
    assert run.metrics[Metric.METHOD_AGREEMENT] > 0.5

    cosines = load_table(store, result.run_id, Artifact.DIRECTION_COSINES)
    assert len(cosines) == (2 * len(classes)) ** 2
    same = cosines[(cosines[Column.DIRECTION_A] == cosines[Column.DIRECTION_B])
                   & (cosines[Column.METHOD_A] == cosines[Column.METHOD_B])]
    np.testing.assert_allclose(same[Column.COSINE], 1.0, atol=1e-9)
    square = cosines.pivot_table(index=[Column.METHOD_A, Column.DIRECTION_A],
                                 columns=[Column.METHOD_B, Column.DIRECTION_B], values=Column.COSINE)
    np.testing.assert_allclose(square.to_numpy(), square.to_numpy().T, atol=1e-12)


def _unlabelled_extraction(store) -> str:
    """A finished extract run with no labels (built directly: no model needed)."""
    from latentscape.tracking.run_log import tracked_run

    with tracked_run(store, store.experiment_id("unlabelled"), Kind.EXTRACT, tags={Tag.MODEL: "none"}) as log:
        log.params({Param.MODEL: "none", Param.POOLING: "none"})
        log.table(Artifact.SAMPLES, pd.DataFrame({Column.SAMPLE_ID: ["s0", "s1", "s2"], Column.TEXT: ["a", "b", "c"],
                                                 Column.LABEL: [None, None, None]}))
        log.array(Artifact.embedding(0), np.arange(12, dtype=np.float32).reshape(3, 4))
        return log.run_id


def test_cli_says_in_one_line_that_labels_are_required(store):
    run_id = _unlabelled_extraction(store)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LATENTSCAPE_PROGRESS": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "latentscape.jobs.cli", "directions", "--tracking-uri", store.uri, "--run", run_id, "--layer", "0"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latentscape directions: error:") and "no labels" in lines[0]
    assert len(store.client.search_runs([store.experiment_id("unlabelled")])) == 1  # no directions run


def test_a_missing_layer_is_a_usage_error(store):
    from latentscape.jobs.cli import main

    run_id = _unlabelled_extraction(store)
    assert main(["directions", "--tracking-uri", store.uri, "--run", run_id, "--layer", "3"]) == 2


def test_rare_classes_get_no_direction_and_stop_nothing(store, long_tail_csv, tiny_bert, capsys):
    from latentscape.jobs.extract import ExtractConfig, extract

    extracted = extract(ExtractConfig(data=str(long_tail_csv), label_col="label", model=str(tiny_bert)), store=store)
    capsys.readouterr()
    result = directions(DirectionsConfig(run=extracted.run_id, layer=2), store=store)
    run = store.client.get_run(result.run_id)
    projected = load_table(store, result.run_id, Artifact.PROJECTIONS)
    assert "a class of one" not in set(projected[Column.DIRECTION]) and "a pair" in set(projected[Column.DIRECTION])
    assert projected[Column.SAMPLE_ID].nunique() == 60 - 4  # three unlabelled rows and the class of one
    assert run.data.params[Param.SAMPLES_LEFT_OUT] == "4" and "'a class of one'" in run.data.tags[Tag.NOTE]
    assert "leave out" in capsys.readouterr().err
