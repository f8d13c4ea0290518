"""Layers: per-layer curves of one or several extractions on one chart, the CKA heatmap,
and where the representation stops changing."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from latentscape.tracking import layer_measures
from latentscape.tracking.contract import Artifact, Kind, Metric, Param, Tag
from latentscape.tracking.contract import CatalogColumn as C
from latentscape.ui import components, data, routes, state
from latentscape.ui.charts import layers as charts

PAGE = "layers"
_MAX_HEATMAPS = 3


def _latest_layers_run(layer_runs: pd.DataFrame, extraction_id: str) -> str | None:
    """The newest finished ``layers`` run built on ``extraction_id``."""
    if layer_runs.empty:
        return None
    mine = layer_runs[((layer_runs[C.SOURCE_RUN] == extraction_id) | (layer_runs[C.PARENT_RUN_ID] == extraction_id))
                      & (layer_runs[C.STATUS] == "FINISHED")]
    return None if mine.empty else str(mine.iloc[0][C.RUN_ID])


def _compared_models(chosen: list[str]) -> pd.DataFrame:
    """Curve rows (run_id, key, layer, value) of every extraction that a finished
    compare-models run compared with one of ``chosen`` (a fine-tuning's base and its
    checkpoints): probe accuracy, k-means AMI and CKA to the base, per layer."""
    comparisons = data.runs(kinds=(Kind.COMPARE_MODELS.value,))
    if comparisons.empty:
        return charts.model_layer_curves(None)
    table = data.run_table(tuple(comparisons[C.RUN_ID]))
    found = []
    for row in table.to_dict("records"):
        compared = str(row.get(C.PARAM_PREFIX + Param.RUNS) or "").split(",")
        if row[C.STATUS] == "FINISHED" and set(compared) & set(chosen):
            found.append(charts.model_layer_curves(data.table(row[C.RUN_ID], Artifact.MODEL_LAYERS)))
            break  # the newest comparison of these extractions
    return found[0] if found else charts.model_layer_curves(None)


def _finding(value) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None  # "none", missing, NaN


def render() -> None:
    components.page_header(routes.LAYERS)
    extractions = data.runs(kinds=(Kind.EXTRACT.value,))
    if extractions.empty:
        components.empty_state("No extraction yet: the layers of a model come from an extract run.",
                               ["latentscape extract --data demo"])
        return
    layer_runs = data.runs(kinds=(Kind.LAYERS.value,))
    labels = components.run_names(extractions)
    ids = list(extractions[C.RUN_ID])
    with_layers = [run_id for run_id in ids if _latest_layers_run(layer_runs, run_id)]
    chosen = state.pick_runs("Extractions", ids, labels, page=PAGE, default=(with_layers or ids)[:1],
                             help="one line per extraction in every panel")
    if not chosen:
        st.info("Choose one or more extractions above.", icon=":material/arrow_upward:")
        return

    # Where each curve comes from: the layers run of each extraction, and the extraction.
    analysed = {run_id: _latest_layers_run(layer_runs, run_id) for run_id in chosen}
    _verdicts(analysed, labels)
    sources = {**{lr: labels[e] for e, lr in analysed.items() if lr}, **{e: labels[e] for e in chosen}}
    # Each curve with its bootstrap interval and its spread over seeds (layers --seeds).
    curve_keys = (*charts.CURVE_TITLES, *charts.interval_keys(charts.CURVE_TITLES), Metric.AMI_STD,
                  Metric.PROBE_ACCURACY_STD)
    curves = data.layer_curves(tuple(sources), curve_keys)
    compared = _compared_models(chosen)
    if not compared.empty:  # checkpoints' per-layer scores that compare-models logged, beside the base's
        sources.update({run_id: labels.get(run_id, run_id) for run_id in compared[C.RUN_ID].unique()})
        curves = pd.concat([curves, compared], ignore_index=True)
    if not curves.empty:
        # Where a layers run and its extraction both logged a curve, keep the layers run's.
        owner = curves[C.RUN_ID].map(sources)
        from_layers = curves[C.RUN_ID].isin([lr for lr in analysed.values() if lr])
        covered = set(zip(owner[from_layers], curves.loc[from_layers, C.KEY]))
        keep = from_layers | ~pd.Series([(o, k) in covered for o, k in zip(owner, curves[C.KEY])], index=curves.index)
        curves = curves[keep]
    available = [k for k in charts.CURVE_TITLES if not curves.empty and k in set(curves[C.KEY])]
    wanted = [k for k in state.url_list("curve") if k in available] or \
             [k for k in charts.DEFAULT_CURVES if k in available] or available
    keys = st.multiselect("Curves", available, default=wanted, key=state.widget_key(PAGE, "curve"),
                          format_func=lambda k: charts.CURVE_TITLES.get(k, k))
    state.publish(curve=keys)

    findings = data.run_table(tuple(lr for lr in analysed.values() if lr))
    marks, chance = {}, {}
    for row in findings.to_dict("records"):
        chance[row[C.RUN_ID]] = {name: row.get(C.METRIC_PREFIX + level)
                                 for name, level in layer_measures.CHANCE_METRICS.items()}
        marks[row[C.RUN_ID]] = {
            charts.MARK_STABLE: _finding(row.get(C.PARAM_PREFIX + Param.FIRST_STABLE_LAYER)),
            charts.MARK_LARGEST: _finding(row.get(C.PARAM_PREFIX + Param.LAYER_OF_LARGEST_CHANGE)),
        }
    info = charts.curves_info(curves, labels=sources, keys=keys, marks=marks, chance=chance)
    if info.empty:
        st.info("These extractions have no per-layer curves yet.", icon=":material/info:")
    else:
        st.altair_chart(charts.curves_chart(info), width="content")
        st.caption("Shaded: the 95% bootstrap interval of each layer's score (else ± its spread over seeds); a "
                   "curve that stays inside one band is flat, whatever its slope. Grey dotted line: chance (the "
                   "majority class for a probe, 0 for AMI). Dashed rule: where the representation stops changing "
                   "(the first layer after which consecutive layers stay above the run's CKA threshold). Dotted "
                   "rule: the layer least like the one before it.")

    missing = [e for e, lr in analysed.items() if not lr]
    if missing:
        components.empty_state(
            f"{len(missing)} extraction(s) have no layers analysis (CKA, probes, intrinsic dimension, AMI) yet.",
            [f"latentscape layers --run {run_id}" for run_id in missing])

    st.subheader("Similarity between layers (linear CKA)")
    done = [(e, lr) for e, lr in analysed.items() if lr][:_MAX_HEATMAPS]
    if not done:
        st.caption("The CKA heatmap appears once a layers run exists.")
        return
    columns = st.columns(len(done))
    for column, (extraction_id, layers_id) in zip(columns, done):
        found = marks.get(layers_id, {})
        cka = data.table(layers_id, Artifact.CKA)
        with column:
            stable, largest = found.get(charts.MARK_STABLE), found.get(charts.MARK_LARGEST)
            cells = st.columns(2)
            cells[0].metric("stops changing at layer", "–" if stable is None else stable,
                            help="first layer after which consecutive layers keep CKA above the threshold")
            cells[1].metric("largest change at layer", "–" if largest is None else largest,
                            help="the layer least like the one before it")
            if cka is None or cka.empty:
                st.caption(f"run {layers_id[:8]} has no {Artifact.CKA}")
                continue
            heat = charts.cka_info(cka, stable_from=stable)
            st.altair_chart(charts.cka_chart(heat, title=labels[extraction_id]), width="content")
            components.link(routes.COMPARE, "this layers run in Compare", {"run": [layers_id]})

    _aligned_maps(done, labels)


def _verdicts(analysed: dict[str, str | None], labels: dict) -> None:
    """The answer first: for each analysed extraction, which layer each measure puts the
    classes best at, whether they agree, and any clustering that collapsed."""
    done = [(e, lr) for e, lr in analysed.items() if lr]
    if not done:
        return
    st.subheader("Verdict: which layer holds the classes")
    sentences = data.tags(tuple(lr for _, lr in done), Tag.VERDICT)
    warnings = data.tags(tuple(lr for _, lr in done), Tag.WARNING)
    agree = data.run_table(tuple(lr for _, lr in done))
    agree = dict(zip(agree[C.RUN_ID], agree.get(C.PARAM_PREFIX + Param.MEASURES_AGREE, pd.Series(dtype=object))))
    for extraction_id, layers_id in done:
        verdict = data.table(layers_id, Artifact.VERDICT)
        if verdict is None or verdict.empty:
            continue  # unlabelled, or a layers run from before verdicts
        if len(done) > 1:
            st.markdown(f"**{labels[extraction_id]}**")
        sentence = charts.verdict_in_words(sentences.get(layers_id, ""))
        if str(agree.get(layers_id)) == "True":
            st.success(sentence, icon=":material/check_circle:")
        else:
            st.info(sentence, icon=":material/compare_arrows:")  # an answer, not a fault
        st.dataframe(charts.verdict_table(verdict), hide_index=True)
        if layers_id in warnings:
            st.warning(warnings[layers_id], icon=":material/warning:")
    st.caption("Each measure's best layer with its 95% bootstrap interval; tied layers are those whose interval "
               "reaches the best one's lower bound. The largest change is context: where the representation "
               "moves, not where the classes are.")


def _aligned_maps(done: list[tuple[str, str]], labels: dict) -> None:
    """A layer slider over the first layers run's aligned maps (AlignedUMAP): every layer
    on the same axes, so points move only where their neighbourhood changes."""
    st.subheader("Step through the layers (aligned 2D maps)")
    found = next(((e, lr, t) for e, lr in done if (t := data.table(lr, Artifact.ALIGNED_MAPS)) is not None), None)
    if found is None:
        components.empty_state("No aligned maps yet.", [f"latentscape layers --run {done[0][0]} --aligned-maps"])
        return
    extraction_id, _, frame = found
    layers = charts.aligned_info(frame).layers
    layer = st.select_slider("Layer", options=layers, value=layers[0], key=state.widget_key(PAGE, "aligned"))
    st.altair_chart(charts.aligned_chart(charts.aligned_info(frame, layer)), width="content")
    st.caption(f"{labels[extraction_id]}: every layer laid out together (AlignedUMAP), on the same axes.")


if __name__ == "__main__":
    render()
