"""The map job: the default map of digits is good, the run follows the contract, a logged
config replays exactly, and bad settings fail in one line before any run exists."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from latentscape.jobs.core.scores import SCORE_NAMES
from latentscape.tracking.contract import Artifact, Column, Kind, Metric, Param, Tag

FAST = {Param.reducer_param("n_epochs"): 60}


def _extract_digits(store, limit=None):
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract

    result = extract(ExtractConfig(data="digits", limit=limit), store=store, experiment="maps")
    return load_extraction(store, result.run_id)


def test_default_map_of_digits_reaches_ami_085(digits_extraction):
    """Raw digits features, UMAP + HDBSCAN with the job's defaults (what `latentscape map`
    resolves when given no settings)."""
    from latentscape.jobs.core.mapping import fit_map
    from latentscape.jobs.map import MapRequest, resolve_for

    layer, config = resolve_for(digits_extraction, MapRequest(run=digits_extraction.run_id))
    assert layer == 0 and config.reducer == "umap" and config.clusterer == "hdbscan"
    result = fit_map(digits_extraction.embedding(layer), digits_extraction.labels, config, with_view=False)
    assert result.scores[Metric.AMI] >= 0.85, result.scores
    assert result.scores[Metric.TRUSTWORTHINESS] > 0.9


def test_map_run_follows_the_contract_and_replays_exactly(store):
    from latentscape.jobs.map import MapRequest, map_layer, replay

    extraction = _extract_digits(store, limit=400)
    request = MapRequest(run=extraction.run_id, layer=0, reducer_params={"n_epochs": "60", "n_components": "3"},
                         clusterer_params={"min_cluster_size": "8"}, seed=3)
    result = map_layer(request, store=store)
    run = store.client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags[Tag.KIND] == Kind.MAP and tags[Tag.SOURCE_RUN] == extraction.run_id
    assert tags["mlflow.parentRunId"] == extraction.run_id and tags[Tag.LAYER] == "0"
    assert tags[Tag.DATASET_DIGEST] == extraction.dataset_digest
    assert params[Param.reducer_param("n_components")] == "3" and params[Param.clusterer_param("min_cluster_size")] == "8"
    assert params[Param.reducer_param("n_neighbors")] == "15"  # defaults are logged too
    assert params[Param.SEED] == "3" and params[Param.VIEW] == "refit"
    assert set(SCORE_NAMES) <= set(metrics)
    assert all(metrics[name] >= 0 for name in (Metric.REDUCE_SECONDS, Metric.CLUSTER_SECONDS, Metric.SCORE_SECONDS))
    assert 0 < metrics[Metric.AMI] <= 1

    from latentscape.tracking.runs import download, load_table

    frame = load_table(store, result.run_id, Artifact.MAP)
    assert list(frame.columns[:6]) == [Column.SAMPLE_ID, Column.X, Column.Y, Column.CLUSTER, Column.LABEL, Column.TEXT]
    assert len(frame) == 400 and frame[Column.SAMPLE_ID].is_unique
    assert np.isfinite(frame[[Column.X, Column.Y]].to_numpy()).all()
    assert (frame[Column.LABEL].astype(str).to_numpy() == extraction.labels).all()
    config = json.loads(download(store, result.run_id, Artifact.CONFIG).read_text())
    assert config["source_run"] == extraction.run_id and config["layer"] == 0
    assert config["map"]["reducer_params"]["n_epochs"] == 60 and config["map"]["seed"] == 3

    again = replay(store, result.run_id)
    replayed = store.client.get_run(again.run_id)
    assert replayed.data.tags[Tag.REPLAY_OF] == result.run_id
    assert replayed.data.metrics[Metric.REPLAY_MAX_ABS_DIFF] == 0.0
    for name in SCORE_NAMES:
        assert replayed.data.metrics[name] == pytest.approx(metrics[name], nan_ok=True, abs=1e-12)
    np.testing.assert_array_equal(load_table(store, again.run_id, Artifact.MAP)[Column.CLUSTER], frame[Column.CLUSTER])


def test_a_second_map_of_a_layer_reads_its_knn_graph_from_the_disk_cache(store, tmp_path, monkeypatch):
    """Two maps of the same layer, each with its own in-process caches (as two `latentscape
    map` processes): the second reads the graph the first wrote, says so, and is the same map."""
    from latentscape.jobs.map import MapRequest, map_layer
    from latentscape.tracking.runs import load_table

    monkeypatch.setenv("LATENTSCAPE_CACHE", str(tmp_path / "cache"))
    extraction = _extract_digits(store, limit=300)
    request = MapRequest(run=extraction.run_id, layer=0, reducer_params={"n_epochs": "60"}, seed=1)
    first, second = map_layer(request, store=store), map_layer(request, store=store)
    assert len(list((tmp_path / "cache" / "knn").glob("*.npy"))) == 1
    assert [store.get_run(r.run_id).tags[Tag.KNN_GRAPH] for r in (first, second)] == ["computed", "stored"]
    assert (first.details[Tag.KNN_GRAPH], second.details[Tag.KNN_GRAPH]) == ("computed", "stored")
    maps = [load_table(store, r.run_id, Artifact.MAP) for r in (first, second)]
    np.testing.assert_array_equal(maps[0][[Column.X, Column.Y]].to_numpy(), maps[1][[Column.X, Column.Y]].to_numpy())
    np.testing.assert_array_equal(maps[0][Column.CLUSTER], maps[1][Column.CLUSTER])
    monkeypatch.setenv("LATENTSCAPE_KNN_CACHE", "0")  # off: computed again
    assert store.get_run(map_layer(request, store=store).run_id).tags[Tag.KNN_GRAPH] == "computed"


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "latentscape.jobs.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


BAD_SETTINGS = {
    "n_neighbors at n": (["--n-neighbors", "200"], "n_neighbors=200 is not below the number of samples (200)"),
    "n_components 0": (["--n-components", "0"], "n_components=0 is below 1"),
    "unknown metric": (["--metric", "nope"], "unknown metric 'nope'"),
    "unknown reducer": (["--reducer", "isomap"], "unknown reducer 'isomap'"),
    "missing layer": (["--layer", "3"], "has no layer 3"),
}


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """A store with a 200-sample digits extraction, for command-line tests."""
    from latentscape.tracking.runs import open_store

    folder = tmp_path_factory.mktemp("map-cli")
    store = open_store(f"sqlite:///{folder / 'mlflow.db'}")
    extraction = _extract_digits(store, limit=200)
    yield store, extraction.run_id, folder
    experiments = [e.experiment_id for e in store.client.search_experiments()]
    assert not store.client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")


def test_bad_settings_fail_in_one_line_before_any_run(small_store):
    store, run_id, folder = small_store
    experiments = [e.experiment_id for e in store.client.search_experiments()]
    map_runs = f"tags.`{Tag.KIND}` = '{Kind.MAP.value}'"
    before = len(store.client.search_runs(experiments, filter_string=map_runs))
    for case, (args, needle) in BAD_SETTINGS.items():
        done = _cli("map", "--tracking-uri", store.uri, "--run", run_id, *args, cwd=folder)
        assert done.returncode == 2, (case, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("latentscape map: error:") and needle in lines[0], (case, lines)
        assert done.stdout == "", case
    assert len(store.client.search_runs(experiments, filter_string=map_runs)) == before  # no run was opened


def test_cli_maps_and_prints_json(small_store):
    store, run_id, folder = small_store
    done = _cli("map", "--tracking-uri", store.uri, "--run", run_id, "--reducer", "pca", "--clusterer", "kmeans",
                "--json", cwd=folder)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout.strip().splitlines()[-1])
    assert payload["kind"] == Kind.MAP and payload["scores"][Metric.AMI] > 0.3
    run = store.client.get_run(payload["run_id"])
    assert run.data.params[Param.clusterer_param("n_clusters")] == "10"  # k = number of true labels
    done = _cli("map", "--tracking-uri", store.uri, "--from-run", payload["run_id"], "--seed", "2", cwd=folder)
    assert done.returncode == 2 and "--from-run" in done.stderr


def test_unlabelled_rows_and_rare_classes_stay_on_the_map_and_out_of_its_label_scores(store, long_tail_csv,
                                                                                      tiny_bert):
    """Text with gaps in the labels and classes of one and two: the map has every row; its
    label scores are those of the kept rows, and the run says what they left out."""
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.core.scores import label_scores
    from latentscape.jobs.extract import ExtractConfig, extract
    from latentscape.jobs.map import MapRequest, map_layer
    from latentscape.tracking.runs import load_table

    extracted = extract(ExtractConfig(data=str(long_tail_csv), label_col="label", model=str(tiny_bert)), store=store)
    extraction = load_extraction(store, extracted.run_id)

    result = map_layer(MapRequest(run=extracted.run_id, reducer="pca", clusterer="kmeans", min_class_size=3),
                       store=store)
    run = store.client.get_run(result.run_id)
    kept = np.flatnonzero(extraction.label_selection(3).keep)
    assert kept.min() >= 6 and run.data.params[Param.SAMPLES_LEFT_OUT] == str(60 - len(kept))
    assert run.data.params[Param.MIN_CLASS_SIZE] == "3"
    assert "'a pair'" in run.data.tags[Tag.NOTE] and "3 unlabelled" in run.data.tags[Tag.NOTE]
    mapped = load_table(store, result.run_id, Artifact.MAP)
    assert len(mapped) == 60  # every row on the map
    clusters = mapped[Column.CLUSTER].to_numpy()
    expected = label_scores(extraction.labels[kept], clusters[kept])
    assert run.data.metrics[Metric.AMI] == pytest.approx(expected[Metric.AMI], abs=1e-9)


GRANULARITY_EXPERIMENT = "map-granularity"


@pytest.fixture(scope="module")
def collapsed_default(text_extraction):
    """A map request on the 240 demo sentences whose default UMAP + HDBSCAN map collapses
    (fewer than 5 clusters for 10 classes), with its layer, default settings and that map.

    Whether a given layer collapses depends on the CPU's floating point through UMAP's
    layout: the last layer at seed 0 found 4 clusters on one machine and 6 on another, so
    the fixture looks over the layers (the last first) and a few seeds."""
    from latentscape.jobs.core.mapping import fit_map
    from latentscape.jobs.core.verdict import collapse_reason
    from latentscape.jobs.map import MapRequest, resolve_for

    tried = []
    for seed in range(5):
        for layer in sorted(text_extraction.layers, reverse=True):
            request = MapRequest(run=text_extraction.run_id, layer=layer, seed=seed)
            layer, default = resolve_for(text_extraction, request)
            plain = fit_map(text_extraction.embedding(layer), text_extraction.labels, default, with_view=False)
            found = int(plain.scores[Metric.N_CLUSTERS])
            if collapse_reason(found, 10) == f"found {found} cluster{'s' if found != 1 else ''} for 10 classes":
                return request, layer, default, plain
            tried.append(found)
    pytest.fail(f"no layer and seed of the demo sentences gives a collapsed default map (clusters found: {tried})")


def test_a_collapsed_default_map_of_text_is_reclustered_at_the_classes_granularity(text_extraction,
                                                                                   collapsed_default, capsys):
    """The default map of real text collapses; the job clusters the same reduction again at
    the classes' granularity, logs the params that made its clusters, says so once on
    stderr and in the note tag, and a replay gives the same map."""
    from latentscape.jobs.core.mapping import fit_map
    from latentscape.jobs.core.verdict import matched_hdbscan_params
    from latentscape.jobs.map import map_layer, replay
    from latentscape.tracking.runs import load_table

    store = text_extraction.store
    request, layer, default, plain = collapsed_default
    x, labels = text_extraction.embedding(layer), text_extraction.labels
    capsys.readouterr()  # the fixture's own output

    result = map_layer(request, store=store, experiment=GRANULARITY_EXPERIMENT)
    run = store.client.get_run(result.run_id)
    params, metrics = run.data.params, run.data.metrics
    matched = matched_hdbscan_params(len(x), 10)
    for name, value in matched.items():
        assert params[Param.clusterer_param(name)] == str(value), name
    assert metrics[Metric.N_CLUSTERS] >= 5 and Tag.WARNING not in run.data.tags
    assert metrics[Metric.AMI] > plain.scores[Metric.AMI]
    note = run.data.tags[Tag.NOTE]
    assert note.startswith(f"the default clustering collapsed (found {int(plain.scores[Metric.N_CLUSTERS])} clusters "
                           f"for 10 classes): re-clustered at the classes' granularity, "
                           f"min_cluster_size={matched['min_cluster_size']}")
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("latentscape map: note:")]
    assert notes == [f"latentscape map: note: {note}"]
    mapped = load_table(store, result.run_id, Artifact.MAP)
    assert mapped[Column.CLUSTER].nunique() - (mapped[Column.CLUSTER] == -1).any() == metrics[Metric.N_CLUSTERS]
    # The map's coordinates are the default reduction's: only the clustering changed.
    refit = fit_map(x, labels, default)
    np.testing.assert_allclose(mapped[[Column.X, Column.Y]].to_numpy(), refit.coords, atol=1e-6)

    again = replay(store, result.run_id)
    replayed = store.client.get_run(again.run_id)
    assert replayed.data.metrics[Metric.REPLAY_MAX_ABS_DIFF] == 0.0
    assert {k: v for k, v in replayed.data.params.items() if k.startswith(Param.clusterer_param(""))} == {
        k: v for k, v in params.items() if k.startswith(Param.clusterer_param(""))}
    np.testing.assert_array_equal(load_table(store, again.run_id, Artifact.MAP)[Column.CLUSTER],
                                  mapped[Column.CLUSTER])


def test_a_clusterer_setting_the_user_gave_is_never_overridden(text_extraction, collapsed_default, capsys):
    """The default's own min_cluster_size, given explicitly: the map collapses as asked and
    says so in a warning; nothing is re-clustered."""
    import dataclasses

    from latentscape.jobs.map import map_layer

    store = text_extraction.store
    collapsing, _, default, _ = collapsed_default
    size = default.clusterer_params["min_cluster_size"]
    request = dataclasses.replace(collapsing, clusterer_params={"min_cluster_size": str(size)})
    result = map_layer(request, store=store, experiment=GRANULARITY_EXPERIMENT)
    run = store.client.get_run(result.run_id)
    for name, value in default.clusterer_params.items():
        assert run.data.params[Param.clusterer_param(name)] == str(value), name
    assert "collapsed" in run.data.tags[Tag.WARNING] and Tag.NOTE not in run.data.tags
    assert "re-clustered" not in capsys.readouterr().err


def test_digits_keep_their_default_clustering(store, capsys):
    """Where the default does not collapse it stays: always using the classes' granularity
    dropped the digits map's AMI from 0.933 to 0.814."""
    from latentscape.jobs.map import MapRequest, map_layer, resolve_for

    extraction = _extract_digits(store, limit=400)
    request = MapRequest(run=extraction.run_id, reducer_params={"n_epochs": "60"})
    _, default = resolve_for(extraction, request)
    run = store.client.get_run(map_layer(request, store=store).run_id)
    for name, value in default.clusterer_params.items():
        assert run.data.params[Param.clusterer_param(name)] == str(value), name
    assert Tag.NOTE not in run.data.tags and Tag.WARNING not in run.data.tags
    assert "re-clustered" not in capsys.readouterr().err
