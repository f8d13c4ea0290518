"""Overview charts: runs over time by kind, and who ran what."""

from __future__ import annotations

from dataclasses import dataclass

import altair as alt
import pandas as pd

from latentscape.tracking.contract import CatalogColumn as C

__all__ = [
    "TimelineInfo",
    "UsersInfo",
    "FilterOptions",
    "as_datetime",
    "filter_options",
    "timeline_info",
    "timeline_chart",
    "users_info",
    "users_chart",
    "status_counts",
    "tree_order",
    "tree_names",
]

_UNKNOWN = "(none)"


def as_datetime(values: pd.Series) -> pd.Series:
    """Timestamps as naive UTC datetimes, whether the catalog gives epoch milliseconds
    or timestamps (with or without a zone)."""
    if values.empty:
        return pd.to_datetime(values)
    if pd.api.types.is_numeric_dtype(values):
        return pd.to_datetime(values, unit="ms", utc=True).dt.tz_localize(None)
    converted = pd.to_datetime(values, utc=True)
    return converted.dt.tz_localize(None)


@dataclass(frozen=True)
class FilterOptions:
    """The values each Overview filter can take (most used first)."""

    kinds: list[str]
    experiments: list[str]
    models: list[str]
    datasets: list[str]
    users: list[str]


def filter_options(facets: pd.DataFrame) -> FilterOptions:
    """facets: ``queries.facets`` (facet, value, n_runs), any order."""
    def values(facet: str) -> list[str]:
        if facets.empty:
            return []
        rows = facets[facets[C.FACET] == facet].sort_values(C.N_RUNS, ascending=False, kind="stable")
        return [str(v) for v in rows[C.VALUE] if str(v)]

    return FilterOptions(kinds=values(C.KIND), experiments=values(C.EXPERIMENT), models=values(C.MODEL),
                         datasets=values(C.DATASET_NAME), users=values(C.USER))


@dataclass(frozen=True)
class TimelineInfo:
    """Runs started per time bucket and kind.

    frame: columns ``bucket`` (datetime, start of the bucket), ``label`` (the bucket
    as text), ``kind``, ``n``, sorted by bucket;
    unit: the bucket size, ``"hour"`` when all runs fall within two days, ``"day"``
    within 120 days, else ``"week"``.
    """

    frame: pd.DataFrame
    unit: str
    n_runs: int


def timeline_info(runs: pd.DataFrame) -> TimelineInfo:
    """runs: a ``queries.runs`` frame. Empty in, empty frame out (``n_runs == 0``)."""
    if runs.empty:
        return TimelineInfo(pd.DataFrame({"bucket": pd.Series([], dtype="datetime64[ns]"), "label": [], C.KIND: [],
                                          "n": []}), "day", 0)
    starts = as_datetime(runs[C.START_TIME])
    span = starts.max() - starts.min()
    if span <= pd.Timedelta(days=2):
        unit, freq = "hour", "h"
    elif span <= pd.Timedelta(days=120):
        unit, freq = "day", "D"
    else:
        unit, freq = "week", "W"
    frame = pd.DataFrame({
        "bucket": starts.dt.to_period(freq).dt.start_time,
        C.KIND: runs[C.KIND].fillna(_UNKNOWN).astype(str).replace("", _UNKNOWN),
    })
    counted = frame.groupby(["bucket", C.KIND], as_index=False).size().rename(columns={"size": "n"})
    counted = counted.sort_values(["bucket", C.KIND]).reset_index(drop=True)
    counted.insert(1, "label", counted["bucket"].dt.strftime(_TIME_FORMAT[unit]))
    return TimelineInfo(counted, unit, len(runs))


_TIME_FORMAT = {"hour": "%d %b %H:00", "day": "%d %b %Y", "week": "week of %d %b %Y"}


def timeline_chart(info: TimelineInfo) -> alt.Chart:
    """Stacked bars: runs started per bucket, coloured by kind."""
    return (
        alt.Chart(info.frame, title=f"Runs started per {info.unit}")
        .mark_bar()
        .encode(
            x=alt.X("label:O", title=None, sort=list(dict.fromkeys(info.frame["label"])),
                    axis=alt.Axis(labelAngle=-30)),
            y=alt.Y("n:Q", title="runs", stack="zero"),
            color=alt.Color(f"{C.KIND}:N", title="kind"),
            tooltip=[alt.Tooltip("label:N", title=info.unit), alt.Tooltip(f"{C.KIND}:N"),
                     alt.Tooltip("n:Q", title="runs")],
        )
        .properties(height=320)
    )


@dataclass(frozen=True)
class UsersInfo:
    """Runs per (user, kind): frame columns ``user``, ``kind``, ``n``."""

    frame: pd.DataFrame
    n_users: int


def users_info(runs: pd.DataFrame) -> UsersInfo:
    if runs.empty:
        return UsersInfo(pd.DataFrame({C.USER: [], C.KIND: [], "n": []}), 0)
    frame = pd.DataFrame({
        C.USER: runs[C.USER].fillna(_UNKNOWN).astype(str).replace("", _UNKNOWN) if C.USER in runs else _UNKNOWN,
        C.KIND: runs[C.KIND].fillna(_UNKNOWN).astype(str).replace("", _UNKNOWN),
    })
    counted = frame.groupby([C.USER, C.KIND], as_index=False).size().rename(columns={"size": "n"})
    return UsersInfo(counted, int(counted[C.USER].nunique()))


def users_chart(info: UsersInfo) -> alt.LayerChart:
    """Who ran what: users down, kinds across, the number of runs in each cell."""
    base = alt.Chart(info.frame, title="Who ran what").encode(
        x=alt.X(f"{C.KIND}:N", title=None, axis=alt.Axis(labelAngle=-45, labelOverlap=False)),
        y=alt.Y(f"{C.USER}:N", title=None),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("n:Q", title="runs", scale=alt.Scale(scheme="blues"), legend=None),
        tooltip=[f"{C.USER}:N", f"{C.KIND}:N", alt.Tooltip("n:Q", title="runs")],
    )
    text = base.mark_text(fontSize=12).encode(text="n:Q")
    # Discrete axes are sized by step: a fixed height squeezes the bands.
    return alt.layer(cells, text).properties(height=alt.Step(32), width=alt.Step(56))


def status_counts(runs: pd.DataFrame) -> dict[str, int]:
    """Runs per status (FINISHED, FAILED, KILLED, RUNNING), zeros included."""
    counts = {status: 0 for status in ("FINISHED", "RUNNING", "FAILED", "KILLED")}
    if not runs.empty and C.STATUS in runs:
        for status, n in runs[C.STATUS].astype(str).value_counts().items():
            counts[status] = int(n)
    return counts


TREE_DEPTH = "depth"  # column tree_order adds: 0 for a run whose parent is not listed
_TREE_MARK = "└ "
_TREE_INDENT = " "  # an em space per level (a table cell keeps it; plain spaces collapse)


def tree_order(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` (``queries.runs`` columns, in the order to show the top-level runs) with
    every run's children (``parent_run_id``) right under it, oldest first, and theirs under
    them: a fine-tuning, its checkpoint extractions and its comparison read as one tree.
    A run whose parent is not in ``runs`` is a top-level run. Adds ``depth``."""
    if runs.empty or C.PARENT_RUN_ID not in runs:
        return runs.assign(**{TREE_DEPTH: 0})
    ids = set(runs[C.RUN_ID])
    parents = runs[C.PARENT_RUN_ID].where(runs[C.PARENT_RUN_ID].isin(ids))
    children: dict[str, list[int]] = {}
    by_start = runs.sort_values(C.START_TIME, kind="stable") if C.START_TIME in runs else runs
    for position, parent in zip(by_start.index, parents.loc[by_start.index]):
        if isinstance(parent, str):
            children.setdefault(parent, []).append(position)
    order, depths, seen = [], [], set()
    for root in runs.index[parents.isna().to_numpy()]:
        stack = [(root, 0)]
        while stack:  # depth first, children in start order
            position, depth = stack.pop()
            if position in seen:
                continue
            seen.add(position)
            order.append(position)
            depths.append(depth)
            below = children.get(runs.at[position, C.RUN_ID], [])
            stack.extend((child, depth + 1) for child in reversed(below))
    rest = [position for position in runs.index if position not in seen]  # a parent cycle: listed flat
    ordered = runs.loc[order + rest].copy()
    ordered[TREE_DEPTH] = depths + [0] * len(rest)
    return ordered.reset_index(drop=True)


def tree_names(ordered: pd.DataFrame) -> pd.Series:
    """The ``name`` column of a :func:`tree_order` frame, indented by depth."""
    names = ordered[C.NAME].fillna("").astype(str)
    return pd.Series([name if depth == 0 else _TREE_INDENT * (depth - 1) + _TREE_MARK + name
                      for name, depth in zip(names, ordered[TREE_DEPTH])], index=ordered.index)
