"""The pure core of walking latent space: paths, neighbours, analogies, directions."""

from __future__ import annotations

import numpy as np
import pytest

from latentscape.jobs.core.walk import (
    INTERPOLATIONS,
    accuracy_by_group,
    answer_analogies,
    class_arithmetic,
    concept_directions,
    cosine_matrix,
    cosine_neighbours,
    interpolate,
    lerp,
    mean_difference_directions,
    path_ts,
    probe_directions,
    project,
    slerp,
)


def _pairs(seed: int = 0):
    """Endpoint pairs: random, scaled, parallel, antiparallel, a zero endpoint, 2-d."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=16)
    yield a, rng.normal(size=16) * 5
    yield rng.normal(size=384).astype(np.float32), rng.normal(size=384).astype(np.float32)
    yield a, 3 * a
    yield a, -0.5 * a
    yield np.zeros(16), a
    yield np.array([1.0, 0.0]), np.array([0.0, 2.0])


@pytest.mark.parametrize("method", sorted(INTERPOLATIONS))
def test_paths_start_and_end_exactly_at_the_endpoints(method):
    for a, b in _pairs():
        path = interpolate(method, a, b, steps=7)
        assert path.shape == (7, len(a))
        assert np.array_equal(path[0], a.astype(np.float64)) and np.array_equal(path[-1], b.astype(np.float64))
        assert np.isfinite(path).all()


def test_slerp_keeps_the_norm_between_the_endpoints_norms():
    for a, b in _pairs():
        norms = np.linalg.norm(slerp(a, b, path_ts(25)), axis=1)
        low, high = sorted((np.linalg.norm(a.astype(np.float64)), np.linalg.norm(b.astype(np.float64))))
        assert (norms >= low * (1 - 1e-9) - 1e-12).all() and (norms <= high * (1 + 1e-9) + 1e-12).all()
        rising = np.linalg.norm(b.astype(np.float64)) >= np.linalg.norm(a.astype(np.float64))
        assert np.all(np.diff(norms) * (1 if rising else -1) >= -1e-9)  # monotone in t


def test_lerp_cuts_the_corner_that_slerp_goes_round():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert np.linalg.norm(lerp(a, b, np.array([0.5]))[0]) == pytest.approx(np.sqrt(0.5))
    np.testing.assert_allclose(slerp(a, b, np.array([0.5]))[0], [np.sqrt(0.5), np.sqrt(0.5)])


def test_slerp_turns_at_constant_angular_speed():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=8), rng.normal(size=8)
    path = slerp(a, b, path_ts(9))
    unit = path / np.linalg.norm(path, axis=1, keepdims=True)
    angles = np.arccos(np.clip(unit @ (a / np.linalg.norm(a)), -1, 1))
    np.testing.assert_allclose(np.diff(angles), angles[-1] / 8, atol=1e-9)


def test_slerp_between_antiparallel_vectors_goes_round_not_through_zero():
    a = np.array([1.0, 2.0, 3.0])
    path = slerp(a, -a, path_ts(5))
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(a))
    assert abs(path[2] @ a) < 1e-9  # halfway: orthogonal to both ends


def test_paths_reject_bad_input():
    with pytest.raises(ValueError):
        path_ts(1)
    with pytest.raises(ValueError):
        lerp(np.zeros(3), np.zeros(4), path_ts(3))
    with pytest.raises(ValueError):
        interpolate("cubic", np.zeros(3), np.ones(3), steps=3)


def test_neighbours_find_a_row_itself_first_and_honour_prefer_and_exclude():
    rng = np.random.default_rng(2)
    data = rng.normal(size=(50, 6))
    data[7] = data[3] * 2.0  # same direction as row 3: an exact cosine tie is possible
    found = cosine_neighbours(data[[3, 10]], data, k=4)
    assert found.indices.shape == (2, 4) and found.distances.shape == (2, 4)
    assert found.indices[1, 0] == 10 and found.distances[1, 0] == pytest.approx(0, abs=1e-12)
    assert set(found.indices[0, :2]) == {3, 7}
    assert (np.diff(found.distances, axis=1) >= -1e-12).all()
    preferred = cosine_neighbours(data[[3]], data, k=2, prefer=np.array([7]))
    assert preferred.indices[0, 0] == 7 or np.isclose(preferred.distances[0, 0], 0)
    exclude = np.zeros((1, 50), dtype=bool)
    exclude[0, [3, 7]] = True
    assert not set(cosine_neighbours(data[[3]], data, k=5, exclude=exclude).indices[0]) & {3, 7}
    assert cosine_neighbours(data[[0]], data, k=500).indices.shape == (1, 50)


def test_exact_ties_go_to_the_preferred_row():
    data = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert cosine_neighbours(data[[1]], data, k=1).indices[0, 0] == 0
    assert cosine_neighbours(data[[1]], data, k=1, prefer=np.array([1])).indices[0, 0] == 1


def _offset_vocabulary(seed: int = 0, pairs: int = 12, dim: int = 32):
    """Words c and d = c + offset_s per section, integer-valued so b - a == d - c exactly."""
    rng = np.random.default_rng(seed)
    offsets = rng.integers(-20, 21, size=(2, dim)).astype(np.float64)
    vectors, sections, questions = [], [], []
    for s, offset in enumerate(offsets):
        base = len(vectors)
        for _ in range(pairs):
            c = rng.integers(-20, 21, size=dim).astype(np.float64)
            vectors += [c, c + offset]
        for i in range(pairs):
            j = (i + 1) % pairs
            questions.append([base + 2 * i, base + 2 * i + 1, base + 2 * j, base + 2 * j + 1])
            sections.append(f"section-{s}")
    return np.array(vectors), np.array(questions), np.array(sections)


def test_analogies_with_an_exact_offset_are_all_answered():
    vectors, questions, sections = _offset_vocabulary()
    a, b, c, d = (vectors[questions[:, i]] for i in range(4))
    assert np.array_equal(b - a, d - c)
    answers = answer_analogies(vectors, questions, k=5)
    assert answers.predictions.shape == (len(questions), 5)
    assert answers.correct_at(1).all() and (answers.rank == 1).all()
    assert accuracy_by_group(answers.correct_at(1), sections) == {"section-0": 1.0, "section-1": 1.0}
    # The answer never repeats a, b or c.
    for question, predicted in zip(questions, answers.predictions):
        assert not set(predicted) & set(question[:3])


def test_analogy_ranks_count_misses_and_unanswerable_questions():
    vectors, questions, _ = _offset_vocabulary(seed=1)
    broken = questions.copy()
    broken[0, 3] = broken[1, 3]  # a wrong expected word: not rank 1
    broken[1, 3] = broken[1, 0]  # expected word is a itself: can never be answered
    answers = answer_analogies(vectors, broken, k=5)
    assert answers.rank[0] > 1 and answers.rank[1] == 0
    assert not answers.correct_at(5)[1]
    assert answers.correct_at(1)[2:].all()
    assert accuracy_by_group(answers.correct_at(1), np.array(["x"] * len(broken)))["x"] == pytest.approx(
        (len(broken) - 2) / len(broken))


def test_class_arithmetic_moves_a_sample_by_the_class_offset():
    x = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0]])
    labels = np.array(["a", "a", "b", "b"])
    np.testing.assert_allclose(class_arithmetic(x, labels, add="b", subtract="a", base=x[0]), [10.0, 10.0])
    with pytest.raises(ValueError):
        class_arithmetic(x, labels, add="z", subtract="a", base=x[0])


def _planted(seed: int = 0, per_class: int = 60, dim: int = 20):
    """Three classes offset along three orthogonal axes, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.array(["x", "y", "z"]), per_class)
    x = rng.normal(scale=0.3, size=(len(labels), dim))
    for axis, name in enumerate("xyz"):
        x[labels == name, axis] += 3.0
    return x, labels


@pytest.mark.parametrize("method", ["mean_difference", "probe"])
def test_concept_directions_recover_planted_axes(method):
    x, labels = _planted()
    found = concept_directions(method, x, labels, seed=0)
    assert list(found.classes) == ["x", "y", "z"] and found.vectors.shape == (3, 20)
    np.testing.assert_allclose(np.linalg.norm(found.vectors, axis=1), 1.0)
    projections = project(x, found.vectors)
    assert projections.shape == (len(x), 3)
    np.testing.assert_allclose(projections.mean(axis=0), 0.0, atol=1e-9)
    for j, name in enumerate(found.classes):
        # Every sample of the class projects higher than every other sample.
        assert projections[labels == name, j].min() > projections[labels != name, j].max()
        assert abs(found.vectors[j, j]) == max(abs(found.vectors[j, :3]))


def test_direction_cosines_are_symmetric_and_show_shared_structure():
    x, labels = _planted()
    mean_diff = mean_difference_directions(x, labels).vectors
    probe = probe_directions(x, labels, seed=0).vectors
    matrix = cosine_matrix(np.vstack([mean_diff, probe]))
    np.testing.assert_allclose(matrix, matrix.T)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    assert (np.diag(matrix[:3, 3:]) > 0.8).all()  # the two methods agree per label
    # "x vs rest" and "y vs rest" share the rest: cos = -1/2 for three equal orthogonal classes.
    assert matrix[0, 1] == pytest.approx(-0.5, abs=0.1)
    with pytest.raises(ValueError):
        mean_difference_directions(x, np.array(["x"] * len(x)))
