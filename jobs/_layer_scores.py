"""The layers job's cluster scores and verdict: each layer clustered three ways and scored
with an interval, ``--tune``'s per-layer sweeps, which clusterings collapsed, and the best
layer by every measure (:mod:`latentscape.jobs.core.verdict` holds the math; this module names the
columns and reads them from the per-layer table)."""

from __future__ import annotations

import math

import numpy as np

from typing import TYPE_CHECKING

from latentscape.tracking import layer_measures
from latentscape.tracking.contract import Column, Metric

if TYPE_CHECKING:
    import pandas as pd

    from latentscape.jobs.layers import LayersConfig

# The ways of clustering a layer, by their registered scorer names.
KMEANS, MAP, HDBSCAN, TUNED = (layer_measures.BY_NAME[name].scorer for name in (
    Metric.AMI_KMEANS, Metric.AMI_MAP, Metric.AMI_HDBSCAN, Metric.AMI_TUNED))


def ami(labels: np.ndarray, clusters: np.ndarray) -> float:
    """AMI with noise (-1) as its own label, as every map score counts it."""
    from latentscape.jobs.core.scores import label_scores

    return float(label_scores(labels, clusters)[Metric.AMI])


def scorer_columns(scorer: str) -> tuple[str, ...]:
    """The per-layer columns of one way of clustering: its AMI, interval and cluster counts."""
    score = Metric.qualified(Metric.AMI, scorer)
    return (score, Metric.trust(score, Metric.CI_LOW_SUFFIX), Metric.trust(score, Metric.CI_HIGH_SUFFIX),
            Metric.qualified(Metric.N_CLUSTERS, scorer), Metric.qualified(Metric.NOISE_FRACTION, scorer))


def cluster_score(scorer: str, labels: np.ndarray, clusterings: list[np.ndarray], seed: int) -> dict[str, float]:
    """One way of clustering a layer, scored: the mean AMI over ``clusterings`` (one per
    seed, noise as its own label), the first one's bootstrap interval and cluster counts."""
    from latentscape.jobs.core.scores import cluster_counts
    from latentscape.jobs.core.trust import label_baselines

    score, low, high, n_clusters, noise = scorer_columns(scorer)
    interval = label_baselines(labels, clusterings[0], n_permutations=0, seed=seed, clustered=False)[Metric.AMI]
    counts = cluster_counts(clusterings[0])
    return {score: float(np.mean([ami(labels, c) for c in clusterings])), low: interval.ci_low,
            high: interval.ci_high, n_clusters: counts[Metric.N_CLUSTERS], noise: counts[Metric.NOISE_FRACTION]}


def tune(table: pd.DataFrame, config: LayersConfig, store, experiment: str, parent_run_id: str) -> pd.DataFrame:
    """``table`` with ``ami.tuned`` and its cluster counts: for each layer, the best map of
    a ``config.tune``-trial sweep (the sweep job itself, a child run of ``parent_run_id``,
    a study of its own); with ``--holdout``, its AMI over the held-out samples."""
    from latentscape.jobs.sweep import SweepConfig, sweep

    score, low, high, n_clusters, noise = scorer_columns(TUNED)
    tuned = {name: [] for name in (score, low, high, n_clusters, noise)}
    for layer in table[Column.LAYER]:
        found = sweep(SweepConfig(run=config.run, layer=int(layer), trials=config.tune, seed=config.seed,
                                  holdout=config.holdout, parent_run=parent_run_id,
                                  study=f"layers-{parent_run_id}-layer-{int(layer)}"),
                      store=store, experiment=experiment)
        value = found.scores.get(Metric.holdout(Metric.AMI)) if config.holdout else found.scores.get(Metric.AMI)
        tuned[score].append(math.nan if value is None else float(value))
        tuned[low].append(math.nan)
        tuned[high].append(math.nan)
        tuned[n_clusters].append(float(found.scores.get(Metric.N_CLUSTERS, math.nan)))
        tuned[noise].append(float(found.scores.get(Metric.NOISE_FRACTION, math.nan)))
    return table.assign(**tuned)


def collapsed_layers(table: pd.DataFrame, labels: np.ndarray | None) -> dict[str, dict[int, str]]:
    """Cluster score -> {layer: why its clustering collapsed} (:func:`collapse_reason`)."""
    from latentscape.jobs.core.verdict import collapse_reason

    if labels is None:
        return {}
    n_classes = len(np.unique(labels))
    found: dict[str, dict[int, str]] = {}
    for scorer in layer_measures.SCORERS:
        score, _, _, n_clusters, noise = scorer_columns(scorer)
        if n_clusters not in table:
            continue
        for layer, count, share in zip(table[Column.LAYER], table[n_clusters], table[noise]):
            reason = collapse_reason(int(count), n_classes, float(share)) if np.isfinite(count) else None
            if reason:
                found.setdefault(score, {})[int(layer)] = reason
    return found


def verdict_of(table: pd.DataFrame, collapsed: dict[str, dict[int, str]]):
    """The :class:`~latentscape.jobs.core.verdict.Verdict` of a per-layer table (``layers.parquet``)."""
    from latentscape.jobs.core.verdict import layer_verdict

    def column(name):
        return table[name].to_numpy(dtype=np.float64) if name in table else None

    measures = {
        name: (column(name), column(Metric.trust(name, Metric.CI_LOW_SUFFIX)),
               column(Metric.trust(name, Metric.CI_HIGH_SUFFIX)))
        for name in (*layer_measures.VERDICT_LABELLED, *layer_measures.VERDICT_CONTEXT) if name in table
    }
    return layer_verdict(table[Column.LAYER].to_numpy(), measures, lower_is_better=layer_measures.LOWER_IS_BETTER,
                         context=layer_measures.VERDICT_CONTEXT, collapsed=collapsed)


def verdict_frame(verdict) -> pd.DataFrame:
    """``verdict.parquet``: one row per measure."""
    import pandas as pd

    return pd.DataFrame([{
        Column.MEASURE: c.measure, Column.LAYER: -1 if c.layer is None else c.layer, Column.VALUE: c.value,
        Column.CI_LOW: c.ci_low, Column.CI_HIGH: c.ci_high, Column.TIED: ",".join(map(str, c.tied)),
        Column.COLLAPSED: c.collapsed or "",
    } for c in verdict.choices])


def collapse_warning(collapsed: dict[str, dict[int, str]], n_classes: int) -> str | None:
    """One line naming every collapsed cluster score, where, and the fix."""
    if not collapsed:
        return None
    parts = []
    for score, layers in collapsed.items():
        first = min(layers)
        parts.append(f"{score} on layer{'s' if len(layers) > 1 else ''} {','.join(map(str, sorted(layers)))} "
                     f"(layer {first}: {layers[first]})")
    return (f"collapsed clusterings, whose scores measure the clusterer rather than the layer: {'; '.join(parts)}. "
            f"The default ami is k-means at k = {n_classes} on each layer; for the map's score pass "
            "--map-clusterer kmeans, or --tune N to give each layer its best settings")
