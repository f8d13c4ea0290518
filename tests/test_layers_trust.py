"""The layers job's trust options: --seeds, pooling as an axis, aligned maps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import procrustes

from latentscape.jobs.layers import LayersConfig, layers
from latentscape.tracking.contract import Artifact, Column, Kind, Metric, Param, Tag
from latentscape.tracking.errors import UsageError
from latentscape.tracking.run_log import tracked_run
from latentscape.tracking.runs import load_table


def _history(store, run_id: str, name: str) -> dict[int, float]:
    return {m.step: m.value for m in store.client.get_metric_history(run_id, name)}


def test_seeds_give_the_mean_and_spread_of_the_ami_per_layer(text_extraction):
    from dataclasses import replace

    from latentscape.jobs.core.mapping import data_shape, fit_map, resolve_config

    store = text_extraction.store
    result = layers(LayersConfig(run=text_extraction.run_id, map_reducer="pca", map_clusterer="kmeans", seeds=3,
                                 seed=4, probe_folds=2),
                    store=store, experiment="layers-tests")
    table = load_table(store, result.run_id, Artifact.LAYER_SUMMARY)
    ids = text_extraction.layers
    for name in (Metric.AMI, Metric.AMI_STD, Metric.SEED_ARI_MEAN):
        assert sorted(_history(store, result.run_id, name)) == ids, name
    assert (table[Metric.AMI_STD] >= 0).all() and table[Metric.SEED_ARI_MEAN].between(-1, 1).all()
    assert store.client.get_run(result.run_id).data.params[Param.SEEDS] == "3"

    # The default ami's mean and spread are those of k-means on the layer with seeds 4, 5, 6,
    # and ami.map's mean that of three maps made directly.
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score

    x, labels = text_extraction.embedding(5), text_extraction.labels
    amis = [adjusted_mutual_info_score(labels, KMeans(10, n_init=10, random_state=seed).fit_predict(
        x.astype(np.float64))) for seed in (4, 5, 6)]
    assert table[Metric.AMI].iloc[5] == pytest.approx(np.mean(amis), abs=1e-12)
    assert table[Metric.AMI_STD].iloc[5] == pytest.approx(np.std(amis, ddof=1), abs=1e-12)
    config = resolve_config(shape=data_shape(x, labels), reducer="pca", clusterer="kmeans", seed=4)
    maps = [fit_map(x, labels, replace(config, seed=seed), with_view=False).scores[Metric.AMI] for seed in (4, 5, 6)]
    assert table[Metric.AMI_MAP].iloc[5] == pytest.approx(np.mean(maps), abs=1e-12)


def test_seeds_must_be_positive():
    with pytest.raises(UsageError, match="--seeds"):
        LayersConfig(run="x", seeds=0)


@pytest.fixture
def poolings(store, tiny_bert):
    """One tiny model's extractions of the same 60 demo sentences with three poolings."""
    from latentscape.jobs.extract import ExtractConfig, extract

    runs = {pooling: extract(ExtractConfig(data="demo", limit=60, model=str(tiny_bert), pooling=pooling),
                             store=store).run_id
            for pooling in ("mean", "cls", "max")}
    return store, runs


def test_poolings_are_compared_in_one_run(poolings):
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.core.probes import probe_accuracy

    store, runs = poolings
    result = layers(LayersConfig(run=runs["mean"], compare_poolings=True, map_reducer="pca",
                                 map_clusterer="kmeans", probe_folds=3), store=store)
    params = store.client.get_run(result.run_id).data.params
    assert set(params[Param.POOLINGS].split(",")) == {"mean", "cls", "max"}
    assert params[Param.POOLINGS].split(",")[0] == "mean"  # this run's own pooling first
    assert dict(zip(params[Param.POOLINGS].split(","), params[Param.POOLING_RUNS].split(","))) == runs
    assert params[Param.BEST_POOLING] in runs and result.details[Param.BEST_POOLING] == params[Param.BEST_POOLING]

    compared = load_table(store, result.run_id, Artifact.POOLINGS)
    assert list(compared.columns[:2]) == [Column.POOLING, Column.LAYER]
    assert len(compared) == 3 * 3  # 3 poolings x 3 layers (embeddings + 2 blocks)
    ids = load_extraction(store, runs["mean"]).layers
    for pooling in runs:
        for name in (Metric.PROBE_ACCURACY, Metric.KNN_AGREEMENT, Metric.AMI):
            assert sorted(_history(store, result.run_id, Metric.qualified(name, pooling))) == ids

    # This extraction's curve is the run's own; another pooling's is that extraction's probe.
    own = _history(store, result.run_id, Metric.PROBE_ACCURACY)
    assert _history(store, result.run_id, Metric.qualified(Metric.PROBE_ACCURACY, "mean")) == own
    cls = load_extraction(store, runs["cls"])
    direct = probe_accuracy(cls.embedding(2), cls.labels, folds=3, seed=0).mean
    assert _history(store, result.run_id, "probe_accuracy.cls")[2] == pytest.approx(direct, abs=1e-12)
    best = compared.groupby(Column.POOLING)[Metric.PROBE_ACCURACY].max()
    assert best[params[Param.BEST_POOLING]] == best.max()

    # Named runs instead of the search: only those.
    named = layers(LayersConfig(run=runs["cls"], pooling_runs=(runs["max"],), map=False, probe_folds=3),
                   store=store)
    assert store.client.get_run(named.run_id).data.params[Param.POOLINGS] == "cls,max"


def test_pooling_comparison_refuses_what_cannot_be_compared(poolings, digits_extraction):
    store, runs = poolings
    with pytest.raises(UsageError, match="both use pooling"):
        layers(LayersConfig(run=runs["mean"], pooling_runs=(runs["cls"], runs["cls"]), map=False), store=store)
    with tracked_run(store, store.experiment_id(), Kind.MAP) as log:
        not_an_extraction = log.run_id
    with pytest.raises(UsageError, match="not an extraction"):
        layers(LayersConfig(run=runs["mean"], pooling_runs=(not_an_extraction,), map=False), store=store)
    kinds = [run.data.tags.get(Tag.KIND) for run in
             store.client.search_runs([e.experiment_id for e in store.client.search_experiments()])]
    assert Kind.LAYERS.value not in kinds  # every check ran before a run was opened
    with pytest.raises(UsageError, match="tabular"):
        layers(LayersConfig(run=digits_extraction.run_id, compare_poolings=True, map=False),
               store=digits_extraction.store)


def test_pooling_comparison_without_siblings_says_how_to_make_them(store, tiny_bert):
    from latentscape.jobs.extract import ExtractConfig, extract

    run = extract(ExtractConfig(data="demo", limit=40, model=str(tiny_bert)), store=store).run_id
    with pytest.raises(UsageError, match="--pooling cls"):
        layers(LayersConfig(run=run, compare_poolings=True, map=False, probe_folds=3), store=store)


def test_aligned_maps_step_through_layers_without_jumping(text_extraction):
    store = text_extraction.store
    result = layers(LayersConfig(run=text_extraction.run_id, map=False, aligned_maps=True, aligned_epochs=60,
                                 probe_folds=2),
                    store=store, experiment="layers-tests")
    frame = load_table(store, result.run_id, Artifact.ALIGNED_MAPS)
    assert list(frame.columns) == [Column.LAYER, Column.SAMPLE_ID, Column.X, Column.Y, Column.LABEL]
    n = len(text_extraction.samples)
    assert len(frame) == n * 7 and sorted(frame[Column.LAYER].unique()) == text_extraction.layers
    assert frame[[Column.X, Column.Y]].notna().all().all()
    first = frame[frame[Column.LAYER] == 0]
    assert list(first[Column.SAMPLE_ID]) == list(text_extraction.ids)
    assert list(first[Column.LABEL]) == list(text_extraction.samples[Column.LABEL])
    run = store.client.get_run(result.run_id)
    assert run.data.params[Param.ALIGNED_MAPS] == "True" and Metric.ALIGNED_SECONDS in run.data.metrics
    # The last two layers move less between aligned maps than between independent ones.
    from latentscape.jobs.core.mapping import data_shape, resolve_config
    from latentscape.jobs.core.reduce import REDUCERS

    coords = [frame[frame[Column.LAYER] == layer][[Column.X, Column.Y]].to_numpy() for layer in (5, 6)]
    x5, x6 = text_extraction.embedding(5), text_extraction.embedding(6)
    params = dict(resolve_config(shape=data_shape(x5, None), reducer="umap", clusterer="kmeans",
                                 clusterer_params={"n_clusters": 10}).reducer_params, n_epochs=60)
    independent = [REDUCERS["umap"].run(x, params, seed=seed, knn=None) for seed, x in enumerate((x5, x6))]
    assert procrustes(*coords)[2] < procrustes(*independent)[2] / 2


def test_cli_flags_reach_the_config(monkeypatch):
    import latentscape.jobs.layers as module
    from latentscape.jobs.cli import build_parser

    seen = {}

    def record(config, **kwargs):
        seen["config"] = config

    monkeypatch.setattr(module, "layers", record)
    monkeypatch.setattr("latentscape.tracking.runs.open_store", lambda uri: None)
    args = build_parser().parse_args(["layers", "--run", "R", "--seeds", "4", "--pooling-runs", "A", "B",
                                      "--aligned-maps", "--aligned-epochs", "50"])
    args.handler(args)
    config = seen["config"]
    assert (config.seeds, config.pooling_runs, config.compare_poolings) == (4, ("A", "B"), True)
    assert (config.aligned_maps, config.aligned_epochs) == (True, 50)
    args = build_parser().parse_args(["layers", "--run", "R", "--compare-poolings"])
    args.handler(args)
    assert seen["config"].compare_poolings and seen["config"].seeds == 1
