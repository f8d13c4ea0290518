"""Compare: any selected runs side by side: key scores first (with their intervals and
p-values), then settings; timings and baselines folded away; the scores that differ drawn
as differences from the first run. Opens on the two newest comparable runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from latentscape.tracking.contract import CatalogColumn as C
from latentscape.ui import components, data, routes, state
from latentscape.ui.charts import compare as charts
from latentscape.ui.labels import TRUST_HELP

PAGE = "compare"
_DIFFERENT = "background-color: #fff3bf"
_KIND_SEEN = f"{PAGE}._kind"  # session key: the Kind filter at the previous rerun


def _styled(table: pd.DataFrame, flags: pd.Series):
    """The table with every row whose runs disagree highlighted."""
    flags = flags.reindex(table.index, fill_value=False)

    def highlight(row: pd.Series) -> list[str]:
        return [_DIFFERENT if flags.loc[row.name] else ""] * len(row)

    return table.style.apply(highlight, axis=1)


def _kind_changed(kind: str) -> bool:
    """True on the rerun where the user changed the Kind filter (not on a page's first run)."""
    before = st.session_state.get(_KIND_SEEN, kind)
    st.session_state[_KIND_SEEN] = kind
    return before != kind


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
    if _kind_changed(kind):  # a new kind: its own two newest runs, not the old selection
        st.session_state.pop(state.widget_key(PAGE, "run"), None)
        state.publish(run=None)
    linked = set(state.url_list("run"))
    options = [r for r, k in zip(ids, runs[C.KIND]) if kind == "all" or k == kind or r in linked]
    default = charts.default_runs(runs if kind == "all" else runs[runs[C.KIND] == kind])
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
    st.caption(f"{len(chosen)} runs · {info.n_different} fields differ (highlighted)"
               + (" · differences are the second run minus the first" if len(chosen) == 2 else ""),
               help=TRUST_HELP)
    if len(chosen) == 1:
        st.info("One run: pick a second one above to compare with.", icon=":material/arrow_upward:")
    if not info.metrics.empty:
        st.altair_chart(charts.metrics_chart(info), width="stretch")
        st.caption("Each dot is a run's score minus the first run's; the bar, its 95% bootstrap interval moved the "
                   "same way. Where a bar reaches the dashed zero line, the runs do not differ on that score.")
    elif len(chosen) > 1:
        st.caption("No key score differs between these runs.")
    if info.table.empty:
        st.info("Nothing differs between these runs." if only else "These runs have no params or metrics.",
                icon=":material/info:")
    else:
        st.dataframe(_styled(info.table, info.differs), hide_index=True, height=min(640, 36 + 35 * len(info.table)),
                     column_config={"section": st.column_config.TextColumn("", width="small"),
                                    "field": st.column_config.TextColumn("field", width="medium")})
    if info.folded is not None and not info.folded.empty:
        with st.expander(f"Timings and baselines ({len(info.folded)} fields)"):
            st.dataframe(info.folded, hide_index=True)
    links = st.columns(2)
    for i, row in enumerate(runs[runs[C.RUN_ID].isin(chosen)].head(8).to_dict("records")):
        route = routes.route_for_kind(row[C.KIND])
        if route is not routes.COMPARE:
            components.link(route, f"{route.title}: {labels[row['run_id']]}",
                            routes.link_params(row[C.KIND], row[C.RUN_ID], row.get(C.SOURCE_RUN)),
                            container=links[i % 2])


if __name__ == "__main__":
    render()
