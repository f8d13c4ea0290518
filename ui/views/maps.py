"""Maps: two or more maps side by side (layers, settings, sweep trials), coloured by
true label or cluster; hover shows a sample's text; a box selection lists the selected
samples and highlights them in the other maps."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from tracking.contract import Artifact, Column, Kind, Metric, Param
from tracking.contract import CatalogColumn as C
from ui import components, data, routes, state
from ui.charts import maps as charts
from ui.labels import number, run_labels, short_id

PAGE = "maps"
_MAP_KINDS = (Kind.MAP.value, Kind.SWEEP.value, Kind.TRIAL.value)
_SCORES = (Metric.AMI, Metric.NMI, Metric.N_CLUSTERS, Metric.NOISE_FRACTION, Metric.TRUSTWORTHINESS)
_ACTIVE = f"{PAGE}._active"  # session key: (run_id, box) of the selection being listed
_SEEN = f"{PAGE}._seen"  # session key: each chart's box at the previous rerun


def _chart_key(run_id: str) -> str:
    return state.widget_key(PAGE, f"chart.{run_id}")


def _title(row: dict) -> str:
    """``layer 6 · umap + hdbscan`` from a run_table row."""
    parts = []
    layer = row.get(C.PARAM_PREFIX + Param.LAYER)
    if layer is not None and not pd.isna(layer):
        parts.append(f"layer {layer}")
    reducer, clusterer = row.get(C.PARAM_PREFIX + Param.REDUCER), row.get(C.PARAM_PREFIX + Param.CLUSTERER)
    if isinstance(reducer, str) or isinstance(clusterer, str):
        parts.append(" + ".join(str(p) for p in (reducer, clusterer) if isinstance(p, str)))
    return " · ".join(parts) or str(row.get(C.NAME) or "")


def _default_pair(candidates: pd.DataFrame) -> list[str]:
    """The newest map and the newest other map of the same extraction (comparable samples)."""
    if candidates.empty:
        return []
    newest = candidates.iloc[0]
    same = candidates[(candidates[C.SOURCE_RUN] == newest[C.SOURCE_RUN])
                      & (candidates[C.RUN_ID] != newest[C.RUN_ID])]
    return [newest[C.RUN_ID], *same[C.RUN_ID].head(1)]


def _active_selection(chosen: list[str]) -> tuple[str, dict] | None:
    """Which map's box is listed: the one the user just changed; else the previous one;
    on a fresh page, the one in the link (``?sel=RUN&box=x0,x1,y0,y1``)."""
    seen = st.session_state.get(_SEEN, {})
    now = {run_id: charts.selection_box(st.session_state.get(_chart_key(run_id))) for run_id in chosen}
    # The box as the URL spells it, so that a shared link selects exactly the same samples.
    now = {run_id: charts.decode_box(charts.encode_box(box)) for run_id, box in now.items()}
    st.session_state[_SEEN] = now
    changed = [run_id for run_id in chosen if now[run_id] != seen.get(run_id)]
    if changed:
        run_id = changed[-1]
        active = (run_id, now[run_id]) if now[run_id] else next(((r, b) for r, b in now.items() if b), None)
    elif _ACTIVE in st.session_state:
        active = st.session_state[_ACTIVE]
    else:
        run_id, box = state.url_value("sel"), charts.decode_box(state.url_value("box"))
        active = (run_id, box) if run_id in chosen and box else None
    if active is not None and active[0] not in chosen:
        active = None
    st.session_state[_ACTIVE] = active
    state.publish(sel=active[0] if active else None, box=charts.encode_box(active[1]) if active else None)
    return active


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
    labels = run_labels(candidates)
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
    points = {run_id: data.map_points(run_id) for run_id in chosen}
    missing = [run_id for run_id, frame in points.items() if frame is None or frame.empty]
    for run_id in missing:
        st.warning(f"{labels.get(run_id, run_id)} has no {Column.X}/{Column.Y} map artifact (still running, "
                   "failed, or a trial whose map was not kept).", icon=":material/warning:")
    shown = [run_id for run_id in chosen if run_id not in missing]
    active = _active_selection(shown)
    selected_ids: set[str] | None = None
    if active is not None:
        inside = charts.points_in_box(points[active[0]], active[1])
        selected_ids = set(inside[Column.SAMPLE_ID].astype(str)) if Column.SAMPLE_ID in inside else set()

    for start in range(0, len(shown), per_row):
        columns = st.columns(per_row)
        for column, run_id in zip(columns, shown[start:start + per_row]):
            row = details.get(run_id, {})
            is_active = active is not None and active[0] == run_id
            info = charts.map_info(points[run_id], color_by=color_by,
                                   highlight=None if is_active or selected_ids is None else selected_ids)
            with column:
                st.markdown(f"**{_title(row)}**  \n`{short_id(run_id)}` {row.get(C.NAME) or ''}")
                chart = charts.map_chart(info, box=active[1] if is_active else None)
                st.altair_chart(chart, on_select="rerun", selection_mode=charts.BRUSH, key=_chart_key(run_id),
                                width="stretch")
                scores = [(m, row.get(C.METRIC_PREFIX + m)) for m in _SCORES]
                st.caption(" · ".join(f"{m} {number(v)}" for m, v in scores if v is not None and not pd.isna(v))
                           + (f"  \nshowing {info.n_shown:,} of {info.n_points:,} points"
                              if info.n_shown < info.n_points else ""))
                clusters = data.table(run_id, Artifact.CLUSTERS)
                if clusters is not None and not clusters.empty:
                    with st.expander(f"{len(clusters)} clusters"):
                        st.dataframe(clusters, hide_index=True)

    st.subheader("Selected samples")
    if active is None:
        st.caption("Drag a box on any map to list its samples here; they are highlighted in the other maps.")
    else:
        inside = charts.points_in_box(points[active[0]], active[1])
        st.caption(f"{len(inside):,} samples in the box on {labels.get(active[0], active[0])}")
        columns = [c for c in (Column.SAMPLE_ID, Column.LABEL, Column.CLUSTER, Column.TEXT) if c in inside]
        table = inside[columns].copy()
        for other in shown:
            if other != active[0] and Column.CLUSTER in points[other]:
                clusters = points[other].set_index(points[other][Column.SAMPLE_ID].astype(str))[Column.CLUSTER]
                table[f"cluster in {short_id(other)}"] = table[Column.SAMPLE_ID].astype(str).map(clusters)
        st.dataframe(table, hide_index=True, height=min(420, 36 + 35 * len(table)))
    components.link(routes.COMPARE, "Compare these maps' settings and scores", {"run": shown})


if __name__ == "__main__":
    render()
