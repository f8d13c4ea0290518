"""Which layer holds the classes, by several measures, and whether they agree.

A per-layer cluster score measures two things at once: how well the layer separates the
classes, and how well the clusterer's granularity happens to fit that layer. HDBSCAN with
a fixed ``min_cluster_size`` on a UMAP map can merge ten classes into two clusters on one
layer and not on the next, and its score curve then follows the clusterer, not the layer
(measured on 2,000 WordNet definitions in 10 classes, MiniLM: default UMAP + HDBSCAN found
2-4 clusters on layers 0-4 and scored them 0.13-0.19 AMI, while k-means at k = 10 on the
raw layers rose from 0.31 to 0.58 with the probe; on the 600 demo sentences it found 2
clusters at the last layer, AMI 0.10 against k-means' 0.78). So a layer verdict reads several
measures side by side, each with a bootstrap interval, and says where they disagree:

- :func:`collapse_reason` says when a clustering cannot stand for the classes (fewer than
  half as many clusters as classes, or more than half the points called noise);
- :func:`matched_hdbscan_params` sets HDBSCAN's granularity from the data's size and
  class count instead of a fixed default;
- :func:`granularity_fallback` is what ``latentscape map`` does when its default HDBSCAN
  collapsed on labelled data: the same map clustered again at that granularity;
- :func:`layer_verdict` takes the best layer of each measure with its interval, the
  layers statistically tied with it, and whether the measures agree within one layer.

Pure numpy; knows nothing of MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "COLLAPSE_CLUSTER_SHARE",
    "COLLAPSE_NOISE_SHARE",
    "collapse_reason",
    "matched_hdbscan_params",
    "granularity_fallback",
    "kmeans_at_classes",
    "mean_interval",
    "LayerChoice",
    "Verdict",
    "layer_verdict",
]

# A clustering "collapsed" below this share of the class count, or above this share of noise.
COLLAPSE_CLUSTER_SHARE = 0.5
COLLAPSE_NOISE_SHARE = 0.5


def collapse_reason(n_clusters: int, n_classes: int, noise_fraction: float = 0.0) -> str | None:
    """Why a clustering's label score measures its clusterer rather than the data, or None.

    A clustering collapsed when it found fewer than half as many clusters as there are
    classes (``n_clusters < 0.5 * n_classes``), or called more than half of the points
    noise. ``noise_fraction`` is in [0, 1]; NaN counts as none. None when there are fewer
    than two classes (nothing to collapse onto)."""
    if n_classes < 2:
        return None
    if n_clusters < COLLAPSE_CLUSTER_SHARE * n_classes:
        return f"found {n_clusters} cluster{'s' if n_clusters != 1 else ''} for {n_classes} classes"
    if math.isfinite(noise_fraction) and noise_fraction > COLLAPSE_NOISE_SHARE:
        return f"called {noise_fraction:.0%} of the points noise"
    return None


def matched_hdbscan_params(n_samples: int, n_classes: int) -> dict:
    """HDBSCAN settings at the granularity of the classes: ``min_cluster_size`` a quarter
    of an average class (at least 5), ``min_samples`` 2 and leaf selection, so the clusters
    are the finest dense groups of at least that size rather than whatever few large
    groups are most stable. Measured on UMAP maps of MiniLM layers 0, 3 and 6 (600 demo
    sentences, 2,000 WordNet definitions, 10 classes each): 8-15 clusters, 21-31% noise,
    the highest AMI of the settings tried; ``min_samples`` 10 left up to 48% noise, and
    "eom" selection found 2-3 clusters on four of the six maps."""
    size = max(5, int(n_samples / (4 * max(n_classes, 1))))
    return {"min_cluster_size": size, "min_samples": 2, "cluster_selection_method": "leaf"}


def granularity_fallback(n_clusters: int, n_classes: int, noise_fraction: float,
                         n_samples: int) -> tuple[dict, str] | None:
    """When a default HDBSCAN clustering of ``n_samples`` points collapsed against
    ``n_classes`` classes (:func:`collapse_reason`): the settings to cluster the same map
    again at the classes' granularity (:func:`matched_hdbscan_params`) and a note saying
    so; None when it did not collapse. Only a fallback: always using the matched settings
    dropped the digits map's AMI from 0.933 to 0.814, while on the last MiniLM layer of 240
    demo sentences the default found 4 clusters for 10 classes (AMI 0.35) and the matched
    settings 14 (AMI 0.47)."""
    reason = collapse_reason(n_clusters, n_classes, noise_fraction)
    if reason is None:
        return None
    params = matched_hdbscan_params(n_samples, n_classes)
    return params, (f"the default clustering collapsed ({reason}): re-clustered at the classes' granularity, "
                    f"min_cluster_size={params['min_cluster_size']}")


def kmeans_at_classes(x: np.ndarray, labels: np.ndarray, *, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """``(n,)`` clusters of k-means with k = the number of classes of ``labels: (n,)`` on
    ``x: (n, d)`` itself, no reduction: the reference cluster score's clustering (it can
    neither merge the classes into a few clusters nor call points noise). ``n_init``
    restarts, the best inertia kept: 3 instead of 10 moved the demo's AMI by up to 0.067
    on two MiniLM layers, outside its bootstrap interval."""
    from latentscape.jobs.core.cluster import CLUSTERERS

    k = len(np.unique(labels))
    return CLUSTERERS["kmeans"].run(x, {"n_clusters": k, "n_init": n_init, "max_iter": 300}, seed=seed)


def mean_interval(values: np.ndarray, *, n_resamples: int = 200, level: float = 0.95,
                  seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the mean of ``values: (n,)`` (e.g. per-sample probe
    correctness or k-NN agreement): the observed mean plus the central ``level`` range of
    the resampled means' deviations (as :func:`latentscape.jobs.core.trust.centred_interval`)."""
    from latentscape.jobs.core.trust import centred_interval

    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(n_resamples, len(values)))
    return centred_interval(float(values.mean()), values[picks].mean(axis=1), level)


@dataclass(frozen=True)
class LayerChoice:
    """The best layer by one measure.

    ``layer``: where the measure is best (None when it has no finite value); ``value``
    and ``ci_low`` / ``ci_high``: its value there and interval (NaN when the measure has
    none); ``tied``: every layer whose interval reaches the best's lower bound (the best
    included), i.e. the layers the data cannot tell apart from it; ``collapsed``: why the
    best layer's clustering collapsed, or None."""

    measure: str
    layer: int | None
    value: float
    ci_low: float
    ci_high: float
    tied: tuple[int, ...]
    collapsed: str | None = None
    lower_is_better: bool = False


@dataclass(frozen=True)
class Verdict:
    """Every measure's :class:`LayerChoice`; ``agree``: whether the best layers of the
    agreement measures (every measure but ``context`` ones, and none whose best layer
    collapsed) lie within ``tolerance`` layers of each other; ``sentence``: the verdict
    in one plain sentence."""

    choices: tuple[LayerChoice, ...]
    agree: bool
    sentence: str
    tolerance: int

    def choice(self, measure: str) -> LayerChoice | None:
        return next((c for c in self.choices if c.measure == measure), None)


def _choose(measure: str, layers: np.ndarray, values: np.ndarray, lows: np.ndarray | None,
            highs: np.ndarray | None, lower_is_better: bool, collapsed: Mapping[int, str]) -> LayerChoice:
    finite = np.isfinite(values)
    if not finite.any():
        return LayerChoice(measure, None, math.nan, math.nan, math.nan, (), None, lower_is_better)
    signed = np.where(finite, -values if lower_is_better else values, -np.inf)
    best = int(np.argmax(signed))  # ties: the first (shallowest) layer
    low = float(lows[best]) if lows is not None else math.nan
    high = float(highs[best]) if highs is not None else math.nan
    if lows is not None and highs is not None and math.isfinite(low):
        if lower_is_better:
            tied = tuple(int(layer) for layer, lo in zip(layers, lows) if np.isfinite(lo) and lo <= high)
        else:
            tied = tuple(int(layer) for layer, hi in zip(layers, highs) if np.isfinite(hi) and hi >= low)
    else:
        tied = (int(layers[best]),)
    layer = int(layers[best])
    return LayerChoice(measure, layer, float(values[best]), low, high, tied, collapsed.get(layer), lower_is_better)


def layer_verdict(
    layers: Sequence[int],
    measures: Mapping[str, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]],
    *,
    lower_is_better: Sequence[str] = (),
    context: Sequence[str] = (),
    collapsed: Mapping[str, Mapping[int, str]] | None = None,
    tolerance: int = 1,
) -> Verdict:
    """The best layer by each measure and whether they agree.

    ``layers: (L,)`` layer ids in order; ``measures``: name -> ``(values, ci_low, ci_high)``,
    each ``(L,)`` (interval arrays may be None); ``lower_is_better``: measures whose best
    is their minimum (e.g. CKA to the previous layer: its minimum is the largest change);
    ``context``: measures reported but left out of the agreement (they answer another
    question); ``collapsed``: measure -> {layer: reason} for clusterings that collapsed.
    Agreement: the best layers of the other measures span at most ``tolerance`` layers
    (positions in ``layers``); a measure whose best layer collapsed does not vote."""
    layers = np.asarray(layers)
    collapsed = collapsed or {}
    choices = tuple(
        _choose(name, layers, np.asarray(values, dtype=np.float64),
                None if lows is None else np.asarray(lows, dtype=np.float64),
                None if highs is None else np.asarray(highs, dtype=np.float64),
                name in lower_is_better, collapsed.get(name, {}))
        for name, (values, lows, highs) in measures.items()
    )
    position = {int(layer): index for index, layer in enumerate(layers)}
    voters = [c for c in choices if c.measure not in context and c.layer is not None and c.collapsed is None]
    spots = [position[c.layer] for c in voters]
    agree = bool(spots) and max(spots) - min(spots) <= tolerance
    return Verdict(choices, agree, _sentence(choices, voters, agree, context, tolerance), tolerance)


def _sentence(choices, voters, agree: bool, context: Sequence[str], tolerance: int) -> str:
    if not voters:
        return "No measure has a best layer: no labels, or every clustering collapsed."
    named = ", ".join(f"{c.measure} at layer {c.layer}" for c in voters)
    within = "the same layer" if tolerance == 0 else f"within {tolerance} layer{'s' if tolerance != 1 else ''}"
    if agree:
        layers = sorted({c.layer for c in voters})
        where = f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"
        text = f"The measures agree ({within}): the classes are clearest at {where} ({named})."
    else:
        text = f"The measures disagree by more than {tolerance} layer{'s' if tolerance != 1 else ''}: {named}."
    skipped = [c for c in choices if c.collapsed is not None and c.measure not in context]
    if skipped:
        text += " Left out, collapsed at their best layer: " + ", ".join(
            f"{c.measure} (layer {c.layer}: {c.collapsed})" for c in skipped) + "."
    return text
