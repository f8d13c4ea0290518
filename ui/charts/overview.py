"""Overview charts: runs over time by kind, and who ran what."""

from __future__ import annotations

from dataclasses import dataclass

import altair as alt
import pandas as pd

from latentscape.tracking.contract import CatalogColumn as C
from latentscape.tracking.contract import Kind, Metric
from latentscape.ui.charts.palette import KIND_COLOURS, NOISE_GREY

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
    "KEY_RESULTS",
    "key_results",
    "fold_trials",
    "kind_colours",
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
    unit: the bucket size, chosen from the runs' span so that there are at most about
    :data:`_MOST_BUCKETS` (``"minute"`` for runs of the last half hour ... ``"month"`` for
    years of them).
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
    unit, freq, _ = next(((u, f, size) for u, f, size in _BUCKETS if span <= size * _MOST_BUCKETS), _BUCKETS[-1])
    frame = pd.DataFrame({
        "bucket": starts.dt.floor(freq) if freq not in ("W", "MS") else starts.dt.to_period(freq[0]).dt.start_time,
        C.KIND: runs[C.KIND].fillna(_UNKNOWN).astype(str).replace("", _UNKNOWN),
    })
    counted = frame.groupby(["bucket", C.KIND], as_index=False).size().rename(columns={"size": "n"})
    counted = counted.sort_values(["bucket", C.KIND]).reset_index(drop=True)
    counted.insert(1, "label", counted["bucket"].dt.strftime(_TIME_FORMAT[unit]))
    return TimelineInfo(counted, unit, len(runs))


# (unit, pandas frequency, size): the smallest whose buckets cover the span in at most
# _MOST_BUCKETS bars; recent runs (one session of work) get minutes, not one bar.
_BUCKETS = (
    ("minute", "min", pd.Timedelta(minutes=1)), ("5 minutes", "5min", pd.Timedelta(minutes=5)),
    ("15 minutes", "15min", pd.Timedelta(minutes=15)), ("hour", "h", pd.Timedelta(hours=1)),
    ("6 hours", "6h", pd.Timedelta(hours=6)), ("day", "D", pd.Timedelta(days=1)),
    ("week", "W", pd.Timedelta(weeks=1)), ("month", "MS", pd.Timedelta(days=31)),
)
_MOST_BUCKETS = 36
_TIME_FORMAT = {"minute": "%d %b %H:%M", "5 minutes": "%d %b %H:%M", "15 minutes": "%d %b %H:%M",
                "hour": "%d %b %H:00", "6 hours": "%d %b %H:00", "day": "%d %b %Y", "week": "week of %d %b %Y",
                "month": "%b %Y"}
# Every kind keeps its colour on every chart (the palette's order follows Kind's).
_KIND_COLOURS = {kind.value: KIND_COLOURS[i % len(KIND_COLOURS)] for i, kind in enumerate(Kind)}


def kind_colours(kinds) -> tuple[list[str], list[str]]:
    """(domain, range) of a colour scale for ``kinds``: each known kind its own fixed
    colour, unknown ones grey."""
    domain = sorted(dict.fromkeys(str(k) for k in kinds))
    return domain, [_KIND_COLOURS.get(k, NOISE_GREY) for k in domain]


def timeline_chart(info: TimelineInfo) -> alt.Chart:
    """Stacked bars: runs started per bucket, coloured by kind (a fixed colour each)."""
    domain, colours = kind_colours(info.frame[C.KIND])
    return (
        alt.Chart(info.frame, title=f"Runs started per {info.unit}")
        .mark_bar()
        .encode(
            x=alt.X("label:O", title=None, sort=list(dict.fromkeys(info.frame["label"])),
                    axis=alt.Axis(labelAngle=-30)),
            y=alt.Y("n:Q", title="runs", stack="zero"),
            color=alt.Color(f"{C.KIND}:N", title="kind", scale=alt.Scale(domain=domain, range=colours)),
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


TRIALS = "trials"  # column fold_trials adds: a sweep's number of trials


def fold_trials(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` without the trials of a listed sweep (a sweep has many; its page shows
    them), each sweep with its number of trials in ``trials`` (0 for other runs). A trial
    whose sweep is not listed stays."""
    if runs.empty or C.KIND not in runs or C.PARENT_RUN_ID not in runs:
        return runs.assign(**{TRIALS: 0})
    sweeps = set(runs.loc[runs[C.KIND] == Kind.SWEEP.value, C.RUN_ID])
    folded = (runs[C.KIND] == Kind.TRIAL.value) & runs[C.PARENT_RUN_ID].isin(sweeps)
    counts = runs.loc[folded, C.PARENT_RUN_ID].value_counts()
    kept = runs[~folded].copy()
    kept[TRIALS] = kept[C.RUN_ID].map(counts).fillna(0).astype(int)
    return kept


# A run's headline results, one sortable column each: (metric, column title, from a
# per-layer curve). A value logged once is the result; of a curve (several steps, one per
# layer) only the probe's best layer is one, the rest are not headline results.
KEY_RESULTS: tuple[tuple[str, str, bool], ...] = (
    (Metric.AMI, "AMI", False),
    (Metric.NMI, "NMI", False),
    (Metric.TRUSTWORTHINESS, "trustworthiness", False),
    (Metric.PROBE_ACCURACY, "best layer's probe accuracy", True),
    (Metric.HELDOUT_ACCURACY, "held-out accuracy", False),
    (Metric.ACCURACY_AT_1, "analogy accuracy@1", False),
)


def key_results(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per run (index ``run_id``), one column per :data:`KEY_RESULTS` title that
    any run has: the value the run logged once, or for a curve's entry the best of its
    layers. metrics: ``queries.metrics`` rows (run_id, key, value, step)."""
    if metrics is None or metrics.empty:
        return pd.DataFrame(index=pd.Index([], name=C.RUN_ID))
    rows = metrics[metrics[C.KEY].isin([k for k, _, _ in KEY_RESULTS])]
    steps = rows.groupby([C.RUN_ID, C.KEY])[C.STEP].transform("nunique")
    columns = {}
    for key, title, of_curve in KEY_RESULTS:
        mine = rows[(rows[C.KEY] == key) & ((steps > 1) if of_curve else (steps == 1))]
        if not mine.empty:
            grouped = mine.groupby(C.RUN_ID)[C.VALUE]
            columns[title] = grouped.max() if of_curve else grouped.last()
    return pd.DataFrame(columns).rename_axis(C.RUN_ID)
