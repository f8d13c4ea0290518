"""Chance baselines, bootstrap intervals and seed stability (latentscape.jobs.core.trust)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latentscape.jobs.core import trust
from latentscape.jobs.core.scores import label_scores
from latentscape.tracking.contract import Metric

LABEL_NAMES = trust.LABEL_SCORES
ALL_NAMES = (*LABEL_NAMES, *(name + Metric.CLUSTERED_SUFFIX for name in LABEL_NAMES))


def _random(seed: int, n: int = 600, classes: int = 6, clusters: int = 7):
    rng = np.random.default_rng(seed)
    labels = np.array([f"c{value}" for value in rng.integers(0, classes, n)])
    return labels, rng.integers(-1, clusters, n)  # -1: some noise


def _planted(seed: int = 0, n: int = 600, classes: int = 6):
    """Clusters that copy the labels for 80% of the points, noise for 5%."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    clusters = np.where(rng.random(n) < 0.8, labels, rng.integers(0, classes, n))
    clusters[rng.random(n) < 0.05] = -1
    return labels.astype(str), clusters


def test_batched_scores_equal_scikit_learn_including_degenerate_cases():
    rng = np.random.default_rng(1)
    cases = [_random(seed) for seed in range(4)] + [_planted()]
    labels = rng.integers(0, 3, 50)
    cases += [
        (labels, np.zeros(50, dtype=int)),  # one cluster
        (np.zeros(50, dtype=int), labels),  # one class
        (np.zeros(50, dtype=int), np.zeros(50, dtype=int)),  # both single
        (labels, labels + 5),  # identical partitions, other ids
        (labels, np.arange(50)),  # every point its own cluster
        (labels[:2], labels[:2]),
    ]
    for labels, clusters in cases:
        expected = label_scores(labels, clusters)
        _, label_codes = np.unique(labels, return_inverse=True)
        _, cluster_codes = np.unique(clusters, return_inverse=True)
        got = trust.label_score_batch(label_codes, cluster_codes, label_codes.max() + 1, cluster_codes.max() + 1)
        for name in LABEL_NAMES:
            assert got[name][0] == pytest.approx(expected[name], abs=1e-12), name


def test_expected_mutual_info_equals_scikit_learns():
    from sklearn.metrics.cluster import contingency_matrix
    from sklearn.metrics.cluster._expected_mutual_info_fast import expected_mutual_information

    for seed in range(3):
        labels, clusters = _random(seed, n=300)
        reference = expected_mutual_information(contingency_matrix(labels, clusters, sparse=True), len(labels))
        _, a = np.unique(labels, return_counts=True)
        _, b = np.unique(clusters, return_counts=True)
        assert trust.expected_mutual_info(a, b) == pytest.approx(reference, rel=1e-10, abs=1e-14)


def test_random_labels_are_not_significant_and_the_interval_covers_chance():
    for seed in range(5):
        labels, clusters = _random(seed)
        found = trust.label_baselines(labels, clusters, n_permutations=100, n_resamples=200, seed=seed)
        assert set(found) == set(ALL_NAMES)
        for name in (Metric.AMI, Metric.NMI, Metric.MUTUAL_INFO, Metric.ARI, Metric.V_MEASURE,
                     Metric.AMI + Metric.CLUSTERED_SUFFIX):
            result = found[name]
            assert result.p_value > 0.05, (seed, name, result)
            assert result.ci_low <= result.perm_mean <= result.ci_high, (seed, name, result)
            assert result.ci_low <= result.observed <= result.ci_high


def test_planted_structure_has_the_smallest_p_value():
    labels, clusters = _planted()
    for permutations in (19, 100):
        found = trust.label_baselines(labels, clusters, n_permutations=permutations, n_resamples=100, seed=3)
        for name in ALL_NAMES:
            result = found[name]
            assert result.p_value == 1 / (permutations + 1), name
            assert result.n_permutations == permutations
            assert result.perm_mean < result.ci_low <= result.observed <= result.ci_high, name
    expected = label_scores(labels, clusters)
    for name in ALL_NAMES:
        assert found[name].observed == pytest.approx(expected[name], abs=1e-12)
    assert found[Metric.AMI].perm_mean == pytest.approx(0, abs=0.01)  # AMI is chance-adjusted


def test_generic_baseline_of_any_score_function_agrees_with_the_fast_path():
    from sklearn.metrics import adjusted_mutual_info_score, fowlkes_mallows_score

    labels, clusters = _planted(n=300)
    generic = trust.baseline(adjusted_mutual_info_score, labels, clusters, n_permutations=30, n_resamples=30, seed=2)
    fast = trust.label_baselines(labels, clusters, n_permutations=30, n_resamples=30, seed=2)[Metric.AMI]
    # Same seeds, same permutations and resamples: the same numbers.
    for field in ("observed", "perm_mean", "p_value", "ci_low", "ci_high"):
        assert getattr(generic, field) == pytest.approx(getattr(fast, field), abs=1e-10), field
    other = trust.baseline(fowlkes_mallows_score, labels, clusters, n_permutations=30, n_resamples=30)
    assert other.p_value == 1 / 31 and other.ci_low <= other.observed <= other.ci_high


def test_baselines_are_seeded():
    labels, clusters = _random(0, n=300)
    first = trust.label_baselines(labels, clusters, n_permutations=20, n_resamples=20, seed=4)
    again = trust.label_baselines(labels, clusters, n_permutations=20, n_resamples=20, seed=4)
    other = trust.label_baselines(labels, clusters, n_permutations=20, n_resamples=20, seed=5)
    assert first == again
    assert first[Metric.AMI].perm_mean != other[Metric.AMI].perm_mean


def test_all_noise_gives_nan_clustered_baselines_and_metrics_are_named_by_the_contract():
    labels = np.repeat(["a", "b"], 20)
    found = trust.label_baselines(labels, np.full(40, -1), n_permutations=10, n_resamples=10)
    assert math.isnan(found[Metric.AMI + Metric.CLUSTERED_SUFFIX].p_value)
    assert found[Metric.AMI].p_value == 1.0  # one cluster: every permutation ties
    metrics = trust.baseline_metrics(found)
    assert metrics["ami_p_value"] == 1.0 and "ami_clustered_ci_high" in metrics
    assert "mutual_info_perm_mean" in metrics and "nmi_ci_low" in metrics
    assert len(metrics) == 4 * len(ALL_NAMES)


def test_p_value_and_interval_helpers():
    assert trust.empirical_p_value(1.0, np.zeros(99)) == 0.01
    assert trust.empirical_p_value(0.0, np.zeros(99)) == 1.0  # ties count
    assert math.isnan(trust.empirical_p_value(math.nan, np.zeros(3)))
    low, high = trust.centred_interval(0.5, np.linspace(10, 12, 1001), level=0.9)
    assert low == pytest.approx(0.5 - 0.9) and high == pytest.approx(0.5 + 0.9)
    with pytest.raises(ValueError):
        trust.centred_interval(0.5, np.zeros(3), level=1.0)
    with pytest.raises(ValueError):
        trust.label_baselines(["a"], [0, 1])


def test_stability_over_seeds():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 5, 200)
    relabelled = (base + 2) % 5  # the same partition under other cluster ids
    same = trust.stability([{"ami": 0.8, "nmi": 0.7}, {"ami": 0.8, "nmi": 0.7}], [base, relabelled])
    assert same.ari_mean == pytest.approx(1.0) and same.std["ami"] == 0.0 and same.n_seeds == 2
    spread = trust.stability([{"ami": 0.6}, {"ami": 0.8}, {"ami": 1.0}],
                             [base, rng.integers(0, 5, 200), rng.integers(0, 5, 200)])
    assert spread.mean["ami"] == pytest.approx(0.8) and spread.std["ami"] == pytest.approx(0.2)
    assert abs(spread.ari_mean) < 0.1
    assert len(trust.pairwise_ari([base] * 4)) == 6
    single = trust.stability([{"ami": 0.5}], [base])
    assert single.std["ami"] == 0.0 and math.isnan(single.ari_mean)
    metrics = trust.stability_metrics(spread)
    assert metrics == {"ami_mean": pytest.approx(0.8), "ami_std": pytest.approx(0.2),
                       Metric.SEED_ARI_MEAN: spread.ari_mean}
    assert Metric.trust(Metric.AMI, Metric.STD_SUFFIX) == Metric.AMI_STD


def test_either_count_may_be_zero():
    labels, clusters = _planted(n=200)
    only_p = trust.label_baselines(labels, clusters, n_permutations=9, n_resamples=0)
    assert only_p[Metric.AMI].p_value == 0.1 and math.isnan(only_p[Metric.AMI].ci_low)
    assert not any(key.endswith("_ci_low") for key in trust.baseline_metrics(only_p))
    only_ci = trust.label_baselines(labels, clusters, n_permutations=0, n_resamples=9)
    assert math.isnan(only_ci[Metric.AMI].p_value) and only_ci[Metric.AMI].ci_low < only_ci[Metric.AMI].ci_high
    assert not any(key.endswith("_p_value") for key in trust.baseline_metrics(only_ci))
    with pytest.raises(ValueError):
        trust.label_baselines(labels, clusters, n_permutations=0, n_resamples=0)


def test_holdout_split_is_stratified_seeded_and_disjoint():
    labels = np.repeat(["a", "b", "c"], [50, 30, 20])
    tune, held = trust.holdout_split(labels, 0.3, seed=1)
    assert len(np.intersect1d(tune, held)) == 0 and len(tune) + len(held) == 100
    assert len(held) == 30
    for label, count in (("a", 50), ("b", 30), ("c", 20)):
        assert abs((labels[held] == label).sum() - 0.3 * count) <= 1
    again, _ = trust.holdout_split(labels, 0.3, seed=1)
    other, _ = trust.holdout_split(labels, 0.3, seed=2)
    assert np.array_equal(tune, again) and not np.array_equal(tune, other)
    with pytest.raises(ValueError, match="within"):
        trust.holdout_split(labels, 1.0)
    with pytest.raises(ValueError, match="every class"):
        trust.holdout_split(np.array(["a"] * 10 + ["b"]), 0.5)


def test_map_trust_of_a_map_is_seeded_by_the_map():
    from sklearn.datasets import load_digits

    from latentscape.jobs._trust import TrustSettings, map_trust
    from latentscape.jobs.core.mapping import data_shape, fit_map, resolve_config
    from latentscape.tracking.errors import UsageError

    x, y = load_digits(return_X_y=True)
    x, labels = x[:300], y[:300].astype(str)
    config = resolve_config(shape=data_shape(x, labels), reducer="pca", clusterer="kmeans", seed=2)
    result = fit_map(x, labels, config, with_view=False)
    settings = TrustSettings(permutations=50, bootstrap=50, seeds=3)
    metrics = map_trust(x, labels, result, settings)
    assert metrics == map_trust(x, labels, result, settings)  # the map's seed seeds everything
    assert metrics["ami_p_value"] == 1 / 51 and metrics["ami_ci_low"] <= result.scores["ami"] <= metrics["ami_ci_high"]
    assert metrics["ami_clustered_p_value"] == 1 / 51
    assert metrics["ami_std"] >= 0 and 0 < metrics[Metric.SEED_ARI_MEAN] <= 1
    assert "silhouette_mean" in metrics and "trustworthiness_std" in metrics
    assert not map_trust(x, labels, result, TrustSettings(permutations=0, bootstrap=0, seeds=1))
    assert "ami_p_value" not in map_trust(x, None, result, TrustSettings(seeds=1))  # unlabelled: no baseline
    with pytest.raises(UsageError, match="--seeds"):
        TrustSettings(seeds=0)
    assert TrustSettings.from_dict({"permutations": 7, "other": 1}) == TrustSettings(permutations=7)
