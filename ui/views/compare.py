"""Compare: any selected runs as a table of params and metrics, differences highlighted."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from latentscape.tracking.contract import CatalogColumn as C
from latentscape.ui import components, data, routes, state
from latentscape.ui.charts import compare as charts

PAGE = "compare"
_DIFFERENT = "background-color: #fff3bf"


def _styled(info: charts.CompareInfo):
    """The table with every row whose runs disagree highlighted."""
    flags = info.differs.reindex(info.table.index, fill_value=False)

    def highlight(row: pd.Series) -> list[str]:
        return [_DIFFERENT if flags.loc[row.name] else ""] * len(row)

    return info.table.style.apply(highlight, axis=1)


def render() -> None:
    components.page_header(routes.COMPARE)
    runs = data.runs()
    if runs.empty:
        components.empty_state("No runs to compare yet.", ["latentscape demo --quick --no-ui"])
        return
    labels = components.run_names(runs, with_method=True)
    ids = list(runs[C.RUN_ID])
    kinds = sorted(runs[C.KIND].dropna().astype(str).unique())
    controls = st.columns([1, 4, 1])
    kind = state.pick_option("Kind", ["all", *kinds], page=PAGE, key="kind", container=controls[0],
                             help="narrow the list of runs to pick from")
    linked = set(state.url_list("run"))
    options = [r for r, k in zip(ids, runs[C.KIND]) if kind == "all" or k == kind or r in linked]
    newest_kind = runs[C.KIND].iloc[0]
    default = [r for r, k in zip(ids, runs[C.KIND]) if k == newest_kind and r in options][:2]
    chosen = state.pick_runs("Runs", options, labels, page=PAGE, default=default, container=controls[1],
                             help="any runs, of any kind")
    only = controls[2].toggle("only differences", value=state.url_value("diff") == "1",
                              key=state.widget_key(PAGE, "diff"))
    state.publish(diff="1" if only else None)
    if not chosen:
        st.info("Choose runs above (or select rows on the Overview page and follow **Compare**).",
                icon=":material/arrow_upward:")
        return

    info = charts.compare_info(data.run_table(tuple(chosen)), labels=labels, only_differences=only)
    st.caption(f"{len(chosen)} runs · {info.n_different} fields differ (highlighted)")
    if info.table.empty:
        st.info("Nothing differs between these runs." if only else "These runs have no params or metrics.",
                icon=":material/info:")
    else:
        st.dataframe(_styled(info), hide_index=True, height=min(640, 36 + 35 * len(info.table)),
                     column_config={"section": st.column_config.TextColumn("", width="small")})
    if not info.metrics.empty:
        st.altair_chart(charts.metrics_chart(info), width="stretch")
    elif len(chosen) > 1:
        st.caption("No metric differs between these runs.")
    links = st.columns(2)
    for i, row in enumerate(runs[runs[C.RUN_ID].isin(chosen)].head(8).to_dict("records")):
        route = routes.route_for_kind(row[C.KIND])
        if route is not routes.COMPARE:
            components.link(route, f"{route.title}: {labels[row['run_id']]}",
                            routes.link_params(row[C.KIND], row[C.RUN_ID], row.get(C.SOURCE_RUN)),
                            container=links[i % 2])


if __name__ == "__main__":
    render()
