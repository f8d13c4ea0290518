"""Which samples a label-aware measure can use: natural labels have a long tail and gaps.

A probe needs every class in every fold, a cluster score needs a class to be more than
one point, and an unlabelled row has nothing to be scored against. Rather than stop a
job because one class has a single sample, each measure sees only the samples whose
class is large enough; the maps keep every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LabelSelection", "random_rows", "sample_rows", "select_classes", "stratified_rows"]


@dataclass(frozen=True)
class LabelSelection:
    """The samples kept for a label-aware measure.

    ``keep: (n,)`` bool, True where the sample is labelled and its class has at least
    ``min_class_size`` samples; ``classes_kept`` / ``classes_left_out`` sorted class names;
    ``unlabelled``: rows without a label (always left out).
    """

    keep: np.ndarray
    min_class_size: int
    classes_kept: tuple[str, ...]
    classes_left_out: tuple[str, ...]
    unlabelled: int

    @property
    def samples_left_out(self) -> int:
        return int(len(self.keep) - self.keep.sum())

    @property
    def keeps_all(self) -> bool:
        return self.samples_left_out == 0

    @property
    def usable(self) -> bool:
        """Whether at least two classes are left: the least any label score compares."""
        return len(self.classes_kept) >= 2

    def note(self) -> str | None:
        """One line for people, or None when nothing was left out."""
        if self.keeps_all:
            return None
        parts = []
        if self.classes_left_out:
            shown = ", ".join(repr(c) for c in self.classes_left_out[:5])
            more = f" and {len(self.classes_left_out) - 5} more" if len(self.classes_left_out) > 5 else ""
            parts.append(f"{len(self.classes_left_out)} class(es) with fewer than {self.min_class_size} samples "
                         f"({shown}{more})")
        if self.unlabelled:
            parts.append(f"{self.unlabelled} unlabelled sample(s)")
        return (f"label scores leave out {' and '.join(parts)}: {self.samples_left_out} of {len(self.keep)} "
                f"samples, {len(self.classes_kept)} classes kept (--min-class-size sets the threshold)")


def select_classes(labels: np.ndarray, min_class_size: int) -> LabelSelection:
    """Keep the labelled samples of every class with at least ``min_class_size`` samples.

    ``labels: (n,)``; None, NaN and empty strings mark unlabelled rows. Never raises on
    rare classes: a selection that keeps fewer than two classes says so (``usable``).
    """
    if min_class_size < 1:
        raise ValueError(f"min_class_size must be at least 1, got {min_class_size}")
    values = np.asarray(labels, dtype=object)
    labelled = np.array([not _missing(v) for v in values], dtype=bool)
    names = values[labelled].astype(str)
    classes, counts = np.unique(names, return_counts=True)
    big = set(classes[counts >= min_class_size].tolist())
    keep = labelled.copy()
    keep[labelled] = np.isin(names, list(big))
    return LabelSelection(
        keep=keep, min_class_size=int(min_class_size),
        classes_kept=tuple(sorted(big)),
        classes_left_out=tuple(sorted(set(classes.tolist()) - big)),
        unlabelled=int((~labelled).sum()),
    )


def _missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def stratified_rows(labels: np.ndarray, size: int, *, min_per_class: int = 1, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a seeded subsample of ``size`` rows, each class of ``labels:
    (n,)`` in proportion (within one row of its share: largest remainders round) but with
    at least ``min_per_class`` rows (or all it has), so a measure that needs a class in
    every fold still finds it; only that floor makes it more than ``size``. Every row when
    ``size`` is 0 or at least ``n``."""
    labels = np.asarray(labels)
    n = len(labels)
    if size <= 0 or size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    share = size * counts / n
    quota = np.floor(share).astype(int)
    short = size - int(quota.sum())  # fewer than the classes: one more row to the largest remainders
    quota[np.argsort(quota - share, kind="stable")[:short]] += 1
    quota = np.minimum(counts, np.maximum(min_per_class, quota))
    picked = [rng.choice(np.flatnonzero(inverse == index), quota[index], replace=False)
              for index in range(len(classes))]
    return np.sort(np.concatenate(picked))


def sample_rows(n: int, size: int, labels: np.ndarray | None = None, *, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a seeded subsample of ``size`` of ``n`` rows: stratified by
    ``labels: (n,)`` when given (:func:`stratified_rows`), else uniform (:func:`random_rows`).
    A function of its arguments only, so every process that asks gets the same rows."""
    if labels is None:
        return random_rows(n, size, seed=seed)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} rows")
    return stratified_rows(labels, size, seed=seed)


def random_rows(n: int, size: int, *, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a seeded uniform subsample of ``size`` of ``n`` rows (all
    when ``size`` is 0 or at least ``n``)."""
    if size <= 0 or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
