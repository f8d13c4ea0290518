"""Compare: any runs side by side, params and metrics, differences highlighted."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import altair as alt
import pandas as pd

from latentscape.tracking.contract import CatalogColumn as C

from latentscape.ui.labels import number

__all__ = ["CompareInfo", "compare_info", "metrics_chart", "PARAM_PREFIX", "METRIC_PREFIX"]

PARAM_PREFIX = C.PARAM_PREFIX
METRIC_PREFIX = C.METRIC_PREFIX
# Run attributes worth a row in the comparison (the rest are ids and times).
_ATTRIBUTES = (C.EXPERIMENT, C.KIND, C.STATUS, C.USER, C.MODEL, C.DATASET_NAME, C.POOLING, C.LAYER, C.SOURCE_RUN)


def _same(values: list) -> bool:
    """True when every value is equal; numbers compared to 1e-9 relative, NaN equal to NaN."""
    present = [v for v in values if not (v is None or (isinstance(v, float) and math.isnan(v)))]
    if len(present) != len(values):
        return len(present) == 0
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return all(math.isclose(v, present[0], rel_tol=1e-9, abs_tol=1e-12) for v in present)
    return len({str(v) for v in present}) <= 1


@dataclass(frozen=True)
class CompareInfo:
    """runs x fields, transposed for reading.

    table: one row per field (``section``: attribute / param / metric; ``field``; then
    one text column per run label); differs: field -> whether the runs disagree;
    metrics: long form (``run``, ``metric``, ``value``, ``scaled`` 0-1 within a metric)
    of the numeric metrics that differ.
    """

    table: pd.DataFrame
    differs: pd.Series
    metrics: pd.DataFrame
    runs: list[str]

    @property
    def n_different(self) -> int:
        return int(self.differs.sum())


def compare_info(run_table: pd.DataFrame, *, labels: Mapping[str, str] | None = None,
                 only_differences: bool = False) -> CompareInfo:
    """run_table: ``queries.run_table`` (one row per run; ``param.<key>``, ``metric.<key>``
    columns); labels: run_id -> display label."""
    labels = dict(labels or {})
    if run_table.empty:
        empty = pd.DataFrame({"section": [], "field": []})
        return CompareInfo(empty, pd.Series(dtype=bool), pd.DataFrame({"run": [], "metric": [], "value": [],
                                                                       "scaled": []}), [])
    run_names = [labels.get(rid, rid) for rid in run_table[C.RUN_ID]]
    fields: list[tuple[str, str, str]] = [("attribute", c, c) for c in _ATTRIBUTES if c in run_table]
    fields += sorted(("param", c.removeprefix(PARAM_PREFIX), c) for c in run_table if c.startswith(PARAM_PREFIX))
    fields += sorted(("metric", c.removeprefix(METRIC_PREFIX), c) for c in run_table if c.startswith(METRIC_PREFIX))
    rows, flags, differs = [], [], {}
    for section, name, column in fields:
        values = [None if pd.isna(v) else v for v in run_table[column].tolist()]
        if all(v is None or v == "" for v in values):
            continue
        differs[column] = not _same(values)
        flags.append(differs[column])
        shown = [number(v) if section == "metric" else ("–" if v is None else str(v)) for v in values]
        rows.append({"section": section, "field": name, **dict(zip(run_names, shown))})
    table = pd.DataFrame(rows, columns=["section", "field", *run_names])
    differ = pd.Series(flags, index=table.index, dtype=bool)
    if only_differences:
        table, differ = table[differ].reset_index(drop=True), differ[differ].reset_index(drop=True)

    metric_rows = []
    for section, name, column in fields:
        if section != "metric" or not differs.get(column) or run_table[column].notna().sum() < 2:
            continue  # a metric only one run has is listed in the table, not compared here
        values = pd.to_numeric(run_table[column], errors="coerce")
        low, high = values.min(), values.max()
        for run, value in zip(run_names, values):
            if pd.notna(value):
                scaled = 0.5 if high == low else float((value - low) / (high - low))
                metric_rows.append({"run": run, "metric": name, "value": float(value), "scaled": scaled})
    metrics = pd.DataFrame(metric_rows, columns=["run", "metric", "value", "scaled"])
    return CompareInfo(table, differ, metrics, run_names)


def metrics_chart(info: CompareInfo) -> alt.LayerChart:
    """Metrics that differ, one row each: every run's value, coloured by its rank within the
    row (dark = highest), so the best and worst run of each metric stand out."""
    base = alt.Chart(info.metrics, title="Metrics that differ (colour: position between the row's min and max)").encode(
        x=alt.X("run:N", title=None, sort=info.runs, axis=alt.Axis(labelAngle=0, labelLimit=260, orient="top")),
        y=alt.Y("metric:N", title=None, axis=alt.Axis(labelLimit=320)),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("scaled:Q", title="min → max", scale=alt.Scale(scheme="blues", domain=[0, 1])),
        tooltip=["run:N", "metric:N", alt.Tooltip("value:Q", format=".4g")],
    )
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text("value:Q", format=".4g"),
        color=alt.condition("datum.scaled > 0.6", alt.value("white"), alt.value("black")),
    )
    return alt.layer(cells, text).properties(height=alt.Step(24))
