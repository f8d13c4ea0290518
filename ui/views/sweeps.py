"""Sweeps: optimisation history, parameter against score, parallel coordinates,
importances; one click to the best trial's map."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from latentscape.tracking.contract import Artifact, Column, Kind, Metric, Param
from latentscape.tracking.contract import CatalogColumn as C
from latentscape.tracking.scores import LABEL_SCORES, SUMMARY
from latentscape.ui import components, data, routes, state
from latentscape.ui.charts import sweeps as charts
from latentscape.ui.labels import number

PAGE = "sweeps"
# The best map's held-out table: the label scores of a run's summary, in its order.
HELD_OUT_SCORES = tuple(name for name in SUMMARY if name in LABEL_SCORES)


def render() -> None:
    components.page_header(routes.SWEEPS)
    sweeps = data.runs(kinds=(Kind.SWEEP.value,))
    if sweeps.empty:
        components.empty_state("No sweep yet: a sweep searches reducer and clusterer settings with Optuna.",
                               ["latentscape extract --data demo          # prints EXTRACT_RUN",
                                "latentscape sweep --run EXTRACT_RUN --layer 6 --trials 30"])
        return
    labels = components.run_names(sweeps, with_method=True)
    run_id = state.pick_run("Sweep", list(sweeps[C.RUN_ID]), labels, page=PAGE)
    summary = data.run_table((run_id,))
    row = summary.iloc[0].to_dict() if not summary.empty else {}
    objective = str(row.get(C.PARAM_PREFIX + Param.OBJECTIVE) or Metric.AMI)
    direction = str(row.get(C.PARAM_PREFIX + Param.DIRECTION) or "maximize")
    status = str(sweeps.set_index(C.RUN_ID).loc[run_id, C.STATUS])

    trials = data.sweep_trials(run_id)
    if trials is None or trials.empty:
        if status == "RUNNING":
            st.info("This sweep is still running: its trials table is written when it ends. Press **Refresh** "
                    "in the sidebar later.", icon=":material/hourglass_top:")
        else:
            st.warning(f"This sweep ({status}) logged no {Artifact.TRIALS}.", icon=":material/warning:")
        return

    history = charts.history_info(trials, direction=direction, objective=objective)
    held_out = row.get(C.METRIC_PREFIX + Metric.holdout(objective))  # sweep --holdout
    held_out = None if held_out is None or pd.isna(held_out) else float(held_out)
    cells = st.columns(4 if held_out is None else 5)
    cells[0].metric("trials", history.n_trials)
    cells[1].metric("complete", history.n_complete)
    cells[2].metric(f"best {objective}" + ("" if held_out is None else " (tuning samples)"),
                    number(history.best_value, 4))
    cells[3].metric("best trial", "–" if history.best_trial is None else history.best_trial)
    if held_out is not None:
        fraction = row.get(C.PARAM_PREFIX + Param.HOLDOUT)
        cells[4].metric(f"held-out {objective}", number(held_out, 4),
                        help=f"the best settings' map scored on the {fraction} of the samples held out of the "
                        "search (stratified by label): labels the search never read")
        _held_out_table(row)
    links = st.columns(3)
    if row.get(C.PARAM_PREFIX + Param.TARGET) == "sae":  # sweep --target sae: the best SAE, not a map
        components.link(routes.FEATURES, "Best trial's features", {"run": [run_id]}, container=links[0])
    else:
        components.link(routes.MAPS, "Best trial's map", {"run": [run_id]}, container=links[0])
    if Column.RUN_ID in trials and history.best_trial is not None:
        best = trials.loc[trials[Column.TRIAL].astype(int) == history.best_trial, Column.RUN_ID]
        if len(best) and isinstance(best.iloc[0], str):
            components.link(routes.COMPARE, "Best trial against the sweep", {"run": [best.iloc[0], run_id]},
                            container=links[1])
    source = str(sweeps.set_index(C.RUN_ID).loc[run_id, C.SOURCE_RUN] or "")
    if source:
        components.link(routes.LAYERS, "The extraction it searched", {"run": [source]}, container=links[2])

    left, right = st.columns([3, 2])
    left.altair_chart(charts.history_chart(history), width="stretch")
    importances = charts.importance_info(data.table(run_id, Artifact.IMPORTANCES))
    if importances.empty:
        right.caption("No parameter importances logged (they need a few complete trials).")
    else:
        right.altair_chart(charts.importance_chart(importances), width="stretch")

    params = charts.param_info(trials, objective=objective)
    if params.names:
        st.subheader("Parameter against score")
        st.altair_chart(charts.param_chart(params), width="content")
        st.subheader("Parallel coordinates")
        st.altair_chart(charts.parallel_chart(charts.parallel_info(trials, objective=objective), objective=objective),
                        width="stretch")
    else:
        st.caption("The trials table has no parameter columns.")

    st.subheader("Trials")
    ordered = trials.sort_values(Column.VALUE, ascending=not history.maximize, na_position="last")
    st.dataframe(ordered, hide_index=True, height=min(420, 36 + 35 * len(ordered)))


def _held_out_table(row: dict) -> None:
    """The best map's label scores on the tuning samples beside the held-out ones."""
    names = [m for m in HELD_OUT_SCORES if C.METRIC_PREFIX + Metric.holdout(m) in row]
    with st.expander("Best map: tuning samples against held-out samples"):
        st.dataframe(pd.DataFrame({
            "score": names,
            "tuning samples (searched on)": [row.get(C.METRIC_PREFIX + m) for m in names],
            "held-out samples (never read while tuning)": [row.get(C.METRIC_PREFIX + Metric.holdout(m))
                                                           for m in names],
        }), hide_index=True)


if __name__ == "__main__":
    render()
