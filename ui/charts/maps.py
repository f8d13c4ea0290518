"""Map charts: 2D maps side by side, coloured by true label or cluster, with a box
selection whose samples are listed (and highlighted in the other maps), each cluster
named at its centre (from the map's ``clusters.parquet``), and the query of a search by
a new text drawn as a marker with rings on its nearest samples."""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from latentscape.tracking.contract import Column
from latentscape.ui.charts.palette import NOISE, category_colours
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
    "placed_labels",
    "legend_width_px",
    "fitted_domains",
    "cluster_table",
    "QUERY",
]

COLOR_BY = (Column.LABEL, Column.CLUSTER)
BRUSH = "brush"
QUERY = "query"  # the name of the search marker's layer data
LABEL_TEXT = "text"  # cluster_labels' column holding a cluster's name
_UNSELECTED = "#e6e6e6"  # points outside a box selection: lighter than noise's grey
# Vega-Lite in the browser stays responsive to about this many points per map (SVG/canvas
# marks, one tooltip each); above it the chart shows a seeded sample and says so.
MAX_CHART_POINTS = 20_000


@dataclass(frozen=True)
class MapInfo:
    """One map ready to draw.

    frame: columns ``sample_id``, ``x``, ``y``, ``label``, ``cluster`` (strings; HDBSCAN
    noise -1 as ``"noise"``), ``text`` (one line, truncated for the tooltip),
    ``colour`` (the ``color_by`` column) and ``highlight`` (True for samples selected
    in another map, all True when nothing is selected), ``cluster name`` (the cluster's
    id and name for the tooltip);
    n_points: rows of the artifact; n_shown: rows drawn (a seeded sample above
    ``max_points``); n_clusters excludes noise; x_domain / y_domain: the axes' extents,
    fitted to the points (no forced zero) at equal units on both axes for a plot of
    ``aspect`` (width / height); categories / colours: the colour scale, largest
    category first, noise always :data:`~palette.NOISE_GREY`.
    """

    frame: pd.DataFrame
    color_by: str
    n_points: int
    n_shown: int
    n_clusters: int
    noise_fraction: float
    has_labels: bool
    x_domain: tuple[float, float] = (0.0, 1.0)
    y_domain: tuple[float, float] = (0.0, 1.0)
    categories: tuple[str, ...] = ()
    colours: tuple[str, ...] = ()


def _as_category(values: pd.Series) -> pd.Series:
    def one(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
            return NOISE if int(value) == -1 else str(int(value))
        return str(value)

    return values.map(one)


def fitted_domains(x: pd.Series, y: pd.Series, *, aspect: float = 1.0,
                   margin: float = 0.04) -> tuple[tuple[float, float], tuple[float, float]]:
    """The extents of a map's axes: the points' box plus ``margin`` on each side, the
    shorter side widened about its centre so that one unit is as long on both axes in a
    plot ``aspect`` times as wide as high (a map's distances are the same in x and y).
    No forced zero. Empty or non-finite input: (0, 1) on both axes."""
    xs, ys = pd.to_numeric(x, errors="coerce"), pd.to_numeric(y, errors="coerce")
    finite = np.isfinite(xs) & np.isfinite(ys)
    if not finite.any():
        return (0.0, 1.0), (0.0, 1.0)
    x0, x1, y0, y1 = float(xs[finite].min()), float(xs[finite].max()), float(ys[finite].min()), float(ys[finite].max())
    width, height = max(x1 - x0, 1e-9), max(y1 - y0, 1e-9)
    width, height = width * (1 + 2 * margin), height * (1 + 2 * margin)
    aspect = aspect if aspect > 0 else 1.0
    if width / height < aspect:
        width = height * aspect
    else:
        height = width / aspect
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (cx - width / 2, cx + width / 2), (cy - height / 2, cy + height / 2)


def map_info(
    points: pd.DataFrame,
    *,
    color_by: str = Column.LABEL,
    highlight: Collection[str] | None = None,
    max_points: int = MAX_CHART_POINTS,
    seed: int = 0,
    aspect: float = 1.0,
    cluster_names: Mapping[str, str] | None = None,
) -> MapInfo:
    """points: a ``map.parquet`` frame (sample_id, x, y, cluster, label, text, ...);
    color_by: ``label`` or ``cluster`` (label falls back to cluster when the data set
    has no labels); highlight: sample ids selected elsewhere (None: no selection);
    aspect: the plot's width / height (for equal units on both axes); cluster_names:
    cluster id (as text) -> name, shown on hover."""
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
    x_domain, y_domain = fitted_domains(frame[Column.X], frame[Column.Y], aspect=aspect)
    # Largest category first: the strongest colours go to the biggest groups; noise last.
    counts = frame[color_by].value_counts()
    categories = sorted(counts.index, key=lambda v: (v == NOISE, v == "", -counts[v], len(v), v))
    if n_points > max_points:
        frame = frame.sample(n=max_points, random_state=seed).sort_index()
    frame["colour"] = frame[color_by]
    frame["highlight"] = True if highlight is None else frame[Column.SAMPLE_ID].isin(set(map(str, highlight)))
    names = dict(cluster_names or {})
    frame["cluster name"] = [f"{c}: {names[c]}" if c in names else c for c in frame[Column.CLUSTER]]
    return MapInfo(frame.reset_index(drop=True), color_by, n_points, len(frame), n_clusters, noise, has_labels,
                   x_domain, y_domain, tuple(categories), tuple(category_colours(categories)))


def cluster_labels(clusters: pd.DataFrame | None, *, top: int = 3) -> pd.DataFrame:
    """Where to write each cluster's name: columns ``cluster``, ``x``, ``y``, ``text``,
    ``size`` (its samples; 0 when the table has no sizes), largest cluster first.

    clusters: a ``clusters.parquet`` frame (None or empty: no labels). The name is the
    cluster's top ``top`` keywords, else (no texts: tabular data) its majority label and
    purity, else its id. Noise and clusters without a finite position get no label."""
    columns = [Column.CLUSTER, Column.X, Column.Y, LABEL_TEXT, Column.SIZE]
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
        size = row.get(Column.SIZE)
        rows.append({Column.CLUSTER: int(row[Column.CLUSTER]), Column.X: x, Column.Y: y, LABEL_TEXT: text,
                     Column.SIZE: 0 if size is None or pd.isna(size) else int(size)})
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(Column.SIZE, ascending=False, kind="stable").reset_index(drop=True)


# Label boxes as Vega draws 11 px bold text: about 0.62 em a character, 1.3 em a line.
LABEL_FONT_PX = 11
_CHAR_EM, _LINE_EM, _GAP_PX = 0.62, 1.3, 4


def placed_labels(labels: pd.DataFrame, *, x_domain: tuple[float, float], y_domain: tuple[float, float],
                  width_px: float, height_px: float, font_px: float = LABEL_FONT_PX) -> pd.DataFrame:
    """The cluster names that fit on the map without overlapping: the largest cluster's
    first, then each next one whose text box (centred on its cluster) overlaps no name
    already placed and stays inside the plot. The rest are named on hover and in the
    legend. labels: :func:`cluster_labels` (largest first); the domains and the plot's
    size in pixels convert text sizes to map units."""
    if labels is None or labels.empty:
        return labels
    x_per_px = (x_domain[1] - x_domain[0]) / max(width_px, 1)
    y_per_px = (y_domain[1] - y_domain[0]) / max(height_px, 1)
    kept: list[tuple[float, float, float, float]] = []
    keep = []
    for row in labels.itertuples(index=False):
        x, y, text = getattr(row, Column.X), getattr(row, Column.Y), str(getattr(row, LABEL_TEXT))
        half_w = (len(text) * _CHAR_EM * font_px + _GAP_PX) / 2 * x_per_px
        half_h = (_LINE_EM * font_px + _GAP_PX) / 2 * y_per_px
        box = (x - half_w, x + half_w, y - half_h, y + half_h)
        inside = (box[0] >= x_domain[0] and box[1] <= x_domain[1] and box[2] >= y_domain[0]
                  and box[3] <= y_domain[1])
        clear = all(box[1] <= o[0] or o[1] <= box[0] or box[3] <= o[2] or o[3] <= box[2] for o in kept)
        keep.append(inside and clear)
        if inside and clear:
            kept.append(box)
    return labels[keep].reset_index(drop=True)


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
    legend_names: Mapping[str, str] | None = None,
) -> alt.Chart | alt.LayerChart:
    """Scatter of the map; hover shows the sample's text; drag a box to select
    (the selection is named ``brush``; ``box`` restores one, e.g. from a shared link).

    labels: :func:`placed_labels` (cluster names written at their centres); legend_names:
    cluster id -> name, written beside the colour in the legend; query: the place
    of a searched text (``x``, ``y``, ``text``), drawn as a black diamond; neighbours:
    sample ids of its nearest samples, ringed. With any of them the chart is layered,
    the scatter (and its brush) first."""
    brush = alt.selection_interval(name=BRUSH, encodings=["x", "y"],
                                   value={k: list(v) for k, v in box.items()} if box else alt.Undefined)
    categories = list(info.categories) or sorted(info.frame["colour"].unique())
    colours = list(info.colours) or category_colours(categories)
    legend_names = legend_names or {}
    # The legend names each cluster (its keywords), placed on the map or not.
    named = {c: t for c, t in zip(categories, _legend_texts(categories, legend_names)) if c in legend_names}
    label_expr = (f"({_js_object(named)})[datum.label] || datum.label" if named else alt.Undefined)
    colour = alt.Color("colour:N", title=info.color_by, scale=alt.Scale(domain=categories, range=colours),
                       legend=alt.Legend(orient="right", symbolLimit=30, labelLimit=_LEGEND_LABEL_LIMIT_PX,
                                         labelExpr=label_expr))
    tooltip = [alt.Tooltip(f"{Column.TEXT}:N", title="text"), alt.Tooltip(f"{Column.LABEL}:N", title="label"),
               alt.Tooltip("cluster name:N", title="cluster"), alt.Tooltip(f"{Column.SAMPLE_ID}:N", title="id")]
    # Fitted to the points at equal units on both axes (map_info's domains), no zero forced in.
    x_scale = alt.Scale(domain=list(info.x_domain), zero=False, nice=False)
    y_scale = alt.Scale(domain=list(info.y_domain), zero=False, nice=False)
    scatter = (
        alt.Chart(info.frame, title=title)
        .mark_circle(size=24 if info.n_shown < 3000 else 10)
        .encode(
            # 2D map coordinates have no units: no labels, ticks or grid.
            x=alt.X(f"{Column.X}:Q", title=None, scale=x_scale, axis=alt.Axis(labels=False, ticks=False, grid=False)),
            y=alt.Y(f"{Column.Y}:Q", title=None, scale=y_scale, axis=alt.Axis(labels=False, ticks=False, grid=False)),
            color=alt.condition(brush, colour, alt.value(_UNSELECTED)),
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
        layers.append(base.mark_text(fontSize=LABEL_FONT_PX, fontWeight="bold", stroke="white", strokeWidth=3,
                                     opacity=0.9))
        layers.append(base.mark_text(fontSize=LABEL_FONT_PX, fontWeight="bold", color="#222222"))
    if query is not None:
        marker = pd.DataFrame({Column.X: [float(query[Column.X])], Column.Y: [float(query[Column.Y])],
                               LABEL_TEXT: [truncate(query.get(LABEL_TEXT, ""))], "name": [QUERY]})
        layers.append(alt.Chart(marker).mark_point(shape="diamond", size=320, filled=True, color="black",
                                                  stroke="white", strokeWidth=2, opacity=1)
                      .encode(x=f"{Column.X}:Q", y=f"{Column.Y}:Q",
                              tooltip=[alt.Tooltip(f"{LABEL_TEXT}:N", title="query")]))
    return alt.layer(scatter, *layers).properties(height=height) if layers else scatter


_LEGEND_LABEL_LIMIT_PX = 220


def _legend_texts(categories: Collection[str], legend_names: Mapping[str, str] | None) -> list[str]:
    names = legend_names or {}
    return [truncate(f"{c}: {names[c]}", 40) if c in names else str(c) for c in categories]


def legend_width_px(categories: Collection[str], legend_names: Mapping[str, str] | None = None) -> float:
    """About how wide the colour legend at a map's right is drawn (symbol, padding and
    its longest label at 11 px, at most the label limit): the plot gets the rest of the
    panel's width, which equal units on both axes need to know."""
    longest = max((len(t) for t in _legend_texts(categories, legend_names)), default=0)
    return 36 + min(_LEGEND_LABEL_LIMIT_PX, longest * 6.3)


def _js_object(names: Mapping[str, str]) -> str:
    """A Vega expression object literal of ``names`` (JSON text is one)."""
    return json.dumps(dict(names))


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
