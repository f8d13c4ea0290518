"""The layers job: every curve per layer, the CKA matrix, the findings, clean failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentscape.jobs.layers import CURVES, LABELLED_CURVES, NONE, LayerFindings, LayersConfig, findings, layers
from latentscape.tracking.contract import MLFLOW_PARENT_RUN_ID, Artifact, Column, Kind, Metric, Param, Tag
from latentscape.tracking.errors import UsageError
from latentscape.tracking.run_log import tracked_run
from latentscape.tracking.runs import load_table

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_findings_largest_change_and_first_stable_layer():
    ids = [0, 1, 2, 3, 4]
    found = findings(ids, np.array([0.8, 0.6, 0.97, 0.99]), 0.95)
    assert (found.largest_change, found.first_stable) == (2, 2)
    found = findings(ids, np.array([0.96, 0.97, 0.98, 0.99]), 0.95)
    assert (found.largest_change, found.first_stable) == (1, 0)
    found = findings(ids, np.array([0.99, 0.97, 0.98, 0.90]), 0.95)
    assert (found.largest_change, found.first_stable) == (4, None)  # unstable at the end
    found = findings([0, 3, 6], np.array([np.nan, 0.99]), 0.95)
    assert (found.largest_change, found.first_stable) == (6, 3)  # NaN: unstable, never the change
    assert findings([0], np.array([]), 0.95) == LayerFindings(None, None)


@pytest.fixture(scope="module")
def layers_run(text_extraction):
    # Logged beside the shared extraction (a child run needs its parent's store), in an
    # experiment of its own so other tests' searches of "demo" do not see it.
    result = layers(LayersConfig(run=text_extraction.run_id, map_reducer="pca", map_clusterer="kmeans"),
                    store=text_extraction.store, experiment="layers-tests")
    return text_extraction, result


def test_layers_logs_every_curve_per_layer(layers_run):
    extraction, result = layers_run
    store = extraction.store
    run = store.client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags[Tag.KIND] == Kind.LAYERS
    assert tags[MLFLOW_PARENT_RUN_ID] == extraction.run_id
    assert tags[Tag.SOURCE_RUN] == extraction.run_id
    assert tags[Tag.DATASET_DIGEST] == extraction.dataset_digest
    assert Tag.NOTE not in tags

    ids = extraction.layers
    assert ids == list(range(7))
    for name in CURVES:
        steps = sorted(m.step for m in store.client.get_metric_history(result.run_id, name))
        expected = ids[1:] if name in (Metric.CKA_PREVIOUS, Metric.COSINE_PREVIOUS) else ids
        assert steps == expected, name
    table = load_table(store, result.run_id, Artifact.LAYER_SUMMARY)
    assert list(table[Column.LAYER]) == ids
    assert set(CURVES) <= set(table.columns)
    assert table[Metric.CKA_PREVIOUS].between(0, 1).iloc[1:].all()
    assert table[Metric.PROBE_ACCURACY].between(0, 1).all()
    # The demo's 10 topics are readable from MiniLM's later layers far above chance.
    chance = run.data.metrics[Metric.PROBE_CHANCE]
    assert chance == pytest.approx(0.1)
    assert table[Metric.PROBE_ACCURACY].iloc[-1] > 0.6
    assert table[Metric.KNN_AGREEMENT].iloc[-1] > 2 * chance
    assert (table[Metric.INTRINSIC_DIM] > 1).all() and (table[Metric.INTRINSIC_DIM] < 384).all()
    assert table[Metric.AMI].notna().all()


def test_layers_logs_the_cka_matrix_and_the_findings(layers_run):
    extraction, result = layers_run
    store = extraction.store
    cka = load_table(store, result.run_id, Artifact.CKA)
    assert len(cka) == 49
    matrix = cka.pivot(index=Column.LAYER_A, columns=Column.LAYER_B, values=Column.CKA).to_numpy()
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-9)
    assert ((matrix > 0) & (matrix <= 1 + 1e-9)).all()

    # The findings agree with the curve they summarise.
    params = store.client.get_run(result.run_id).data.params
    table = load_table(store, result.run_id, Artifact.LAYER_SUMMARY)
    previous = table[Metric.CKA_PREVIOUS].to_numpy()
    assert int(params[Param.LAYER_OF_LARGEST_CHANGE]) == int(table[Column.LAYER].iloc[np.nanargmin(previous)])
    np.testing.assert_allclose(previous[1:], np.diag(matrix, 1), atol=1e-12)
    stable = params[Param.FIRST_STABLE_LAYER]
    threshold = float(params[Param.STABLE_CKA])
    if stable == NONE:
        assert previous[-1] < threshold
    else:
        assert (previous[int(stable) + 1:] >= threshold).all()
        assert int(stable) == 0 or previous[int(stable)] < threshold
    assert params[Param.REDUCER] == "pca" and params[Param.CLUSTERER] == "kmeans"


def test_layers_cluster_scores_are_kmeans_on_the_layer_and_the_map_jobs_ami(layers_run):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score

    from latentscape.jobs.core.mapping import data_shape, fit_map, resolve_config

    extraction, result = layers_run
    table = load_table(extraction.store, result.run_id, Artifact.LAYER_SUMMARY)
    x, labels = extraction.embedding(3), extraction.labels
    # ami (the default curve): k-means at k = classes on the layer itself, computed here independently.
    clusters = KMeans(n_clusters=10, n_init=10, random_state=0).fit_predict(x.astype(np.float64))
    assert table[Metric.AMI].iloc[3] == pytest.approx(adjusted_mutual_info_score(labels, clusters), abs=1e-12)
    # ami.map: the map job's AMI with the same settings.
    config = resolve_config(shape=data_shape(x, labels), reducer="pca", clusterer="kmeans", seed=0)
    direct = fit_map(x, labels, config, with_view=False).scores[Metric.AMI]
    assert table[Metric.AMI_MAP].iloc[3] == pytest.approx(direct, abs=1e-12)
    params = extraction.store.client.get_run(result.run_id).data.params
    assert params[Param.clusterer_param("n_clusters")] == "10"  # k = number of classes, logged


def test_unlabelled_data_skips_label_scores_with_a_note(store, tmp_path, tiny_bert):
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.datasets import load_dataset
    from latentscape.jobs.extract import ExtractConfig, extract

    texts = load_dataset("demo", limit=40).texts
    path = tmp_path / "plain.csv"
    path.write_text("text\n" + "\n".join(f'"{t}"' for t in texts) + "\n")
    extracted = extract(ExtractConfig(data=str(path), label_col=None, model=str(tiny_bert)), store=store)
    assert load_extraction(store, extracted.run_id).labels is None

    result = layers(LayersConfig(run=extracted.run_id, debiased=True), store=store)
    run = store.client.get_run(result.run_id)
    assert "unlabelled" in run.data.tags[Tag.NOTE] and "note" in result.details
    for name in LABELLED_CURVES:
        assert not store.client.get_metric_history(result.run_id, name)
    assert sorted(m.step for m in store.client.get_metric_history(result.run_id, Metric.INTRINSIC_DIM)) == [0, 1, 2]
    assert run.data.params[Param.DEBIASED] == "True"
    assert Metric.PROBE_CHANCE not in run.data.metrics


def test_bad_settings_fail_before_any_run():
    with pytest.raises(UsageError, match="stable-cka"):
        LayersConfig(run="x", stable_cka=1.5)
    with pytest.raises(UsageError, match="probe-folds"):
        LayersConfig(run="x", probe_folds=1)
    with pytest.raises(UsageError, match="min-class-size"):
        LayersConfig(run="x", min_class_size=0)


def test_rare_classes_and_unlabelled_rows_are_left_out_of_label_scores_not_an_error(store, long_tail_csv, tiny_bert,
                                                                                     capsys):
    """Natural labels: classes of one and two samples and rows without a label. The job
    finishes; the label scores use the rest, and the run says what they left out."""
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract

    extracted = extract(ExtractConfig(data=str(long_tail_csv), label_col="label", model=str(tiny_bert)), store=store)
    selection = load_extraction(store, extracted.run_id).label_selection(3)
    assert {"a class of one", "a pair"} <= set(selection.classes_left_out) and selection.unlabelled == 3
    capsys.readouterr()

    result = layers(LayersConfig(run=extracted.run_id, map=False, probe_folds=3), store=store)
    run = store.client.get_run(result.run_id)
    assert run.data.params[Param.CLASSES_KEPT] == str(len(selection.classes_kept))
    assert run.data.params[Param.SAMPLES_LEFT_OUT] == str(selection.samples_left_out)
    assert run.data.params[Param.MIN_CLASS_SIZE] == "3"
    assert "'a class of one'" in run.data.tags[Tag.NOTE] and "3 unlabelled" in run.data.tags[Tag.NOTE]
    notes = [line for line in capsys.readouterr().err.splitlines() if "leave out" in line]
    assert len(notes) == 1, notes
    for name in LABELLED_CURVES:  # every label score measured, on the kept samples
        assert len(store.client.get_metric_history(result.run_id, name)) == 3, name

    # A threshold above every class: the label scores are skipped with a note, no error.
    skipped = layers(LayersConfig(run=extracted.run_id, map=False, min_class_size=1000), store=store)
    run = store.client.get_run(skipped.run_id)
    assert run.info.status == "FINISHED" and "skipped" in run.data.tags[Tag.NOTE]
    assert not store.client.get_metric_history(skipped.run_id, Metric.PROBE_ACCURACY)


def test_cli_rejects_a_run_that_is_not_an_extraction(store):
    with tracked_run(store, store.experiment_id(), Kind.MAP) as log:
        not_an_extraction = log.run_id
    completed = subprocess.run(
        [sys.executable, "-m", "latentscape.jobs.cli", "layers", "--run", not_an_extraction, "--tracking-uri", store.uri],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
        env={**os.environ, "LATENTSCAPE_PROGRESS": "0"},
    )
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latentscape layers: error:"), completed.stderr
    assert "not an extraction" in lines[0]
    assert completed.stdout == ""


def test_a_single_layer_has_no_findings_but_every_other_measure(digits_extraction):
    result = layers(LayersConfig(run=digits_extraction.run_id, map=False), store=digits_extraction.store,
                    experiment="layers-tests")
    store = digits_extraction.store
    params = store.client.get_run(result.run_id).data.params
    assert params[Param.LAYER_OF_LARGEST_CHANGE] == NONE and params[Param.FIRST_STABLE_LAYER] == NONE
    table = load_table(store, result.run_id, Artifact.LAYER_SUMMARY)
    assert table[Metric.PROBE_ACCURACY].iloc[0] > 0.9  # digits are nearly linearly separable
    assert 5 < table[Metric.INTRINSIC_DIM].iloc[0] < 30
    # --no-map: no map scores, but the default cluster score (k-means on the layer) stays.
    assert Metric.AMI_MAP not in table and table[Metric.AMI].iloc[0] > 0.5 and Param.REDUCER not in params
    assert len(load_table(store, result.run_id, Artifact.CKA)) == 1


def test_past_max_samples_the_knn_probe_and_cluster_measures_read_a_stratified_subsample(text_extraction):
    """240 samples with --max-samples 100: the label scores and TwoNN read 100 (every class
    kept), CKA and cosine all 240; n.<measure> says so, and the verdict still comes."""
    result = layers(LayersConfig(run=text_extraction.run_id, map=False, max_samples=100), store=text_extraction.store,
                    experiment="layers-subsample")
    run = text_extraction.store.client.get_run(result.run_id)
    params = run.data.params
    for name in (Metric.PROBE_ACCURACY, Metric.KNN_AGREEMENT, Metric.AMI):
        assert 100 <= int(params[Param.sample_size(name)]) <= 110, name  # rounding per class
    assert params[Param.sample_size(Metric.INTRINSIC_DIM)] == "100" and params[Param.N_SAMPLES] == "240"
    assert Tag.VERDICT in run.data.tags
    full = layers(LayersConfig(run=text_extraction.run_id, map=False), store=text_extraction.store,
                  experiment="layers-subsample")
    full_params = text_extraction.store.client.get_run(full.run_id).data.params
    assert full_params[Param.sample_size(Metric.PROBE_ACCURACY)] == "240"
    # CKA reads every sample either way: the same matrix.
    assert params[Param.LAYER_OF_LARGEST_CHANGE] == full_params[Param.LAYER_OF_LARGEST_CHANGE]
