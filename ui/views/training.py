"""Training: how a fine-tuning moved the representation, layer by layer.

The loss curve of a ``finetune`` run; layer x checkpoint heatmaps of CKA to the base,
probe accuracy and k-means AMI from its ``compare_models`` child; the cross-model CKA
heatmap of any two extractions that a compare-models run has compared."""

from __future__ import annotations

import streamlit as st

from latentscape.tracking.contract import Artifact, Kind, Param
from latentscape.tracking.contract import CatalogColumn as C
from latentscape.ui import components, data, routes, state
from latentscape.ui.charts import training as charts

PAGE = "training"


def _latest_compare(training_id: str) -> str | None:
    """The newest finished compare-models child of a finetune run."""
    children = data.children(training_id, kind=Kind.COMPARE_MODELS.value)
    done = children[children[C.STATUS] == "FINISHED"] if not children.empty else children
    return None if done.empty else str(done.iloc[0][C.RUN_ID])


def render() -> None:
    components.page_header(routes.TRAINING)
    trainings = data.runs(kinds=(Kind.FINETUNE.value,))
    comparisons = data.runs(kinds=(Kind.COMPARE_MODELS.value,))
    if trainings.empty and comparisons.empty:
        components.empty_state("No fine-tuning or model comparison yet.",
                               ["latentscape finetune --data demo --epochs 1 --checkpoints 3",
                                "latentscape compare-models --runs EXTRACT_RUN_A EXTRACT_RUN_B"])
        return
    pair = (None, None)
    if not trainings.empty:
        pair = _training(trainings)
    _cross_model(comparisons, pair)


def _training(trainings) -> tuple[str | None, str | None]:
    """The chosen finetune run: its curves and heatmaps. Returns (base, last checkpoint)
    extractions, the default pair of the cross-model heatmap."""
    labels = components.run_names(trainings)
    chosen = state.pick_run("Fine-tuning", list(trainings[C.RUN_ID]), labels, page=PAGE,
                            help="a `latentscape finetune` run")
    st.subheader("Loss and accuracy over training")
    curves = charts.loss_info(data.metrics((chosen,), tuple(charts.CURVES)))
    if curves.empty:
        st.caption("This run has logged no training step yet.")
    else:
        st.altair_chart(charts.loss_chart(curves), width="content")

    st.subheader("What each checkpoint's layers hold")
    compare = _latest_compare(chosen)
    if compare is None:
        components.empty_state("This fine-tuning has no comparison of its checkpoints yet.",
                               [f"latentscape compare-models --runs {chosen}"])
        return None, None
    table = data.table(compare, Artifact.MODEL_LAYERS)
    columns = st.columns(len(charts.HEATMAP_TITLES))
    for column, measure in zip(columns, charts.HEATMAP_TITLES):
        info = charts.heatmap_info(table, measure)
        with column:
            if info.empty:
                st.caption(f"no {charts.HEATMAP_TITLES[measure]} (unlabelled data?)")
            else:
                st.altair_chart(charts.heatmap_chart(info), width="content")
    st.caption("Columns: the base model and each checkpoint, in training order, all on the same held-out samples.")
    components.link(routes.COMPARE, "this comparison in Compare", {"run": [compare]})
    runs = data.run_table((compare,))
    ids = str(runs.iloc[0].get(C.PARAM_PREFIX + Param.RUNS) or "").split(",") if not runs.empty else []
    return (ids[0], ids[-1]) if len(ids) >= 2 else (None, None)


def _cross_model(comparisons, pair: tuple[str | None, str | None]) -> None:
    """Two extractions picked from the catalog, and their cross-model CKA heatmap from a
    compare-models run that compared them."""
    st.subheader("Cross-model CKA: every layer of A against every layer of B")
    extractions = data.runs(kinds=(Kind.EXTRACT.value,))
    if extractions.empty:
        components.empty_state("No extraction yet.", ["latentscape extract --data demo"])
        return
    labels = components.run_names(extractions)
    ids = list(extractions[C.RUN_ID])
    base, last = pair
    controls = st.columns(2)
    run_a = state.pick_option("Model A", ids, page=PAGE, key="a", default=base if base in ids else ids[0],
                              format_func=lambda r: labels.get(r, r), container=controls[0])
    run_b = state.pick_option("Model B", ids, page=PAGE, key="b", default=last if last in ids else ids[-1],
                              format_func=lambda r: labels.get(r, r), container=controls[1])
    info = None
    if not comparisons.empty:
        table = data.run_table(tuple(comparisons[C.RUN_ID]))
        for row in table.to_dict("records"):
            compared = str(row.get(C.PARAM_PREFIX + Param.RUNS) or "").split(",")
            if run_a in compared and run_b in compared and row[C.STATUS] == "FINISHED":
                found = charts.cross_info(data.table(row[C.RUN_ID], Artifact.CROSS_CKA), run_a, run_b)
                if not found.empty:
                    info = found
                    break
    if info is None:
        components.empty_state("No comparison of these two extractions yet.",
                               [f"latentscape compare-models --runs {run_a} {run_b}"])
        return
    st.altair_chart(charts.cross_chart(info, title_a=labels.get(run_a, "A"), title_b=labels.get(run_b, "B")),
                    width="content")
    components.link(routes.LAYERS, "these two models' layers side by side", {"run": [run_a, run_b]})


if __name__ == "__main__":
    render()
