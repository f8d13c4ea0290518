"""The Streamlit app (ui/): every page on a real store built by the real jobs.

- The pure "info" step of every chart, on planted frames (no Streamlit), and every
  chart a valid Vega-Lite spec.
- Every page through Streamlit's AppTest, on runs logged by the jobs beside the shared
  extractions: charts drawn, no exception, no error; a link's query parameters select
  the same runs and settings; an empty store says which command to run; Refresh shows
  runs logged after the app started. The first open draws the Overview while the
  catalog syncs in the background (one sync at a time), then shows the runs; a failed
  sync is one line in the sidebar.
- The UI process imports no torch, numba, umap or jobs.
- ``latentscape ui``: its command line and its errors.

The runs are built once per session (``build_ui_runs``; the browser tests reuse them).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latentscape.tracking.contract import Artifact, CatalogColumn, Column, Kind, Metric
from latentscape.ui.charts import compare as compare_charts
from latentscape.ui.charts import directions as direction_charts
from latentscape.ui.charts import features as feature_charts
from latentscape.ui.charts import interpolation as interpolation_charts
from latentscape.ui.charts import layers as layer_charts
from latentscape.ui.charts import bigmap
from latentscape.ui.charts import maps as map_charts
from latentscape.ui.charts import overview as overview_charts
from latentscape.ui.charts import sweeps as sweep_charts

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "ui" / "app.py"
UI_EXPERIMENT = "ui-tests"  # the runs of these tests, beside the shared extractions
DEFAULT_PAGE = "views/overview.py"  # served at the app's root URL
RUNS_FILE = "ui-runs.json"  # what build_ui_runs logged, beside the store (reused by test_ui_browser)


# -- the runs the pages show ---------------------------------------------------------------
@dataclass
class UiRuns:
    """Run ids of one store built for the UI tests."""

    tracking_uri: str
    text: str
    digits: str
    n_text: int = 0
    maps: list[str] = field(default_factory=list)
    collapsed_map: str | None = None  # k-means told to find 2 clusters among 10 classes
    sweep: str | None = None
    layers: str | None = None
    interpolations: list[str] = field(default_factory=list)
    digits_interpolation: str | None = None
    analogies: str | None = None
    directions: str | None = None
    sae: str | None = None



def build_ui_runs(text, digits) -> UiRuns:
    """Log one run of every job the UI shows, beside the shared ``text`` and ``digits``
    extractions (conftest), in an experiment of its own. Fast settings: PCA maps,
    4-trial sweep, a 5-epoch autoencoder. Built once per store: later calls read the
    ids back from ``ui-runs.json`` beside the store."""
    from latentscape.jobs.analogies import AnalogiesConfig, analogies
    from latentscape.jobs.directions import DirectionsConfig, directions
    from latentscape.jobs.interpolate import InterpolateConfig, interpolate
    from latentscape.jobs.layers import LayersConfig, layers
    from latentscape.jobs.map import MapRequest, map_layer
    from latentscape.jobs.sae import SaeConfig, sae
    from latentscape.jobs.sweep import SweepConfig, sweep

    store = text.store
    marker = Path(store.uri.removeprefix("sqlite:///")).parent / RUNS_FILE
    if marker.exists():
        return UiRuns(**json.loads(marker.read_text()))
    runs = UiRuns(tracking_uri=store.uri, text=text.run_id, digits=digits.run_id, n_text=len(text.ids))
    labels = text.labels
    start = text.ids[0]
    end = next(i for i, label in zip(text.ids, labels) if label != labels[0])
    for layer in (6, 2):
        request = MapRequest(run=text.run_id, layer=layer, reducer="pca", clusterer="kmeans")
        runs.maps.append(map_layer(request, store=store, experiment=UI_EXPERIMENT).run_id)
    request = MapRequest(run=text.run_id, layer=6, reducer="pca", clusterer="kmeans",
                         clusterer_params={"n_clusters": 2})
    runs.collapsed_map = map_layer(request, store=store, experiment=UI_EXPERIMENT).run_id
    config = SweepConfig(run=text.run_id, layer=6, trials=4, reducer="pca", clusterer="kmeans", progress=False,
                         holdout=0.3)
    runs.sweep = sweep(config, store=store, experiment=UI_EXPERIMENT).run_id
    config = LayersConfig(run=text.run_id, map_reducer="pca", map_clusterer="kmeans", seeds=2,
                          aligned_maps=True, aligned_epochs=20)
    runs.layers = layers(config, store=store, experiment=UI_EXPERIMENT).run_id
    for layer in (6, 2):
        config = InterpolateConfig(run=text.run_id, layer=layer, start=start, end=end, steps=7)
        runs.interpolations.append(interpolate(config, store=store, experiment=UI_EXPERIMENT).run_id)
    config = InterpolateConfig(run=digits.run_id, layer=0, start=digits.ids[0], end=digits.ids[1], steps=7,
                               decoder="autoencoder", epochs=5)
    runs.digits_interpolation = interpolate(config, store=store, experiment=UI_EXPERIMENT).run_id
    runs.analogies = analogies(AnalogiesConfig(run=text.run_id), store=store, experiment=UI_EXPERIMENT).run_id
    config = DirectionsConfig(run=text.run_id, layer=6)
    runs.directions = directions(config, store=store, experiment=UI_EXPERIMENT).run_id
    config = SaeConfig(run=text.run_id, layer=6, features=128, k=8, epochs=5)
    runs.sae = sae(config, store=store, experiment=UI_EXPERIMENT).run_id
    marker.write_text(json.dumps(asdict(runs)))
    return runs


@pytest.fixture(scope="session")
def ui_runs(text_extraction, digits_extraction) -> UiRuns:
    return build_ui_runs(text_extraction, digits_extraction)


def _clear_streamlit_caches() -> None:
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def app_env(ui_runs, tmp_path_factory, monkeypatch):
    """The environment `latentscape ui` gives the app: the store, and a catalog of our own."""
    catalog = tmp_path_factory.getbasetemp() / "ui-app-catalog.duckdb"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ui_runs.tracking_uri)
    monkeypatch.setenv("LATENTSCAPE_CATALOG", str(catalog))
    _clear_streamlit_caches()
    yield ui_runs
    _clear_streamlit_caches()


def open_page(path: str | None, params: dict | None = None, *, timeout: float = 120):
    """Run the app, let its background catalog sync finish, then show ``path`` (e.g.
    ``views/maps.py``; None: the app itself) with ``params`` as its URL query."""
    from streamlit.testing.v1 import AppTest

    from latentscape.ui import data

    at = AppTest.from_file(str(APP), default_timeout=timeout)
    if path in (None, DEFAULT_PAGE):  # the link opens the app itself
        at.query_params = dict(params or {})
    at.run()
    assert data.wait_for_sync(timeout), "the catalog sync did not finish"
    if path in (None, DEFAULT_PAGE):
        return at.run()  # what the sidebar's poll reruns when the sync is done
    at.query_params = dict(params or {})
    return at.switch_page(path).run()


def charts(at) -> list[dict]:
    """The Vega-Lite specs of the page's charts."""
    return [json.loads(element.proto.spec) for element in at.get("vega_lite_chart")]


def chart_datasets(at) -> list[list[pd.DataFrame]]:
    """The named data sets of each Vega-Lite chart (Streamlit sends them as Arrow, apart from the spec)."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    return [[convert_arrow_bytes_to_pandas_df(d.data.data) for d in element.proto.datasets]
            for element in at.get("vega_lite_chart")]


def assert_clean(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


# -- pure info steps ----------------------------------------------------------------------------
def _runs_frame(n: int, *, hours: float) -> pd.DataFrame:
    start = pd.Timestamp("2026-11-01 08:00")
    return pd.DataFrame({
        CatalogColumn.RUN_ID: [f"run{i:03d}" for i in range(n)],
        CatalogColumn.NAME: [f"run {i}" for i in range(n)],
        CatalogColumn.KIND: ["map" if i % 3 else "extract" for i in range(n)],
        CatalogColumn.STATUS: ["FINISHED"] * (n - 1) + ["FAILED"],
        CatalogColumn.USER: ["ana" if i % 2 else "bo" for i in range(n)],
        CatalogColumn.START_TIME: [start + pd.Timedelta(hours=hours * i / max(n - 1, 1)) for i in range(n)],
    })


def test_timeline_buckets_follow_the_span_and_count_every_run():
    for hours, unit in ((20, "hour"), (24 * 30, "day"), (24 * 400, "month")):
        runs = _runs_frame(30, hours=hours)
        info = overview_charts.timeline_info(runs)
        assert info.unit == unit
        assert info.frame["n"].sum() == 30 == info.n_runs
        assert list(info.frame["bucket"]) == sorted(info.frame["bucket"])
        overview_charts.timeline_chart(info).to_dict()
    empty = overview_charts.timeline_info(_runs_frame(3, hours=1).iloc[0:0])
    assert empty.n_runs == 0 and empty.frame.empty
    users = overview_charts.users_info(_runs_frame(10, hours=5))
    assert users.n_users == 2 and users.frame["n"].sum() == 10
    overview_charts.users_chart(users).to_dict()
    assert overview_charts.status_counts(_runs_frame(10, hours=5))["FAILED"] == 1


def test_filter_options_come_from_the_facets_most_used_first():
    facets = pd.DataFrame({CatalogColumn.FACET: ["kind", "kind", "model", "user"],
                           CatalogColumn.VALUE: ["map", "extract", "m", "ana"],
                           CatalogColumn.N_RUNS: [1, 5, 2, 3]})
    options = overview_charts.filter_options(facets)
    assert options.kinds == ["extract", "map"] and options.models == ["m"] and options.datasets == []


def test_first_stable_layer_is_where_consecutive_layers_stay_similar():
    assert layer_charts.first_stable_layer({1: 0.5, 2: 0.97, 3: 0.99}) == 1
    assert layer_charts.first_stable_layer({1: 0.99, 2: 0.97, 3: 0.90}) is None  # changes at the end
    assert layer_charts.first_stable_layer({3: 0.99, 6: np.nan}) is None
    assert layer_charts.first_stable_layer({}) is None


def test_curves_of_two_runs_share_panels_and_carry_their_findings():
    rows = []
    for run in ("a", "b"):
        for layer in range(4):
            rows.append({"run_id": run, "run_name": run, "key": Metric.PROBE_ACCURACY, "layer": layer,
                         "value": 0.5 + layer / 10})
            if layer:
                rows.append({"run_id": run, "run_name": run, "key": Metric.CKA_PREVIOUS, "layer": layer,
                             "value": [0.5, 0.99, 0.99][layer - 1]})
    curves = pd.DataFrame(rows)
    info = layer_charts.curves_info(curves, labels={"a": "run A"},
                                    marks={"b": {layer_charts.MARK_STABLE: 3, layer_charts.MARK_LARGEST: 1}})
    assert info.keys == [Metric.PROBE_ACCURACY, Metric.CKA_PREVIOUS]  # the usual order
    assert set(info.frame["run"]) == {"run A", "b"}
    marks = {(r.run, r.what): r.layer for r in info.marks.itertuples()}
    assert marks[("run A", layer_charts.MARK_STABLE)] == 1  # computed from cka_previous
    assert marks[("b", layer_charts.MARK_STABLE)] == 3  # the run's own finding wins
    assert marks[("b", layer_charts.MARK_LARGEST)] == 1
    spec = layer_charts.curves_chart(info).to_dict()
    assert len(spec["concat"]) == 2
    assert layer_charts.curves_info(curves, keys=[Metric.AMI]).empty


def test_cka_matrix_is_completed_by_symmetry_with_a_unit_diagonal():
    upper = pd.DataFrame({Column.LAYER_A: [0, 0, 1], Column.LAYER_B: [1, 2, 2], Column.CKA: [0.9, 0.5, 0.7]})
    info = layer_charts.cka_info(upper, stable_from=1)
    square = info.frame.pivot(index=Column.LAYER_A, columns=Column.LAYER_B, values=Column.CKA).to_numpy()
    np.testing.assert_allclose(square, square.T)
    np.testing.assert_allclose(np.diag(square), 1.0)
    assert info.layers == [0, 1, 2]
    layer_charts.cka_chart(info).to_dict()
    matrix = pd.DataFrame(square, index=[0, 1, 2], columns=[0, 1, 2])
    np.testing.assert_allclose(layer_charts.cka_info(matrix).frame[Column.CKA], info.frame[Column.CKA])


def _map_points(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        Column.SAMPLE_ID: [f"s{i}" for i in range(n)], Column.X: rng.normal(size=n), Column.Y: rng.normal(size=n),
        Column.CLUSTER: np.where(np.arange(n) % 10 == 0, -1, np.arange(n) % 3),
        Column.LABEL: [f"class {i % 4}" for i in range(n)], Column.TEXT: ["word " * 100] * n,
    })


def test_map_info_colours_by_label_or_cluster_and_counts_noise():
    points = _map_points()
    info = map_charts.map_info(points, color_by=Column.CLUSTER)
    assert info.n_clusters == 3 and info.noise_fraction == pytest.approx(0.1)
    assert map_charts.NOISE in set(info.frame["colour"])
    assert info.frame[Column.TEXT].str.len().max() <= 160  # tooltips stay short
    by_label = map_charts.map_info(points.assign(**{Column.LABEL: None}), color_by=Column.LABEL)
    assert by_label.color_by == Column.CLUSTER and not by_label.has_labels  # unlabelled: clusters
    sampled = map_charts.map_info(points, max_points=50)
    assert (sampled.n_points, sampled.n_shown) == (200, 50)
    highlighted = map_charts.map_info(points, highlight={"s1", "s2"})
    assert highlighted.frame["highlight"].sum() == 2
    spec = map_charts.map_chart(info, box={"x": [0, 1], "y": [0, 1]}).to_dict()
    assert spec["params"][0]["name"] == map_charts.BRUSH and spec["params"][0]["value"] == {"x": [0, 1], "y": [0, 1]}
    with pytest.raises(ValueError):
        map_charts.map_info(points, color_by="nope")


def test_a_box_selection_round_trips_through_the_url_and_selects_the_points_inside():
    state = {"selection": {"brush": {"x": [1.0, -1.0], "y": [-0.5, 0.5]}}}
    box = map_charts.selection_box(state)
    assert box == {"x": [-1.0, 1.0], "y": [-0.5, 0.5]}
    assert map_charts.decode_box(map_charts.encode_box(box)) == box
    for bad in (None, "", "1,2,3", "a,b,c,d", "nan,1,2,3"):
        assert map_charts.decode_box(bad) is None
    for empty in (None, {}, {"selection": {}}, {"selection": {"brush": {}}}, {"selection": {"brush": {"x": [1]}}}):
        assert map_charts.selection_box(empty) is None
    points = _map_points()
    inside = map_charts.points_in_box(points, box)
    assert len(inside) == int((points.x.between(-1, 1) & points.y.between(-0.5, 0.5)).sum()) > 0
    assert map_charts.points_in_box(points, None).empty


def test_cluster_labels_name_each_cluster_at_its_centre_and_the_table_reads_well():
    clusters = pd.DataFrame({
        Column.CLUSTER: [-1, 0, 1, 2], Column.NOISE: [True, False, False, False], Column.SIZE: [5, 20, 40, 9],
        Column.SHARE: [0.07, 0.27, 0.54, 0.12], Column.MAJORITY_LABEL: ["a", "cooking", "b", None],
        Column.PURITY: [0.4, 0.9, 1.0, np.nan], Column.X: [0.0, 1.0, 2.0, np.nan], Column.Y: [0.0, 1.0, 2.0, 3.0],
        Column.KEYWORDS: [["x"], ["soup", "stir", "oven", "bake"], [], []],
        Column.CENTRAL_TEXTS: [[], ["Simmer the soup. " * 20], ["b text"], []],
    })
    names = map_charts.cluster_labels(clusters)
    assert list(names[Column.CLUSTER]) == [1, 0]  # largest first; no noise, no label without a position
    assert list(names["text"]) == ["b (100%)", "soup, stir, oven"]  # keywords, else the majority label
    table = map_charts.cluster_table(clusters)
    assert list(table[Column.CLUSTER]) == ["1", "0", "2", "noise"]  # largest first
    assert table.loc[1, Column.KEYWORDS] == "soup, stir, oven, bake"
    assert table["typical sample"].str.len().max() <= 160
    info = map_charts.map_info(_map_points())
    spec = map_charts.map_chart(info, labels=names, query={"x": 0.5, "y": 0.5, "text": "a new text"},
                                neighbours={"s1", "s2"}, box={"x": [0, 1], "y": [0, 1]}).to_dict()
    marks = [layer["mark"] for layer in spec["layer"]]
    assert marks[0]["type"] == "circle" and any(m.get("shape") == "diamond" for m in marks)
    assert sum(m["type"] == "text" for m in marks) == 2
    assert spec["params"][0]["name"] == map_charts.BRUSH  # the brush still selects on the scatter
    assert "layer" not in map_charts.map_chart(info).to_dict()  # nothing to add: a plain scatter
    assert map_charts.cluster_labels(None).empty and map_charts.cluster_table(None).empty


def _big_points(n: int, *, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    blob = rng.integers(0, 25, size=n)
    return pd.DataFrame({
        Column.SAMPLE_ID: [f"p{i}" for i in range(n)],
        Column.X: (rng.normal(size=n) + blob * 3).astype(np.float32), Column.Y: rng.normal(size=n) * 2,
        Column.CLUSTER: np.where(blob == 0, -1, blob), Column.LABEL: [f"class {b % 12}" for b in blob],
        Column.TEXT: [f'text "{i}" <b>\n' + "word " * (i % 40) for i in range(n)],
    })


def test_a_large_map_is_every_point_on_a_grid_with_text_for_the_hover_sample():
    points = _big_points(3000)
    info = bigmap.deck_info(points, color_by=Column.CLUSTER, hover_points=1000, text_chars=30)
    assert (info.n_points, info.n_hover) == (3000, 1000) and info.color_by == Column.CLUSTER
    assert len(info.legend) == bigmap.MAX_COLOURS + 1  # 19 colours, "other", and noise
    assert {e.category for e in info.legend} >= {bigmap.OTHER, bigmap.NOISE}
    assert sum(e.n_points for e in info.legend) == 3000
    deck = json.loads(bigmap.deck_json(info, query={"x": 3.0, "y": 0.0, "text": "new"},
                                       cluster_labels=pd.DataFrame({"x": [0.0], "y": [0.0], "text": ["soup"]})))
    assert deck["views"] == [{"@@type": "OrthographicView", "controller": True, "flipY": False}]
    assert "mapStyle" not in deck or not deck["mapStyle"]  # no basemap: nothing fetched from the internet
    layers = {layer["id"]: layer for layer in deck["layers"]}
    drawn = [layer for layer in deck["layers"] if layer["@@type"] == "ScatterplotLayer" and "query" not in layer["id"]]
    assert sum(len(layer["data"]) for layer in drawn) == 3000
    hover = [row for layer in drawn if layer["pickable"] for row in layer["data"]]
    assert len(hover) == 1000 and max(len(row["t"]) for row in hover) <= 30
    assert all(0 <= v <= bigmap.GRID for layer in drawn for row in layer["data"]
               for v in (row["p"] if isinstance(row, dict) else row))
    by_id = points.set_index(Column.SAMPLE_ID)
    row = hover[0]
    assert row["t"] == bigmap._short(pd.Series([by_id.loc[row["i"], Column.TEXT]]), 30)[0]
    back = np.array(row["p"]) / info.scale + np.array(info.origin)
    assert np.abs(back - by_id.loc[row["i"], [Column.X, Column.Y]].to_numpy(float)).max() <= 0.5 / info.scale + 1e-9
    assert layers[next(k for k in layers if k.endswith("-query"))]["data"][0]["t"] == "query: new"
    assert any(layer["@@type"] == "TextLayer" for layer in deck["layers"])
    served: dict[str, str] = {}

    def serve(name: str, digest: str, text: str) -> str:
        served[name] = text
        return f"/media/{digest}.json"

    by_url = json.loads(bigmap.deck_json(info, serve=serve))
    urls = [layer["data"] for layer in by_url["layers"] if layer["@@type"] == "ScatterplotLayer"]
    assert urls == [f"/media/{digest}.json" for digest in info.digests] and len(set(urls)) == len(urls)
    assert sum(len(json.loads(text)) for text in served.values()) == 3000
    small = bigmap.deck_info(points.drop(columns=[Column.LABEL]).head(50), color_by=Column.LABEL)
    assert small.color_by == Column.CLUSTER and small.n_hover == 50  # unlabelled: clusters; all hoverable
    codes, names = bigmap.categories(pd.Series([3, -1, 3, None]))
    assert [names[c] for c in codes] == ["3", "noise", "3", ""]


def test_regions_of_a_large_map_partition_its_points_and_select_exactly_theirs():
    points = _big_points(5000)
    info = bigmap.deck_info(points, color_by=Column.CLUSTER)
    regions = json.loads(info.regions)
    counts = {row["c"]: int(re.search(r"of ([\d,]+) point", row["t"]).group(1).replace(",", "")) for row in regions}
    assert sum(counts.values()) == 5000 and len(counts) == len(regions) > 10
    every = bigmap.in_regions(info, points[Column.X], points[Column.Y], list(counts))
    assert every.all()
    some = sorted(counts)[:3]
    chosen = bigmap.in_regions(info, points[Column.X], points[Column.Y], some)
    assert chosen.sum() == sum(counts[k] for k in some)
    # What st.pydeck_chart's selection state holds: objects per layer id (other decks' ignored).
    state = {"selection": {"indices": {}, "objects": {
        f"m-{bigmap.REGIONS_LAYER}": [{"c": some[0]}], "m-hover-2": [{"i": "p7"}], "n-regions": [{"c": some[1]}]}}}
    assert bigmap.picked(state, "m") == ((some[0],), ("p7",)) and bigmap.picked(None, "m") == ((), ())
    plain = json.loads(bigmap.deck_json(info, key="m"))
    assert not any(layer["id"].endswith(bigmap.REGIONS_LAYER) for layer in plain["layers"])
    selecting = json.loads(bigmap.deck_json(info, key="m", regions=True, selected_regions=some[:1],
                                            highlight=points[[Column.X, Column.Y]].to_numpy()[:4]))
    ids = [layer["id"] for layer in selecting["layers"]]
    top = ids.index(f"m-{bigmap.REGIONS_LAYER}")
    assert all(ids.index(i) < top for i in ids if "-hover-" in i or "-bulk-" in i), "regions over the points"
    by_id = {layer["id"]: layer for layer in selecting["layers"]}
    assert len(by_id["m-selected-regions"]["data"]) == 1 and len(by_id["m-highlight"]["data"]) == 4


def test_compare_highlights_what_differs():
    table = pd.DataFrame({
        "run_id": ["r1", "r2"], "kind": ["map", "map"], "param.layer": ["6", "2"], "param.seed": ["0", "0"],
        "metric.ami": [0.5, 0.25], "metric.nmi": [0.4, 0.4 + 1e-13], "metric.only_one": [1.0, np.nan],
    })
    info = compare_charts.compare_info(table, labels={"r1": "one", "r2": "two"})
    flags = dict(zip(info.table["field"], info.differs))
    assert flags == {"kind": False, "layer": True, "seed": False, "ami": True, "nmi": False, "only_one": True}
    assert info.runs == ["one", "two"]
    assert set(info.metrics["metric"]) == {"ami"}  # a metric of one run only is not compared
    assert sorted(info.metrics["difference"]) == [-0.25, 0.0]  # a difference from the first run
    only = compare_charts.compare_info(table, only_differences=True)
    assert set(only.table["field"]) == {"layer", "ami", "only_one"}
    compare_charts.metrics_chart(info).to_dict()


def _trials() -> pd.DataFrame:
    return pd.DataFrame({
        Column.TRIAL: [0, 1, 2, 3, 4], Column.STATE: ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"],
        Column.VALUE: [0.2, 0.5, np.nan, 0.4, 0.7], "reducer.n_neighbors": [5, 50, 10, 15, 100],
        "reducer.metric": ["cosine", "euclidean", "cosine", "cosine", "euclidean"], Metric.AMI: [0.2, 0.5, 0, 0.4, 0.7],
    })


def test_sweep_history_parameters_and_parallel_coordinates():
    history = sweep_charts.history_info(_trials(), direction="maximize")
    assert (history.best_trial, history.best_value, history.n_complete) == (4, 0.7, 4)
    assert list(history.frame["best_so_far"].ffill()) == [0.2, 0.5, 0.5, 0.5, 0.7]
    assert sweep_charts.history_info(_trials(), direction="minimize").best_trial == 0
    sweep_charts.history_chart(history).to_dict()
    assert sweep_charts.param_columns(_trials()) == ["reducer.n_neighbors", "reducer.metric"]
    params = sweep_charts.param_info(_trials())
    assert params.numeric == {"reducer.n_neighbors": True, "reducer.metric": False}
    assert params.log_scale["reducer.n_neighbors"]  # 5..100 spans 20x
    assert len(params.frames["reducer.metric"]) == 4  # complete trials only
    sweep_charts.param_chart(params).to_dict()
    parallel = sweep_charts.parallel_info(_trials())
    assert set(parallel["axis"]) == {"reducer.n_neighbors", "reducer.metric", "value"}
    assert parallel["scaled"].between(0, 1).all()
    sweep_charts.parallel_chart(parallel).to_dict()
    importances = sweep_charts.importance_info(pd.DataFrame({Column.PARAM: ["a", "b"], Column.IMPORTANCE: [1.0, 3.0]}))
    assert list(importances[Column.PARAM]) == ["b", "a"] and importances["share"].sum() == pytest.approx(1)
    sweep_charts.importance_chart(importances).to_dict()
    assert sweep_charts.history_info(_trials().iloc[0:0]).best_trial is None


def test_path_info_splits_methods_and_tables_the_neighbours():
    path = pd.DataFrame({Column.METHOD: ["lerp"] * 3 + ["slerp"] * 3, Column.STEP: [0, 1, 2] * 2,
                         Column.T: [0, 0.5, 1] * 2, Column.NORM: [1, 0.8, 1, 1, 1, 1],
                         Column.COSINE_FROM: [1, 0.7, 0.1] * 2, Column.COSINE_TO: [0.1, 0.7, 1] * 2,
                         Column.IMAGE: [None] * 3 + ["images/slerp/step_000.png", None, None]})
    rows = [{Column.METHOD: m, Column.STEP: s, Column.RANK: r, Column.SAMPLE_ID: f"{m}{s}{r}", Column.LABEL: "x",
             Column.TEXT: "t", Column.DISTANCE: 0.1} for m in ("lerp", "slerp", "arithmetic") for s in range(3)
            for r in (1, 2)]
    neighbours = pd.DataFrame(rows)
    info = interpolation_charts.path_info(path, neighbours, method="slerp")
    assert info.methods == ["lerp", "slerp", "arithmetic"]
    assert (info.method, info.n_steps, info.k) == ("slerp", 3, 2)
    assert info.images == {0: "images/slerp/step_000.png"}
    assert set(info.geometry["measure"]) == {"cosine to A", "cosine to B", "norm"}
    assert interpolation_charts.neighbour_table(info).shape == (3, 2)
    assert interpolation_charts.path_info(path, neighbours, method="nope").method == "lerp"
    arithmetic = interpolation_charts.path_info(path, neighbours, method="arithmetic")
    assert arithmetic.geometry.empty and len(arithmetic.neighbours) == 6
    interpolation_charts.neighbour_chart(info).to_dict()
    interpolation_charts.geometry_chart(info).to_dict()


def test_analogy_accuracy_per_section_and_layer():
    rows = [("a", Metric.ACCURACY_AT_1, 0.5, 0), ("a", Metric.ACCURACY_AT_1, 0.8, 1),
            ("a", Metric.qualified(Metric.ACCURACY_AT_1, "gender"), 1.0, 1), ("a", Metric.ACCURACY_AT_5, 0.9, 1)]
    metrics = pd.DataFrame(rows, columns=["run_id", "key", "value", "step"])
    info = interpolation_charts.analogy_info(metrics, labels={"a": "A"})
    assert info.sections == [interpolation_charts.OVERALL, "gender"]
    assert info.best == {"A": (1, 0.8)}
    assert len(interpolation_charts.analogy_info(metrics, at=5).frame) == 1
    interpolation_charts.analogy_chart(info).to_dict()


def test_projection_separation_and_angles_between_directions():
    rng = np.random.default_rng(0)
    labels = np.repeat(["cat", "dog"], 50)
    projections = pd.DataFrame({
        Column.SAMPLE_ID: np.tile(np.arange(100).astype(str), 2), Column.LABEL: np.tile(labels, 2),
        Column.DIRECTION: np.repeat(["cat", "dog"], 100), Column.METHOD: "mean_difference",
        Column.PROJECTION: np.concatenate([np.where(labels == "cat", 3.0, 0.0), np.zeros(100)]) + rng.normal(size=200),
    })
    info = direction_charts.projection_info(projections, direction="cat")
    assert info.directions == ["cat", "dog"] and info.separation > 2
    assert direction_charts.projection_info(projections, direction="dog").separation < 1
    direction_charts.projection_chart(info).to_dict()
    cosines = pd.DataFrame({
        Column.DIRECTION_A: ["cat", "cat", "dog", "dog", "cat"],
        Column.DIRECTION_B: ["cat", "dog", "cat", "dog", "cat"],
        Column.METHOD_A: ["m"] * 4 + ["m"], Column.METHOD_B: ["m"] * 4 + ["probe"],
        Column.COSINE: [1.0, 0.0, 0.0, 1.0, 0.9],
    })
    angles = direction_charts.angle_info(cosines, method="m")
    assert angles.mean_abs_cosine == 0.0 and angles.agreement == {"cat": 0.9}
    assert sorted(angles.frame["angle"].round(6)) == [0, 0, 90, 90]
    direction_charts.angle_chart(angles).to_dict()


def test_feature_browser_heatmap_and_map_colouring_info():
    features = pd.DataFrame({
        Column.FEATURE: [0, 1, 2], Column.DENSITY: [0.2, 0.0, 0.5], Column.AUC: [0.95, 0.5, 0.7],
        Column.BEST_LABEL: ["soup", "soup", "jazz"], Column.KEYWORDS: [["broth", "simmer"], [], ["band"]],
        Column.TOP_TEXTS: [["Simmer the broth."], [], ["The band played."]],
        Column.TOP_SAMPLES: [["s1"], [], ["s2"]], Column.TOP_ACTIVATIONS: [[2.0], [], [1.5]],
        Column.TOP_TOKENS: [[], [], []],
    })
    listing = feature_charts.feature_list_info(features)
    assert listing.frame[Column.FEATURE].tolist() == [0, 2] and listing.n_dead == 1
    assert feature_charts.feature_list_info(features, sort=Column.DENSITY).frame[Column.FEATURE].tolist() == [2, 0]
    assert feature_charts.feature_list_info(features, query="BAND").frame[Column.FEATURE].tolist() == [2]
    assert feature_charts.feature_list_info(features, include_dead=True).frame[Column.FEATURE].tolist() == [0, 2, 1]
    examples = feature_charts.examples_info(features, 0)
    assert examples.best_label == "soup" and examples.frame["share"].tolist() == [1.0]
    feature_charts.examples_chart(examples).to_dict()
    labels = pd.DataFrame({Column.FEATURE: [0, 0, 1, 1, 2, 2], Column.LABEL: ["jazz", "soup"] * 3,
                           Column.AUC: [0.1, 0.95, 0.5, 0.5, 0.7, 0.3]})
    heat = feature_charts.heatmap_info(labels, per_label=1)
    assert heat.features == ["2", "0"] and heat.labels == ["jazz", "soup"]
    feature_charts.heatmap_chart(heat).to_dict()
    points = pd.DataFrame({Column.SAMPLE_ID: ["s1", "s2", "s3"], Column.X: [0, 1, 2], Column.Y: [0, 1, 0],
                           Column.LABEL: ["soup", "jazz", "soup"], Column.TEXT: ["a", "b", "c"]})
    activations = pd.DataFrame({Column.SAMPLE_ID: ["s1", "s3", "s2"], Column.FEATURE: [0, 0, 2],
                                Column.ACTIVATION: [2.0, 0.5, 1.5]})
    shown = feature_charts.feature_map_info(points, activations, 0)
    assert shown.n_active == 2 and shown.frame[Column.SAMPLE_ID].tolist() == ["s2", "s3", "s1"]
    feature_charts.feature_map_chart(shown).to_dict()


# -- every page on real runs --------------------------------------------------------------------
PAGES = {
    # path: minimum charts on the page with this session's runs
    "views/overview.py": 2,
    "views/layers.py": 2,
    "views/maps.py": 2,
    "views/sweeps.py": 4,
    "views/interpolation.py": 3,
    "views/directions.py": 2,
    "views/features.py": 3,
    "views/training.py": 0,  # no finetune run here (tests/test_finetune.py draws it)
    "views/compare.py": 1,
}


def _params_for(path: str, runs: UiRuns) -> dict:
    """The URL of each page as a user would share it: these tests' own runs."""
    return {
        "views/overview.py": {},
        "views/layers.py": {"run": [runs.text]},
        "views/maps.py": {"run": runs.maps},
        "views/sweeps.py": {"run": runs.sweep} if runs.sweep else {},
        "views/interpolation.py": {"run": runs.interpolations + [runs.digits_interpolation],
                                   "analogy": runs.analogies} if runs.interpolations else {},
        "views/directions.py": {"run": runs.directions} if runs.directions else {},
        "views/features.py": {"run": runs.sae} if runs.sae else {},
        "views/training.py": {},
        "views/compare.py": {"run": runs.maps or [runs.text, runs.digits]},
    }[path]


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_draws_its_charts_without_an_error(app_env, path):
    minimum = PAGES[path]
    at = open_page(path, {k: v for k, v in _params_for(path, app_env).items() if v})
    assert_clean(at)
    assert at.title, "every page has a title"
    assert len(charts(at)) >= minimum
    assert not at.warning, [w.value for w in at.warning]  # every linked run was found


def test_layers_page_shows_curves_findings_and_the_cka_heatmap(app_env):
    at = open_page("views/layers.py", {"run": [app_env.text], "curve": [Metric.CKA_PREVIOUS, Metric.PROBE_ACCURACY]})
    assert_clean(at)
    assert at.multiselect[1].value == [Metric.CKA_PREVIOUS, Metric.PROBE_ACCURACY]
    specs = charts(at)
    curves = next(s for s in specs if "concat" in s)
    assert len(curves["concat"]) == 2
    heatmap = json.dumps(next(s for s in specs if "concat" not in s))
    assert Column.LAYER_A in heatmap and Column.CKA in heatmap
    assert [m.label for m in at.metric][:2] == ["stops changing at layer", "largest change at layer"]
    # The verdict comes first: one sentence, and a table of each measure's best layer.
    sentence = [e.value for e in (*at.success, *at.info) if "measures" in e.value]
    assert sentence and ("agree" in sentence[0] or "disagree" in sentence[0])
    verdict = at.dataframe[0].value
    assert list(verdict.columns[:2]) == ["measure", "best layer"]
    assert "linear probe" in set(verdict["measure"]) and verdict["best layer"].between(0, 6).all()


def test_maps_show_a_collapsed_clustering_warning_beside_its_scores(app_env):
    at = open_page("views/maps.py", {"run": [app_env.maps[0], app_env.collapsed_map]})
    assert_clean(at)
    warnings = [w.value for w in at.warning if "collapsed" in w.value]
    assert len(warnings) == 1 and "found 2 clusters for 10 classes" in warnings[0]


def test_a_shared_maps_link_opens_the_same_runs_colouring_and_selection(app_env):
    x0, x1, y0, y1 = -1e9, 1e9, -1e9, 1e9  # a box around every point
    link = {"run": list(reversed(app_env.maps)), "color": "cluster", "cols": "1",
            "sel": app_env.maps[1], "box": f"{x0},{x1},{y0},{y1}"}
    at = open_page("views/maps.py", link)
    assert_clean(at)
    assert at.multiselect[0].value == list(reversed(app_env.maps))
    assert at.radio[0].value == "cluster"
    specs = charts(at)
    assert len(specs) == 2
    scatters = [s["layer"][0] if "layer" in s else s for s in specs]  # clusters named in a layer on top
    assert all(s["encoding"]["color"]["condition"]["title"] == "cluster" for s in scatters)
    assert specs[0]["params"][0].get("value") == {"x": [x0, x1], "y": [y0, y1]}  # the brush is drawn where it was
    table = at.dataframe[-1].value
    assert len(table) == app_env.n_text and set(table.columns) >= {Column.SAMPLE_ID, Column.LABEL, Column.TEXT}
    assert at.query_params["sel"] == app_env.maps[1] and at.query_params["color"] == "cluster"


def test_maps_name_their_clusters_and_list_them(app_env):
    at = open_page("views/maps.py", {"run": [*app_env.maps, app_env.sweep], "cols": "3"})  # the sweep's best map too
    assert_clean(at)
    assert len(charts(at)) == 3
    for spec, frames in zip(charts(at), chart_datasets(at)):
        marks = [layer["mark"]["type"] for layer in spec["layer"]]
        assert marks[0] == "circle" and marks.count("text") == 2  # cluster names over the scatter
        names = next(f for f in frames if "text" in f and Column.SAMPLE_ID not in f)
        # The largest cluster's name at least (three maps a row leave room for few; the
        # others are named on hover).
        assert len(names) >= 1 and names["text"].str.strip().str.len().min() > 0
        scatter = next(f for f in frames if Column.SAMPLE_ID in f)
        assert scatter["cluster name"].str.contains(": ").any()
    assert any("clusters: size, purity, keywords" in e.label for e in at.expander)
    tables = [d.value for d in at.dataframe if Column.KEYWORDS in d.value]
    assert len(tables) == 3 and all(t[Column.KEYWORDS].str.len().min() > 0 for t in tables)


def test_search_by_a_new_text_lists_its_neighbours_and_places_it_on_the_map(app_env, text_extraction):
    row = 5
    text, sample_id = text_extraction.texts[row], text_extraction.ids[row]
    at = open_page("views/maps.py", {"run": app_env.maps, "search": text, "in": app_env.maps[1]})
    assert_clean(at)
    assert at.text_input(key="maps.search").value == text and at.selectbox(key="maps.in").value == app_env.maps[1]
    neighbours = next(d.value for d in at.dataframe if Column.DISTANCE in d.value)
    assert neighbours.iloc[0][Column.SAMPLE_ID] == sample_id
    assert neighbours.iloc[0][Column.DISTANCE] == pytest.approx(0.0, abs=1e-5)
    assert list(neighbours[Column.DISTANCE]) == sorted(neighbours[Column.DISTANCE])
    specs = charts(at)
    diamonds = [i for i, spec in enumerate(specs) for layer in spec["layer"] if layer["mark"].get("shape") == "diamond"]
    assert diamonds == [1], "the query is drawn on the map it was searched in only"
    # The exact text lands on its own sample: the marker sits on that sample's position.
    frames = chart_datasets(at)[1]
    points = next(f for f in frames if Column.SAMPLE_ID in f).set_index(Column.SAMPLE_ID)
    marker = next(f for f in frames if "name" in f and (f["name"] == map_charts.QUERY).all()).iloc[0]
    assert (marker[Column.X], marker[Column.Y]) == pytest.approx(
        (points.loc[sample_id, Column.X], points.loc[sample_id, Column.Y]), abs=1e-4)
    assert at.query_params["search"] == text
    # The answer came from the app's warm worker; the same link opened again (a shared link, a
    # new session) is answered by the cache without asking the worker, a new text by the same worker.
    from latentscape.ui import data

    (worker,) = data.search_workers().live().values()
    asked = worker.requests
    again = open_page("views/maps.py", {"run": app_env.maps, "search": text, "in": app_env.maps[1]})
    assert_clean(again)
    assert next(d.value for d in again.dataframe if Column.DISTANCE in d.value).equals(neighbours)
    assert worker.requests == asked, "a second search of the same text is answered by the cache"
    again.text_input(key="maps.search").input("a winter soup of onions and stock").run()
    assert_clean(again)
    assert worker.requests == asked + 1 and list(data.search_workers().live().values()) == [worker]


def test_search_says_why_a_run_cannot_be_searched(app_env):
    at = open_page("views/interpolation.py", {"run": [app_env.digits_interpolation]})
    at.text_input(key="interpolation.search").input("the digit seven").run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    assert any("tabular" in w and "latentscape search: error:" in w for w in warnings), warnings


def test_a_large_map_is_drawn_by_deck_gl_from_the_columns_it_needs(monkeypatch, tmp_path):
    from latentscape.tracking.contract import Artifact, Param, Tag
    from latentscape.tracking.run_log import tracked_run
    from latentscape.tracking.runs import open_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = open_store(uri)
    points = _big_points(bigmap.LARGE_MAP_POINTS + 5000).assign(**{"meta.source": "synthetic"})
    with tracked_run(store, store.experiment_id("big"), Kind.MAP, run_name="big map", tags={Tag.LAYER: 0}) as log:
        log.params({Param.LAYER: 0, Param.REDUCER: "umap", Param.CLUSTERER: "hdbscan"})
        log.table(Artifact.MAP, points)
        run_id = log.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("LATENTSCAPE_CATALOG", str(tmp_path / "catalog.duckdb"))
    _clear_streamlit_caches()
    try:
        at = open_page("views/maps.py", {"run": run_id, "color": "cluster"})
        assert_clean(at)
        assert not charts(at), "no Vega-Lite map above the threshold"
        decks = at.get("deck_gl_json_chart")
        assert len(decks) == 1
        deck = json.loads(decks[0].proto.json)
        drawn = [layer for layer in deck["layers"] if layer["@@type"] == "ScatterplotLayer"]
        # The points travel as JSON files of the app's media store, not in the chart's JSON
        # (which Streamlit's frontend parses with a slow JSON5 parser).
        assert drawn and all("/media/" in str(layer["data"]) and layer["data"].endswith(".json") for layer in drawn)
        assert len(decks[0].proto.json) < 20_000
        assert json.loads(decks[0].proto.tooltip)["text"].startswith("{t}")
        assert "drawn by deck.gl" in " ".join(c.value for c in at.caption)
    finally:
        _clear_streamlit_caches()


def test_the_sweeps_page_links_to_the_best_trials_map(app_env):
    at = open_page("views/sweeps.py", {"run": app_env.sweep})
    assert_clean(at)
    links = {link.proto.label: link.proto for link in at.get("page_link")}
    assert "Best trial's map" in links
    assert app_env.sweep in links["Best trial's map"].page or app_env.sweep in str(links["Best trial's map"])
    assert {m.label for m in at.metric} >= {"trials", "complete", "best trial"}


def test_interpolation_shows_the_decoded_strip_and_analogies(app_env):
    at = open_page("views/interpolation.py", {"run": [app_env.digits_interpolation], "method": "slerp"})
    assert_clean(at)
    assert at.radio[0].value == "slerp"
    assert len(at.get("image")) >= 1, "the autoencoder's decoded path is shown"
    specs = json.dumps(charts(at))
    assert "accuracy" in specs and "section" in specs


def test_directions_page_projects_on_the_linked_concept(app_env):
    at = open_page("views/directions.py", {"run": app_env.directions})
    labels = [label for label in at.selectbox[1].options]
    chosen = labels[-1]
    at = open_page("views/directions.py", {"run": app_env.directions, "direction": chosen, "method": "probe"})
    assert_clean(at)
    assert at.selectbox[1].value == chosen and at.radio[0].value == "probe"
    assert any(chosen in json.dumps(spec.get("title", "")) for spec in charts(at))


def test_features_page_browses_features_and_colours_a_map_by_one(app_env):
    at = open_page("views/features.py", {"run": app_env.sae})
    assert_clean(at)
    listed = at.dataframe[0].value
    feature = int(listed[Column.FEATURE].iloc[-1])
    word = next(w for w in listed[Column.KEYWORDS] if w).split(", ")[0]
    at = open_page("views/features.py", {"run": app_env.sae, "feature": str(feature), "sort": Column.DENSITY})
    assert_clean(at)
    assert at.selectbox(key="features.feature").value == feature and at.radio[0].value == Column.DENSITY
    titles = json.dumps([spec.get("title", "") for spec in charts(at)])
    assert f"feature {feature}" in titles and "feature x label AUC" in titles
    assert titles.count(f"feature {feature}") == 2  # and the same extraction's map, coloured by it
    at = open_page("views/features.py", {"run": app_env.sae, "q": word})
    assert_clean(at)
    from latentscape.tracking.runs import load_table, open_store

    table = load_table(open_store(app_env.tracking_uri), app_env.sae, Artifact.FEATURES).set_index(Column.FEATURE)
    found = at.dataframe[0].value[Column.FEATURE].astype(int).tolist()
    assert feature_charts.feature_list_info(table.reset_index(), query=word).frame[Column.FEATURE].tolist() \
        == found[:len(found)]
    assert 0 < len(found) < len(listed) and all(
        word in " ".join([*table.loc[f, Column.KEYWORDS], *table.loc[f, Column.TOP_TEXTS]]).lower() for f in found)


def test_compare_lists_params_and_metrics_of_the_linked_runs(app_env):
    at = open_page("views/compare.py", {"run": app_env.maps, "diff": "1"})
    assert_clean(at)
    assert at.toggle[0].value is True
    table = at.dataframe[0].value
    fields = set(table["field"])
    assert "layer" in fields and Metric.AMI in fields  # the layer differs, and so does the AMI
    assert "seed" not in fields  # the same in both maps: hidden with "only differences"


def test_compare_opens_on_two_runs_and_the_kind_filter_resets_the_selection(app_env):
    at = open_page("views/compare.py")
    assert_clean(at)
    picked = at.multiselect(key="compare.run").value
    assert len(picked) == 2  # never "1 runs · 0 fields differ"
    at.selectbox(key="compare.kind").set_value("map").run()
    assert_clean(at)
    picked = at.multiselect(key="compare.run").value
    assert len(picked) == 2 and set(picked) <= {*app_env.maps, app_env.collapsed_map}  # only maps kept
    assert "Key scores: difference from" in str(charts(at)[0])


def test_overview_filters_come_from_the_link(app_env):
    at = open_page("views/overview.py", {"kind": ["map", "extract"], "q": "layer"})
    assert_clean(at)
    assert sorted(at.multiselect[0].value) == ["extract", "map"]
    assert at.text_input[0].value == "layer"
    assert at.query_params["q"] == "layer"


def test_overview_shows_who_ran_a_local_run_its_results_and_folds_trials(app_env):
    import getpass

    at = open_page("views/overview.py")
    assert_clean(at)
    table = at.dataframe[0].value
    mine = table[table[CatalogColumn.RUN_ID].isin(app_env.maps)]
    assert set(mine[CatalogColumn.USER]) == {getpass.getuser()}  # the OS user, not "unknown"
    assert mine["AMI"].notna().all()  # a sortable result column
    assert "trial" not in set(table[CatalogColumn.KIND])  # folded into their sweep
    sweep = table[table[CatalogColumn.RUN_ID] == app_env.sweep]
    assert int(sweep["trials"].iloc[0]) == 4


def test_refresh_shows_runs_logged_after_the_app_started(app_env, monkeypatch, tmp_path):
    from latentscape.tracking.run_log import tracked_run
    from latentscape.tracking.runs import open_store
    from latentscape.ui import data

    # A store of our own: this test writes.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = open_store(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("LATENTSCAPE_CATALOG", str(tmp_path / "catalog.duckdb"))
    _clear_streamlit_caches()
    experiment = store.experiment_id("refresh")
    with tracked_run(store, experiment, Kind.EXTRACT, run_name="before"):
        pass
    at = open_page(None)
    assert_clean(at)
    assert at.metric[0].value == "1"
    with tracked_run(store, experiment, Kind.EXTRACT, run_name="after"):
        pass
    at.run()
    assert at.metric[0].value == "1", "without a refresh the catalog is as it was"
    at.button(key="refresh").click().run()
    assert data.wait_for_sync(120)
    at.run()  # the sidebar's poll reruns the app when the sync is done
    assert_clean(at)
    assert at.metric[0].value == "2"


def test_an_empty_store_says_what_to_run_on_every_page(monkeypatch, tmp_path):
    from latentscape.tracking.runs import open_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    open_store(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("LATENTSCAPE_CATALOG", str(tmp_path / "catalog.duckdb"))
    _clear_streamlit_caches()
    try:
        for path in PAGES:
            at = open_page(path, {"run": "0123456789abcdef"})
            assert_clean(at)
            commands = "\n".join(code.value for code in at.code)
            assert "latentscape " in commands, path
            assert not charts(at)
    finally:
        _clear_streamlit_caches()


def _store_with_runs(tmp_path, monkeypatch, n: int) -> tuple[str, Path]:
    """A store of ``n`` extract runs and the path of a catalog that was never synced
    (the file exists, empty, as the app's first open makes it), set as the app's."""
    from latentscape.tracking.catalog import Catalog
    from latentscape.tracking.run_log import tracked_run
    from latentscape.tracking.runs import open_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = open_store(uri)
    experiment = store.experiment_id("first-open")
    for i in range(n):
        with tracked_run(store, experiment, Kind.EXTRACT, run_name=f"run {i}"):
            pass
    catalog = tmp_path / "catalog.duckdb"
    Catalog.open(uri, catalog).close()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("LATENTSCAPE_CATALOG", str(catalog))
    _clear_streamlit_caches()
    return uri, catalog


def _held_catalog_lock(catalog: Path):
    """Hold the lock a catalog refresh takes (as another process's refresh would): a sync
    started meanwhile waits at its start, so the test sees it running, whatever the
    machine's speed."""
    import contextlib
    import fcntl

    @contextlib.contextmanager
    def held():
        with open(catalog.with_name(catalog.name + ".lock"), "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    return held()


def _sync_threads() -> int:
    import threading

    from latentscape.ui import data

    return sum(thread.name == data.SYNC_THREAD and thread.is_alive() for thread in threading.enumerate())


def test_the_first_open_draws_the_overview_while_the_catalog_syncs_and_fills_in_after(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from latentscape.ui import data

    _, catalog = _store_with_runs(tmp_path, monkeypatch, 3)
    try:
        with _held_catalog_lock(catalog):
            at = AppTest.from_file(str(APP), default_timeout=120).run()
            # The page is drawn (the script run ended) while the sync waits for the lock.
            assert_clean(at)
            assert at.title[0].value == "Overview"
            notices = " ".join(info.value for info in at.info)
            assert "Syncing the runs from MLflow" in notices, notices
            assert not at.code, "no 'run this command' advice for an empty store: it is not empty"
            assert "syncing with MLflow" in " ".join(c.value for c in at.sidebar.caption)
            assert _sync_threads() == 1

            # Neither Refresh nor a second browser session starts a second sync.
            at.button(key="refresh").click().run()
            assert "already running" in " ".join(t.value for t in at.toast)
            AppTest.from_file(str(APP), default_timeout=120).run()
            assert _sync_threads() == 1
        assert data.wait_for_sync(120)
        at.run()  # what the sidebar's poll does when the sync is done
        assert_clean(at)
        assert at.metric[0].value == "3"
        assert not at.info, [info.value for info in at.info]
        assert "3 new" in " ".join(c.value for c in at.sidebar.caption)
    finally:
        data.wait_for_sync(120)
        _clear_streamlit_caches()


def test_a_failed_sync_is_one_line_in_the_sidebar_and_the_page_still_draws(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from latentscape.ui import data

    broken = tmp_path / "mlflow.db"
    broken.write_bytes(b"this is not a database\n" * 100)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{broken}")
    monkeypatch.setenv("LATENTSCAPE_CATALOG", str(tmp_path / "catalog.duckdb"))
    _clear_streamlit_caches()
    try:
        at = AppTest.from_file(str(APP), default_timeout=120).run()
        assert data.wait_for_sync(120)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.title[0].value == "Overview"
        errors = [error.value for error in at.sidebar.error]
        assert len(errors) == 1 and errors[0].startswith("Catalog sync failed: "), errors
        assert "\n" not in errors[0]
        assert "never synced" in " ".join(w.value for w in at.warning)
    finally:
        _clear_streamlit_caches()


# -- the UI process stays light ------------------------------------------------------------------
def test_the_app_imports_no_torch_numba_umap_or_jobs(ui_runs, tmp_path):
    code = f"""
import sys
from streamlit.testing.v1 import AppTest
from latentscape.ui import data
at = AppTest.from_file({str(APP)!r}, default_timeout=120).run()
assert data.wait_for_sync(120)
for path in {list(PAGES)[1:]!r}:
    at.query_params = {{}}
    at.switch_page(path).run()
    assert not at.exception, (path, [e.value for e in at.exception])
heavy = {{"torch", "numba", "umap", "latentscape.jobs", "transformers", "pynndescent"}}
loaded = sorted({{name.split(".")[0] for name in sys.modules}} & heavy | {{"latentscape.jobs"}} & set(sys.modules))
print(",".join(loaded))
"""
    env = {**os.environ, "MLFLOW_TRACKING_URI": ui_runs.tracking_uri,
           "LATENTSCAPE_CATALOG": str(tmp_path / "catalog.duckdb")}
    # timeout: a guard against a hang, not a speed limit (the syncs inside wait for progress)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1:] in ([], [""]), done.stdout


# -- latentscape ui ---------------------------------------------------------------------------------
def test_ui_command_runs_the_app_headless_without_telemetry_or_tracebacks():
    from latentscape.jobs.serve import APP_PATH, ui_command, ui_environment

    command = ui_command(port=8600, address="127.0.0.1")
    assert command[:5] == [sys.executable, "-m", "latentscape.ui", "run", str(APP_PATH)]
    flags = dict(zip(command[5::2], command[6::2]))
    assert flags["--server.port"] == "8600" and flags["--server.address"] == "127.0.0.1"
    assert flags["--server.headless"] == "true"
    assert flags["--browser.gatherUsageStats"] == "false"
    assert flags["--client.showErrorDetails"] == "none"
    env = ui_environment(tracking_uri="sqlite:////data/mlflow.db", catalog="cat.duckdb", base={})
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:////data/mlflow.db"
    assert env["LATENTSCAPE_CATALOG"] == str(Path("cat.duckdb").resolve())
    assert APP_PATH == APP and (APP.parent / ".streamlit" / "config.toml").is_file()


def test_ui_on_a_port_in_use_fails_with_one_line_and_exit_2(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "latentscape.jobs.cli", "ui", "--port", str(port), "--address", "127.0.0.1",
             "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"latentscape ui: error: port {port} is already in use; pass another --port (e.g. {port + 1}), "
        "or stop the process that holds it"]
    missing = subprocess.run([sys.executable, "-m", "latentscape.jobs.cli", "ui", "--tracking-uri", "sqlite:////no/such/dir/x.db",
                              "--port", str(port), "--address", "127.0.0.1"], capture_output=True, text=True,
                             timeout=300, cwd=REPO)
    assert missing.returncode == 2 and "does not exist" in missing.stderr, missing.stderr


# -- how far to trust a result ------------------------------------------------------------------
def test_score_text_shows_interval_p_value_and_spread():
    from latentscape.ui.labels import score_text

    row = {"metric.ami": 0.81234, "metric.ami_ci_low": 0.79, "metric.ami_ci_high": 0.83,
           "metric.ami_p_value": 1 / 101, "metric.ami_std": 0.004, "metric.nmi": 0.5, "metric.nmi_p_value": None}
    assert score_text("ami", row, prefix="metric.") == "ami 0.812 [0.790, 0.830] p=0.0099 ±0.004"
    assert score_text("nmi", row, prefix="metric.") == "nmi 0.500"


def test_aligned_maps_share_axes_and_curves_get_error_bars():
    frame = pd.DataFrame({Column.LAYER: np.repeat([0, 1, 2], 4), Column.SAMPLE_ID: list("abcd") * 3,
                          Column.X: np.arange(12.0), Column.Y: -np.arange(12.0), Column.LABEL: ["p", "q"] * 6})
    first, last = layer_charts.aligned_info(frame, 0), layer_charts.aligned_info(frame, 2)
    assert first.layers == [0, 1, 2] and len(last.points) == 4 and last.layer == 2
    assert first.x_domain == last.x_domain and first.labels == ["p", "q"]  # same axes, same colours
    assert layer_charts.aligned_info(frame, 9).layer == 0 and layer_charts.aligned_info(None).layer is None
    layer_charts.aligned_chart(last).to_dict()
    curves = pd.DataFrame({CatalogColumn.RUN_ID: ["r"] * 4, CatalogColumn.KEY: [Metric.AMI] * 2 + [Metric.AMI_STD] * 2,
                           CatalogColumn.LAYER: [0, 1, 0, 1], CatalogColumn.VALUE: [0.5, 0.6, 0.01, 0.02]})
    info = layer_charts.curves_info(curves)
    assert info.keys == [Metric.AMI]  # the spread is no panel of its own
    np.testing.assert_allclose(info.frame["low"], [0.49, 0.58]) and np.testing.assert_allclose(info.frame["high"],
                                                                                               [0.51, 0.62])
    assert "rule" in json.dumps(layer_charts.curves_chart(info).to_dict())


def test_layers_page_steps_through_the_aligned_maps(app_env):
    at = open_page("views/layers.py", {"run": [app_env.text]})
    assert_clean(at)
    slider = at.select_slider[0]
    assert slider.label == "Layer" and slider.value == 0
    titles = [s.get("title") for s in charts(at)]
    assert "layer 0" in json.dumps(titles)
    at = slider.set_value(4).run()
    assert_clean(at)
    assert "layer 4" in json.dumps([s.get("title") for s in charts(at)])


def test_maps_show_p_values_and_intervals_and_sweeps_their_held_out_scores(app_env):
    at = open_page("views/maps.py", {"run": app_env.maps})
    assert_clean(at)
    captions = " ".join(c.value for c in at.caption)
    assert "p=0.0099" in captions and "ami " in captions and "[" in captions
    at = open_page("views/sweeps.py", {"run": app_env.sweep})
    assert_clean(at)
    labels = {m.label for m in at.metric}
    assert {"held-out ami", "best ami (tuning samples)"} <= labels
    assert any("never read while tuning" in str(frame.value.columns.tolist()) for frame in at.dataframe)
