"""Direction charts: every sample projected on one concept direction, and the angles
between the directions of different concepts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import altair as alt
import numpy as np
import pandas as pd

from latentscape.tracking.contract import Column
from latentscape.ui.labels import truncate

__all__ = ["ProjectionInfo", "projection_info", "projection_chart", "AngleInfo", "angle_info", "angle_chart"]


@dataclass(frozen=True)
class ProjectionInfo:
    """Projections of every sample on one direction.

    frame: ``sample_id``, ``label``, ``text``, ``projection``, ``group`` (``"this
    concept"`` for samples of the direction's label, else ``"other"``);
    separation: difference of the two groups' mean projections over the pooled standard
    deviation (Cohen's d; NaN with fewer than two samples in a group)."""

    direction: str
    method: str
    directions: list[str]
    methods: list[str]
    frame: pd.DataFrame
    separation: float


def projection_info(projections: pd.DataFrame, *, direction: str | None = None,
                    method: str | None = None) -> ProjectionInfo:
    """projections: ``projections.parquet`` (sample_id, label, direction, method,
    projection; text optional). Defaults: the first direction and method logged."""
    directions = sorted(projections[Column.DIRECTION].astype(str).unique()) if not projections.empty else []
    methods = (list(dict.fromkeys(projections[Column.METHOD].astype(str)))
               if Column.METHOD in projections and not projections.empty else [""])
    direction = direction if direction in directions else (directions[0] if directions else "")
    method = method if method in methods else methods[0]
    chosen = projections[projections[Column.DIRECTION].astype(str) == direction] if directions else projections
    if Column.METHOD in chosen and method:
        chosen = chosen[chosen[Column.METHOD].astype(str) == method]
    labels = chosen[Column.LABEL].astype(str) if Column.LABEL in chosen else pd.Series("", index=chosen.index)
    frame = pd.DataFrame({
        Column.SAMPLE_ID: chosen[Column.SAMPLE_ID].astype(str) if Column.SAMPLE_ID in chosen else "",
        Column.LABEL: labels,
        Column.TEXT: chosen[Column.TEXT].map(truncate) if Column.TEXT in chosen else "",
        Column.PROJECTION: pd.to_numeric(chosen[Column.PROJECTION]),
        "group": np.where(labels == direction, "this concept", "other"),
    }).reset_index(drop=True)
    inside = frame.loc[frame["group"] == "this concept", Column.PROJECTION]
    outside = frame.loc[frame["group"] == "other", Column.PROJECTION]
    separation = math.nan
    if len(inside) > 1 and len(outside) > 1:
        pooled = math.sqrt((inside.var() + outside.var()) / 2)
        separation = float((inside.mean() - outside.mean()) / pooled) if pooled > 0 else math.inf
    return ProjectionInfo(direction, method, directions, methods, frame, separation)


def projection_chart(info: ProjectionInfo) -> alt.Chart:
    """One row per label, every sample a tick at its projection; the direction's own
    label highlighted. A good direction puts its own row to the right of all others."""
    order = (info.frame.groupby(Column.LABEL)[Column.PROJECTION].mean().sort_values(ascending=False).index.tolist()
             if not info.frame.empty else [])
    return (
        alt.Chart(info.frame, title=f"projection on the direction of {info.direction!r} ({info.method})")
        .mark_tick(thickness=2, size=14)
        .encode(
            x=alt.X(f"{Column.PROJECTION}:Q", title="projection"),
            y=alt.Y(f"{Column.LABEL}:N", title="label", sort=order),
            color=alt.Color("group:N", title=None, scale=alt.Scale(domain=["this concept", "other"],
                                                                   range=["#d62728", "#8c8c8c"])),
            tooltip=[alt.Tooltip(f"{Column.TEXT}:N", title="text"), f"{Column.LABEL}:N", f"{Column.SAMPLE_ID}:N",
                     alt.Tooltip(f"{Column.PROJECTION}:Q", format=".3f")],
        )
        .properties(height=alt.Step(26))
    )


@dataclass(frozen=True)
class AngleInfo:
    """Angles between directions of one method: frame ``direction_a``, ``direction_b``,
    ``cosine``, ``angle`` (degrees); mean_abs_cosine over distinct pairs (0: orthogonal
    concepts); agreement: direction -> cosine between two methods' directions."""

    method: str
    frame: pd.DataFrame
    mean_abs_cosine: float
    agreement: dict[str, float]


def angle_info(cosines: pd.DataFrame, *, method: str | None = None) -> AngleInfo:
    """cosines: ``direction_cosines.parquet`` (direction_a, direction_b, cosine; method_a,
    method_b when the run logged several methods)."""
    frame = cosines.copy()
    has_methods = {Column.METHOD_A, Column.METHOD_B} <= set(frame.columns)
    agreement: dict[str, float] = {}
    if has_methods and not frame.empty:
        across = frame[(frame[Column.METHOD_A] != frame[Column.METHOD_B])
                       & (frame[Column.DIRECTION_A] == frame[Column.DIRECTION_B])]
        agreement = {str(d): float(c) for d, c in zip(across[Column.DIRECTION_A], across[Column.COSINE])}
        methods = list(dict.fromkeys(frame[Column.METHOD_A].astype(str)))
        method = method if method in methods else methods[0]
        frame = frame[(frame[Column.METHOD_A] == method) & (frame[Column.METHOD_B] == method)]
    frame = frame[[Column.DIRECTION_A, Column.DIRECTION_B, Column.COSINE]].astype(
        {Column.DIRECTION_A: str, Column.DIRECTION_B: str})
    frame[Column.COSINE] = pd.to_numeric(frame[Column.COSINE]).clip(-1, 1)
    frame["angle"] = np.degrees(np.arccos(frame[Column.COSINE]))
    distinct = frame[frame[Column.DIRECTION_A] != frame[Column.DIRECTION_B]]
    mean_abs = float(distinct[Column.COSINE].abs().mean()) if len(distinct) else math.nan
    return AngleInfo(method or "", frame.reset_index(drop=True), mean_abs, agreement)


def angle_chart(info: AngleInfo) -> alt.LayerChart:
    """Heatmap of cosines between directions (red: aligned, blue: opposed, white:
    orthogonal), each cell labelled with its cosine, as the legend reads (the angle on hover)."""
    n = max(1, info.frame[Column.DIRECTION_A].nunique())
    step = max(22, min(44, 420 // n))
    base = alt.Chart(info.frame, title=f"cosine between directions ({info.method})" if info.method
                     else "cosine between directions").encode(
        x=alt.X(f"{Column.DIRECTION_B}:N", title="direction", axis=alt.Axis(labelOverlap=False, labelAngle=-30)),
        y=alt.Y(f"{Column.DIRECTION_A}:N", title="direction", axis=alt.Axis(labelOverlap=False)),
    )
    cells = base.mark_rect().encode(
        # -1 (blue, opposed) to 1 (red, aligned), the legend ascending as the numbers in the cells.
        color=alt.Color(f"{Column.COSINE}:Q", title="cosine",
                        scale=alt.Scale(scheme="redblue", domain=[-1, 1], reverse=True)),
        tooltip=[f"{Column.DIRECTION_A}:N", f"{Column.DIRECTION_B}:N", alt.Tooltip(f"{Column.COSINE}:Q", format=".3f"),
                 alt.Tooltip("angle:Q", format=".1f", title="angle (°)")],
    )
    text = base.mark_text(fontSize=10).encode(
        text=alt.Text(f"{Column.COSINE}:Q", format=".2f"),
        color=alt.condition(f"abs(datum.{Column.COSINE}) > 0.6", alt.value("white"), alt.value("black")),
    )
    return alt.layer(cells, text).properties(width=alt.Step(step), height=alt.Step(step))
