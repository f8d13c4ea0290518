"""Interpolation charts: neighbours along a path, the path's geometry, and analogy
accuracy per section and layer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import altair as alt
import pandas as pd

from latentscape.tracking.contract import CatalogColumn as C
from latentscape.tracking.contract import Column, Metric
from latentscape.ui.labels import truncate

__all__ = [
    "OVERALL",
    "PathInfo",
    "path_info",
    "neighbour_chart",
    "geometry_chart",
    "neighbour_table",
    "AnalogyInfo",
    "analogy_info",
    "analogy_chart",
]

OVERALL = "overall"


@dataclass(frozen=True)
class PathInfo:
    """One walk of one run.

    neighbours: ``step``, ``rank``, ``sample_id``, ``label`` (text), ``text`` (one line),
    ``distance`` for the chosen method; geometry: ``step``, ``t``, ``measure``, ``value``
    (cosine to A, cosine to B, norm); methods: the methods the run logged (paths first,
    then ``arithmetic`` if any); images: step -> artifact path of the decoded image.
    """

    method: str
    methods: list[str]
    neighbours: pd.DataFrame
    geometry: pd.DataFrame
    images: dict[int, str]
    n_steps: int
    k: int


_GEOMETRY = {Column.COSINE_FROM: "cosine to A", Column.COSINE_TO: "cosine to B", Column.NORM: "norm"}


def path_info(path: pd.DataFrame, neighbours: pd.DataFrame, *, method: str | None = None) -> PathInfo:
    """path: ``path.parquet`` (method, step, t, norm, cosine_from, cosine_to, image);
    neighbours: ``neighbours.parquet`` (method, step, rank, sample_id, label, text,
    distance); method: which walk (default: the first one logged)."""
    walked = list(dict.fromkeys(path[Column.METHOD])) if not path.empty else []
    others = [m for m in dict.fromkeys(neighbours[Column.METHOD]) if m not in walked] if not neighbours.empty else []
    methods = walked + others
    if method not in methods:
        method = methods[0] if methods else ""
    near = neighbours[neighbours[Column.METHOD] == method].copy() if not neighbours.empty else neighbours
    if not near.empty:
        near[Column.LABEL] = near[Column.LABEL].map(lambda v: "" if v is None or pd.isna(v) else str(v))
        near[Column.TEXT] = near[Column.TEXT].map(truncate)
        near = near[[Column.STEP, Column.RANK, Column.SAMPLE_ID, Column.LABEL, Column.TEXT, Column.DISTANCE]]
        near = near.sort_values([Column.STEP, Column.RANK]).reset_index(drop=True)
    walk = path[path[Column.METHOD] == method] if not path.empty else path
    present = [c for c in _GEOMETRY if c in walk.columns]
    if walk.empty or not present:
        geometry = pd.DataFrame({Column.STEP: [], Column.T: [], "measure": [], Column.VALUE: []})
    else:
        geometry = walk.melt(id_vars=[Column.STEP, Column.T], value_vars=present, var_name="measure",
                             value_name=Column.VALUE)
        geometry["measure"] = geometry["measure"].map(_GEOMETRY)
    images = {}
    if Column.IMAGE in walk.columns:
        images = {int(s): str(p) for s, p in zip(walk[Column.STEP], walk[Column.IMAGE]) if isinstance(p, str) and p}
    n_steps = int(near[Column.STEP].nunique()) if not near.empty else len(walk)
    k = int(near[Column.RANK].max()) if not near.empty else 0
    return PathInfo(method, methods, near, geometry, images, n_steps, k)


def neighbour_chart(info: PathInfo, *, title: str = "") -> alt.Chart:
    """Steps left to right, nearest samples top to bottom, coloured by label; hover shows
    the text. The colour changing along a row is the walk crossing a class boundary."""
    return (
        alt.Chart(info.neighbours, title=title or f"nearest samples along the {info.method} path")
        .mark_rect(stroke="white", strokeWidth=1)
        .encode(
            x=alt.X(f"{Column.STEP}:O", title="step (A → B)"),
            y=alt.Y(f"{Column.RANK}:O", title="neighbour rank"),
            color=alt.Color(f"{Column.LABEL}:N", title="label", scale=alt.Scale(scheme="tableau10")),
            tooltip=[alt.Tooltip(f"{Column.TEXT}:N", title="text"), f"{Column.LABEL}:N", f"{Column.SAMPLE_ID}:N",
                     alt.Tooltip(f"{Column.DISTANCE}:Q", format=".3f", title="cosine distance"),
                     f"{Column.STEP}:O", f"{Column.RANK}:O"],
        )
        .properties(height=alt.Step(24))
    )


def geometry_chart(info: PathInfo) -> alt.LayerChart:
    """Cosine of each step to A and to B (left axis) and the norm (dashed, right axis)
    against t: slerp keeps the norm between the end points', lerp dips in between."""
    base = alt.Chart(info.geometry).encode(
        x=alt.X(f"{Column.T}:Q", title="t (A → B)"),
        color=alt.Color("measure:N", title=None, legend=alt.Legend(orient="top")),
        tooltip=["measure:N", f"{Column.STEP}:O", alt.Tooltip(f"{Column.VALUE}:Q", format=".4f")],
    )
    cosines = base.transform_filter("datum.measure != 'norm'").mark_line(point=True).encode(
        y=alt.Y(f"{Column.VALUE}:Q", title="cosine", scale=alt.Scale(zero=False)))
    norm = base.transform_filter("datum.measure == 'norm'").mark_line(strokeDash=[5, 3]).encode(
        y=alt.Y(f"{Column.VALUE}:Q", title="norm", scale=alt.Scale(zero=False)))
    return alt.layer(cosines, norm).resolve_scale(y="independent").properties(
        title="the path: cosine to the end points, and norm", height=300)


def neighbour_table(info: PathInfo) -> pd.DataFrame:
    """Steps as rows, ranks as columns, ``text [label]`` in each cell (for reading)."""
    if info.neighbours.empty:
        return pd.DataFrame()
    cells = info.neighbours.assign(
        cell=[f"{truncate(t, 70)} [{lab}]" if lab else truncate(t, 70)
              for t, lab in zip(info.neighbours[Column.TEXT], info.neighbours[Column.LABEL])])
    table = cells.pivot(index=Column.STEP, columns=Column.RANK, values="cell")
    table.columns = [f"#{rank}" for rank in table.columns]
    return table


@dataclass(frozen=True)
class AnalogyInfo:
    """Analogy accuracy per (run, section, layer): frame columns ``run``, ``run_id``,
    ``section`` (``overall`` for the whole file), ``layer``, ``accuracy``; best: run ->
    (layer, accuracy) of the overall curve's maximum."""

    frame: pd.DataFrame
    sections: list[str]
    best: dict[str, tuple[int, float]]
    at: int


def analogy_info(metrics: pd.DataFrame, *, labels: Mapping[str, str] | None = None, at: int = 1) -> AnalogyInfo:
    """metrics: ``queries.metrics`` rows (run_id, key, value, step) of analogies runs;
    keys ``accuracy_at_<at>`` (overall) and ``accuracy_at_<at>.<section>``, step = layer."""
    labels = dict(labels or {})
    base = Metric.ACCURACY_AT_1 if at == 1 else Metric.ACCURACY_AT_5
    prefix = base + "."
    if metrics.empty:
        return AnalogyInfo(pd.DataFrame({"run": [], C.RUN_ID: [], "section": [], C.LAYER: [], "accuracy": []}),
                           [], {}, at)
    keys = metrics[C.KEY].astype(str)
    chosen = metrics[(keys == base) | keys.str.startswith(prefix)].copy()
    chosen["section"] = chosen[C.KEY].map(lambda k: OVERALL if k == base else k.removeprefix(prefix))
    chosen["run"] = chosen[C.RUN_ID].map(lambda rid: labels.get(rid, rid))
    chosen[C.LAYER] = chosen[C.STEP].astype(int)
    chosen["accuracy"] = pd.to_numeric(chosen[C.VALUE], errors="coerce")
    frame = chosen[["run", C.RUN_ID, "section", C.LAYER, "accuracy"]].sort_values(["run", "section", C.LAYER])
    sections = [OVERALL] + sorted(s for s in frame["section"].unique() if s != OVERALL)
    sections = [s for s in sections if s in set(frame["section"])]
    best = {}
    for run, group in frame[frame["section"] == OVERALL].groupby("run"):
        top = group.loc[group["accuracy"].idxmax()]
        best[run] = (int(top[C.LAYER]), float(top["accuracy"]))
    return AnalogyInfo(frame.reset_index(drop=True), sections, best, at)


def analogy_chart(info: AnalogyInfo) -> alt.Chart:
    """Accuracy against layer, one line per section (overall thick), one panel per run."""
    base = alt.Chart(info.frame).encode(
        x=alt.X(f"{C.LAYER}:Q", title="layer", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("accuracy:Q", title=f"accuracy@{info.at}", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("section:N", title="section", sort=info.sections),
        size=alt.condition(f"datum.section == '{OVERALL}'", alt.value(3.5), alt.value(1.5)),
        tooltip=["run:N", "section:N", f"{C.LAYER}:Q", alt.Tooltip("accuracy:Q", format=".3f")],
    )
    return base.mark_line(point=True).properties(width=300, height=220).facet(
        facet=alt.Facet("run:N", title=None), columns=2)
