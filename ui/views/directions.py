"""Directions: every sample projected on a concept direction, and the angles between
the directions of different concepts."""

from __future__ import annotations

import streamlit as st

from latentscape.tracking.contract import Artifact, Column, Kind, Metric, Param
from latentscape.tracking.contract import CatalogColumn as C
from latentscape.ui import components, data, routes, state
from latentscape.ui.charts import directions as charts
from latentscape.ui.labels import number, short_id

PAGE = "directions"


def _with_texts(projections, source_run: str | None):
    """Projections joined with the extraction's sample texts, for the hover."""
    samples = data.table(source_run, Artifact.SAMPLES) if source_run else None
    if samples is None or Column.TEXT not in samples or Column.SAMPLE_ID not in samples:
        return projections
    texts = samples.set_index(samples[Column.SAMPLE_ID].astype(str))[Column.TEXT]
    return projections.assign(**{Column.TEXT: projections[Column.SAMPLE_ID].astype(str).map(texts)})


def render() -> None:
    components.page_header(routes.DIRECTIONS)
    runs = data.runs(kinds=(Kind.DIRECTIONS.value,))
    runs = runs[runs[C.STATUS] == "FINISHED"] if not runs.empty else runs
    if runs.empty:
        components.empty_state("No directions run yet: one direction per label (difference of means, probe "
                               "weights), every sample projected on each.",
                               ["latentscape directions --run EXTRACT_RUN --layer 6"])
        return
    labels = components.run_names(runs)
    run_id = state.pick_run("Directions run", list(runs[C.RUN_ID]), labels, page=PAGE)
    row = runs.set_index(C.RUN_ID).loc[run_id]
    summary = data.run_table((run_id,))
    details = summary.iloc[0].to_dict() if not summary.empty else {}
    projections = data.table(run_id, Artifact.PROJECTIONS)
    cosines = data.table(run_id, Artifact.DIRECTION_COSINES)
    if projections is None or projections.empty:
        st.warning(f"run {short_id(run_id)} has no {Artifact.PROJECTIONS}.", icon=":material/warning:")
        return

    first = charts.projection_info(projections)
    controls = st.columns([2, 1])
    direction = state.pick_option("Concept (label) whose direction to project on", first.directions, page=PAGE,
                                  key="direction", container=controls[0])
    method = state.pick_option("Method", first.methods, page=PAGE, key="method", widget="radio",
                               container=controls[1],
                               format_func=lambda m: {"mean_difference": "difference of means",
                                                      "probe": "probe weights"}.get(m, m))
    info = charts.projection_info(_with_texts(projections, row.get(C.SOURCE_RUN)), direction=direction, method=method)

    cells = st.columns(4)
    cells[0].metric("layer", details.get(C.PARAM_PREFIX + Param.LAYER, "–"))
    auc_key = Metric.qualified(Metric.qualified(Metric.DIRECTION_AUC, info.method), info.direction)
    auc = details.get(C.METRIC_PREFIX + auc_key)
    cells[1].metric(f"AUC of {info.direction!r}", number(auc),
                    help="how well the projection alone separates this label from the rest (1: perfectly)")
    cells[2].metric("separation (Cohen's d)", number(info.separation, 2))
    mean_abs = details.get(C.METRIC_PREFIX + Metric.qualified(Metric.MEAN_ABS_COSINE, info.method))
    cells[3].metric("mean |cosine| between concepts", number(mean_abs),
                    help="0: every concept has its own orthogonal axis")
    st.altair_chart(charts.projection_chart(info), width="stretch")

    st.subheader("Angles between directions")
    if cosines is None or cosines.empty:
        st.caption(f"run {short_id(run_id)} has no {Artifact.DIRECTION_COSINES}.")
        return
    angles = charts.angle_info(cosines, method=info.method)
    left, right = st.columns([3, 2])
    left.altair_chart(charts.angle_chart(angles), width="content")
    if angles.agreement:
        right.markdown("**Do the two methods agree?** cosine between each label's two directions")
        right.dataframe({"label": list(angles.agreement), "cosine": [round(v, 3) for v in angles.agreement.values()]},
                        hide_index=True)
    components.link(routes.COMPARE, "This run in Compare", {"run": [run_id]}, container=right)


if __name__ == "__main__":
    render()
