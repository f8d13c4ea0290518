"""select_classes: which samples a label score can use, on long-tailed and partial labels."""

from __future__ import annotations

import numpy as np
import pytest

from latentscape.jobs.core.labels import select_classes


def test_rare_classes_and_missing_labels_are_left_out_and_named():
    labels = np.array(["a"] * 5 + ["b"] * 4 + ["rare"] + [None, float("nan"), "", "  "], dtype=object)
    selection = select_classes(labels, 4)
    assert selection.keep.tolist() == [True] * 9 + [False] * 5
    assert selection.classes_kept == ("a", "b") and selection.classes_left_out == ("rare",)
    assert selection.unlabelled == 4 and selection.samples_left_out == 5 and selection.usable
    note = selection.note()
    assert "'rare'" in note and "4 unlabelled" in note and "fewer than 4 samples" in note


def test_nothing_left_out_says_nothing_and_one_class_is_not_usable():
    labels = np.array(["a", "a", "b", "b"], dtype=object)
    assert select_classes(labels, 2).keeps_all and select_classes(labels, 2).note() is None
    assert not select_classes(labels, 3).usable  # no class is big enough
    assert not select_classes(np.array(["a", "a", None], dtype=object), 1).usable


def test_a_threshold_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        select_classes(np.array(["a"], dtype=object), 0)


def test_a_stratified_subsample_keeps_every_class_and_the_proportions():
    from latentscape.jobs.core.labels import random_rows, stratified_rows

    labels = np.array(["big"] * 900 + ["mid"] * 95 + ["rare"] * 5)
    rows = stratified_rows(labels, 100, min_per_class=5, seed=3)
    picked = labels[rows]
    assert (picked == "rare").sum() == 5 and (picked == "big").sum() == 90 and (picked == "mid").sum() == 10
    assert np.all(np.diff(rows) > 0)  # sorted, no row twice
    assert np.array_equal(rows, stratified_rows(labels, 100, min_per_class=5, seed=3))  # seeded
    assert not np.array_equal(rows, stratified_rows(labels, 100, min_per_class=5, seed=4))
    assert np.array_equal(stratified_rows(labels, 0), np.arange(1000))  # 0: every row
    uniform = random_rows(1000, 50, seed=1)
    assert len(uniform) == 50 and len(set(uniform)) == 50 and np.array_equal(random_rows(10, 20), np.arange(10))


def test_a_search_subsample_is_exact_seeded_and_keeps_each_class_within_one_sample():
    """sweep --search-sample: every worker process draws the same rows from (n, labels,
    size, seed); each class keeps its share within one row, and the size is exact."""
    from latentscape.jobs.core.labels import sample_rows

    rng = np.random.default_rng(0)
    labels = rng.choice(np.array(["a", "b", "c", "d", "e", "f", "g"]), size=1000, p=[.3, .2, .15, .15, .1, .07, .03])
    for size in (100, 333, 999):
        rows = sample_rows(1000, size, labels, seed=7)
        assert len(rows) == size and np.all(np.diff(rows) > 0)
        assert np.array_equal(rows, sample_rows(1000, size, labels.copy(), seed=7))  # another process, the same
        classes, counts = np.unique(labels, return_counts=True)
        kept = {c: int((labels[rows] == c).sum()) for c in classes}
        for name, count in zip(classes, counts):
            assert abs(kept[name] - size * count / 1000) < 1, (size, name)
    assert not np.array_equal(sample_rows(1000, 100, labels, seed=7), sample_rows(1000, 100, labels, seed=8))
    uniform = sample_rows(1000, 100, seed=7)  # unlabelled: uniform, also seeded
    assert len(uniform) == 100 and np.array_equal(uniform, sample_rows(1000, 100, seed=7))
    assert np.array_equal(sample_rows(50, 100, labels[:50]), np.arange(50))  # size >= n: every row
