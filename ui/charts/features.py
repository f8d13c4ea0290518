"""Sparse-feature charts (the ``sae`` job): a browsable feature list, one feature's top
examples with their activations, a feature x label AUC heatmap, and a map of the same
extraction coloured by one feature's activation. Each chart is a pure info step (frames
in, a small dataclass out) and a thin Altair render step."""

from __future__ import annotations

import math
from dataclasses import dataclass

import altair as alt
import numpy as np
import pandas as pd

from latentscape.tracking.contract import Column
from latentscape.ui.labels import truncate

__all__ = ["SORTS", "FeatureListInfo", "feature_list_info", "ExamplesInfo", "examples_info", "examples_chart",
           "HeatmapInfo", "heatmap_info", "heatmap_chart", "FeatureMapInfo", "feature_map_info", "feature_map_chart"]

# Sort key -> (column, what the user reads)
SORTS = {Column.AUC: "label AUC", Column.DENSITY: "density"}


def _words(value) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return [str(v) for v in list(value)]


@dataclass(frozen=True)
class FeatureListInfo:
    """The features to browse: frame ``feature``, ``density``, ``auc``, ``best_label``,
    ``keywords`` (one string), ``text`` (the top example), filtered and sorted; n_total:
    features in the run; n_dead: those that never fire (hidden unless asked)."""

    frame: pd.DataFrame
    n_total: int
    n_dead: int


def feature_list_info(features: pd.DataFrame, *, query: str = "", sort: str = Column.AUC,
                      include_dead: bool = False) -> FeatureListInfo:
    """features: ``features.parquet``. query: words that must each appear in a feature's
    keywords or top texts (case-insensitive); sort: a key of SORTS, highest first (ties:
    lower feature first)."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {list(SORTS)}, not {sort!r}")
    keywords = features[Column.KEYWORDS].map(_words) if Column.KEYWORDS in features else [[]] * len(features)
    texts = features[Column.TOP_TEXTS].map(_words) if Column.TOP_TEXTS in features else [[]] * len(features)
    frame = pd.DataFrame({
        Column.FEATURE: pd.to_numeric(features[Column.FEATURE]).astype(int),
        Column.DENSITY: pd.to_numeric(features[Column.DENSITY]),
        Column.AUC: pd.to_numeric(features[Column.AUC]) if Column.AUC in features else np.nan,
        Column.BEST_LABEL: features[Column.BEST_LABEL] if Column.BEST_LABEL in features else None,
        Column.KEYWORDS: [", ".join(words) for words in keywords],
        Column.TEXT: [truncate(t[0]) if t else "" for t in texts],
    })
    dead = frame[Column.DENSITY] <= 0
    n_dead = int(dead.sum())
    if not include_dead:
        frame = frame[~dead]
    terms = [t for t in query.lower().split() if t]
    if terms:
        haystack = [(" ".join(k) + " " + " ".join(t)).lower() for k, t in zip(keywords, texts)]
        keep = pd.Series([all(term in text for term in terms) for text in haystack], index=features.index)
        frame = frame[keep.loc[frame.index]]
    frame = frame.sort_values([sort, Column.FEATURE], ascending=[False, True], na_position="last")
    return FeatureListInfo(frame.reset_index(drop=True), len(features), n_dead)


@dataclass(frozen=True)
class ExamplesInfo:
    """One feature's top examples: frame ``rank``, ``sample_id``, ``text``, ``token`` (""
    for pooled embeddings), ``activation``, ``share`` (activation / the feature's top
    one, 0..1: how strongly to highlight); keywords; best_label and its auc."""

    feature: int
    frame: pd.DataFrame
    keywords: list[str]
    best_label: str | None
    auc: float
    density: float


def examples_info(features: pd.DataFrame, feature: int) -> ExamplesInfo:
    row = features[pd.to_numeric(features[Column.FEATURE]) == int(feature)].iloc[0]
    activations = [float(v) for v in _words(row.get(Column.TOP_ACTIVATIONS))]
    samples = _words(row.get(Column.TOP_SAMPLES))
    texts = _words(row.get(Column.TOP_TEXTS))
    tokens = _words(row.get(Column.TOP_TOKENS)) or [""] * len(samples)
    top = max(activations, default=0.0)
    frame = pd.DataFrame({
        "rank": range(1, len(samples) + 1), Column.SAMPLE_ID: samples, Column.TEXT: texts, "token": tokens,
        Column.ACTIVATION: activations, "share": [a / top if top > 0 else 0.0 for a in activations],
    })
    label = row.get(Column.BEST_LABEL)
    auc = row.get(Column.AUC)
    return ExamplesInfo(int(feature), frame, _words(row.get(Column.KEYWORDS)),
                        None if label is None or (isinstance(label, float) and math.isnan(label)) else str(label),
                        float(auc) if auc is not None else math.nan, float(row[Column.DENSITY]))


def examples_chart(info: ExamplesInfo) -> alt.Chart:
    """One bar per top example, its length the activation; the text on hover."""
    frame = info.frame.assign(example=[f"{r}. {truncate(t, 70)}" for r, t in zip(info.frame["rank"],
                                                                               info.frame[Column.TEXT])])
    return (
        alt.Chart(frame, title=f"feature {info.feature}: top activations")
        .mark_bar()
        .encode(
            x=alt.X(f"{Column.ACTIVATION}:Q", title="activation"),
            y=alt.Y("example:N", sort=None, title=None, axis=alt.Axis(labelLimit=420)),
            color=alt.Color("share:Q", scale=alt.Scale(scheme="oranges", domain=[0, 1]), legend=None),
            tooltip=[alt.Tooltip(f"{Column.TEXT}:N", title="text"), alt.Tooltip("token:N"),
                     alt.Tooltip(f"{Column.ACTIVATION}:Q", format=".4f"), f"{Column.SAMPLE_ID}:N"],
        )
        .properties(height=alt.Step(22))
    )


@dataclass(frozen=True)
class HeatmapInfo:
    """Feature x label AUCs: frame ``feature`` (string, for a discrete axis), ``label``,
    ``auc``; features: the row order (each label's best features, label by label)."""

    frame: pd.DataFrame
    features: list[str]
    labels: list[str]


def heatmap_info(feature_labels: pd.DataFrame, *, per_label: int = 2) -> HeatmapInfo:
    """feature_labels: ``feature_labels.parquet`` (feature, label, auc). Keeps the
    ``per_label`` features of highest AUC for each label (each feature once)."""
    if feature_labels is None or feature_labels.empty:
        return HeatmapInfo(pd.DataFrame(columns=[Column.FEATURE, Column.LABEL, Column.AUC]), [], [])
    table = feature_labels.assign(**{Column.AUC: pd.to_numeric(feature_labels[Column.AUC]),
                                     Column.LABEL: feature_labels[Column.LABEL].astype(str)})
    labels = sorted(table[Column.LABEL].unique())
    chosen: list[int] = []
    for label in labels:
        best = table[table[Column.LABEL] == label].sort_values([Column.AUC, Column.FEATURE], ascending=[False, True])
        added = 0
        for feature in best[Column.FEATURE].astype(int):
            if added >= per_label:
                break
            if feature not in chosen:
                chosen.append(int(feature))
                added += 1
    frame = table[table[Column.FEATURE].astype(int).isin(chosen)].copy()
    frame[Column.FEATURE] = frame[Column.FEATURE].astype(int).astype(str)
    return HeatmapInfo(frame[[Column.FEATURE, Column.LABEL, Column.AUC]].reset_index(drop=True),
                       [str(f) for f in chosen], labels)


def heatmap_chart(info: HeatmapInfo) -> alt.LayerChart:
    """AUC of each chosen feature (rows) for each label (columns); 0.5 is chance."""
    base = alt.Chart(info.frame).encode(
        # Every row and column named: a band axis would drop labels it finds crowded.
        x=alt.X(f"{Column.LABEL}:N", title="label", sort=info.labels,
                axis=alt.Axis(labelOverlap=False, labelAngle=-40, labelLimit=160)),
        y=alt.Y(f"{Column.FEATURE}:N", title="feature", sort=info.features,
                axis=alt.Axis(labelOverlap=False, labelFontSize=10)),
    )
    cells = base.mark_rect().encode(
        color=alt.Color(f"{Column.AUC}:Q", title="AUC", scale=alt.Scale(scheme="viridis", domain=[0.5, 1])),
        tooltip=[f"{Column.FEATURE}:N", f"{Column.LABEL}:N", alt.Tooltip(f"{Column.AUC}:Q", format=".3f")],
    )
    text = base.mark_text(fontSize=9).encode(
        text=alt.Text(f"{Column.AUC}:Q", format=".2f"),
        color=alt.condition(f"datum.{Column.AUC} > 0.8", alt.value("black"), alt.value("white")),
    )
    return alt.layer(cells, text).properties(title="feature x label AUC", width=alt.Step(40), height=alt.Step(20))


@dataclass(frozen=True)
class FeatureMapInfo:
    """A map's points with one feature's activation: frame ``sample_id``, ``x``, ``y``,
    ``label``, ``text``, ``activation`` (0 where it does not fire); n_active: samples
    where it fires."""

    feature: int
    frame: pd.DataFrame
    n_active: int


def feature_map_info(points: pd.DataFrame, activations: pd.DataFrame, feature: int) -> FeatureMapInfo:
    """points: ``map.parquet``; activations: ``activations.parquet`` (sample_id,
    feature, activation) of an SAE of the same extraction."""
    chosen = activations[pd.to_numeric(activations[Column.FEATURE]) == int(feature)]
    by_sample = dict(zip(chosen[Column.SAMPLE_ID].astype(str), pd.to_numeric(chosen[Column.ACTIVATION])))
    ids = points[Column.SAMPLE_ID].astype(str)
    frame = pd.DataFrame({
        Column.SAMPLE_ID: ids, Column.X: pd.to_numeric(points[Column.X]), Column.Y: pd.to_numeric(points[Column.Y]),
        Column.LABEL: points[Column.LABEL].astype(str) if Column.LABEL in points else "",
        Column.TEXT: points[Column.TEXT].map(truncate) if Column.TEXT in points else "",
        Column.ACTIVATION: ids.map(by_sample).fillna(0.0).astype(float),
    })
    frame = frame.sort_values(Column.ACTIVATION, kind="stable").reset_index(drop=True)  # active points on top
    return FeatureMapInfo(int(feature), frame, int((frame[Column.ACTIVATION] > 0).sum()))


def feature_map_chart(info: FeatureMapInfo, *, title: str = "", height: int = 420) -> alt.Chart:
    """The map, each point coloured by the feature's activation (grey where it is 0)."""
    return (
        alt.Chart(info.frame, title=title or f"feature {info.feature} on the map")
        .mark_circle(size=40)
        .encode(
            x=alt.X(f"{Column.X}:Q", axis=None), y=alt.Y(f"{Column.Y}:Q", axis=None),
            color=alt.condition(f"datum.{Column.ACTIVATION} > 0",
                                alt.Color(f"{Column.ACTIVATION}:Q", title="activation",
                                          scale=alt.Scale(scheme="inferno", reverse=True)),
                                alt.value("#d9d9d9")),
            tooltip=[alt.Tooltip(f"{Column.TEXT}:N", title="text"), f"{Column.LABEL}:N",
                     alt.Tooltip(f"{Column.ACTIVATION}:Q", format=".4f")],
        )
        .properties(height=height)
    )
