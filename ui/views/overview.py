"""Overview: experiments and runs over time, who ran what, filters, links to the pages."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from latentscape.tracking.contract import CatalogColumn as C
from latentscape.ui import components, data, routes, state
from latentscape.ui.charts import overview as charts
from latentscape.ui.labels import short_id

PAGE = "overview"
_LIMIT = 20_000  # runs listed and charted at most (newest first)
_TABLE_COLUMNS = [C.NAME, C.KIND, C.STATUS, C.EXPERIMENT, C.USER, C.START_TIME, C.MODEL, C.DATASET_NAME, C.LAYER,
                  C.ERROR, C.RUN_ID]


def _date(text: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _filters(options: charts.FilterOptions) -> dict:
    """The filter widgets (seeded from the URL, mirrored back); returns ``data.runs`` kwargs."""
    top = st.columns([1.2, 1.2, 1, 1])
    kinds = top[0].multiselect("kind", options.kinds, default=[k for k in state.url_list("kind") if k in options.kinds],
                               key=state.widget_key(PAGE, "kind"), placeholder="all kinds")
    experiments = top[1].multiselect("experiment", options.experiments,
                                     default=[e for e in state.url_list("exp") if e in options.experiments],
                                     key=state.widget_key(PAGE, "exp"), placeholder="all experiments")
    models = top[2].multiselect("model", options.models,
                                default=[m for m in state.url_list("model") if m in options.models],
                                key=state.widget_key(PAGE, "model"), placeholder="all models")
    datasets = top[3].multiselect("data set", options.datasets,
                                  default=[d for d in state.url_list("data") if d in options.datasets],
                                  key=state.widget_key(PAGE, "data"), placeholder="all data sets")
    bottom = st.columns([1, 1, 2])
    since = bottom[0].date_input("from", value=_date(state.url_value("since")), key=state.widget_key(PAGE, "since"),
                                 min_value=None, format="YYYY-MM-DD")
    until = bottom[1].date_input("until", value=_date(state.url_value("until")), key=state.widget_key(PAGE, "until"),
                                 format="YYYY-MM-DD")
    text = bottom[2].text_input("search names, params and tags", value=state.url_value("q", "") or "",
                                key=state.widget_key(PAGE, "q"), placeholder="e.g. umap, layer 6, digits")
    state.publish(kind=kinds, exp=experiments, model=models, data=datasets,
                  since=since.isoformat() if since else None, until=until.isoformat() if until else None,
                  q=text.strip() or None)
    return {
        "kinds": tuple(kinds) or None, "experiments": tuple(experiments) or None, "models": tuple(models) or None,
        "datasets": tuple(datasets) or None,
        "since": since or None,
        "until": until or None,  # a bare date: the catalog includes that whole day
        "text": text.strip() or None,
    }


def _links(selected: pd.DataFrame) -> None:
    """Links that open the selected runs on their pages, and all of them in Compare."""
    if selected.empty:
        st.caption("Select rows to open them on their pages or compare them.")
        return
    columns = st.columns(2)
    names = components.run_names(selected.head(7))
    for i, row in enumerate(selected.head(7).to_dict("records")):
        route = routes.route_for_kind(row[C.KIND])
        components.link(route, f"{route.title}: {names.get(row[C.RUN_ID]) or short_id(row[C.RUN_ID])}",
                        routes.link_params(row[C.KIND], row[C.RUN_ID], row.get(C.SOURCE_RUN)),
                        container=columns[i % 2])
    components.link(routes.COMPARE, f"Compare these {len(selected)} runs", {"run": list(selected[C.RUN_ID])},
                    container=columns[len(selected.head(7)) % 2])


def render() -> None:
    components.page_header(routes.OVERVIEW)
    options = charts.filter_options(data.facets())
    if not options.kinds:  # empty_state says so when the catalog's first sync is still running
        components.empty_state("No runs in this tracking store yet.",
                               ["latentscape demo --quick --no-ui      # the whole pipeline on built-in data",
                                "latentscape extract --data demo       # or start with one extraction"])
        return
    with st.expander("Filters", expanded=True, icon=":material/filter_list:"):
        query = _filters(options)
    runs = data.runs(**query, limit=_LIMIT)
    if len(runs) >= _LIMIT:
        st.caption(f"Showing the newest {_LIMIT:,} runs that match; narrow the filters to see older ones.")

    counts = charts.status_counts(runs)
    cells = st.columns(5)
    cells[0].metric("runs", len(runs))
    cells[1].metric("experiments", runs[C.EXPERIMENT].nunique() if not runs.empty else 0)
    cells[2].metric("finished", counts["FINISHED"])
    cells[3].metric("failed or killed", counts["FAILED"] + counts["KILLED"])
    cells[4].metric("running", counts["RUNNING"])
    if runs.empty:
        st.info("No run matches these filters. Clear some of them above.", icon=":material/filter_alt_off:")
        return

    left, right = st.columns([2, 1])
    left.altair_chart(charts.timeline_chart(charts.timeline_info(runs)), width="stretch")
    right.altair_chart(charts.users_chart(charts.users_info(runs)), width="stretch")

    st.subheader("Runs")
    runs = charts.fold_trials(runs)  # a sweep's trials are one row: the sweep's, with their number
    runs = charts.tree_order(runs)  # each run's children (checkpoints, comparisons, ...) right under it
    shown = runs[[c for c in _TABLE_COLUMNS if c in runs]].copy()
    shown[C.NAME] = charts.tree_names(runs)
    # The headline results, one sortable column each (click a header to sort).
    results = charts.key_results(data.metrics(tuple(runs[C.RUN_ID]), tuple(k for k, _, _ in charts.KEY_RESULTS)))
    for title in reversed(results.columns):  # each inserted right after the status
        shown.insert(shown.columns.get_loc(C.STATUS) + 1, title, runs[C.RUN_ID].map(results[title]).to_numpy())
    if runs[charts.TRIALS].any():
        shown.insert(shown.columns.get_loc(C.KIND) + 1, charts.TRIALS, runs[charts.TRIALS].replace(0, None))
    if C.START_TIME in shown:
        shown[C.START_TIME] = charts.as_datetime(shown[C.START_TIME])
    event = st.dataframe(
        shown, hide_index=True, on_select="rerun", selection_mode="multi-row", key=state.widget_key(PAGE, "table"),
        column_config={
            C.START_TIME: st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm:ss"),
            C.RUN_ID: st.column_config.TextColumn("run id"),
            C.DATASET_NAME: st.column_config.TextColumn("data set"),
            C.ERROR: st.column_config.TextColumn("error", width="medium"),
            charts.TRIALS: st.column_config.NumberColumn("trials", help="a sweep's trials (on its Sweeps page)"),
            **{title: st.column_config.NumberColumn(title, format="%.3f") for title in results.columns},
        },
    )
    rows = list(event.selection.rows) if event is not None else []
    _links(runs.iloc[rows] if rows else runs.iloc[0:0])

    st.subheader("Experiments")
    experiments = data.experiments()
    if not experiments.empty:
        if C.LAST_START in experiments:
            experiments = experiments.assign(**{C.LAST_START: charts.as_datetime(experiments[C.LAST_START])})
        st.dataframe(experiments, hide_index=True,
                     column_config={C.LAST_START: st.column_config.DatetimeColumn("last run started",
                                                                                   format="YYYY-MM-DD HH:mm")})


if __name__ == "__main__":
    render()
