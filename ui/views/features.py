"""Features: what a sparse autoencoder found in a layer. A feature browser (search by
keyword, sort by label AUC or density), the chosen feature's top examples with their
activations highlighted, a feature x label AUC heatmap, and the feature's activation as
the colour of a map of the same extraction."""

from __future__ import annotations

import html

import streamlit as st

from latentscape.tracking.contract import Artifact, Column, Kind, Metric, Param
from latentscape.tracking.contract import CatalogColumn as C
from latentscape.ui import components, data, routes, state
from latentscape.ui.charts import features as charts
from latentscape.ui.labels import number, short_id

PAGE = "features"
_SCORES = ((Metric.holdout(Metric.VARIANCE_EXPLAINED), "variance explained (held out)"), (Metric.L0, "L0"),
           (Metric.DEAD_FRACTION, "dead fraction"), (Metric.LABELS_COVERED, "labels with a feature of AUC ≥ 0.9"))


def _highlighted(info: charts.ExamplesInfo) -> str:
    """The top examples as HTML, each text (or its token) behind a bar as strong as its activation."""
    lines = []
    for row in info.frame.itertuples(index=False):
        text, token = html.escape(str(row.text)), html.escape(str(row.token))
        style = f"background: rgba(255, 127, 14, {0.15 + 0.85 * float(row.share):.2f}); padding: 0 2px"
        if token and token in text:
            text = text.replace(token, f"<mark style='{style}'>{token}</mark>", 1)
            shown = f"{text}"
        else:
            shown = f"<span style='{style}'>{text}</span>"
        lines.append(f"<li><code>{row.activation:.3f}</code> {shown}</li>")
    return "<ol>" + "".join(lines) + "</ol>"


def _maps_of(source_run: str | None):
    """Finished map runs of the same extraction, newest first."""
    maps = data.runs(kinds=(Kind.MAP.value,))
    if maps.empty or not source_run:
        return maps.iloc[0:0] if not maps.empty else maps
    return maps[(maps[C.SOURCE_RUN] == source_run) & (maps[C.STATUS] == "FINISHED")]


def _sae_runs():
    """Finished sae runs and SAE sweeps (``sweep --target sae`` logs its best SAE whole), newest first."""
    runs = data.runs(kinds=(Kind.SAE.value, Kind.SWEEP.value))
    if runs.empty:
        return runs
    runs = runs[runs[C.STATUS] == "FINISHED"]
    sweeps = tuple(runs.loc[runs[C.KIND] == Kind.SWEEP.value, C.RUN_ID])
    if sweeps:
        table = data.run_table(sweeps)
        target = C.PARAM_PREFIX + Param.TARGET
        sae_sweeps = set(table.loc[table[target] == "sae", C.RUN_ID]) if target in table else set()
        runs = runs[(runs[C.KIND] == Kind.SAE.value) | runs[C.RUN_ID].isin(sae_sweeps)]
    return runs


def render() -> None:
    components.page_header(routes.FEATURES)
    runs = _sae_runs()
    if runs.empty:
        components.empty_state("No sparse autoencoder yet: a dictionary of sparse features of one layer, each "
                               "with its top examples, keywords and the label it separates best.",
                               ["latentscape sae --run EXTRACT_RUN --layer 6"])
        return
    run_id = state.pick_run("Sparse autoencoder run", list(runs[C.RUN_ID]), components.run_names(runs), page=PAGE)
    row = runs.set_index(C.RUN_ID).loc[run_id]
    summary = data.run_table((run_id,))
    details = summary.iloc[0].to_dict() if not summary.empty else {}
    features = data.table(run_id, Artifact.FEATURES)
    if features is None or features.empty:
        st.warning(f"run {short_id(run_id)} has no {Artifact.FEATURES}.", icon=":material/warning:")
        return

    cells = st.columns(len(_SCORES) + 1)
    cells[0].metric("layer · features · k", " · ".join(str(details.get(C.PARAM_PREFIX + p, "–"))
                                                       for p in (Param.LAYER, Param.FEATURES, Param.K)))
    for cell, (key, title) in zip(cells[1:], _SCORES):
        cell.metric(title, number(details.get(C.METRIC_PREFIX + key)))

    # The browser: search, sort, the list; one feature chosen.
    controls = st.columns([3, 2, 1])
    query = controls[0].text_input("Search keywords and top texts", value=state.url_value("q", "") or "",
                                   key=state.widget_key(PAGE, "q"))
    sort = state.pick_option("Sort by", list(charts.SORTS), page=PAGE, key="sort", widget="radio",
                             format_func=charts.SORTS.get, container=controls[1])
    include_dead = controls[2].toggle("dead too", value=state.url_value("dead") == "1",
                                      key=state.widget_key(PAGE, "dead"))
    state.publish(q=query, dead="1" if include_dead else None)
    listing = charts.feature_list_info(features, query=query, sort=sort, include_dead=include_dead)
    st.caption(f"{len(listing.frame)} of {listing.n_total} features shown ({listing.n_dead} never fire)")
    if listing.frame.empty:
        st.info("No feature matches the search.", icon=":material/search_off:")
        return
    st.dataframe(listing.frame.head(200), hide_index=True, height=240,
                 column_config={Column.DENSITY: st.column_config.NumberColumn(format="%.3f"),
                                Column.AUC: st.column_config.NumberColumn(format="%.3f")})
    feature = state.pick_option("Feature", [int(f) for f in listing.frame[Column.FEATURE].head(200)], page=PAGE,
                                key="feature", format_func=lambda f: f"feature {f}")

    # The chosen feature: its keywords, label, top examples.
    info = charts.examples_info(features, feature)
    st.markdown(f"**feature {info.feature}** · density {number(info.density)} · keywords: "
                f"{', '.join(info.keywords) or '–'} · separates **{info.best_label or '–'}** "
                f"(AUC {number(info.auc)})")
    left, right = st.columns([3, 2])
    left.altair_chart(charts.examples_chart(info), width="stretch")
    right.markdown(_highlighted(info), unsafe_allow_html=True)

    # Every label against its best features.
    heat = charts.heatmap_info(data.table(run_id, Artifact.FEATURE_LABELS))
    if not heat.frame.empty:
        st.altair_chart(charts.heatmap_chart(heat), width="content")

    # The feature on a map of the same extraction.
    maps = _maps_of(row.get(C.SOURCE_RUN))
    activations = data.table(run_id, Artifact.ACTIVATIONS)
    if maps.empty or activations is None:
        st.caption("No map of this extraction to colour by the feature yet:")
        st.code(f"latentscape map --run {row.get(C.SOURCE_RUN) or 'EXTRACT_RUN'} --layer "
                f"{details.get(C.PARAM_PREFIX + Param.LAYER, 6)}", language="bash")
        return
    map_id = state.pick_run("Map to colour by the feature", list(maps[C.RUN_ID]),
                            components.run_names(maps, with_method=True), page=PAGE, key="map")
    points = data.map_points(map_id)
    if points is not None:
        shown = charts.feature_map_info(points, activations, feature)
        st.altair_chart(charts.feature_map_chart(shown), width="stretch")
        st.caption(f"feature {feature} fires on {shown.n_active} of {len(shown.frame)} samples")
    components.link(routes.COMPARE, "This run in Compare", {"run": [run_id]})


if __name__ == "__main__":
    render()
