"""How good a sparse dictionary is, and what each of its features means: pure numpy.

The torch model lives in :mod:`latentscape.jobs._sae`; everything here takes arrays it produced.

- :func:`reconstruction` — normalised MSE (squared error over the squared error of
  predicting the training mean, as Gao et al. 2024 report it) and its complement, the
  fraction of variance explained;
- :func:`l0`, :func:`dead_fraction`, :func:`density` — sparsity of the codes;
- :func:`feature_label_auc` — every feature's activation as the score of every label
  against the rest (ROC AUC, ties averaged);
- :func:`top_rows` — the rows that activate each feature most;
- :func:`max_cosines` / :func:`plant_sparse_directions` — a planted dictionary and how
  well a learned one recovers it (the test of the method).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "reconstruction",
    "l0",
    "dead_fraction",
    "density",
    "feature_label_auc",
    "top_rows",
    "max_cosines",
    "PlantedData",
    "plant_sparse_directions",
    "AUC_COVERED",
]

# A label counts as covered when some feature separates it at this AUC or above.
AUC_COVERED = 0.9


def reconstruction(x: np.ndarray, x_hat: np.ndarray, mean: np.ndarray) -> tuple[float, float]:
    """``(nmse, variance_explained)`` of ``x_hat`` for ``x``, both ``(n, d)``.

    ``mean: (d,)`` is the training rows' mean, so on held-out rows the baseline is what a
    model that learned nothing would predict. nmse = sum |x - x_hat|^2 / sum |x - mean|^2;
    variance explained = 1 - nmse (negative when worse than the mean). NaN for no rows or
    constant rows."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return float("nan"), float("nan")
    error = float(np.sum((x - np.asarray(x_hat, dtype=np.float64)) ** 2))
    baseline = float(np.sum((x - np.asarray(mean, dtype=np.float64)) ** 2))
    if baseline <= 0:
        return float("nan"), float("nan")
    nmse = error / baseline
    return nmse, 1.0 - nmse


def l0(codes: np.ndarray) -> float:
    """Mean number of nonzero entries per row of ``codes: (n, features)``."""
    codes = np.asarray(codes)
    return float(np.count_nonzero(codes, axis=1).mean()) if len(codes) else float("nan")


def density(codes: np.ndarray) -> np.ndarray:
    """``(features,)`` share of rows of ``codes: (n, features)`` on which each feature fires."""
    codes = np.asarray(codes)
    return np.count_nonzero(codes, axis=0) / max(len(codes), 1)


def dead_fraction(codes: np.ndarray) -> float:
    """Share of features of ``codes: (n, features)`` that fire on no row."""
    return float(np.mean(density(codes) == 0))


def feature_label_auc(codes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(classes (c,), auc (features, c))``: ROC AUC of each feature's activation as the
    score of each label against all others (Mann-Whitney U with average ranks, so a
    feature that never fires scores exactly 0.5).

    codes: (n, features) one row per sample; labels: (n,). Needs two classes or more."""
    from scipy.stats import rankdata

    codes = np.asarray(codes, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    classes, index = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("label AUCs need at least two classes")
    ranks = rankdata(codes, axis=0)  # (n, features), ties averaged
    onehot = np.eye(len(classes))[index]  # (n, c)
    positives = onehot.sum(axis=0)  # (c,)
    negatives = len(labels) - positives
    rank_sums = ranks.T @ onehot  # (features, c)
    auc = (rank_sums - positives * (positives + 1) / 2) / (positives * negatives)
    return classes, auc


def top_rows(codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` rows that activate each feature most: ``(rows (features, n), values
    (features, n))``, highest first (ties: lower row first). Rows where the feature is 0
    are included when fewer than ``n`` fire; callers drop them by value."""
    codes = np.asarray(codes)
    n = min(int(n), len(codes))
    rows = np.empty((codes.shape[1], n), dtype=np.int64)
    values = np.empty((codes.shape[1], n), dtype=np.float64)
    for start in range(0, codes.shape[1], 256):  # a block of features at a time: memory ~ rows x 256
        block = np.asarray(codes[:, start:start + 256], dtype=np.float64)
        order = np.argsort(-block, axis=0, kind="stable")[:n]  # stable: ties keep the lower row first
        rows[start:start + block.shape[1]] = order.T
        values[start:start + block.shape[1]] = np.take_along_axis(block, order, axis=0).T
    return rows, values


def max_cosines(found: np.ndarray, planted: np.ndarray) -> np.ndarray:
    """``(m,)`` for each row of ``planted: (m, d)``, the largest cosine with any row of
    ``found: (features, d)`` (1: recovered exactly)."""

    def unit(a):
        a = np.asarray(a, dtype=np.float64)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    return (unit(planted) @ unit(found).T).max(axis=1)


@dataclass(frozen=True)
class PlantedData:
    """``x: (n, d)`` rows that are sparse non-negative mixtures of ``directions: (m, d)``
    unit vectors (``codes: (n, m)``, about ``active`` nonzero per row), plus noise."""

    x: np.ndarray
    directions: np.ndarray
    codes: np.ndarray


def plant_sparse_directions(n: int = 2000, d: int = 32, m: int = 48, *, active: int = 3, noise: float = 0.01,
                            seed: int = 0) -> PlantedData:
    """Synthetic data with a known sparse dictionary: each row sums ``active`` random
    directions (of ``m`` random unit directions in ``d`` dimensions) with weights drawn
    from [0.5, 1.5], plus Gaussian noise of standard deviation ``noise`` per coordinate."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(m, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    codes = np.zeros((n, m))
    for row in range(n):
        chosen = rng.choice(m, size=active, replace=False)
        codes[row, chosen] = rng.uniform(0.5, 1.5, size=active)
    x = codes @ directions + noise * rng.normal(size=(n, d))
    return PlantedData(x.astype(np.float32), directions, codes)
