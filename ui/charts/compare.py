"""Compare: any runs side by side. Key scores first, each with its interval and p-value;
then the settings; timings and baselines apart (folded away on the page); the scores
that differ drawn as differences from the first run, with their intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import altair as alt
import pandas as pd

from latentscape.tracking.contract import CatalogColumn as C
from latentscape.tracking.contract import Kind, Metric
from latentscape.tracking.scores import SCORE_NAMES, SUMMARY
from latentscape.ui.labels import number, score_value_text

__all__ = ["CompareInfo", "compare_info", "metrics_chart", "default_runs", "metric_section", "PARAM_PREFIX",
           "METRIC_PREFIX", "SCORE", "SETTING", "PARAM", "METRIC", "TIMING", "BASELINE"]

PARAM_PREFIX = C.PARAM_PREFIX
METRIC_PREFIX = C.METRIC_PREFIX
# Sections of the comparison, in the order they are shown.
SCORE, SETTING, PARAM, METRIC, TIMING, BASELINE = "score", "attribute", "param", "metric", "timing", "baseline"
_FOLDED = (TIMING, BASELINE)
# Run attributes worth a row in the comparison (the rest are ids and times).
_ATTRIBUTES = (C.EXPERIMENT, C.KIND, C.STATUS, C.USER, C.MODEL, C.DATASET_NAME, C.POOLING, C.LAYER, C.SOURCE_RUN)
# Trust measures of a score: shown in the score's cell, not as rows of their own.
_TRUST = (Metric.CI_LOW_SUFFIX, Metric.CI_HIGH_SUFFIX, Metric.P_VALUE_SUFFIX, Metric.STD_SUFFIX)
_TIMING_ENDS = ("_seconds", "_per_s", "_ms_per_trial")
_BASELINE_ENDS = (Metric.PERM_MEAN_SUFFIX, "_chance")
# Runs that are not worth opening the page on (one of a sweep's many trials), and kinds
# whose comparison is mostly settings, tried only when no kind with scores has a pair.
_NOT_DEFAULT = (Kind.TRIAL.value,)
_LAST_RESORT = (Kind.EXTRACT.value, Kind.FINETUNE.value, Kind.COMPARE_MODELS.value, Kind.AUTOENCODER.value)


def _same(values: list) -> bool:
    """True when every value is equal; numbers compared to 1e-9 relative, NaN equal to NaN."""
    present = [v for v in values if not (v is None or (isinstance(v, float) and math.isnan(v)))]
    if len(present) != len(values):
        return len(present) == 0
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return all(math.isclose(v, present[0], rel_tol=1e-9, abs_tol=1e-12) for v in present)
    return len({str(v) for v in present}) <= 1


def metric_section(name: str, names: set[str]) -> str | None:
    """Where a metric goes: ``score`` (a map score, or any metric logged with an interval
    or p-value), ``timing``, ``baseline`` (a permutation mean, a chance level), ``metric``
    (the rest); None for a trust measure of a metric in ``names`` (its score's cell shows it)."""
    for suffix in _TRUST:
        if name.endswith(suffix) and name.removesuffix(suffix) in names:
            return None
    if name.endswith(_TIMING_ENDS):
        return TIMING
    if name.endswith(_BASELINE_ENDS):
        return BASELINE
    has_trust = any(Metric.trust(name, s) in names for s in (Metric.CI_LOW_SUFFIX, Metric.P_VALUE_SUFFIX))
    return SCORE if name in SCORE_NAMES or has_trust else METRIC


# Scores whose differences do not share a 0-1 axis with the others (a count, nats).
_OFF_SCALE = (Metric.N_CLUSTERS, Metric.MUTUAL_INFO, Metric.MUTUAL_INFO + Metric.CLUSTERED_SUFFIX)


def _charted(name: str) -> bool:
    """Whether a score's difference is drawn: a map's summary scores on the common 0-1
    scale (the rest stay in the table), any other score with an interval."""
    return name not in _OFF_SCALE and (name in SUMMARY or name not in SCORE_NAMES)


def _score_order(name: str) -> tuple:
    return (SUMMARY.index(name) if name in SUMMARY else len(SUMMARY), name)


@dataclass(frozen=True)
class CompareInfo:
    """runs x fields, transposed for reading.

    table: one row per field (``section``: score / attribute / param / metric; ``field``;
    one text column per run label, a score's with its interval and p-value; with two runs
    a ``difference`` column, second minus first), key scores first; folded: the same for
    timings and baselines; differs: per row of ``table``, whether the runs disagree;
    metrics: long form (``run``, ``metric``, ``value``, ``low``, ``high``,
    ``difference``, ``diff_low``, ``diff_high``: value and interval minus the first
    run's value) of the key scores that differ; reference: the first run's label.
    """

    table: pd.DataFrame
    differs: pd.Series
    metrics: pd.DataFrame
    runs: list[str]
    folded: pd.DataFrame = None  # type: ignore[assignment]
    n_folded_different: int = 0

    @property
    def n_different(self) -> int:
        return int(self.differs.sum()) + self.n_folded_different

    @property
    def reference(self) -> str:
        return self.runs[0] if self.runs else ""


_METRIC_COLUMNS = ["run", "metric", "value", "low", "high", "difference", "diff_low", "diff_high"]


def _cell(run_table: pd.DataFrame, index: int, name: str) -> str:
    """The score of one run with its interval and p-value, e.g. ``0.812 [0.790, 0.831] p=0.0099``."""
    return score_value_text(name, run_table.iloc[index].to_dict(), prefix=METRIC_PREFIX, spread=False)


def compare_info(run_table: pd.DataFrame, *, labels: Mapping[str, str] | None = None,
                 only_differences: bool = False) -> CompareInfo:
    """run_table: ``queries.run_table`` (one row per run, the first the reference;
    ``param.<key>``, ``metric.<key>`` columns); labels: run_id -> display label."""
    labels = dict(labels or {})
    if run_table.empty:
        empty = pd.DataFrame({"section": [], "field": []})
        return CompareInfo(empty, pd.Series(dtype=bool), pd.DataFrame(columns=_METRIC_COLUMNS), [], empty)
    run_names = [labels.get(rid, rid) for rid in run_table[C.RUN_ID]]
    run_table = run_table.reset_index(drop=True)
    metric_names = {c.removeprefix(METRIC_PREFIX) for c in run_table if c.startswith(METRIC_PREFIX)
                    and run_table[c].notna().any()}
    sections = {name: metric_section(name, metric_names) for name in metric_names}
    fields: list[tuple[str, str, str]] = sorted(
        ((SCORE, n, METRIC_PREFIX + n) for n, s in sections.items() if s == SCORE), key=lambda f: _score_order(f[1]))
    fields += [(SETTING, c, c) for c in _ATTRIBUTES if c in run_table]
    fields += sorted((PARAM, c.removeprefix(PARAM_PREFIX), c) for c in run_table if c.startswith(PARAM_PREFIX))
    for section in (METRIC, TIMING, BASELINE):
        fields += sorted((section, n, METRIC_PREFIX + n) for n, s in sections.items() if s == section)
    two = len(run_names) == 2
    rows, flags, differs = {False: [], True: []}, {False: [], True: []}, {}
    for section, name, column in fields:
        values = [None if pd.isna(v) else v for v in run_table[column].tolist()]
        if all(v is None or v == "" for v in values):
            continue
        differs[column] = not _same(values)
        if section == SCORE:
            shown = [_cell(run_table, i, name) for i in range(len(values))]
        elif section in (METRIC, TIMING, BASELINE):
            shown = [number(v) for v in values]
        else:
            shown = ["–" if v is None else str(v) for v in values]
        row = {"section": section, "field": name, **dict(zip(run_names, shown))}
        if two:
            numeric = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
            row["difference"] = ("" if section in (SETTING, PARAM) or numeric.isna().any() or not differs[column]
                                 else f"{numeric[1] - numeric[0]:+.3g}")
        folded = section in _FOLDED
        rows[folded].append(row)
        flags[folded].append(differs[column])
    columns = ["section", "field", *run_names, *(["difference"] if two else [])]
    table, folded = (pd.DataFrame(rows[f], columns=columns) for f in (False, True))
    differ = pd.Series(flags[False], index=table.index, dtype=bool)
    n_folded = int(sum(flags[True]))
    if only_differences:
        table, differ = table[differ].reset_index(drop=True), differ[differ].reset_index(drop=True)
        folded = folded[pd.Series(flags[True], index=folded.index, dtype=bool)].reset_index(drop=True)

    metric_rows = []
    for section, name, column in fields:
        if section != SCORE or not differs.get(column) or run_table[column].notna().sum() < 2 or not _charted(name):
            continue  # a score only one run has (or off the common scale) is listed in the table only
        values = pd.to_numeric(run_table[column], errors="coerce")
        reference = values.iloc[0]
        if pd.isna(reference):
            continue
        missing = pd.Series(math.nan, index=run_table.index)
        lows = pd.to_numeric(run_table.get(METRIC_PREFIX + Metric.trust(name, Metric.CI_LOW_SUFFIX), missing),
                             errors="coerce")
        highs = pd.to_numeric(run_table.get(METRIC_PREFIX + Metric.trust(name, Metric.CI_HIGH_SUFFIX), missing),
                              errors="coerce")
        for i, (run, value) in enumerate(zip(run_names, values)):
            if pd.isna(value):
                continue
            low, high = float(lows.iloc[i]), float(highs.iloc[i])
            metric_rows.append({"run": run, "metric": name, "value": float(value), "low": low, "high": high,
                                "difference": float(value - reference), "diff_low": low - reference,
                                "diff_high": high - reference})
    metrics = pd.DataFrame(metric_rows, columns=_METRIC_COLUMNS)
    return CompareInfo(table, differ, metrics, run_names, folded, n_folded)


def metrics_chart(info: CompareInfo) -> alt.LayerChart:
    """The key scores that differ (a map's summary scores on the common 0-1 scale; counts
    and nats stay in the table), one row each: every run's difference from the first
    run (a dot) with its 95% interval shifted the same way (a bar); the first run sits
    on the zero line, its own interval around it. Overlapping bars: not a difference."""
    runs = info.runs
    from latentscape.ui.charts.palette import category_colours

    colour = alt.Color("run:N", title="run", scale=alt.Scale(domain=runs, range=category_colours(runs)),
                       legend=alt.Legend(orient="bottom", columns=1, labelLimit=500))
    order = sorted(info.metrics["metric"].unique(), key=_score_order)
    base = alt.Chart(info.metrics, title=f"Key scores: difference from {info.reference}").encode(
        y=alt.Y("metric:N", title=None, sort=order, axis=alt.Axis(labelLimit=320)),
        yOffset=alt.YOffset("run:N", sort=runs),
        color=colour,
    )
    tooltip = ["run:N", "metric:N", alt.Tooltip("value:Q", format=".4g"),
               alt.Tooltip("difference:Q", format="+.4g"), alt.Tooltip("low:Q", format=".4g", title="95% low"),
               alt.Tooltip("high:Q", format=".4g", title="95% high")]
    bars = base.transform_filter("isValid(datum.diff_low) && isFinite(datum.diff_low)").mark_rule(
        strokeWidth=2).encode(x="diff_low:Q", x2="diff_high:Q", tooltip=tooltip)
    dots = base.mark_circle(size=70, opacity=1).encode(
        x=alt.X("difference:Q", title=f"difference from {info.reference[:60]}"), tooltip=tooltip)
    zero = alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(color="#555555", strokeDash=[4, 3]).encode(x="zero:Q")
    return alt.layer(zero, bars, dots).properties(height=alt.Step(14 * max(1, len(runs))))


def default_runs(runs: pd.DataFrame, *, n: int = 2) -> list[str]:
    """The runs Compare opens on: the newest finished run that has a comparable partner,
    and that partner: the newest other finished run of the same kind on the same data set.
    Kinds with scores (maps, sweeps, layers, ...) first, extractions and trainings only
    when none of those has a pair; trials never (a sweep compares them itself).
    runs: ``queries.runs``, newest first. Fewer than two when nothing has a partner."""
    if runs.empty:
        return []
    done = runs[(runs[C.STATUS] == "FINISHED") & ~runs[C.KIND].isin(_NOT_DEFAULT)]
    same_data = done[C.DATASET_NAME] if C.DATASET_NAME in done else pd.Series("", index=done.index)
    for candidates in (done[~done[C.KIND].isin(_LAST_RESORT)], done):
        for index, row in candidates.iterrows():
            partners = candidates[(candidates[C.KIND] == row[C.KIND]) & (candidates[C.RUN_ID] != row[C.RUN_ID])
                                  & (same_data.loc[candidates.index] == same_data.loc[index])]
            if not partners.empty:
                return [row[C.RUN_ID], *list(partners[C.RUN_ID])[: n - 1]]
    return list(done[C.RUN_ID].head(1))
