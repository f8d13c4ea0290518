"""The pure map core: scores equal scikit-learn's, k-NN graphs are exact and shareable,
settings fail before any work, and a config alone reproduces a map."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from latentscape.jobs.core._params import ConfigError, DataShape
from latentscape.jobs.core.cluster import CLUSTERERS
from latentscape.jobs.core.knn import KnnCache, exact_knn
from latentscape.jobs.core.mapping import MapConfig, NeighbourCache, data_shape, fit_map, resolve_config
from latentscape.jobs.core.reduce import REDUCERS
from latentscape.jobs.core.scores import (
    LABEL_SCORES,
    SCORE_NAMES,
    knn_preservation,
    label_scores,
    neighbour_reference,
    score_map,
    silhouette,
    trustworthiness,
)
from latentscape.jobs.core.search_space import default_space, parse_space
from latentscape.tracking.contract import Metric

SKLEARN = {
    Metric.MUTUAL_INFO: skm.mutual_info_score,
    Metric.NMI: skm.normalized_mutual_info_score,
    Metric.AMI: skm.adjusted_mutual_info_score,
    Metric.ARI: skm.adjusted_rand_score,
    Metric.HOMOGENEITY: skm.homogeneity_score,
    Metric.COMPLETENESS: skm.completeness_score,
    Metric.V_MEASURE: skm.v_measure_score,
}


def _blobs(n=240, d=16, centers=4, seed=0, std=1.5):
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=n, n_features=d, centers=centers, cluster_std=std, random_state=seed)
    return x.astype(np.float32), np.array([f"c{v}" for v in y])


# -- scores ---------------------------------------------------------------------------
def test_label_scores_equal_sklearn_on_known_labelings():
    rng = np.random.default_rng(0)
    labels = rng.choice(["a", "b", "c", "d"], size=300)
    clusters = rng.integers(-1, 5, size=300)  # some noise (-1)
    got = label_scores(labels, clusters)
    clustered = clusters != -1
    for name, function in SKLEARN.items():
        assert got[name] == pytest.approx(function(labels, clusters), abs=1e-12)  # noise as its own label
        assert got[name + Metric.CLUSTERED_SUFFIX] == pytest.approx(
            function(labels[clustered], clusters[clustered]), abs=1e-12)


def test_perfect_and_permuted_labelings():
    labels = np.repeat(["x", "y"], 50)
    perfect = label_scores(labels, np.repeat([7, 3], 50))
    assert perfect[Metric.MUTUAL_INFO] == pytest.approx(math.log(2))  # nats
    for name in (Metric.NMI, Metric.AMI, Metric.ARI, Metric.V_MEASURE):
        assert perfect[name] == pytest.approx(1.0)
    # Without noise the two policies agree; with everything noise nothing is clustered.
    assert perfect[Metric.AMI + Metric.CLUSTERED_SUFFIX] == perfect[Metric.AMI]
    all_noise = label_scores(labels, np.full(100, -1))
    assert all_noise[Metric.AMI] == pytest.approx(0.0)
    assert math.isnan(all_noise[Metric.AMI + Metric.CLUSTERED_SUFFIX])


def test_noise_as_its_own_label_is_penalised():
    labels = np.repeat(["x", "y"], 50)
    clusters = np.repeat([0, 1], 50)
    clusters[::2] = -1  # half the points declared noise
    scores = label_scores(labels, clusters)
    assert scores[Metric.AMI + Metric.CLUSTERED_SUFFIX] == pytest.approx(1.0)  # the clusters found are pure
    assert scores[Metric.AMI] < 0.7  # but half the data was given up


def test_silhouette_equals_sklearn_over_clustered_points():
    x, y = _blobs()
    clusters = np.array([int(v[1:]) for v in y])
    clusters[:10] = -1
    keep = clusters != -1
    assert silhouette(x, clusters, sample=10_000) == pytest.approx(skm.silhouette_score(x[keep], clusters[keep]))
    assert 0 < silhouette(x, clusters, sample=50, seed=1) < 1  # sampled
    assert math.isnan(silhouette(x, np.zeros(len(x), dtype=int)))  # one cluster


def test_trustworthiness_equals_sklearn_and_sampling_estimates_it():
    from sklearn.decomposition import PCA
    from sklearn.manifold import trustworthiness as sk_trust

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 12))
    z = PCA(n_components=2, random_state=0).fit_transform(x)
    full = neighbour_reference(x, k=7, sample=10_000)
    assert trustworthiness(full, z) == pytest.approx(sk_trust(x, z, n_neighbors=7), abs=1e-12)
    sampled = neighbour_reference(x, k=7, sample=120, seed=3)
    assert len(sampled.queries) == 120
    assert trustworthiness(sampled, z) == pytest.approx(sk_trust(x, z, n_neighbors=7), abs=0.03)
    # The identity keeps every neighbourhood; a shuffle keeps almost none.
    assert trustworthiness(full, x) == pytest.approx(1.0)
    assert knn_preservation(full, x) == pytest.approx(1.0)
    assert knn_preservation(full, rng.permutation(z)) < 0.15


def test_score_map_has_every_score():
    x, y = _blobs()
    clusters = np.array([int(v[1:]) for v in y])
    reference = neighbour_reference(x, k=10, sample=100)
    scores = score_map(y, clusters, z=x[:, :3], reference=reference)
    assert set(scores) == set(SCORE_NAMES)
    assert scores[Metric.N_CLUSTERS] == 4 and scores[Metric.NOISE_FRACTION] == 0
    unlabelled = score_map(None, clusters, z=x[:, :3], reference=reference)
    assert not set(unlabelled) & set(LABEL_SCORES)


# -- k-NN graphs ----------------------------------------------------------------------
def test_exact_knn_matches_sklearn_and_truncates_exactly():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 8))
    graph = exact_knn(x, 20)
    distances, _ = NearestNeighbors(n_neighbors=20).fit(x).kneighbors(x)
    np.testing.assert_allclose(graph.distances, distances, atol=1e-5)
    assert (graph.indices[:, 0] == np.arange(400)).all()
    # Integer data with many tied distances and duplicate rows: truncation still exact.
    ties = rng.integers(0, 3, size=(300, 4)).astype(np.float32)
    wide, narrow = exact_knn(ties, 40), exact_knn(ties, 9)
    np.testing.assert_array_equal(wide.indices[:, :9], narrow.indices)
    np.testing.assert_array_equal(wide.distances[:, :9], narrow.distances)
    assert (wide.indices[:, 0] == np.arange(300)).all()
    cosine = exact_knn(x, 5, metric="cosine")
    expected = NearestNeighbors(n_neighbors=5, metric="cosine").fit(x).kneighbors(x)[0]
    np.testing.assert_allclose(cosine.distances, expected, atol=1e-5)


def test_knn_cache_computes_once_for_the_largest_k():
    x, _ = _blobs(n=120)
    cache = KnnCache(x, hint_k=30)
    first = cache.get("euclidean", 10)
    assert first.k == 30 and cache.get("euclidean", 25) is first
    assert cache.get("cosine", 5).metric == "cosine"


# -- configs --------------------------------------------------------------------------
SHAPE = DataShape(n_samples=100, n_features=16, n_classes=4)

BAD_SETTINGS = {
    "n_neighbors at n": (dict(reducer_params={"n_neighbors": 100}), "n_neighbors=100 is not below"),
    "n_components 0": (dict(reducer_params={"n_components": 0}), "n_components=0 is below 1"),
    "unknown metric": (dict(reducer_params={"metric": "nope"}), "unknown metric 'nope'"),
    "unknown reducer": (dict(reducer="isomap"), "unknown reducer 'isomap'"),
    "unknown clusterer": (dict(clusterer="dbscan"), "unknown clusterer 'dbscan'"),
    "unknown parameter": (dict(reducer_params={"neighbours": 5}), "umap has no parameter 'neighbours'"),
    "not a number": (dict(reducer_params={"min_dist": "far"}), "must be a number"),
    "tsne dims": (dict(reducer="tsne", reducer_params={"n_components": 5}), "above 3"),
    "pca dims": (dict(reducer="pca", reducer_params={"n_components": 17}), "too many"),
    "min_dist above spread": (dict(reducer_params={"min_dist": 2.0}), "above spread"),
    "cluster size": (dict(clusterer_params={"min_cluster_size": 101}), "min_cluster_size=101"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_settings_fail_with_one_line(case):
    kwargs, needle = BAD_SETTINGS[case]
    with pytest.raises(ConfigError) as error:
        resolve_config(shape=SHAPE, **kwargs)
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_kmeans_without_labels_needs_n_clusters():
    with pytest.raises(ConfigError, match="n_clusters"):
        resolve_config(shape=DataShape(100, 16, None), clusterer="kmeans")
    assert resolve_config(shape=SHAPE, clusterer="kmeans").clusterer_params["n_clusters"] == 4


def test_config_resolves_every_default_and_round_trips():
    config = resolve_config(shape=SHAPE)
    assert set(config.reducer_params) == {p.name for p in REDUCERS["umap"].params}
    assert set(config.clusterer_params) == {p.name for p in CLUSTERERS["hdbscan"].params}
    assert config.reducer_params["n_epochs"] == 200 and config.seed == 0 and config.knn == "exact"
    again = MapConfig.from_dict(json.loads(json.dumps(config.to_dict())), SHAPE)
    assert again == config
    # Strings (from the command line or logged params) resolve to the same config.
    as_text = resolve_config(shape=SHAPE, reducer_params={k: str(v) for k, v in config.reducer_params.items()},
                             clusterer_params={k: str(v) for k, v in config.clusterer_params.items()})
    assert as_text == config
    assert resolve_config(shape=SHAPE, reducer_params={"n_components": 3}).view == "refit"
    assert resolve_config(shape=SHAPE, reducer="none").view == "pca"


# -- maps -----------------------------------------------------------------------------
FAST = {"umap": {"n_epochs": 30}, "tsne": {"max_iter": 500}, "pca": {}, "spectral": {}, "none": {}}


@pytest.mark.parametrize("reducer", sorted(REDUCERS))
def test_every_reducer_and_clusterer_finds_planted_clusters(reducer):
    x, y = _blobs(n=160, d=10, std=1.0)
    shape = data_shape(x, y)
    config = resolve_config(shape=shape, reducer=reducer, reducer_params=FAST[reducer])
    result = fit_map(x, y, config)
    assert result.coords.shape == (160, 2) and result.clusters.shape == (160,)
    assert result.scores[Metric.AMI] > 0.6, (reducer, result.scores[Metric.AMI])
    assert set(result.durations) == {Metric.KNN_SECONDS, Metric.REDUCE_SECONDS, Metric.CLUSTER_SECONDS,
                                      Metric.SCORE_SECONDS}
    for clusterer, method in CLUSTERERS.items():  # every clusterer on the same reduction
        params = resolve_config(shape=shape, reducer=reducer, clusterer=clusterer,
                                reducer_params=FAST[reducer]).clusterer_params
        clusters = method.run(result.embedding, params, seed=0)
        assert label_scores(y, clusters)[Metric.AMI] > 0.6, (reducer, clusterer)


def test_map_is_a_function_of_its_config_and_a_shared_graph_changes_nothing():
    x, y = _blobs(n=200, d=12, std=2.5)
    shape = data_shape(x, y)
    config = resolve_config(shape=shape, reducer_params={"n_epochs": 40, "n_components": 3}, seed=5)
    alone = fit_map(x, y, config)
    replayed = fit_map(x, y, MapConfig.from_dict(json.loads(json.dumps(config.to_dict())), shape))
    shared = fit_map(x, y, config, cache=NeighbourCache(x, hint_k=60), with_view=False)
    np.testing.assert_array_equal(alone.embedding, replayed.embedding)
    np.testing.assert_array_equal(alone.embedding, shared.embedding)
    np.testing.assert_array_equal(alone.clusters, shared.clusters)
    assert alone.coords.shape == (200, 2) and shared.coords is None
    for name, value in alone.scores.items():
        assert value == pytest.approx(replayed.scores[name], nan_ok=True, abs=1e-12)
        assert value == pytest.approx(shared.scores[name], nan_ok=True, abs=1e-12)
    other_seed = fit_map(x, y, resolve_config(shape=shape, reducer_params={"n_epochs": 40, "n_components": 3},
                                              seed=6), with_view=False)
    assert not np.array_equal(other_seed.embedding, alone.embedding)


def test_graph_of_another_metric_is_refused():
    x, y = _blobs(n=100)
    config = resolve_config(shape=data_shape(x, y), reducer_params={"n_epochs": 10})
    with pytest.raises(ValueError, match="does not fit"):
        fit_map(x, y, config, knn=exact_knn(x, 20, metric="cosine"))


# -- search spaces --------------------------------------------------------------------
def test_default_space_fits_the_data_and_contains_the_default_map():
    space = default_space("umap", "hdbscan", SHAPE)
    names = {d.name for d in space.dimensions}
    assert {"reducer.n_neighbors", "reducer.min_dist", "reducer.n_components", "reducer.metric",
            "clusterer.min_cluster_size", "clusterer.min_samples"} == names
    assert space.largest("reducer.n_neighbors", 0) <= SHAPE.n_samples - 1
    assert space.point_of(resolve_config(shape=SHAPE).flat_params()) is not None


def test_a_point_searched_on_a_subsample_scales_its_sample_counts_only():
    """sweep --search-sample: HDBSCAN's searched min_cluster_size and min_samples count
    samples, so the refit on all samples scales them; other settings and fixed ones stay."""
    space = parse_space({"params": {"reducer.n_neighbors": {"low": 5, "high": 40},
                                    "clusterer.min_cluster_size": {"low": 5, "high": 20},
                                    "clusterer.min_samples": 3}}, SHAPE)
    point = {"reducer.n_neighbors": 15, "clusterer.min_cluster_size": 8}
    scaled = space.scaled(point, 2.5)
    assert scaled == {"reducer.n_neighbors": 15, "clusterer.min_cluster_size": 20}
    assert isinstance(scaled["clusterer.min_cluster_size"], int)
    assert space.scaled(point, 0.01)["clusterer.min_cluster_size"] == 2  # never below the bound
    assert {spec.name for spec in CLUSTERERS["hdbscan"].params if spec.counts_samples} == \
        {"min_cluster_size", "min_samples"}


def test_space_from_yaml_and_its_errors():
    import yaml

    text = """
    params:
      reducer.n_neighbors: {low: 5, high: 40, log: true}
      reducer.metric: {choices: [euclidean, cosine]}
      reducer.n_epochs: 50
      clusterer.min_cluster_size: {low: 5, high: 20}
    """
    space = parse_space(yaml.safe_load(text), SHAPE)
    assert space.fixed == {"reducer.n_epochs": 50}
    assert [d.kind for d in space.dimensions] == ["int", "categorical", "int"]
    for payload, needle in [
        ({"params": {"reducer.n_neighbors": {"low": 5, "high": 500}}}, "is not below the number of samples"),
        ({"params": {"reducer.n_neighbors": {"low": 0, "high": 5, "log": True}}}, "below 2"),
        ({"params": {"reducer.metric": {"low": 1, "high": 2}}}, "choices"),
        ({"params": {"n_neighbors": {"low": 5, "high": 10}}}, "names no reducer"),
        ({"reducer": "isomap"}, "unknown reducer"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            parse_space(payload, SHAPE)


@pytest.mark.parametrize("n_components, view", [(2, "embedding"), (3, "refit"), (3, "pca")])
def test_with_view_adds_the_coordinates_fit_map_would_make(n_components, view):
    from latentscape.jobs.core.mapping import with_view

    rng = np.random.default_rng(0)
    labels = np.arange(240) % 4
    x = (rng.normal(size=(4, 16))[labels] * 3 + rng.normal(size=(240, 16))).astype(np.float32)
    config = resolve_config(shape=data_shape(x, labels), view=view,
                            reducer_params={"n_components": n_components, "n_epochs": 30})
    whole = fit_map(x, labels, config, with_view=True)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # as fit_map's own default (threads=1)
        later = with_view(x, fit_map(x, labels, config, with_view=False), cache=NeighbourCache(x))
    assert later.coords.shape == (240, 2)
    np.testing.assert_array_equal(later.coords, whole.coords)
    assert later.scores == whole.scores


def test_reclustering_a_map_equals_fitting_it_with_the_new_settings():
    from latentscape.jobs.core.mapping import recluster

    x, y = _blobs(n=200, d=12, std=2.5)
    shape = data_shape(x, y)
    first = fit_map(x, y, resolve_config(shape=shape, reducer="pca", clusterer_params={"min_cluster_size": 60}))
    again = recluster(x, y, first, {"min_cluster_size": 8, "cluster_selection_method": "leaf"})
    direct = fit_map(x, y, resolve_config(shape=shape, reducer="pca", clusterer_params=again.config.clusterer_params))
    assert again.config.clusterer_params["min_cluster_size"] == 8
    assert again.config.reducer_params == first.config.reducer_params
    assert again.config == MapConfig.from_dict(json.loads(json.dumps(again.config.to_dict())), shape)
    np.testing.assert_array_equal(again.coords, first.coords)  # no new reduction
    np.testing.assert_array_equal(again.clusters, direct.clusters)
    assert not np.array_equal(again.clusters, first.clusters)
    for name, value in direct.scores.items():
        assert again.scores[name] == pytest.approx(value, nan_ok=True, abs=1e-12), name
    assert again.durations[Metric.CLUSTER_SECONDS] >= first.durations[Metric.CLUSTER_SECONDS]
    with pytest.raises(ConfigError, match="min_cluster_size=500"):
        recluster(x, y, first, {"min_cluster_size": 500})


def test_only_a_collapsed_clustering_falls_back_to_the_classes_granularity():
    from latentscape.jobs.core.verdict import granularity_fallback, matched_hdbscan_params

    assert granularity_fallback(9, 10, 0.2, 240) is None
    params, note = granularity_fallback(4, 10, 0.2, 240)
    assert params == matched_hdbscan_params(240, 10)
    assert note == ("the default clustering collapsed (found 4 clusters for 10 classes): re-clustered at the "
                    "classes' granularity, min_cluster_size=6")
    assert "noise" in granularity_fallback(10, 10, 0.7, 240)[1]
