"""What a layer's labels look like from its embeddings: linear probes and k-NN agreement.

Pure numpy / scikit-learn. Labels are any hashable values, ``(n,)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ProbeScore",
    "check_probe_labels",
    "chance_accuracy",
    "probe_accuracy",
    "knn_agreement",
    "knn_agreement_per_sample",
]


@dataclass(frozen=True)
class ProbeScore:
    """Cross-validated accuracy of a linear probe.

    ``mean`` / ``std``: over the folds; ``folds``: each held-out fold's accuracy;
    ``chance``: the accuracy of always guessing the most frequent class; ``correct``:
    ``(n,)`` bool, whether each sample was predicted right when it was held out (its mean
    is the sample-weighted accuracy; resampling it gives an interval).
    """

    mean: float
    std: float
    folds: tuple[float, ...]
    chance: float
    correct: np.ndarray | None = field(default=None, compare=False, repr=False)  # arrays have no single ==


def check_probe_labels(labels: np.ndarray, folds: int) -> None:
    """Raise ValueError unless ``labels`` allow a ``folds``-fold stratified probe:
    at least two classes, each with at least ``folds`` samples."""
    if folds < 2:
        raise ValueError(f"a cross-validated probe needs 2 or more folds, got {folds}")
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"a probe needs at least two classes, got {len(classes)}")
    if counts.min() < folds:
        rare = classes[np.argmin(counts)]
        raise ValueError(f"class {rare!r} has {counts.min()} samples, fewer than the {folds} folds")


def chance_accuracy(labels: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent label of ``labels: (n,)``."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(counts.max() / counts.sum())


def probe_accuracy(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    c: float = 1.0,
    max_iter: int = 1000,
) -> ProbeScore:
    """Held-out accuracy of a multinomial logistic regression on ``x: (n, d)``.

    Stratified ``folds``-fold cross-validation, shuffled with ``seed``; features
    standardised inside each fold (on its training part only), L2 penalty ``1 / c``.
    Every class needs at least ``folds`` samples (see :func:`check_probe_labels`).
    Near 1 where the classes are linearly separable, near ``chance`` where the
    labels carry nothing the features know.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    check_probe_labels(labels, folds)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    x = np.asarray(x, dtype=np.float64)
    correct = np.zeros(len(labels), dtype=bool)
    scores = []
    with warnings.catch_warnings():
        # Separable classes never fully converge under a penalty; the accuracy has.
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, test in splitter.split(x, labels):
            model.fit(x[train], labels[train])
            correct[test] = model.predict(x[test]) == labels[test]
            scores.append(float(correct[test].mean()))
    scores = np.array(scores)
    return ProbeScore(mean=float(scores.mean()), std=float(scores.std()),
                      folds=tuple(float(s) for s in scores), chance=chance_accuracy(labels), correct=correct)


def knn_agreement(labels: np.ndarray, neighbours: np.ndarray) -> float:
    """Mean over samples of the fraction of their neighbours that share their label
    (see :func:`knn_agreement_per_sample`)."""
    return float(knn_agreement_per_sample(labels, neighbours).mean())


def knn_agreement_per_sample(labels: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """``(n,)``: for each sample, the fraction of its neighbours that share its label
    (:func:`knn_agreement` is their mean).

    ``labels: (n,)``; ``neighbours: (n, k)`` indices of each sample's k nearest other
    samples (itself excluded), e.g. columns ``1..k`` of a :mod:`latentscape.jobs.core.knn` graph.
    1 when every neighbourhood is pure; about the sum of squared class shares when the
    neighbourhoods ignore the labels.
    """
    labels = np.asarray(labels)
    neighbours = np.asarray(neighbours)
    if neighbours.ndim != 2 or len(neighbours) != len(labels) or neighbours.shape[1] < 1:
        raise ValueError(f"neighbours must be (n={len(labels)}, k >= 1), got {neighbours.shape}")
    _, codes = np.unique(labels, return_inverse=True)
    same = codes[neighbours] == codes[:, None]
    return same.mean(axis=1)
