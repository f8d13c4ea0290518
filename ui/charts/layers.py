"""Layers charts: per-layer curves of several runs on one chart, the CKA heatmap."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import altair as alt
import pandas as pd

from latentscape.tracking import layer_measures
from latentscape.tracking.contract import CatalogColumn as C
from latentscape.tracking.contract import Column, Metric
from latentscape.ui.charts.palette import category_colours

__all__ = [
    "CURVE_TITLES",
    "DEFAULT_CURVES",
    "CurvesInfo",
    "VERDICT_TITLES",
    "verdict_table",
    "verdict_in_words",
    "CkaInfo",
    "curves_info",
    "curves_chart",
    "cka_info",
    "cka_chart",
    "first_stable_layer",
    "interval_keys",
    "model_layer_curves",
    "CHANCE",
    "AlignedInfo",
    "aligned_info",
    "aligned_chart",
]

# The per-layer measures' titles, the panels shown first and the verdict's measures in
# people's words (verdict.parquet's "measure" column, and the verdict sentence): the registry's.
CURVE_TITLES = layer_measures.CURVE_TITLES
DEFAULT_CURVES = layer_measures.DEFAULT_CURVES
VERDICT_TITLES = layer_measures.VERDICT_TITLES


def verdict_table(verdict: pd.DataFrame) -> pd.DataFrame:
    """``verdict.parquet`` as the Layers page shows it: measure (in words), best layer,
    value, its interval as text, the layers tied with it, and why it collapsed."""
    def interval(low, high) -> str:
        return "" if pd.isna(low) or pd.isna(high) else f"{low:.3f} – {high:.3f}"

    return pd.DataFrame({
        "measure": [VERDICT_TITLES.get(m, m) for m in verdict[Column.MEASURE]],
        "best layer": [None if layer < 0 else int(layer) for layer in verdict[Column.LAYER]],
        "value": verdict[Column.VALUE].round(3),
        "95% interval": [interval(lo, hi) for lo, hi in zip(verdict[Column.CI_LOW], verdict[Column.CI_HIGH])],
        "tied layers": verdict[Column.TIED],
        "collapsed": verdict[Column.COLLAPSED],
    })


def verdict_in_words(sentence: str) -> str:
    """The layers run's verdict sentence with its measures named as the verdict table
    names them: ``probe_accuracy at layer 6, ami.kmeans at layer 5`` -> ``linear probe
    at layer 6, AMI, k-means at k = classes at layer 5``. Other text is left as it is."""
    import re

    keys = sorted(VERDICT_TITLES, key=len, reverse=True)  # ami.kmeans before ami
    pattern = re.compile(r"(?<![\w.])(" + "|".join(re.escape(k) for k in keys) + r")(?![\w.])")
    return pattern.sub(lambda match: VERDICT_TITLES[match.group(1)], sentence or "")


MARK_STABLE = "representation stops changing"
MARK_LARGEST = "largest change"


def first_stable_layer(cka_previous: Mapping[int, float], threshold: float = 0.95) -> int | None:
    """The first layer after which every consecutive pair keeps CKA >= threshold (the
    layers job's finding, recomputed for runs that did not log it).

    cka_previous: layer -> CKA between that layer and the layer before it (layers may be
    non-contiguous, e.g. 0, 3, 6; NaN counts as a change). None when the last pair is
    below the threshold or there is no pair."""
    pairs = sorted((int(layer), float(value)) for layer, value in cka_previous.items() if value is not None)
    stable = None
    for index in range(len(pairs) - 1, -1, -1):
        layer, value = pairs[index]
        if not value >= threshold:  # NaN too
            break
        stable = pairs[index - 1][0] if index > 0 else layer - 1
    return stable


@dataclass(frozen=True)
class CurvesInfo:
    """Per-layer curves of several runs.

    frame: columns ``run`` (a label), ``run_id``, ``key``, ``title``, ``layer``, ``value``,
    ``low`` / ``high`` (the uncertainty drawn around the value, NaN where none) and
    ``interval`` (what low/high are: :data:`BAND_CI` or :data:`BAND_STD`);
    keys: the metric keys present, in display order;
    marks: columns ``run``, ``layer``, ``what`` (``MARK_STABLE`` / ``MARK_LARGEST``);
    chance: columns ``run``, ``key``, ``value``: each curve's chance level (a probe's
    majority-class accuracy, 0 for the adjusted AMI).
    """

    frame: pd.DataFrame
    keys: list[str]
    marks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"run": [], C.LAYER: [], "what": []}))
    chance: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"run": [], C.KEY: [], C.VALUE: []}))

    @property
    def empty(self) -> bool:
        return self.frame.empty


BAND_CI = "95% bootstrap interval"
BAND_STD = "± std (over seeds, or the probe's folds)"
CHANCE = "chance"

def interval_keys(keys: Sequence[str]) -> list[str]:
    """The ``<key>_ci_low`` / ``<key>_ci_high`` metric keys that hold the bootstrap
    intervals of ``keys``' curves (for ``layer_curves`` to fetch with them)."""
    found = []
    for key in keys:
        for source in dict.fromkeys((key, layer_measures.INTERVAL_OF.get(key, key))):
            found += [Metric.trust(source, Metric.CI_LOW_SUFFIX), Metric.trust(source, Metric.CI_HIGH_SUFFIX)]
    return found


def model_layer_curves(table: pd.DataFrame | None) -> pd.DataFrame:
    """A compare-models run's ``model_layers.parquet`` (one row per compared extraction
    and layer: run_id, layer, cka_to_base, probe_accuracy, ami.kmeans) as curve rows
    ``run_id``, ``key``, ``layer``, ``value`` of those extractions (k-means AMI as
    ``ami``, the key the layers run gives it). Empty for None or an empty table."""
    columns = [C.RUN_ID, C.KEY, C.LAYER, C.VALUE]
    if table is None or table.empty or C.RUN_ID not in table or C.LAYER not in table:
        return pd.DataFrame(columns=columns)
    keys = {Metric.CKA_TO_BASE: Metric.CKA_TO_BASE, Metric.PROBE_ACCURACY: Metric.PROBE_ACCURACY,
            Metric.AMI_KMEANS: Metric.AMI}
    present = [k for k in keys if k in table]
    long = table.melt(id_vars=[C.RUN_ID, C.LAYER], value_vars=present, var_name=C.KEY, value_name=C.VALUE)
    long[C.KEY] = long[C.KEY].map(keys)
    long = long[pd.to_numeric(long[C.VALUE], errors="coerce").notna()]
    return long[columns].reset_index(drop=True)


def curves_info(
    curves: pd.DataFrame,
    *,
    labels: Mapping[str, str] | None = None,
    keys: Sequence[str] | None = None,
    marks: Mapping[str, Mapping[str, int | None]] | None = None,
    stable_threshold: float = 0.95,
    chance: Mapping[str, Mapping[str, float]] | None = None,
) -> CurvesInfo:
    """curves: ``queries.layer_curves`` rows (run_id, key, layer, value; run_name optional);
    labels: run_id -> display label; keys: which metrics, in order (default: those present,
    the usual ones first); marks: run_id -> {what: layer} findings logged by the run.
    Where a run logged no stable layer but has ``cka_previous``, it is computed here.
    A curve's bootstrap interval (``<key>_ci_low`` / ``_ci_high`` rows) and its spread over
    seeds (``<key>_std`` rows, e.g. ``ami_std`` of ``layers --seeds``) are never panels of
    their own: they become the columns ``low`` / ``high`` (the interval where logged,
    else value -/+ std; NaN where neither) that the chart draws as a band.
    chance: run_id -> {key: chance level} (e.g. ``probe_chance``); AMI curves get 0."""
    labels = dict(labels or {})
    frame = curves.copy()
    if frame.empty:
        return CurvesInfo(pd.DataFrame({"run": [], C.RUN_ID: [], C.KEY: [], "title": [], C.LAYER: [], C.VALUE: []}), [])
    frame[C.LAYER] = frame[C.LAYER].astype(int)
    frame[C.VALUE] = pd.to_numeric(frame[C.VALUE], errors="coerce")
    present = list(dict.fromkeys(frame[C.KEY]))
    spread_of = {Metric.trust(k, Metric.STD_SUFFIX): k for k in present}
    spreads = frame[frame[C.KEY].isin(list(spread_of))]
    bounds = {}  # (curve key, "low"/"high") -> interval rows
    for key in present:
        for source in dict.fromkeys((key, layer_measures.INTERVAL_OF.get(key, key))):
            for side, suffix in (("low", Metric.CI_LOW_SUFFIX), ("high", Metric.CI_HIGH_SUFFIX)):
                rows = frame[frame[C.KEY] == Metric.trust(source, suffix)]
                if not rows.empty and (key, side) not in bounds:
                    bounds[key, side] = rows
    interval_names = set(interval_keys(present))
    present = [k for k in present if k not in spread_of and k not in interval_names]
    if keys is None:
        ordered = [k for k in CURVE_TITLES if k in present] + [k for k in present if k not in CURVE_TITLES]
    else:
        ordered = [k for k in keys if k in present]
    frame = frame[frame[C.KEY].isin(ordered)]
    fallback = frame[C.RUN_NAME] if C.RUN_NAME in frame else frame[C.RUN_ID]
    frame["run"] = [labels.get(rid) or str(name) for rid, name in zip(frame[C.RUN_ID], fallback)]
    frame["title"] = frame[C.KEY].map(lambda k: CURVE_TITLES.get(k, k))
    frame = frame[["run", C.RUN_ID, C.KEY, "title", C.LAYER, C.VALUE]].sort_values([C.KEY, "run", C.LAYER])
    spread = pd.DataFrame({C.RUN_ID: spreads[C.RUN_ID], C.KEY: spreads[C.KEY].map(spread_of),
                           C.LAYER: spreads[C.LAYER], "spread": spreads[C.VALUE]})
    frame = frame.merge(spread.drop_duplicates([C.RUN_ID, C.KEY, C.LAYER]), on=[C.RUN_ID, C.KEY, C.LAYER],
                        how="left")
    for side in ("low", "high"):
        parts = [pd.DataFrame({C.RUN_ID: rows[C.RUN_ID], C.KEY: key, C.LAYER: rows[C.LAYER].astype(int),
                               f"ci_{side}": pd.to_numeric(rows[C.VALUE], errors="coerce")})
                 for (key, which), rows in bounds.items() if which == side]
        found = (pd.concat(parts, ignore_index=True).drop_duplicates([C.RUN_ID, C.KEY, C.LAYER]) if parts else
                 pd.DataFrame({C.RUN_ID: pd.Series(dtype=object), C.KEY: pd.Series(dtype=object),
                               C.LAYER: pd.Series(dtype=int), f"ci_{side}": pd.Series(dtype=float)}))
        frame = frame.merge(found, on=[C.RUN_ID, C.KEY, C.LAYER], how="left")
    has_ci = frame["ci_low"].notna() & frame["ci_high"].notna()
    frame["low"] = frame["ci_low"].where(has_ci, frame[C.VALUE] - frame["spread"])
    frame["high"] = frame["ci_high"].where(has_ci, frame[C.VALUE] + frame["spread"])
    frame["interval"] = [BAND_CI if ci else (BAND_STD if pd.notna(s) else "") for ci, s in
                         zip(has_ci, frame["spread"])]
    frame = frame.drop(columns=["spread", "ci_low", "ci_high"])

    chance_rows = []
    for run_id, run in frame[[C.RUN_ID, "run"]].drop_duplicates().itertuples(index=False):
        levels = dict((chance or {}).get(run_id, {}))
        for key in set(frame.loc[frame[C.RUN_ID] == run_id, C.KEY]):
            level = levels.get(key, layer_measures.CHANCE.get(key))
            if level is not None and not pd.isna(level):
                chance_rows.append({"run": run, C.KEY: key, C.VALUE: float(level)})
    chance_frame = pd.DataFrame(chance_rows, columns=["run", C.KEY, C.VALUE])

    rows = []
    for run_id, run in frame[[C.RUN_ID, "run"]].drop_duplicates().itertuples(index=False):
        found = dict((marks or {}).get(run_id, {}))
        if found.get(MARK_STABLE) is None:
            cka = curves[(curves[C.RUN_ID] == run_id) & (curves[C.KEY] == Metric.CKA_PREVIOUS)]
            found[MARK_STABLE] = first_stable_layer(dict(zip(cka[C.LAYER], cka[C.VALUE])), stable_threshold)
        for what, layer in found.items():
            if layer is not None:
                rows.append({"run": run, C.LAYER: int(layer), "what": what})
    marks_frame = pd.DataFrame(rows, columns=["run", C.LAYER, "what"])
    return CurvesInfo(frame.reset_index(drop=True), ordered, marks_frame, chance_frame)


def curves_chart(info: CurvesInfo, *, columns: int = 3) -> alt.ConcatChart:
    """One small panel per metric (own y scale), every run a line coloured the same in
    all panels; vertical rules at each run's findings: dashed where the representation
    stops changing, dotted at the largest change."""
    runs = sorted(info.frame["run"].unique())
    color = alt.Color("run:N", title="run", scale=alt.Scale(domain=runs, range=category_colours(runs)),
                      legend=alt.Legend(orient="bottom", columns=1, labelLimit=400))
    dash = alt.StrokeDash("what:N", title="finding", scale=alt.Scale(domain=[MARK_STABLE, MARK_LARGEST],
                                                                     range=[[6, 3], [2, 2]]),
                          legend=alt.Legend(orient="bottom", labelLimit=300))
    panels = []
    for key in info.keys:
        data = info.frame[info.frame[C.KEY] == key]
        line = (
            alt.Chart(data, title=CURVE_TITLES.get(key, key))
            .mark_line(point=True)
            .encode(
                x=alt.X(f"{C.LAYER}:Q", title="layer", axis=alt.Axis(tickMinStep=1, format="d")),
                y=alt.Y(f"{C.VALUE}:Q", title=layer_measures.AXIS_TITLES.get(key, key),
                        scale=alt.Scale(zero=False)),
                color=color,
                tooltip=["run:N", f"{C.LAYER}:Q", alt.Tooltip(f"{C.VALUE}:Q", format=".4f")],
            )
            .properties(width=215, height=160)
        )
        bars = data[data["low"].notna()] if "low" in data else data.iloc[0:0]
        if not bars.empty:  # the bootstrap interval (else the spread over seeds) as a band
            band = alt.Chart(bars).mark_area(opacity=0.18).encode(
                x=f"{C.LAYER}:Q", y="low:Q", y2="high:Q", color=color, detail="run:N",
                tooltip=["run:N", f"{C.LAYER}:Q", alt.Tooltip("interval:N", title="band"),
                         alt.Tooltip("low:Q", format=".4f"), alt.Tooltip("high:Q", format=".4f")])
            line = alt.layer(band, line)
        levels = info.chance[info.chance[C.KEY] == key] if not info.chance.empty else info.chance
        if not levels.empty:  # the chance level: grey, dotted, named on hover
            line = alt.layer(line, alt.Chart(levels.assign(what=CHANCE)).mark_rule(
                color="#888888", strokeDash=[2, 3], strokeWidth=1.5).encode(
                y=f"{C.VALUE}:Q", tooltip=["what:N", "run:N", alt.Tooltip(f"{C.VALUE}:Q", format=".3f")]))
        if info.marks.empty:
            panels.append(line)
            continue
        rules = (
            alt.Chart(info.marks)
            .mark_rule(strokeWidth=1.5)
            .encode(x=f"{C.LAYER}:Q", color=color, strokeDash=dash, tooltip=["run:N", "what:N", f"{C.LAYER}:Q"])
        )
        panels.append(alt.layer(line, rules))
    return alt.concat(*panels, columns=columns).resolve_scale(color="shared", strokeDash="shared")


@dataclass(frozen=True)
class CkaInfo:
    """A CKA matrix in long form: frame columns ``layer_a``, ``layer_b``, ``cka``
    (both triangles and the diagonal, whatever the artifact stored); layers: sorted."""

    frame: pd.DataFrame
    layers: list[int]
    stable_from: int | None = None


def cka_info(cka: pd.DataFrame, *, stable_from: int | None = None) -> CkaInfo:
    """cka: the ``cka.parquet`` artifact, long form (layer_a, layer_b, cka) or a square
    matrix (index and columns = layers). Missing mirrored cells are filled by symmetry,
    a missing diagonal by 1."""
    if cka is None or cka.empty:
        return CkaInfo(pd.DataFrame({Column.LAYER_A: [], Column.LAYER_B: [], Column.CKA: []}), [], stable_from)
    if {Column.LAYER_A, Column.LAYER_B, Column.CKA} <= set(cka.columns):
        long = cka[[Column.LAYER_A, Column.LAYER_B, Column.CKA]].copy()
    else:  # a square matrix, possibly with the layer as a column
        square = cka.set_index(Column.LAYER) if Column.LAYER in cka.columns else cka
        square.columns = [int(str(c).removeprefix("layer_")) for c in square.columns]
        long = square.rename_axis(Column.LAYER_A).reset_index().melt(
            id_vars=Column.LAYER_A, var_name=Column.LAYER_B, value_name=Column.CKA)
    long[Column.LAYER_A] = long[Column.LAYER_A].astype(int)
    long[Column.LAYER_B] = long[Column.LAYER_B].astype(int)
    mirrored = long.rename(columns={Column.LAYER_A: Column.LAYER_B, Column.LAYER_B: Column.LAYER_A})
    layers = sorted(set(long[Column.LAYER_A]) | set(long[Column.LAYER_B]))
    diagonal = pd.DataFrame({Column.LAYER_A: layers, Column.LAYER_B: layers, Column.CKA: 1.0})
    full = (pd.concat([long, mirrored, diagonal], ignore_index=True)
            .drop_duplicates([Column.LAYER_A, Column.LAYER_B], keep="first")
            .sort_values([Column.LAYER_A, Column.LAYER_B]).reset_index(drop=True))
    return CkaInfo(full, layers, stable_from)


def cka_cells(frame: pd.DataFrame, *, title: str, x_title: str = "layer", y_title: str = "layer") -> list:
    """The cells of a CKA heatmap (``layer_a``, ``layer_b``, ``cka`` columns): colour on a
    fixed 0-1 scale and the value written in each cell; A's layers up, B's across."""
    base = alt.Chart(frame, title=title).encode(
        x=alt.X(f"{Column.LAYER_B}:O", title=x_title, axis=alt.Axis(labelAngle=0)),
        y=alt.Y(f"{Column.LAYER_A}:O", title=y_title, sort="descending"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color(f"{Column.CKA}:Q", title="CKA", scale=alt.Scale(domain=[0, 1], scheme="viridis")),
        tooltip=[f"{Column.LAYER_A}:O", f"{Column.LAYER_B}:O", alt.Tooltip(f"{Column.CKA}:Q", format=".3f")],
    )
    text = base.mark_text(fontSize=10).encode(
        text=alt.Text(f"{Column.CKA}:Q", format=".2f"),
        color=alt.condition(f"datum.{Column.CKA} > 0.6", alt.value("black"), alt.value("white")),
    )
    return [cells, text]


def cka_chart(info: CkaInfo, *, title: str = "Linear CKA between layers") -> alt.LayerChart:
    """Heatmap with the value in each cell; a frame around the block of layers that no
    longer change (from ``stable_from`` to the last layer)."""
    step = max(22, min(48, 360 // max(len(info.layers), 1)))
    layers = cka_cells(info.frame, title=title)
    if info.stable_from is not None and info.layers:
        block = info.frame[(info.frame[Column.LAYER_A] >= info.stable_from)
                           & (info.frame[Column.LAYER_B] >= info.stable_from)]
        layers.append(
            alt.Chart(block).mark_rect(fill=None, stroke="red", strokeWidth=1.5).encode(
                x=f"{Column.LAYER_B}:O", y=alt.Y(f"{Column.LAYER_A}:O", sort="descending"))
        )
    # Discrete axes are sized by step (a fixed height squeezes the bands).
    return alt.layer(*layers).properties(width=alt.Step(step), height=alt.Step(step))


@dataclass(frozen=True)
class AlignedInfo:
    """One layer of a layers run's aligned maps (``aligned_maps.parquet``).

    points: sample_id, x, y, label of ``layer``; layers: every layer in the table, sorted;
    x_domain / y_domain: the extent over all layers, so that every layer is drawn on the
    same axes and a point moves on screen only where its neighbourhood changed; labels:
    every label in the table, sorted, so that a label keeps its colour from layer to layer."""

    points: pd.DataFrame
    layers: list[int]
    layer: int | None
    x_domain: tuple[float, float]
    y_domain: tuple[float, float]
    labels: list[str]


def aligned_info(frame: pd.DataFrame | None, layer: int | None = None) -> AlignedInfo:
    """frame: ``aligned_maps.parquet`` (layer, sample_id, x, y, label); layer: which one to
    show (default, or when absent: the first)."""
    columns = [Column.SAMPLE_ID, Column.X, Column.Y, Column.LABEL]
    if frame is None or frame.empty or Column.LAYER not in frame:
        return AlignedInfo(pd.DataFrame({c: [] for c in columns}), [], None, (0.0, 1.0), (0.0, 1.0), [])
    layers = sorted(int(v) for v in frame[Column.LAYER].unique())
    chosen = layer if layer in layers else layers[0]

    def extent(column: str) -> tuple[float, float]:
        values = pd.to_numeric(frame[column], errors="coerce")
        low, high = float(values.min()), float(values.max())
        pad = 0.03 * (high - low or 1.0)
        return low - pad, high + pad

    points = frame[frame[Column.LAYER] == chosen].copy()
    points[Column.LABEL] = points[Column.LABEL].astype(str) if Column.LABEL in points else ""
    labels = sorted(frame[Column.LABEL].astype(str).unique()) if Column.LABEL in frame else []
    return AlignedInfo(points[[c for c in columns if c in points]].reset_index(drop=True), layers, chosen,
                       extent(Column.X), extent(Column.Y), labels)


def aligned_chart(info: AlignedInfo, *, size: int = 420) -> alt.Chart:
    """The chosen layer's points on the axes shared by all layers, coloured by label."""
    color = alt.Color(f"{Column.LABEL}:N", title="label", scale=alt.Scale(domain=info.labels or None))
    return (
        alt.Chart(info.points, title=f"layer {info.layer}")
        .mark_circle(size=18, opacity=0.75)
        .encode(
            x=alt.X(f"{Column.X}:Q", title=None, scale=alt.Scale(domain=list(info.x_domain)), axis=None),
            y=alt.Y(f"{Column.Y}:Q", title=None, scale=alt.Scale(domain=list(info.y_domain)), axis=None),
            color=color,
            tooltip=[f"{Column.SAMPLE_ID}:N", f"{Column.LABEL}:N"],
        )
        .properties(width=size, height=size)
    )
