"""Interpolation: walks between two inputs side by side (across layers or models) with
their nearest samples, the decoded image strip where the run has one, a search by a new
text in a walk's layer (embedded by its model in a ``latentscape search`` process), and
analogy accuracy per section and layer."""

from __future__ import annotations

import streamlit as st

from latentscape.tracking.contract import Artifact, Column, Kind, Metric, Param
from latentscape.tracking.contract import CatalogColumn as C
from latentscape.ui import components, data, routes, state
from latentscape.ui.charts import interpolation as charts
from latentscape.ui.labels import number, short_id

PAGE = "interpolation"
_PER_ROW = 3
_ARITHMETIC = "arithmetic"  # the neighbours of mean(add) - mean(subtract) + A


def _header(row: dict, run_id: str) -> str:
    start, end = row.get(C.PARAM_PREFIX + Param.FROM), row.get(C.PARAM_PREFIX + Param.TO)
    layer = row.get(C.PARAM_PREFIX + Param.LAYER)
    model = row.get(C.MODEL) or ""
    return (f"**{start} → {end}**  \nlayer {layer} · {model} · `{short_id(run_id)}`"
            if start is not None else f"`{short_id(run_id)}`")


def _paths() -> None:
    st.subheader("Paths between two inputs")
    walks = data.runs(kinds=(Kind.INTERPOLATE.value,))
    walks = walks[walks[C.STATUS] == "FINISHED"] if not walks.empty else walks
    if walks.empty:
        components.empty_state("No interpolation yet: a walk from one sample (or new text) to another, with the "
                               "nearest samples at every step.",
                               ["latentscape interpolate --run EXTRACT_RUN --layer 6 --from demo-0001 --to demo-0002",
                                "latentscape interpolate --run DIGITS_RUN --layer 0 --from digit-0000 "
                                "--to digit-0001 --decoder autoencoder"])
        return
    labels = components.run_names(walks)
    ids = list(walks[C.RUN_ID])
    controls = st.columns([4, 2])
    chosen = state.pick_runs("Interpolations", ids, labels, page=PAGE, default=ids[:2], container=controls[0],
                             help="side by side: the same two inputs in other layers or models")
    if not chosen:
        st.info("Choose one or more interpolation runs above.", icon=":material/arrow_upward:")
        return
    tables = {run_id: (data.table(run_id, Artifact.PATH), data.table(run_id, Artifact.NEIGHBOURS)) for run_id in chosen}
    methods = []
    for path, near in tables.values():
        if path is not None and near is not None:
            methods += charts.path_info(path, near).methods
    methods = list(dict.fromkeys(methods)) or ["lerp"]
    method = state.pick_option("Path", methods, page=PAGE, key="method", widget="radio", container=controls[1],
                               format_func=lambda m: "latent arithmetic" if m == _ARITHMETIC else m)
    details = {row[C.RUN_ID]: row for row in data.run_table(tuple(chosen)).to_dict("records")}

    for start in range(0, len(chosen), _PER_ROW):
        columns = st.columns(min(_PER_ROW, len(chosen)))
        for column, run_id in zip(columns, chosen[start:start + _PER_ROW]):
            path, near = tables[run_id]
            row = details.get(run_id, {})
            with column:
                st.markdown(_header(row, run_id))
                if path is None or near is None:
                    st.warning(f"run {short_id(run_id)} has no {Artifact.PATH} / {Artifact.NEIGHBOURS}.")
                    continue
                info = charts.path_info(path, near, method=method)
                if info.method != method:
                    st.caption(f"this run has no {method} path; showing {info.method}")
                st.altair_chart(charts.neighbour_chart(info), width="stretch")
                if info.method == _ARITHMETIC:
                    add, subtract = row.get(C.PARAM_PREFIX + Param.ADD), row.get(C.PARAM_PREFIX + Param.SUBTRACT)
                    st.caption(f"nearest samples to mean({add}) − mean({subtract}) + A; hit rate "
                               f"{number(row.get(f'metric.{Metric.ARITHMETIC_HIT_RATE}'))}")
                    image = data.artifact(run_id, Artifact.ARITHMETIC_IMAGE)
                    if image:
                        st.image(image, caption="decoded: A, mean(add), mean(subtract), result")
                else:
                    st.altair_chart(charts.geometry_chart(info), width="stretch")
                    if info.images:
                        strip = data.artifact(run_id, Artifact.strip_image(info.method))
                        if strip:
                            st.image(strip, caption=f"decoded {info.method} path, A (left) to B (right)",
                                     width="stretch")
                with st.expander("neighbours at every step"):
                    st.dataframe(charts.neighbour_table(info))
    _search(chosen, details, labels)


def _search(chosen: list[str], details: dict, labels: dict[str, str]) -> None:
    """A new text's nearest samples in the layer a walk was made in (its extraction's
    model, pooling and layer), to see where it would sit on the path."""
    columns = st.columns([4, 2] if len(chosen) > 1 else [1])
    text = columns[0].text_input(
        "Search by a new text", value=state.url_value("search", "") or "", key=state.widget_key(PAGE, "search"),
        placeholder="e.g. a recipe for a winter soup",
        help="embedded by the walk's own model, pooling and layer; lists its nearest samples")
    target = chosen[0]
    if len(chosen) > 1:
        target = state.pick_option("in the layer of", chosen, page=PAGE, key="in", container=columns[1],
                                   format_func=lambda run_id: labels.get(run_id, run_id))
    state.publish(search=text.strip() or None)
    if not text.strip():
        return
    row = details.get(target, {})
    source, layer = row.get(C.SOURCE_RUN), row.get(C.PARAM_PREFIX + Param.LAYER)
    if not source or layer is None:
        st.warning(f"run {short_id(target)} names no extraction and layer to search.", icon=":material/warning:")
        return
    try:
        result = data.search(str(source), text.strip(), layer=int(layer))
    except data.SearchFailed as error:
        st.error(f"The search failed: {error}", icon=":material/error:")
        return
    if result.error:
        st.warning(f"Cannot search this walk's layer: {result.error}", icon=":material/warning:")
        return
    st.caption(f"“{text.strip()}”: {len(result.neighbours)} nearest samples at layer {result.layer} of extraction "
               f"`{short_id(source)}` by cosine distance (embedded in {result.seconds:.1f} s)")
    st.dataframe(result.neighbours, hide_index=True, height=min(420, 36 + 35 * len(result.neighbours)),
                 column_config={Column.DISTANCE: st.column_config.NumberColumn(format="%.4f")})


def _analogies() -> None:
    st.subheader("Analogies: a is to b as c is to ?")
    runs = data.runs(kinds=(Kind.ANALOGIES.value,))
    runs = runs[runs[C.STATUS] == "FINISHED"] if not runs.empty else runs
    if runs.empty:
        components.empty_state("No analogies run yet: every layer answers b − a + c over the vocabulary of a "
                               "question file.", ["latentscape analogies --run EXTRACT_RUN"])
        return
    labels = components.run_names(runs)
    ids = list(runs[C.RUN_ID])
    controls = st.columns([4, 1])
    chosen = state.pick_runs("Analogy runs", ids, labels, page=PAGE, key="analogy", default=ids[:1],
                             container=controls[0])
    at = state.pick_option("Accuracy", (1, 5), page=PAGE, key="at", widget="radio", container=controls[1],
                           format_func=lambda k: f"@{k}")
    if not chosen:
        return
    info = charts.analogy_info(data.metrics(tuple(chosen)), labels=labels, at=at)
    if info.frame.empty:
        st.info("These runs logged no accuracy curves.", icon=":material/info:")
        return
    st.altair_chart(charts.analogy_chart(info), width="content")
    st.caption(" · ".join(f"{run}: best layer {layer} ({accuracy:.2f})" for run, (layer, accuracy)
                          in info.best.items()))
    misses = data.table(chosen[0], Artifact.MISSES)
    if misses is not None and not misses.empty:
        layers = sorted(misses[Column.LAYER].astype(int).unique())
        best_layer = info.best.get(labels.get(chosen[0], chosen[0]), (layers[-1], 0))[0]
        layer = state.pick_option("Misses at layer", layers, page=PAGE, key="layer",
                                  default=best_layer if best_layer in layers else layers[-1])
        shown = misses[misses[Column.LAYER].astype(int) == layer].drop(columns=[Column.LAYER])
        st.caption(f"{len(shown)} questions missed at layer {layer} by {labels.get(chosen[0], chosen[0])}")
        st.dataframe(shown, hide_index=True, height=min(360, 36 + 35 * len(shown)))


def render() -> None:
    components.page_header(routes.INTERPOLATION)
    _paths()
    st.divider()
    _analogies()


if __name__ == "__main__":
    render()
