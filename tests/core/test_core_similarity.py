"""Pure layer measures: CKA invariants and agreement with Gram matrices, probes, k-NN, TwoNN."""

from __future__ import annotations

import numpy as np
import pytest

from latentscape.jobs.core.intrinsic import two_nn_dimension
from latentscape.jobs.core.probes import (
    chance_accuracy,
    check_probe_labels,
    knn_agreement,
    probe_accuracy,
)
from latentscape.jobs.core.similarity import (
    center,
    cka_matrix,
    cka_matrix_gram,
    consecutive,
    linear_cka,
    linear_cka_gram,
    mean_cosine,
)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _orthogonal(d, rng):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _chain(rng, n=150, d=20, count=5):
    """Layers that drift: each a noisy linear map of the one before, plus an offset."""
    layers = [rng.normal(size=(n, d))]
    for _ in range(count - 1):
        previous = layers[-1]
        layers.append(previous + 0.4 * previous @ rng.normal(size=(d, d)) + 0.6 * rng.normal(size=(n, d)) + 3.0)
    return [layer.astype(np.float32) for layer in layers]


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_is_one_for_itself_a_scaling_and_a_rotation(debiased):
    rng = _rng()
    x = rng.normal(size=(120, 16)) @ rng.normal(size=(16, 16)) + 5.0
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.7 * x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x @ _orthogonal(16, rng), debiased=debiased) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, -2.0 * x @ _orthogonal(16, rng) + 9.0, debiased=debiased) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_is_symmetric_and_near_zero_for_independent_data(debiased):
    rng = _rng(1)
    x, y = rng.normal(size=(2000, 10)), rng.normal(size=(2000, 12))
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(linear_cka(y, x, debiased=debiased), abs=1e-14)
    assert abs(linear_cka(x, y, debiased=debiased)) < (0.02 if debiased else 0.05)


def test_debiasing_removes_the_small_sample_bias():
    rng = _rng(2)
    x, y = rng.normal(size=(60, 40)), rng.normal(size=(60, 40))
    biased, debiased = linear_cka(x, y), linear_cka(x, y, debiased=True)
    assert biased > 0.3  # few samples, many features: plain CKA sees structure that is not there
    assert abs(debiased) < 0.05


@pytest.mark.parametrize("debiased", [False, True])
def test_feature_space_equals_the_gram_computation(debiased):
    rng = _rng(3)
    for d1, d2 in ((8, 8), (5, 30), (40, 7)):  # features < n, features > n
        x = rng.normal(size=(30, d1)) + rng.normal(size=d1)
        y = x[:, :1] * rng.normal(size=(1, d2)) + rng.normal(size=(30, d2))
        assert linear_cka(x, y, debiased=debiased) == pytest.approx(
            linear_cka_gram(x, y, debiased=debiased), abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("method", ["features", "gram", "auto"])
def test_all_pairs_equals_each_pair_through_gram_matrices(method, debiased):
    layers = _chain(_rng(4)) + [_rng(5).normal(size=(150, 31)).astype(np.float32)]
    expected = np.array([[linear_cka_gram(a, b, debiased=debiased) for b in layers] for a in layers])
    for dtype, tolerance in ((np.float64, 1e-12), (np.float32, 1e-5)):
        got = cka_matrix(layers, debiased=debiased, method=method, dtype=dtype)
        np.testing.assert_allclose(got, expected, atol=tolerance)
        np.testing.assert_array_equal(got, got.T)
        np.testing.assert_allclose(np.diag(got), 1.0, atol=1e-12)
    np.testing.assert_allclose(cka_matrix_gram(layers, debiased=debiased), expected, atol=1e-12)


def test_all_pairs_without_room_for_one_product_goes_pair_by_pair():
    layers = _chain(_rng(6))
    np.testing.assert_allclose(cka_matrix(layers, method="features", budget_bytes=0),
                               cka_matrix(layers, method="features"), atol=1e-6)


def test_cka_of_a_constant_layer_is_nan_not_an_error():
    rng = _rng(7)
    layers = [rng.normal(size=(20, 4)), np.ones((20, 4)), rng.normal(size=(20, 4))]
    matrix = cka_matrix(layers)
    assert np.isnan(matrix[1]).all() and np.isfinite(matrix[0, 2])
    assert np.isnan(linear_cka(layers[0], layers[1]))


def test_cka_rejects_mismatched_samples_and_unknown_methods():
    rng = _rng(8)
    with pytest.raises(ValueError, match="same samples"):
        cka_matrix([rng.normal(size=(10, 3)), rng.normal(size=(11, 3))])
    with pytest.raises(ValueError, match="unknown CKA method"):
        cka_matrix([rng.normal(size=(10, 3))], method="fast")
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka(rng.normal(size=(3, 2)), rng.normal(size=(3, 2)), debiased=True)


def test_consecutive_and_center():
    matrix = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.8], [0.1, 0.8, 1.0]])
    np.testing.assert_allclose(consecutive(matrix), [0.9, 0.8])
    x = _rng(9).normal(size=(50, 3)).astype(np.float32) + 100
    centred = center(x, dtype=np.float32)
    assert centred.dtype == np.float32
    np.testing.assert_allclose(centred.mean(axis=0), 0.0, atol=1e-4)


def test_mean_cosine_per_sample():
    rng = _rng(10)
    x = rng.normal(size=(40, 6))
    assert mean_cosine(x, 2.5 * x) == pytest.approx(1.0)
    assert mean_cosine(x, -x) == pytest.approx(-1.0)
    assert abs(mean_cosine(x, rng.normal(size=(40, 6)))) < 0.2
    assert np.isnan(mean_cosine(x, rng.normal(size=(40, 5))))  # widths differ
    zero = x.copy()
    zero[0] = 0
    assert mean_cosine(zero, x) == pytest.approx(39 / 40)


def _separable(rng, n_per_class=30, classes=4, d=20):
    labels = np.repeat(np.arange(classes), n_per_class)
    centres = rng.normal(size=(classes, d)) * 4
    return centres[labels] + rng.normal(size=(len(labels), d)), labels


def test_probe_is_near_one_when_separable_and_near_chance_when_shuffled():
    rng = _rng(11)
    x, labels = _separable(rng)
    score = probe_accuracy(x, labels, folds=5, seed=0)
    assert score.mean > 0.97 and len(score.folds) == 5
    assert score.chance == pytest.approx(0.25)
    shuffled = probe_accuracy(x, rng.permutation(labels), folds=5, seed=0)
    assert abs(shuffled.mean - 0.25) < 0.15
    again, once = probe_accuracy(x, labels, folds=5, seed=3), probe_accuracy(x, labels, folds=5, seed=3)
    assert again == once and np.array_equal(again.correct, once.correct)
    assert again.correct.mean() == pytest.approx(np.mean(again.folds), abs=0.01)  # equal folds: equal weights


def test_probe_labels_are_checked():
    with pytest.raises(ValueError, match="two classes"):
        check_probe_labels(np.zeros(10), 5)
    with pytest.raises(ValueError, match="fewer than the 5 folds"):
        check_probe_labels(np.array([0] * 10 + [1] * 3), 5)
    assert chance_accuracy(np.array(["a", "a", "a", "b"])) == 0.75


def _neighbours(x, k):
    """Indices of each row's k nearest other rows (brute force, for the tests)."""
    squares = (x * x).sum(1)
    distances = np.maximum(squares[:, None] + squares[None, :] - 2 * x @ x.T, 0.0)
    np.fill_diagonal(distances, np.inf)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return order, np.sqrt(np.take_along_axis(distances, order, axis=1))


def test_knn_agreement_pure_and_random():
    rng = _rng(12)
    x, labels = _separable(rng)
    neighbours, _ = _neighbours(x, 5)
    assert knn_agreement(labels, neighbours) > 0.97
    assert knn_agreement(rng.permutation(labels), neighbours) < 0.45
    assert knn_agreement(np.array([0, 0, 1]), np.array([[1], [0], [0]])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        knn_agreement(labels, neighbours[:5])


@pytest.mark.parametrize("dimension", [2, 6])
def test_two_nn_recovers_a_planted_subspace(dimension):
    rng = _rng(13)
    latent = rng.uniform(size=(1500, dimension))
    basis = np.linalg.qr(rng.normal(size=(50, dimension)))[0]
    x = latent @ basis.T + 7.0  # a flat patch of dimension `dimension` inside 50-d space
    estimate = two_nn_dimension(x)
    assert abs(estimate - dimension) < 0.15 * dimension + 0.2
    _, distances = _neighbours(x, 2)
    assert two_nn_dimension(neighbour_distances=distances) == pytest.approx(estimate)


def test_two_nn_ignores_duplicates_and_degenerate_input():
    rng = _rng(14)
    x = rng.normal(size=(300, 3))
    doubled = np.concatenate([x, x[:20]])
    assert abs(two_nn_dimension(doubled) - two_nn_dimension(x)) < 0.5
    assert np.isnan(two_nn_dimension(neighbour_distances=np.zeros((10, 2))))


def test_streamed_mean_norm_equals_the_whole_and_anisotropy_reads_only_sampled_rows():
    from latentscape.jobs.core.geometry import anisotropy, mean_norm, mean_norm_of_chunks

    x = np.random.default_rng(0).normal(size=(1_001, 16)).astype(np.float32) + 3.0
    chunks = (x[start:start + 100] for start in range(0, len(x), 100))
    assert mean_norm_of_chunks(chunks) == pytest.approx(mean_norm(x), rel=1e-6)
    assert np.isnan(mean_norm_of_chunks([]))
    # the same pairs whether the layer is float32 or a float16 copy of it (storage only)
    assert anisotropy(x.astype(np.float16)) == pytest.approx(anisotropy(x), abs=1e-3)
    assert anisotropy(x) > 0.5  # every row shares the +3 offset
