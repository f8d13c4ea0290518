"""Map charts: 2D maps side by side, coloured by true label or cluster, with a box
selection whose samples are listed (and highlighted in the other maps)."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from tracking.contract import Column
from ui.labels import truncate

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
]

COLOR_BY = (Column.LABEL, Column.CLUSTER)
NOISE = "noise"
BRUSH = "brush"
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


def map_chart(info: MapInfo, *, title: str = "", box: Mapping[str, list[float]] | None = None,
              height: int = 440) -> alt.Chart:
    """Scatter of the map; hover shows the sample's text; drag a box to select
    (the selection is named ``brush``; ``box`` restores one, e.g. from a shared link)."""
    brush = alt.selection_interval(name=BRUSH, encodings=["x", "y"],
                                   value={k: list(v) for k, v in box.items()} if box else alt.Undefined)
    colours = sorted(info.frame["colour"].unique(), key=lambda v: (v == NOISE, len(v), v))
    scheme = "tableau10" if len(colours) <= 10 else "tableau20"
    colour = alt.Color("colour:N", title=info.color_by, scale=alt.Scale(domain=colours, scheme=scheme),
                       legend=alt.Legend(orient="right", symbolLimit=30))
    tooltip = [alt.Tooltip(f"{Column.TEXT}:N", title="text"), alt.Tooltip(f"{Column.LABEL}:N", title="label"),
               alt.Tooltip(f"{Column.CLUSTER}:N", title="cluster"), alt.Tooltip(f"{Column.SAMPLE_ID}:N", title="id")]
    return (
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
