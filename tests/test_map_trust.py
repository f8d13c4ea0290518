"""The map job's trust measures: chance baselines and intervals beside every label score,
stability over seeds, exact replay of all of it, and the tutorial's preset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latentscape.jobs.core.scores import LABEL_SCORES, SCORE_NAMES
from latentscape.tracking.contract import Kind, Metric, Param, Tag

CLUSTERED = tuple(name + Metric.CLUSTERED_SUFFIX for name in LABEL_SCORES)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A store with a 300-sample digits extraction."""
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract
    from latentscape.tracking.runs import open_store

    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('map-trust') / 'mlflow.db'}")
    extraction = load_extraction(store, extract(ExtractConfig(data="digits", limit=300), store=store).run_id)
    yield store, extraction
    experiments = [e.experiment_id for e in store.client.search_experiments()]
    assert not store.client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")


def _request(extraction, **kwargs):
    from latentscape.jobs.map import MapRequest

    return MapRequest(run=extraction.run_id, layer=0, reducer="pca", clusterer="kmeans", **kwargs)


def test_every_label_score_has_its_chance_level_p_value_and_interval(digits):
    from latentscape.jobs.map import map_layer

    store, extraction = digits
    result = map_layer(_request(extraction, seed=5), store=store)
    run = store.client.get_run(result.run_id)
    metrics, params = run.data.metrics, run.data.params
    assert (params[Param.PERMUTATIONS], params[Param.BOOTSTRAP], params[Param.SEEDS]) == ("100", "200", "1")
    for name in (*LABEL_SCORES, *CLUSTERED):
        for suffix in (Metric.PERM_MEAN_SUFFIX, Metric.P_VALUE_SUFFIX, Metric.CI_LOW_SUFFIX, Metric.CI_HIGH_SUFFIX):
            assert Metric.trust(name, suffix) in metrics, (name, suffix)
        # PCA + k-means on digits is far above chance: the smallest p-value 100 shuffles allow.
        assert metrics[Metric.trust(name, Metric.P_VALUE_SUFFIX)] == 1 / 101
        assert metrics[Metric.trust(name, Metric.CI_LOW_SUFFIX)] <= metrics[name] \
            <= metrics[Metric.trust(name, Metric.CI_HIGH_SUFFIX)]
    assert abs(metrics["ami_perm_mean"]) < 0.02 < metrics["ami"]
    assert metrics["mutual_info_perm_mean"] > 0  # raw MI is not chance-adjusted: its chance level shows it
    assert result.scores["ami_p_value"] == 1 / 101  # in the command's summary too
    assert Metric.SEED_ARI_MEAN not in metrics  # one seed: no stability


def test_seeds_give_mean_spread_and_agreement_and_everything_replays(digits):
    from dataclasses import replace

    from latentscape.jobs.core.mapping import fit_map
    from latentscape.jobs.map import map_layer, replay, resolve_for
    from latentscape.jobs._trust import TrustSettings

    store, extraction = digits
    request = _request(extraction, seed=1, trust=TrustSettings(permutations=30, bootstrap=40, seeds=3))
    result = map_layer(request, store=store)
    metrics = store.client.get_run(result.run_id).data.metrics
    for name in SCORE_NAMES:
        assert Metric.trust(name, Metric.MEAN_SUFFIX) in metrics and Metric.trust(name, Metric.STD_SUFFIX) in metrics
    assert 0 < metrics[Metric.SEED_ARI_MEAN] <= 1
    # The mean is over the map itself (seed 1) and seeds 2 and 3.
    _, config = resolve_for(extraction, request)
    x, labels = extraction.embedding(0), extraction.labels
    amis = [fit_map(x, labels, replace(config, seed=seed), with_view=False).scores[Metric.AMI] for seed in (1, 2, 3)]
    assert metrics[Metric.AMI] == pytest.approx(amis[0], abs=1e-12)
    assert metrics["ami_mean"] == pytest.approx(np.mean(amis), abs=1e-12)
    assert metrics["ami_std"] == pytest.approx(np.std(amis, ddof=1), abs=1e-12)
    assert metrics["ami_p_value"] == 1 / 31

    # A replay reads the trust settings from config.json and reproduces every number.
    again = store.client.get_run(replay(store, result.run_id).run_id)
    assert again.data.params[Param.SEEDS] == "3" and again.data.params[Param.PERMUTATIONS] == "30"
    assert again.data.metrics[Metric.REPLAY_MAX_ABS_DIFF] == 0.0
    for key, value in metrics.items():
        if key.endswith("_seconds") or key == Metric.REPLAY_MAX_ABS_DIFF:
            continue
        assert again.data.metrics[key] == pytest.approx(value, abs=1e-9, nan_ok=True), key


def test_trust_flags_are_checked_before_any_run(digits):
    from latentscape.jobs.cli import build_parser
    from latentscape.tracking.errors import UsageError

    store, extraction = digits
    args = build_parser().parse_args(["map", "--run", extraction.run_id, "--seeds", "0", "--tracking-uri", store.uri])
    with pytest.raises(UsageError, match="--seeds"):
        args.handler(args)
    args = build_parser().parse_args(["map", "--from-run", extraction.run_id, "--permutations", "5"])
    with pytest.raises(UsageError, match="--from-run"):
        args.handler(args)


def _cli_map(capsys, *argv):
    from latentscape.jobs.cli import main

    code = main(["map", *argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1]), captured.err


def test_the_tutorial_preset_and_its_pooling_check(store, tiny_bert, capsys):
    from latentscape.jobs.extract import ExtractConfig, extract

    mean = extract(ExtractConfig(data="demo", limit=60, model=str(tiny_bert)), store=store).run_id
    cls = extract(ExtractConfig(data="demo", limit=60, model=str(tiny_bert), pooling="cls"), store=store).run_id
    common = ("--layer", "2", "--permutations", "20", "--bootstrap", "20", "--tracking-uri", store.uri)

    # Mean pooling: the recipe runs, and says the tutorial pooled the first token.
    summary, err = _cli_map(capsys, "--run", mean, "--preset", "tutorial", *common)
    assert "--pooling cls" in err and "note" in err
    run = store.client.get_run(summary["run_id"])
    params = run.data.params
    assert (params[Param.REDUCER], params[Param.CLUSTERER], params[Param.PRESET]) == ("umap", "kmeans", "tutorial")
    assert params[Param.reducer_param("n_neighbors")] == "15" and params[Param.reducer_param("min_dist")] == "0.1"
    assert params[Param.reducer_param("n_components")] == "2"
    assert params[Param.clusterer_param("n_clusters")] == "10"  # k = the number of classes
    assert "cls" in run.data.tags[Tag.NOTE]
    assert {Metric.MUTUAL_INFO, Metric.NMI, Metric.AMI} <= set(summary["scores"])
    assert Metric.SILHOUETTE not in summary["scores"]  # the recipe's own scores

    # cls pooling: no note; a setting given explicitly overrides the recipe.
    summary, err = _cli_map(capsys, "--run", cls, "--preset", "tutorial", "--n-neighbors", "10", *common)
    assert "note" not in err
    run = store.client.get_run(summary["run_id"])
    assert run.data.params[Param.reducer_param("n_neighbors")] == "10" and Tag.NOTE not in run.data.tags
    assert run.data.tags[Tag.KIND] == Kind.MAP
