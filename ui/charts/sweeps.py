"""Sweep charts: optimisation history, parameter against score, parallel coordinates,
importances (the four views of optuna.visualization, in Altair from logged tables)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import altair as alt
import pandas as pd

from latentscape.tracking.contract import Column, Param

__all__ = [
    "COMPLETE",
    "param_columns",
    "HistoryInfo",
    "history_info",
    "history_chart",
    "ParamInfo",
    "param_info",
    "param_chart",
    "parallel_info",
    "parallel_chart",
    "importance_info",
    "importance_chart",
]

COMPLETE = "COMPLETE"
# Prefixes under which a trial's parameters may appear in trials.parquet: the run
# contract's reducer./clusterer. names, Optuna's trials_dataframe "params_", or "param.".
_PARAM_PREFIXES = (Param.reducer_param(""), Param.clusterer_param(""), "params_", "param.")


def param_columns(trials: pd.DataFrame) -> list[str]:
    """The columns of ``trials`` that hold a trial's parameters, in table order."""
    return [c for c in trials.columns if str(c).startswith(_PARAM_PREFIXES)]


def _param_name(column: str) -> str:
    for prefix in ("params_", "param."):
        if column.startswith(prefix):
            return column.removeprefix(prefix)
    return column


def _maximize(direction: str | None) -> bool:
    return str(direction or "maximize").lower().startswith("max")


def _complete(trials: pd.DataFrame) -> pd.DataFrame:
    if Column.STATE not in trials:
        return trials[trials[Column.VALUE].notna()]
    return trials[(trials[Column.STATE].astype(str) == COMPLETE) & trials[Column.VALUE].notna()]


@dataclass(frozen=True)
class HistoryInfo:
    """frame: ``trial``, ``value``, ``state``, ``best_so_far`` (over complete trials);
    best_trial/best_value: the best complete trial (None when there is none)."""

    frame: pd.DataFrame
    objective: str
    maximize: bool
    best_trial: int | None
    best_value: float | None
    n_complete: int
    n_trials: int


def history_info(trials: pd.DataFrame, *, direction: str | None = "maximize", objective: str = "value") -> HistoryInfo:
    """trials: ``trials.parquet`` (trial, state, value, params...), any order."""
    maximize = _maximize(direction)
    if trials.empty:
        return HistoryInfo(pd.DataFrame({Column.TRIAL: [], Column.VALUE: [], Column.STATE: [], "best_so_far": []}),
                           objective, maximize, None, None, 0, 0)
    frame = pd.DataFrame({
        Column.TRIAL: trials[Column.TRIAL].astype(int),
        Column.VALUE: pd.to_numeric(trials[Column.VALUE], errors="coerce"),
        Column.STATE: trials[Column.STATE].astype(str) if Column.STATE in trials else COMPLETE,
    }).sort_values(Column.TRIAL).reset_index(drop=True)
    scored = frame[Column.VALUE].where(frame[Column.STATE] == COMPLETE)
    frame["best_so_far"] = scored.cummax() if maximize else scored.cummin()
    complete = frame[scored.notna()]
    best_trial = best_value = None
    if not complete.empty:
        row = complete.loc[complete[Column.VALUE].idxmax() if maximize else complete[Column.VALUE].idxmin()]
        best_trial, best_value = int(row[Column.TRIAL]), float(row[Column.VALUE])
    return HistoryInfo(frame, objective, maximize, best_trial, best_value, len(complete), len(frame))


def history_chart(info: HistoryInfo) -> alt.LayerChart:
    """Every trial's score (grey when it did not complete) and the best so far."""
    points = alt.Chart(info.frame).mark_circle(size=60).encode(
        x=alt.X(f"{Column.TRIAL}:Q", title="trial", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y(f"{Column.VALUE}:Q", title=info.objective, scale=alt.Scale(zero=False)),
        color=alt.Color(f"{Column.STATE}:N", title="state",
                        scale=alt.Scale(domain=[COMPLETE, "PRUNED", "FAIL", "RUNNING"],
                                        range=["#1f77b4", "#bbbbbb", "#d62728", "#ff7f0e"])),
        tooltip=[f"{Column.TRIAL}:Q", f"{Column.STATE}:N", alt.Tooltip(f"{Column.VALUE}:Q", format=".4f")],
    )
    best = alt.Chart(info.frame).mark_line(interpolate="step-after", color="#2ca02c").encode(
        x=f"{Column.TRIAL}:Q", y="best_so_far:Q",
        tooltip=[f"{Column.TRIAL}:Q", alt.Tooltip("best_so_far:Q", format=".4f", title="best so far")],
    )
    return alt.layer(best, points).properties(title="optimisation history", height=340)


@dataclass(frozen=True)
class ParamInfo:
    """Per parameter of the complete trials: frames[name] has ``trial``, ``x`` (the
    parameter's value) and ``value`` (the score); numeric[name] says how to draw x."""

    names: list[str]
    frames: dict[str, pd.DataFrame]
    numeric: dict[str, bool]
    log_scale: dict[str, bool]
    objective: str


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def param_info(trials: pd.DataFrame, *, params: Sequence[str] | None = None, objective: str = "value") -> ParamInfo:
    """trials: ``trials.parquet``; params: which parameter columns (default all varying)."""
    complete = _complete(trials) if not trials.empty else trials
    columns = list(params) if params is not None else param_columns(trials)
    names, frames, numeric, log_scale = [], {}, {}, {}
    for column in columns:
        values = complete[column] if column in complete else pd.Series(dtype=float)
        if values.dropna().nunique() < 1:
            continue
        name = _param_name(column)
        is_num = _is_numeric(values)
        frame = pd.DataFrame({Column.TRIAL: complete[Column.TRIAL].astype(int),
                              "x": values if is_num else values.astype(str),
                              Column.VALUE: pd.to_numeric(complete[Column.VALUE])})
        positive = is_num and (values.dropna() > 0).all()
        names.append(name)
        frames[name] = frame.dropna(subset=["x"]).reset_index(drop=True)
        numeric[name] = is_num
        log_scale[name] = bool(positive and values.max() / max(values.min(), 1e-300) >= 20)
    return ParamInfo(names, frames, numeric, log_scale, objective)


def param_chart(info: ParamInfo, *, columns: int = 3) -> alt.ConcatChart:
    """One scatter per parameter: its value against the score, darker = later trial."""
    panels = []
    for name in info.names:
        kind = "Q" if info.numeric[name] else "N"
        scale = alt.Scale(type="log") if info.log_scale[name] else alt.Scale(zero=False)
        panels.append(
            alt.Chart(info.frames[name], title=name).mark_circle(size=50).encode(
                x=alt.X(f"x:{kind}", title=None, scale=scale if kind == "Q" else alt.Undefined),
                y=alt.Y(f"{Column.VALUE}:Q", title=info.objective, scale=alt.Scale(zero=False)),
                color=alt.Color(f"{Column.TRIAL}:Q", title="trial", scale=alt.Scale(scheme="viridis")),
                tooltip=[f"{Column.TRIAL}:Q", alt.Tooltip("x", title=name),
                         alt.Tooltip(f"{Column.VALUE}:Q", format=".4f")],
            ).properties(width=220, height=170)
        )
    return alt.concat(*panels, columns=columns)


def parallel_info(trials: pd.DataFrame, *, params: Sequence[str] | None = None,
                  objective: str = "value") -> pd.DataFrame:
    """Long form for parallel coordinates, complete trials only: ``trial``, ``axis``
    (each parameter, then the objective last), ``raw`` (the value as text), ``scaled``
    (0-1 along the axis; categories evenly spaced in sorted order), ``value`` (score)."""
    info = param_info(trials, params=params, objective=objective)
    rows = []
    complete = _complete(trials) if not trials.empty else trials
    axes = [(name, info.frames[name], info.numeric[name], info.log_scale[name]) for name in info.names]
    if not complete.empty:
        score = pd.DataFrame({Column.TRIAL: complete[Column.TRIAL].astype(int),
                              "x": pd.to_numeric(complete[Column.VALUE]), Column.VALUE: pd.to_numeric(
                                  complete[Column.VALUE])})
        axes.append((objective, score, True, False))
    for name, frame, numeric, log in axes:
        if numeric:
            x = frame["x"].astype(float)
            x = x.map(math.log10) if log else x
            low, high = x.min(), x.max()
            scaled = (x - low) / (high - low) if high > low else pd.Series(0.5, index=x.index)
            raw = frame["x"].map(lambda v: f"{v:.4g}")
        else:
            order = sorted(frame["x"].unique())
            position = {v: i / (len(order) - 1) if len(order) > 1 else 0.5 for i, v in enumerate(order)}
            scaled, raw = frame["x"].map(position), frame["x"]
        rows.append(pd.DataFrame({Column.TRIAL: frame[Column.TRIAL], "axis": name, "raw": raw.astype(str),
                                  "scaled": scaled.astype(float), Column.VALUE: frame[Column.VALUE]}))
    if not rows:
        return pd.DataFrame({Column.TRIAL: [], "axis": [], "raw": [], "scaled": [], Column.VALUE: []})
    return pd.concat(rows, ignore_index=True)


def parallel_chart(frame: pd.DataFrame, *, objective: str = "value") -> alt.Chart:
    """One line per complete trial across the parameter axes, coloured by score."""
    axes = list(dict.fromkeys(frame["axis"]))
    return (
        alt.Chart(frame, title="parallel coordinates (each axis scaled to its range)")
        .mark_line(opacity=0.7, point=True)
        .encode(
            # Every axis named under it (a band axis would drop names it finds crowded).
            x=alt.X("axis:N", title="parameter (the score last)", sort=axes,
                    axis=alt.Axis(labelAngle=-20, labelLimit=220, labelOverlap=False, labelFontWeight="bold")),
            y=alt.Y("scaled:Q", title=None, axis=None),
            detail=f"{Column.TRIAL}:N",
            color=alt.Color(f"{Column.VALUE}:Q", title=objective, scale=alt.Scale(scheme="viridis")),
            tooltip=[f"{Column.TRIAL}:N", "axis:N", alt.Tooltip("raw:N", title="value"),
                     alt.Tooltip(f"{Column.VALUE}:Q", format=".4f", title=objective)],
        )
        .properties(height=340)
    )


def importance_info(importances: pd.DataFrame) -> pd.DataFrame:
    """importances.parquet (param, importance) sorted, largest first; ``share`` sums to 1."""
    if importances is None or importances.empty:
        return pd.DataFrame({Column.PARAM: [], Column.IMPORTANCE: [], "share": []})
    frame = importances[[Column.PARAM, Column.IMPORTANCE]].copy()
    frame[Column.PARAM] = frame[Column.PARAM].astype(str).map(_param_name)
    frame[Column.IMPORTANCE] = pd.to_numeric(frame[Column.IMPORTANCE], errors="coerce").fillna(0.0)
    total = frame[Column.IMPORTANCE].sum()
    frame["share"] = frame[Column.IMPORTANCE] / total if total > 0 else 0.0
    return frame.sort_values(Column.IMPORTANCE, ascending=False).reset_index(drop=True)


def importance_chart(frame: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(frame, title="parameter importance")
        .mark_bar()
        .encode(
            x=alt.X(f"{Column.IMPORTANCE}:Q", title="importance"),
            y=alt.Y(f"{Column.PARAM}:N", title=None, sort="-x", axis=alt.Axis(labelLimit=260)),
            tooltip=[f"{Column.PARAM}:N", alt.Tooltip(f"{Column.IMPORTANCE}:Q", format=".3f"),
                     alt.Tooltip("share:Q", format=".0%")],
        )
        .properties(height=alt.Step(24))
    )
