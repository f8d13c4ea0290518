"""Maps: two or more maps side by side (layers, settings, sweep trials), coloured by
true label or cluster; hover shows a sample's text; a box selection (regions and points
clicked on a deck.gl map) lists the selected samples and highlights them in the other maps; every cluster is named at its centre
(keywords from the map's clusters.parquet) and listed in a table; a new text can be
searched (embedded by the run's own model in a ``latentscape search`` process) and is
placed on its map. Maps above ``bigmap.LARGE_MAP_POINTS`` points are drawn by deck.gl."""

from __future__ import annotations

import dataclasses
import html

import pandas as pd
import streamlit as st

from latentscape.tracking.contract import Artifact, Column, Kind, Tag
from latentscape.tracking.contract import CatalogColumn as C
from latentscape.tracking.scores import ON_MAP
from latentscape.ui import components, data, routes, state
from latentscape.ui.charts import bigmap
from latentscape.ui.charts import maps as charts
from latentscape.ui.labels import TRUST_HELP, score_text, short_id

PAGE = "maps"
_MAP_KINDS = (Kind.MAP.value, Kind.SWEEP.value, Kind.TRIAL.value)
_ACTIVE = f"{PAGE}._active"  # session key: (run_id, box) of the selection being listed
_SEEN = f"{PAGE}._seen"  # session key: each chart's box at the previous rerun


# A map panel's column width and plot height in pixels, per maps-per-row, on the wide layout
# at 1400 px (measured in Chromium); the plot's width is the column's less its legend.
_PANEL_PX = {1: (940, 410), 2: (462, 410), 3: (300, 410)}


def _chart_key(run_id: str) -> str:
    return state.widget_key(PAGE, f"chart.{run_id}")


def _deck_key(run_id: str) -> str:
    return f"map-{short_id(run_id)}"


def _chart_selection(run_id: str, large: bool):
    """A map's selection now: an Altair map's box as the URL spells it (a shared link
    selects exactly the same samples), or a deck.gl map's (regions, sample ids); None: none."""
    if large:
        regions, ids = bigmap.picked(st.session_state.get(_chart_key(run_id)), _deck_key(run_id))
        return (regions, ids) if regions or ids else None
    return charts.decode_box(charts.encode_box(charts.selection_box(st.session_state.get(_chart_key(run_id)))))


def _default_pair(candidates: pd.DataFrame) -> list[str]:
    """The newest map and the newest other map of the same extraction (comparable samples)."""
    if candidates.empty:
        return []
    newest = candidates.iloc[0]
    same = candidates[(candidates[C.SOURCE_RUN] == newest[C.SOURCE_RUN])
                      & (candidates[C.RUN_ID] != newest[C.RUN_ID])]
    return [newest[C.RUN_ID], *same[C.RUN_ID].head(1)]


def _active_selection(chosen: list[str], large: set[str]) -> tuple[str, object] | None:
    """Which map's selection is listed: the one the user just changed; else the previous
    one; on a fresh page, the box in the link (``?sel=RUN&box=x0,x1,y0,y1``; a deck.gl
    map's regions are not put in the link)."""
    seen = st.session_state.get(_SEEN, {})
    now = {run_id: _chart_selection(run_id, run_id in large) for run_id in chosen}
    st.session_state[_SEEN] = now
    changed = [run_id for run_id in chosen if now[run_id] != seen.get(run_id)]
    if changed:
        run_id = changed[-1]
        active = (run_id, now[run_id]) if now[run_id] else next(((r, b) for r, b in now.items() if b), None)
    elif _ACTIVE in st.session_state:
        active = st.session_state[_ACTIVE]
    else:
        run_id, box = state.url_value("sel"), charts.decode_box(state.url_value("box"))
        active = (run_id, box) if run_id in chosen and run_id not in large and box else None
    if active is not None and active[0] not in chosen:
        active = None
    st.session_state[_ACTIVE] = active
    boxed = active is not None and active[0] not in large
    state.publish(sel=active[0] if boxed else None, box=charts.encode_box(active[1]) if boxed else None)
    return active


def _selected_points(active: tuple[str, object], points: dict[str, pd.DataFrame], color_by: str) -> pd.DataFrame:
    """The samples of the active selection: inside an Altair map's box, or in a deck.gl
    map's clicked regions and points."""
    run_id, selection = active
    if isinstance(selection, dict):
        return charts.points_in_box(points[run_id], selection)
    regions, ids = selection
    frame, info = data.map_points(run_id), data.big_map(run_id, color_by)
    if frame is None or info is None:
        return pd.DataFrame({Column.SAMPLE_ID: []})
    inside = bigmap.in_regions(info, frame[Column.X], frame[Column.Y], regions)
    if ids and Column.SAMPLE_ID in frame:
        inside |= frame[Column.SAMPLE_ID].astype(str).isin(set(ids)).to_numpy()
    return frame[inside]


def _highlighted_positions(run_id: str, selected_ids: set[str] | None):
    """(m, 2) map positions of the selected samples on a deck.gl map, or None."""
    if not selected_ids:
        return None
    frame = data.map_points(run_id)
    if frame is None or Column.SAMPLE_ID not in frame:
        return None
    return frame.loc[frame[Column.SAMPLE_ID].astype(str).isin(selected_ids), [Column.X, Column.Y]].to_numpy()


def _search_box(shown: list[str], labels: dict[str, str]) -> tuple[str, str] | None:
    """The search by a new text: (map run, text), or None when the box is empty."""
    columns = st.columns([4, 2] if len(shown) > 1 else [1])
    text = columns[0].text_input(
        "Search by a new text", value=state.url_value("search", "") or "", key=state.widget_key(PAGE, "search"),
        placeholder="e.g. a recipe for a winter soup",
        help="embedded by the map's own model, pooling and layer; its nearest samples are listed and it is "
             "placed on the map at the distance-weighted mean of their positions")
    target = shown[0] if shown else None
    if len(shown) > 1:
        target = state.pick_option("in map", shown, page=PAGE, key="in", container=columns[1],
                                   format_func=lambda run_id: labels.get(run_id, run_id))
    state.publish(search=text.strip() or None)
    return (target, text.strip()) if text.strip() and target else None


def _search(run_id: str, text: str) -> data.SearchResult | None:
    try:
        result = data.search(run_id, text)
    except data.SearchFailed as error:
        st.error(f"The search failed: {error}", icon=":material/error:")
        return None
    if result.error:
        st.warning(f"Cannot search this map: {result.error}", icon=":material/warning:")
        return None
    return result


def _search_results(result: data.SearchResult, text: str, label: str) -> None:
    st.subheader("Nearest samples to the search")
    where = (f"placed on {label} (black diamond) at the distance-weighted mean of its neighbours' positions"
             if result.x is not None else f"not placed on {label}: none of its neighbours is on the map")
    st.caption(f"“{text}” at layer {result.layer}: {len(result.neighbours)} nearest samples by cosine distance; "
               f"{where}. Embedded in {result.seconds:.1f} s.")
    st.dataframe(result.neighbours, hide_index=True, height=min(420, 36 + 35 * len(result.neighbours)),
                 column_config={Column.DISTANCE: st.column_config.NumberColumn(format="%.4f")})


def _legend(info: bigmap.DeckInfo) -> str:
    """The deck's colours as HTML (deck.gl draws no legend); category names are data: escaped."""
    swatches = " ".join(f"<span style='color:{entry.colour}'>●</span> {html.escape(entry.category)}"
                        for entry in info.legend)
    return f"<div style='font-size:0.8rem;line-height:1.4'>{html.escape(info.color_by)}: {swatches}</div>"


def _large_map(run_id: str, color_by: str, labels: pd.DataFrame, query: dict | None, per_row: int,
               regions: bool, selected: tuple[str, ...], highlight) -> str:
    """Draw a large map with deck.gl (``regions``: selection mode; ``selected``: its regions
    to outline; ``highlight``: positions of samples selected in another map); returns the
    caption's note."""
    info = data.big_map(run_id, color_by)
    if info is None:
        st.warning("This map's artifact could not be read.", icon=":material/warning:")
        return ""
    width = {1: 1000, 2: 480, 3: 310}.get(per_row, 480)  # a column of the wide layout, about
    deck = bigmap.deck(info, query=query, cluster_labels=labels, height=440, width=width,
                       key=_deck_key(run_id), serve=components.served_json, regions=regions,
                       selected_regions=selected, highlight=highlight)
    st.pydeck_chart(deck, height=440, key=_chart_key(run_id), on_select="rerun", selection_mode="multi-object")
    st.markdown(_legend(info), unsafe_allow_html=True)
    hover = ("hover shows a region's size, a click selects it" if regions
             else "hover shows every point's text" if info.n_hover == info.n_points
             else f"hover shows the text of {info.n_hover:,} points (a seeded sample)")
    ringed = f"; {len(highlight):,} selected samples ringed" if highlight is not None else ""
    return f"  \n{info.n_points:,} points drawn by deck.gl (scroll to zoom, drag to pan); {hover}{ringed}"


def render() -> None:
    components.page_header(routes.MAPS)
    candidates = data.runs(kinds=_MAP_KINDS)
    if candidates.empty:
        components.empty_state("No map yet: a map reduces one layer to 2D and clusters it.",
                               ["latentscape extract --data demo          # prints EXTRACT_RUN",
                                "latentscape map --run EXTRACT_RUN --layer 6",
                                "latentscape map --run EXTRACT_RUN --layer 2   # a second one to compare"])
        return
    # Trials are listed only when linked (a sweep has many; it keeps its best map itself).
    linked = set(state.url_list("run"))
    candidates = candidates[(candidates[C.KIND] != Kind.TRIAL.value) | candidates[C.RUN_ID].isin(linked)]
    candidates = candidates[candidates[C.STATUS] == "FINISHED"]
    labels = components.run_names(candidates, with_method=True)
    ids = list(candidates[C.RUN_ID])
    controls = st.columns([4, 1.2, 1])
    chosen = state.pick_runs("Maps", ids, labels, page=PAGE, default=_default_pair(candidates), container=controls[0],
                             help="two or more maps side by side: other layers, other settings, sweep trials")
    color_by = state.pick_option("Colour by", charts.COLOR_BY, page=PAGE, key="color", widget="radio",
                                 container=controls[1])
    per_row = state.pick_option("Maps per row", (2, 3, 1), page=PAGE, key="cols", container=controls[2])
    if not chosen:
        st.info("Choose one or more maps above.", icon=":material/arrow_upward:")
        return

    details = {row[C.RUN_ID]: row for row in data.run_table(tuple(chosen)).to_dict("records")}
    warnings = data.tags(tuple(chosen), Tag.WARNING)  # clusterings that collapsed
    sizes = {run_id: data.map_size(run_id) for run_id in chosen}
    missing = [run_id for run_id, size in sizes.items() if not size]
    for run_id in missing:
        st.warning(f"{labels.get(run_id, run_id)} has no {Column.X}/{Column.Y} map artifact (still running, "
                   "failed, or a trial whose map was not kept).", icon=":material/warning:")
    shown = [run_id for run_id in chosen if run_id not in missing]
    # Large maps are drawn by deck.gl from the columns it needs; the others load whole.
    large = {run_id for run_id in shown if sizes[run_id] > bigmap.LARGE_MAP_POINTS}
    points = {run_id: data.map_points(run_id) for run_id in shown if run_id not in large}
    asked = _search_box(shown, labels)
    found = _search(*asked) if asked else None
    query = ({Column.X: found.x, Column.Y: found.y, charts.LABEL_TEXT: asked[1]}
             if found is not None and found.x is not None else None)
    near = set(found.neighbours[Column.SAMPLE_ID].astype(str)) if found is not None else None

    by_region = bool(large) and st.toggle(
        "Select regions", key=state.widget_key(PAGE, "regions"),
        help="on the maps drawn by deck.gl, click grey squares to select the samples in them (again to unselect, "
             "on an empty spot to clear); off: the pointer shows each point's text, and a click selects that point")
    active = _active_selection(shown, large)
    selected_ids: set[str] | None = None
    inside = None
    if active is not None:
        inside = _selected_points(active, points, color_by)
        selected_ids = set(inside[Column.SAMPLE_ID].astype(str)) if Column.SAMPLE_ID in inside else set()

    for start in range(0, len(shown), per_row):
        columns = st.columns(per_row)
        for column, run_id in zip(columns, shown[start:start + per_row]):
            row = details.get(run_id, {})
            is_active = active is not None and active[0] == run_id
            clusters = data.table(run_id, Artifact.CLUSTERS)
            names = charts.cluster_labels(clusters)
            name_of = {str(c): text for c, text in zip(names[Column.CLUSTER], names[charts.LABEL_TEXT])}
            here = query if asked is not None and asked[0] == run_id else None
            with column:
                st.markdown(f"**{labels.get(run_id, short_id(run_id))}**")
                if run_id in large:
                    regions = active[1][0] if is_active else ()
                    note = _large_map(run_id, color_by, names, here, per_row, by_region, regions,
                                      None if is_active else _highlighted_positions(run_id, selected_ids))
                else:
                    info = charts.map_info(points[run_id], color_by=color_by,
                                           highlight=None if is_active or selected_ids is None else selected_ids,
                                           cluster_names=name_of)
                    # Equal units on both axes in the plot the legend leaves of the column.
                    column_px, height_px = _PANEL_PX.get(per_row, _PANEL_PX[2])
                    legend = name_of if info.color_by == Column.CLUSTER else None
                    width_px = max(120.0, column_px - charts.legend_width_px(info.categories, legend))
                    x_domain, y_domain = charts.fitted_domains(points[run_id][Column.X], points[run_id][Column.Y],
                                                               aspect=width_px / height_px)
                    info = dataclasses.replace(info, x_domain=x_domain, y_domain=y_domain)
                    placed = charts.placed_labels(names, x_domain=info.x_domain, y_domain=info.y_domain,
                                                  width_px=width_px, height_px=height_px)
                    chart = charts.map_chart(info, box=active[1] if is_active else None, labels=placed, query=here,
                                             neighbours=near if here is not None else None,
                                             legend_names=name_of if info.color_by == Column.CLUSTER else None)
                    st.altair_chart(chart, on_select="rerun", selection_mode=charts.BRUSH, key=_chart_key(run_id),
                                    width="stretch")
                    note = (f"  \nshowing {info.n_shown:,} of {info.n_points:,} points"
                            if info.n_shown < info.n_points else "")
                scores = [(m, row.get(C.METRIC_PREFIX + m)) for m in ON_MAP]
                st.caption(" · ".join(score_text(m, row, prefix=C.METRIC_PREFIX) for m, v in scores
                                      if v is not None and not pd.isna(v)) + note, help=TRUST_HELP)
                if run_id in warnings:
                    st.warning(warnings[run_id], icon=":material/warning:")
                if clusters is not None and not clusters.empty:
                    n_clusters = int((clusters[Column.CLUSTER] != -1).sum())
                    with st.expander(f"{n_clusters} clusters: size, purity, keywords, typical sample"):
                        st.dataframe(charts.cluster_table(clusters), hide_index=True,
                                     column_config={Column.PURITY: st.column_config.NumberColumn(format="percent"),
                                                    Column.SHARE: st.column_config.NumberColumn(format="percent")})

    if found is not None:
        _search_results(found, asked[1], labels.get(asked[0], asked[0]))

    st.subheader("Selected samples")
    if active is None:
        st.caption("Drag a box on any map to list its samples here; they are highlighted in the other maps."
                   + (" On a map drawn by deck.gl, turn on “Select regions” and click its grey squares (or "
                      "click points) to select them." if large else ""))
    else:
        where = "the box" if isinstance(active[1], dict) else "the chosen regions and points"
        st.caption(f"{len(inside):,} samples in {where} on {labels.get(active[0], active[0])}")
        columns = [c for c in (Column.SAMPLE_ID, Column.LABEL, Column.CLUSTER, Column.TEXT) if c in inside]
        table = inside[columns].copy()
        for other in [run_id for run_id in shown if run_id not in large]:
            if other != active[0] and Column.CLUSTER in points[other]:
                clusters = points[other].set_index(points[other][Column.SAMPLE_ID].astype(str))[Column.CLUSTER]
                table[f"cluster in {short_id(other)}"] = table[Column.SAMPLE_ID].astype(str).map(clusters)
        st.dataframe(table, hide_index=True, height=min(420, 36 + 35 * len(table)))
    components.link(routes.COMPARE, "Compare these maps' settings and scores", {"run": shown})


if __name__ == "__main__":
    render()
