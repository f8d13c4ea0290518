"""Map charts: 2D maps side by side, coloured by true label or cluster, with a box
selection whose samples are listed (and highlighted in the other maps), each cluster
named at its centre (from the map's ``clusters.parquet``), and the query of a search by
a new text drawn as a marker with rings on its nearest samples."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from latentscape.tracking.contract import Column
from latentscape.ui.labels import truncate

__all__ = [
    "COLOR_BY",
    "BRUSH",
    "MAX_CHART_POINTS",
    "NOISE",
    "MapInfo",
    "map_info",
    "map_chart",
    "selection_box",
    "points_in_box",
    "encode_box",
    "decode_box",
    "cluster_labels",
    "cluster_table",
    "QUERY",
]

COLOR_BY = (Column.LABEL, Column.CLUSTER)
NOISE = "noise"
BRUSH = "brush"
QUERY = "query"  # the name of the search marker's layer data
LABEL_TEXT = "text"  # cluster_labels' column holding a cluster's name
# Vega-Lite in the browser stays responsive to about this many points per map (SVG/canvas
# marks, one tooltip each); above it the chart shows a seeded sample and says so.
MAX_CHART_POINTS = 20_000


@dataclass(frozen=True)
class MapInfo:
    """One map ready to draw.

    frame: columns ``sample_id``, ``x``, ``y``, ``label``, ``cluster`` (strings; HDBSCAN
    noise -1 as ``"noise"``), ``text`` (one line, truncated for the tooltip),
    ``colour`` (the ``color_by`` column) and ``highlight`` (True for samples selected
    in another map, all True when nothing is selected);
    n_points: rows of the artifact; n_shown: rows drawn (a seeded sample above
    ``max_points``); n_clusters excludes noise.
    """

    frame: pd.DataFrame
    color_by: str
    n_points: int
    n_shown: int
    n_clusters: int
    noise_fraction: float
    has_labels: bool


def _as_category(values: pd.Series) -> pd.Series:
    def one(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
            return NOISE if int(value) == -1 else str(int(value))
        return str(value)

    return values.map(one)


def map_info(
    points: pd.DataFrame,
    *,
    color_by: str = Column.LABEL,
    highlight: Collection[str] | None = None,
    max_points: int = MAX_CHART_POINTS,
    seed: int = 0,
) -> MapInfo:
    """points: a ``map.parquet`` frame (sample_id, x, y, cluster, label, text, ...);
    color_by: ``label`` or ``cluster`` (label falls back to cluster when the data set
    has no labels); highlight: sample ids selected elsewhere (None: no selection)."""
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, not {color_by!r}")
    n_points = len(points)
    frame = pd.DataFrame({
        Column.SAMPLE_ID: points[Column.SAMPLE_ID].astype(str) if Column.SAMPLE_ID in points
        else pd.Series(range(n_points)).astype(str),
        Column.X: pd.to_numeric(points[Column.X]),
        Column.Y: pd.to_numeric(points[Column.Y]),
        Column.LABEL: _as_category(points[Column.LABEL]) if Column.LABEL in points else "",
        Column.CLUSTER: _as_category(points[Column.CLUSTER]) if Column.CLUSTER in points else "",
        Column.TEXT: points[Column.TEXT].map(truncate) if Column.TEXT in points else "",
    })
    has_labels = bool((frame[Column.LABEL] != "").any())
    if color_by == Column.LABEL and not has_labels:
        color_by = Column.CLUSTER
    clusters = frame[Column.CLUSTER]
    noise = float((clusters == NOISE).mean()) if n_points else 0.0
    n_clusters = int(clusters[(clusters != NOISE) & (clusters != "")].nunique())
    if n_points > max_points:
        frame = frame.sample(n=max_points, random_state=seed).sort_index()
    frame["colour"] = frame[color_by]
    frame["highlight"] = True if highlight is None else frame[Column.SAMPLE_ID].isin(set(map(str, highlight)))
    return MapInfo(frame.reset_index(drop=True), color_by, n_points, len(frame), n_clusters, noise, has_labels)


def cluster_labels(clusters: pd.DataFrame | None, *, top: int = 3) -> pd.DataFrame:
    """Where to write each cluster's name: columns ``cluster``, ``x``, ``y``, ``text``.

    clusters: a ``clusters.parquet`` frame (None or empty: no labels). The name is the
    cluster's top ``top`` keywords, else (no texts: tabular data) its majority label and
    purity, else its id. Noise and clusters without a finite position get no label."""
    columns = [Column.CLUSTER, Column.X, Column.Y, LABEL_TEXT]
    if clusters is None or clusters.empty or Column.X not in clusters or Column.Y not in clusters:
        return pd.DataFrame(columns=columns)
    rows = []
    for row in clusters.to_dict("records"):
        if bool(row.get(Column.NOISE, False)) or int(row.get(Column.CLUSTER, -1)) == -1:
            continue
        x, y = float(row[Column.X]), float(row[Column.Y])
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        keywords = [str(k) for k in _as_list(row.get(Column.KEYWORDS))][:top]
        majority, purity = row.get(Column.MAJORITY_LABEL), row.get(Column.PURITY)
        if keywords:
            text = ", ".join(keywords)
        elif majority is not None and not (isinstance(majority, float) and math.isnan(majority)):
            text = f"{majority} ({float(purity):.0%})" if purity is not None and not pd.isna(purity) else str(majority)
        else:
            text = f"cluster {int(row[Column.CLUSTER])}"
        rows.append({Column.CLUSTER: int(row[Column.CLUSTER]), Column.X: x, Column.Y: y, LABEL_TEXT: text})
    return pd.DataFrame(rows, columns=columns)


def _as_list(value: Any) -> list:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return list(value)


def cluster_table(clusters: pd.DataFrame | None) -> pd.DataFrame:
    """The clusters table as shown: cluster (``noise`` for -1), size, share, majority
    label, purity, keywords (joined) and the most central sample's text, largest first."""
    shown = [Column.CLUSTER, Column.SIZE, Column.SHARE, Column.MAJORITY_LABEL, Column.PURITY, Column.KEYWORDS,
             "typical sample"]
    if clusters is None or clusters.empty:
        return pd.DataFrame(columns=shown)
    frame = clusters.copy()
    frame["typical sample"] = [truncate(texts[0]) if len(_as_list(texts)) else ""
                               for texts in frame.get(Column.CENTRAL_TEXTS, pd.Series([None] * len(frame)))]
    frame[Column.KEYWORDS] = [", ".join(map(str, _as_list(k))) for k in frame.get(Column.KEYWORDS,
                                                                                     pd.Series([None] * len(frame)))]
    frame[Column.CLUSTER] = [NOISE if int(c) == -1 else str(int(c)) for c in frame[Column.CLUSTER]]
    frame = frame.sort_values(Column.SIZE, ascending=False, kind="stable") if Column.SIZE in frame else frame
    return frame[[c for c in shown if c in frame]].reset_index(drop=True)


def map_chart(
    info: MapInfo,
    *,
    title: str = "",
    box: Mapping[str, list[float]] | None = None,
    height: int = 440,
    labels: pd.DataFrame | None = None,
    query: Mapping[str, Any] | None = None,
    neighbours: Collection[str] | None = None,
) -> alt.Chart | alt.LayerChart:
    """Scatter of the map; hover shows the sample's text; drag a box to select
    (the selection is named ``brush``; ``box`` restores one, e.g. from a shared link).

    labels: :func:`cluster_labels` (each cluster named at its centre); query: the place
    of a searched text (``x``, ``y``, ``text``), drawn as a black diamond; neighbours:
    sample ids of its nearest samples, ringed. With any of them the chart is layered,
    the scatter (and its brush) first."""
    brush = alt.selection_interval(name=BRUSH, encodings=["x", "y"],
                                   value={k: list(v) for k, v in box.items()} if box else alt.Undefined)
    colours = sorted(info.frame["colour"].unique(), key=lambda v: (v == NOISE, len(v), v))
    scheme = "tableau10" if len(colours) <= 10 else "tableau20"
    colour = alt.Color("colour:N", title=info.color_by, scale=alt.Scale(domain=colours, scheme=scheme),
                       legend=alt.Legend(orient="right", symbolLimit=30))
    tooltip = [alt.Tooltip(f"{Column.TEXT}:N", title="text"), alt.Tooltip(f"{Column.LABEL}:N", title="label"),
               alt.Tooltip(f"{Column.CLUSTER}:N", title="cluster"), alt.Tooltip(f"{Column.SAMPLE_ID}:N", title="id")]
    scatter = (
        alt.Chart(info.frame, title=title)
        .mark_circle(size=24 if info.n_shown < 3000 else 10)
        .encode(
            # 2D map coordinates have no units: no labels, ticks or grid.
            x=alt.X(f"{Column.X}:Q", title=None, axis=alt.Axis(labels=False, ticks=False, grid=False)),
            y=alt.Y(f"{Column.Y}:Q", title=None, axis=alt.Axis(labels=False, ticks=False, grid=False)),
            color=alt.condition(brush, colour, alt.value("lightgray")),
            opacity=alt.condition("datum.highlight", alt.value(0.85), alt.value(0.12)),
            tooltip=tooltip,
        )
        .add_params(brush)
        .properties(height=height)
    )
    layers: list[alt.Chart] = []
    if neighbours and query is not None:
        ringed = info.frame[info.frame[Column.SAMPLE_ID].isin(set(map(str, neighbours)))]
        if not ringed.empty:
            layers.append(alt.Chart(ringed).mark_point(size=140, filled=False, color="black", strokeWidth=1.5)
                          .encode(x=f"{Column.X}:Q", y=f"{Column.Y}:Q",
                                  tooltip=[alt.Tooltip(f"{Column.TEXT}:N", title="neighbour")]))
    if labels is not None and not labels.empty:
        base = alt.Chart(labels).encode(x=f"{Column.X}:Q", y=f"{Column.Y}:Q", text=f"{LABEL_TEXT}:N")
        # A white outline first, the text on top: readable over any colour.
        layers.append(base.mark_text(fontSize=11, fontWeight="bold", stroke="white", strokeWidth=3, opacity=0.9))
        layers.append(base.mark_text(fontSize=11, fontWeight="bold", color="#222222"))
    if query is not None:
        marker = pd.DataFrame({Column.X: [float(query[Column.X])], Column.Y: [float(query[Column.Y])],
                               LABEL_TEXT: [truncate(query.get(LABEL_TEXT, ""))], "name": [QUERY]})
        layers.append(alt.Chart(marker).mark_point(shape="diamond", size=320, filled=True, color="black",
                                                  stroke="white", strokeWidth=2, opacity=1)
                      .encode(x=f"{Column.X}:Q", y=f"{Column.Y}:Q",
                              tooltip=[alt.Tooltip(f"{LABEL_TEXT}:N", title="query")]))
    return alt.layer(scatter, *layers).properties(height=height) if layers else scatter


def selection_box(state: Any) -> dict[str, list[float]] | None:
    """The box of a ``st.altair_chart(..., on_select="rerun")`` state, or None.

    state: the returned selection state (a dict-like ``{"selection": {"brush":
    {"x": [x0, x1], "y": [y0, y1]}}}``); anything else gives None."""
    try:
        selection = state["selection"] if "selection" in state else state.get("selection")
        brush = selection[BRUSH] if BRUSH in selection else None
    except (TypeError, KeyError, AttributeError):
        return None
    if not brush or Column.X not in brush or Column.Y not in brush:
        return None
    try:
        x = sorted(float(v) for v in brush[Column.X])
        y = sorted(float(v) for v in brush[Column.Y])
    except (TypeError, ValueError):
        return None
    return {Column.X: x, Column.Y: y} if len(x) == 2 and len(y) == 2 else None


def points_in_box(points: pd.DataFrame, box: Mapping[str, list[float]] | None) -> pd.DataFrame:
    """Rows of ``points`` (any frame with x, y) inside ``box`` (edges included)."""
    if box is None:
        return points.iloc[0:0]
    (x0, x1), (y0, y1) = sorted(box[Column.X]), sorted(box[Column.Y])
    inside = points[Column.X].between(x0, x1) & points[Column.Y].between(y0, y1)
    return points[inside]


def encode_box(box: Mapping[str, list[float]] | None) -> str | None:
    """A box as URL text: ``x0,x1,y0,y1`` (6 significant digits)."""
    if box is None:
        return None
    return ",".join(f"{v:.6g}" for v in (*box[Column.X], *box[Column.Y]))


def decode_box(text: str | None) -> dict[str, list[float]] | None:
    """The inverse of :func:`encode_box`; None for anything malformed (a link edited by hand)."""
    if not text:
        return None
    try:
        values = [float(part) for part in str(text).split(",")]
    except ValueError:
        return None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return None
    return {Column.X: sorted(values[:2]), Column.Y: sorted(values[2:])}
