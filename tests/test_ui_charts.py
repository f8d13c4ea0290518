"""The pure ``*_info`` steps of the app's charts that make a page readable at a glance:
maps fitted to their panel with names that never overlap and a fixed grey for noise,
runs named in words, uncertainty on the Layers curves, Compare's differences, the
Overview's results. No Streamlit, no browser: frames in, small results out."""

from __future__ import annotations

import colorsys

import numpy as np
import pandas as pd
import pytest

from latentscape.tracking.contract import Column
from latentscape.ui.charts import bigmap, palette
from latentscape.ui.charts import maps as map_charts


# -- maps ----------------------------------------------------------------------------------------
def _hue(colour: str) -> float:
    r, g, b = (int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return colorsys.rgb_to_hls(r, g, b)[0] * 360


def test_the_palette_gives_neighbours_different_hues_and_keeps_grey_for_noise():
    colours = palette.category_colours(["a", palette.NOISE, "b", "", "c", palette.OTHER])
    assert colours[1] == colours[3] == colours[5] == palette.NOISE_GREY
    assert len(set(palette.CATEGORY_COLOURS)) == len(palette.CATEGORY_COLOURS)
    assert palette.NOISE_GREY not in palette.CATEGORY_COLOURS
    for left, right in zip(palette.CATEGORY_COLOURS, palette.CATEGORY_COLOURS[1:]):
        gap = abs(_hue(left) - _hue(right))
        assert min(gap, 360 - gap) > 15, (left, right)  # no light twin beside its strong colour
    for colour in palette.CATEGORY_COLOURS:  # no grey in the scheme: grey means noise
        r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
        assert max(r, g, b) - min(r, g, b) > 40, colour


def test_noise_is_the_same_grey_on_every_map_altair_and_deck_gl():
    rng = np.random.default_rng(1)
    for n_clusters in (3, 17):
        n = 400
        cluster = np.where(np.arange(n) % 7 == 0, -1, np.arange(n) % n_clusters)
        points = pd.DataFrame({Column.SAMPLE_ID: [f"s{i}" for i in range(n)], Column.X: rng.normal(size=n),
                               Column.Y: rng.normal(size=n), Column.CLUSTER: cluster})
        info = map_charts.map_info(points, color_by=Column.CLUSTER)
        colours = dict(zip(info.categories, info.colours))
        assert colours[palette.NOISE] == palette.NOISE_GREY
        assert info.categories[-1] == palette.NOISE  # noise last, the largest cluster first
        assert len({c for k, c in colours.items() if k != palette.NOISE}) == n_clusters
        spec = map_charts.map_chart(info).to_dict()
        scale = spec["encoding"]["color"]["condition"]["scale"]
        assert dict(zip(scale["domain"], scale["range"]))[palette.NOISE] == palette.NOISE_GREY
        deck = bigmap.deck_info(points, color_by=Column.CLUSTER)
        assert {e.category: e.colour for e in deck.legend}[palette.NOISE] == palette.NOISE_GREY


def test_a_map_is_fitted_to_its_panel_at_equal_units_without_a_forced_zero():
    rng = np.random.default_rng(0)
    points = pd.DataFrame({Column.X: rng.uniform(100, 110, 300), Column.Y: rng.uniform(-52, -50, 300),
                           Column.SAMPLE_ID: [str(i) for i in range(300)]})
    for aspect in (0.7, 1.0, 2.5):
        (x0, x1), (y0, y1) = map_charts.fitted_domains(points[Column.X], points[Column.Y], aspect=aspect)
        assert (x1 - x0) / (y1 - y0) == pytest.approx(aspect)  # one unit as long on both axes
        assert x0 <= points[Column.X].min() and x1 >= points[Column.X].max()
        assert y0 <= points[Column.Y].min() and y1 >= points[Column.Y].max()
        assert x0 > 90 and y1 < 0 or aspect > 2  # zero is not in a domain the points do not reach
    # The longer side is fitted: the points fill it but for the margin.
    (x0, x1), _ = map_charts.fitted_domains(points[Column.X], points[Column.Y], aspect=1.0)
    spread = points[Column.X].max() - points[Column.X].min()
    assert (x1 - x0) < spread * 1.1
    info = map_charts.map_info(points, aspect=1.5)
    spec = map_charts.map_chart(info).to_dict()
    x_scale = spec["encoding"]["x"]["scale"]
    assert x_scale["zero"] is False and x_scale["domain"] == list(info.x_domain)


def _labels(n: int, *, spread: float) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    clusters = pd.DataFrame({
        Column.CLUSTER: range(n), Column.NOISE: False, Column.SIZE: rng.integers(5, 200, n),
        Column.X: rng.normal(scale=spread, size=n), Column.Y: rng.normal(scale=spread, size=n),
        Column.KEYWORDS: [[f"keyword{i}", "soup", "lemon"] for i in range(n)],
    })
    return map_charts.cluster_labels(clusters)


def test_cluster_names_on_a_map_never_overlap_and_the_largest_is_always_written():
    labels = _labels(17, spread=1.0)  # a crowded 17-cluster map
    assert list(labels[Column.SIZE]) == sorted(labels[Column.SIZE], reverse=True)
    x_domain, y_domain = map_charts.fitted_domains(labels[Column.X], labels[Column.Y], aspect=300 / 420)
    x_domain = (x_domain[0] - 2, x_domain[1] + 2)
    y_domain = (y_domain[0] - 2, y_domain[1] + 2)
    placed = map_charts.placed_labels(labels, x_domain=x_domain, y_domain=y_domain, width_px=300, height_px=420)
    assert 1 <= len(placed) < len(labels)  # crowded: some go to the legend and the hover
    assert placed.iloc[0][Column.CLUSTER] == labels.iloc[0][Column.CLUSTER]
    x_px = 300 / (x_domain[1] - x_domain[0])
    y_px = 420 / (y_domain[1] - y_domain[0])
    rows = placed.to_dict("records")
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            half_w = (len(a["text"]) + len(b["text"])) * 0.62 * map_charts.LABEL_FONT_PX / 2 / 2
            apart_x = abs(a[Column.X] - b[Column.X]) * x_px >= half_w
            apart_y = abs(a[Column.Y] - b[Column.Y]) * y_px >= 1.3 * map_charts.LABEL_FONT_PX
            assert apart_x or apart_y, (a, b)
    # Far apart, every cluster is named.
    spacious = _labels(4, spread=100.0)
    x_domain, y_domain = map_charts.fitted_domains(spacious[Column.X], spacious[Column.Y], aspect=1.0, margin=0.3)
    assert len(map_charts.placed_labels(spacious, x_domain=x_domain, y_domain=y_domain, width_px=900,
                                        height_px=900)) == 4


def test_the_legend_and_hover_name_clusters_that_are_not_written_on_the_map():
    labels = _labels(5, spread=1.0)
    names = {str(c): t for c, t in zip(labels[Column.CLUSTER], labels["text"])}
    points = pd.DataFrame({Column.SAMPLE_ID: [str(i) for i in range(50)], Column.X: np.arange(50.0),
                           Column.Y: np.arange(50.0) % 7, Column.CLUSTER: np.arange(50) % 5})
    info = map_charts.map_info(points, color_by=Column.CLUSTER, cluster_names=names)
    assert set(info.frame["cluster name"]) == {f"{c}: {t}" for c, t in names.items()}
    spec = map_charts.map_chart(info, legend_names=names).to_dict()
    legend = spec["encoding"]["color"]["condition"]["legend"]
    assert "keyword0" in legend["labelExpr"] and "datum.label" in legend["labelExpr"]


# -- who ran what ---------------------------------------------------------------------------------
def test_a_local_run_carries_the_os_user_into_the_catalog(store, tmp_path, monkeypatch):
    import getpass

    from latentscape.tracking import queries
    from latentscape.tracking.catalog import Catalog
    from latentscape.tracking.contract import CatalogColumn as C
    from latentscape.tracking.contract import Kind
    from latentscape.tracking.run_log import tracked_run

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    with tracked_run(store, store.experiment_id("who"), Kind.MAP, run_name="a map") as log:
        run_id = log.run_id
    catalog = Catalog.open(store.uri, tmp_path / "catalog.duckdb")
    try:
        catalog.refresh()
        runs = queries.runs(catalog)
    finally:
        catalog.close()
    assert runs.set_index(C.RUN_ID).loc[run_id, C.USER] == getpass.getuser() != "unknown"


# -- names -----------------------------------------------------------------------------------------
def _runs() -> pd.DataFrame:
    from latentscape.tracking.contract import CatalogColumn as C

    rows = [
        # run_id, kind, name, model, data set, layer, source
        ("e246b30a" + "0" * 24, "extract", "none · digits · none", "none", "digits", None, None),
        ("14fa3433" + "0" * 24, "extract", "all-MiniLM-L6-v2 · demo · mean",
         "sentence-transformers/all-MiniLM-L6-v2", "demo", None, None),
        ("a96b726f" + "0" * 24, "map", "map · layer 0 · umap+hdbscan", "none", "digits", 0, "e246b30a" + "0" * 24),
        ("366b0ea5" + "0" * 24, "map", "map · layer 0 · umap+hdbscan", "sentence-transformers/all-MiniLM-L6-v2",
         "demo", 0, "14fa3433" + "0" * 24),
        ("3100f886" + "0" * 24, "map", "map · layer 6 · umap+hdbscan", "sentence-transformers/all-MiniLM-L6-v2",
         "demo", 6, "14fa3433" + "0" * 24),
        ("b6bf05e8" + "0" * 24, "finetune", "finetune · all-MiniLM-L6-v2 · demo",
         "sentence-transformers/all-MiniLM-L6-v2", "demo", None, None),
        ("ad7e36b4" + "0" * 24, "extract", "model · demo-heldout · mean", "model", "demo-heldout", None,
         "b6bf05e8" + "0" * 24),
        ("e5fdb805" + "0" * 24, "extract", "checkpoint", "all-MiniLM-L6-v2-ft-b6bf05e8-step18", "demo-heldout",
         None, "b6bf05e8" + "0" * 24),
    ]
    frame = pd.DataFrame(rows, columns=[C.RUN_ID, C.KIND, C.NAME, C.MODEL, C.DATASET_NAME, C.LAYER, C.SOURCE_RUN])
    return frame.assign(**{C.LAYER: frame[C.LAYER].astype("Int64")})


def _params(runs: pd.DataFrame) -> pd.DataFrame:
    from latentscape.tracking.contract import CatalogColumn as C

    maps = runs[runs[C.KIND] == "map"]
    return pd.DataFrame({C.RUN_ID: maps[C.RUN_ID], "param.reducer": "umap", "param.clusterer": "hdbscan"})


def test_one_function_names_a_run_by_data_set_model_layer_method_and_id():
    from latentscape.ui import labels

    runs = _runs()
    names = labels.run_labels(runs, _params(runs), others=runs)
    by_id = {k[:8]: v for k, v in names.items()}
    assert by_id["3100f886"] == "demo · MiniLM-L6 · layer 6 · UMAP+HDBSCAN (3100f886)"
    assert by_id["a96b726f"] == "digits (no model) · layer 0 · UMAP+HDBSCAN (a96b726f)"
    assert by_id["e246b30a"] == "digits (no model) (e246b30a)"
    assert by_id["14fa3433"] == "demo · MiniLM-L6 (14fa3433)"
    assert by_id["ad7e36b4"] == "demo-heldout · MiniLM-L6 (ad7e36b4)"  # the base model by its name
    assert by_id["e5fdb805"] == "demo-heldout · MiniLM-L6 ft step 18 (e5fdb805)"
    assert "fine-tuning" in by_id["b6bf05e8"]


def test_the_maps_picker_never_shows_two_runs_with_the_same_name():
    from latentscape.tracking.contract import CatalogColumn as C
    from latentscape.ui import labels

    runs = _runs()
    # The same settings on the same data twice (a rerun): still two names.
    twice = pd.concat([runs, runs.iloc[[4]].assign(**{C.RUN_ID: "3100f887" + "1" * 24})], ignore_index=True)
    names = labels.run_labels(twice, _params(twice), others=twice)
    assert len(set(names.values())) == len(twice)
    maps = twice[twice[C.KIND] == "map"]
    shown = list(labels.run_labels(maps, _params(maps), others=twice).values())
    assert len(shown) == len(set(shown)) == 4
    assert not any("map · layer" in name for name in shown)  # named by content, not by kind


def test_the_verdict_sentence_names_measures_as_the_table_does():
    from latentscape.ui.charts import layers

    sentence = ("The measures disagree by more than 1 layer: probe_accuracy at layer 5, knn_agreement at layer 3, "
                "ami.kmeans at layer 5, ami.map at layer 6.")
    words = layers.verdict_in_words(sentence)
    assert "probe_accuracy" not in words and "ami.kmeans" not in words and "knn_agreement" not in words
    verdict = pd.DataFrame({Column.MEASURE: ["probe_accuracy", "ami.kmeans"], Column.LAYER: [5, 5],
                            Column.VALUE: [0.9, 0.5], Column.CI_LOW: [0.8, 0.4], Column.CI_HIGH: [0.95, 0.6],
                            Column.TIED: ["4, 5", "5"], Column.COLLAPSED: [False, False]})
    for title in layers.verdict_table(verdict)["measure"]:
        assert f"{title} at layer 5" in words


# -- layers ------------------------------------------------------------------------------------------
def _curve_rows(run_id: str, key: str, values, layers=None) -> list[dict]:
    from latentscape.tracking.contract import CatalogColumn as C

    return [{C.RUN_ID: run_id, C.KEY: key, C.LAYER: layer, C.VALUE: v}
            for layer, v in zip(layers if layers is not None else range(len(values)), values)]


def test_layer_curves_carry_their_bootstrap_band_and_chance_level():
    from latentscape.tracking.contract import CatalogColumn as C
    from latentscape.tracking.contract import Metric
    from latentscape.ui.charts import layers

    probe = [0.5, 0.8, 0.9, 0.9]
    rows = (_curve_rows("L", Metric.PROBE_ACCURACY, probe)
            + _curve_rows("L", "probe_accuracy_ci_low", [v - 0.05 for v in probe])
            + _curve_rows("L", "probe_accuracy_ci_high", [v + 0.04 for v in probe])
            + _curve_rows("L", Metric.AMI, [0.1, 0.3, 0.4, 0.4])
            + _curve_rows("L", "ami.kmeans_ci_low", [0.05, 0.2, 0.3, 0.35])  # ami's interval, under ami.kmeans
            + _curve_rows("L", "ami.kmeans_ci_high", [0.15, 0.35, 0.45, 0.5])
            + _curve_rows("L", Metric.INTRINSIC_DIM, [9, 12, 11, 10]))
    assert set(layers.interval_keys([Metric.PROBE_ACCURACY, Metric.AMI])) >= {
        "probe_accuracy_ci_low", "probe_accuracy_ci_high", "ami.kmeans_ci_low", "ami.kmeans_ci_high"}
    info = layers.curves_info(pd.DataFrame(rows), labels={"L": "demo · MiniLM-L6 (L)"},
                              chance={"L": {Metric.PROBE_ACCURACY: 0.1}})
    assert set(info.keys) == {Metric.PROBE_ACCURACY, Metric.AMI, Metric.INTRINSIC_DIM}  # no panel per bound
    probe_rows = info.frame[info.frame[C.KEY] == Metric.PROBE_ACCURACY]
    np.testing.assert_allclose(probe_rows["low"], [v - 0.05 for v in probe])
    np.testing.assert_allclose(probe_rows["high"], [v + 0.04 for v in probe])
    assert set(probe_rows["interval"]) == {layers.BAND_CI}
    ami_rows = info.frame[info.frame[C.KEY] == Metric.AMI]
    np.testing.assert_allclose(ami_rows["low"], [0.05, 0.2, 0.3, 0.35])
    assert info.frame[info.frame[C.KEY] == Metric.INTRINSIC_DIM]["low"].isna().all()  # no band invented
    chance = dict(zip(info.chance[C.KEY], info.chance[C.VALUE]))
    assert chance == {Metric.PROBE_ACCURACY: 0.1, Metric.AMI: 0.0}
    spec = layers.curves_chart(info).to_dict()
    marks = json_marks(spec)
    assert "area" in marks and marks.count("rule") >= 2  # bands, and chance rules on two panels
    axis_titles = set(json_values(spec, "y", "title"))
    assert {"accuracy", "AMI", "dimensions"} <= axis_titles and "probe_accuracy" not in axis_titles
    assert {layers.CURVE_TITLES[k] for k in info.keys} <= set(json_values(spec, None, "title"))


def json_values(spec, channel: str | None, key: str) -> list:
    """Every ``key`` of an encoding ``channel`` (None: of a chart) in a nested spec."""
    found = []
    if isinstance(spec, dict):
        if channel is None and isinstance(spec.get(key), str) and "mark" in spec:
            found.append(spec[key])
        encoding = spec.get("encoding", {})
        if channel is not None and isinstance(encoding.get(channel), dict) and key in encoding[channel]:
            found.append(encoding[channel][key])
        for value in spec.values():
            found += json_values(value, channel, key)
    elif isinstance(spec, list):
        for value in spec:
            found += json_values(value, channel, key)
    return found


def json_marks(spec) -> list[str]:
    """Every mark type in a (nested) Vega-Lite spec."""
    found = []
    if isinstance(spec, dict):
        mark = spec.get("mark")
        if mark is not None:
            found.append(mark if isinstance(mark, str) else mark.get("type"))
        for value in spec.values():
            found += json_marks(value)
    elif isinstance(spec, list):
        for value in spec:
            found += json_marks(value)
    return found


def test_checkpoint_curves_from_compare_models_join_the_bases():
    from latentscape.tracking.contract import CatalogColumn as C
    from latentscape.tracking.contract import Metric
    from latentscape.ui.charts import layers

    table = pd.DataFrame({C.RUN_ID: ["base"] * 3 + ["step9"] * 3, "step": [0] * 3 + [9] * 3,
                          "checkpoint": ["base"] * 3 + ["step 9"] * 3, C.LAYER: [0, 1, 2] * 2,
                          Metric.CKA_TO_BASE: [1, 1, 1, 0.9, 0.8, 0.6],
                          Metric.PROBE_ACCURACY: [0.5, 0.6, 0.7, 0.5, 0.7, 0.9],
                          Metric.AMI_KMEANS: [0.1, 0.2, np.nan, 0.1, 0.3, 0.5]})
    curves = layers.model_layer_curves(table)
    assert set(curves[C.KEY]) == {Metric.CKA_TO_BASE, Metric.PROBE_ACCURACY, Metric.AMI}
    assert len(curves) == 6 * 3 - 1  # the NaN is not a point
    info = layers.curves_info(curves, labels={"base": "MiniLM-L6", "step9": "MiniLM-L6 ft step 9"})
    probe = info.frame[info.frame[C.KEY] == Metric.PROBE_ACCURACY]
    assert set(probe["run"]) == {"MiniLM-L6", "MiniLM-L6 ft step 9"}  # both on the same panel
    assert layers.model_layer_curves(None).empty


# -- compare --------------------------------------------------------------------------------------------
def test_compare_puts_key_scores_first_with_intervals_and_folds_timings_and_baselines():
    from latentscape.ui.charts import compare

    table = pd.DataFrame({
        "run_id": ["r1", "r2"], "kind": ["map", "map"], "param.layer": ["6", "2"],
        "metric.ami": [0.60, 0.40], "metric.ami_ci_low": [0.55, 0.30], "metric.ami_ci_high": [0.65, 0.50],
        "metric.ami_p_value": [0.0099, 0.0099], "metric.ami_perm_mean": [0.001, 0.002],
        "metric.nmi": [0.5, 0.5], "metric.reduce_seconds": [1.2, 3.4], "metric.n_clusters": [8, 2],
    })
    info = compare.compare_info(table, labels={"r1": "one", "r2": "two"})
    sections = list(info.table["section"])
    assert sections[0] == compare.SCORE and list(info.table["field"])[0] == "ami"  # the summary's first score
    assert sections.index(compare.SETTING) > max(i for i, s in enumerate(sections) if s == compare.SCORE)
    ami = info.table.set_index("field").loc["ami"]
    assert ami["one"] == "0.600 [0.550, 0.650] p=0.0099" and ami["difference"] == "-0.2"
    fields = set(info.table["field"])
    assert not fields & {"ami_ci_low", "ami_ci_high", "ami_p_value"}  # in the score's cell
    assert not fields & {"reduce_seconds", "ami_perm_mean"}  # folded away ...
    assert set(info.folded["section"]) == {compare.TIMING, compare.BASELINE}  # ... but there
    assert info.n_different == 5  # layer, ami, n_clusters, and the folded timing and baseline
    row = info.metrics[info.metrics["run"] == "two"].iloc[0]
    assert row["difference"] == pytest.approx(-0.2) and row["diff_low"] == pytest.approx(-0.3)
    spec = compare.metrics_chart(info).to_dict()
    assert "scaled" not in str(spec) and "difference" in str(spec)


def test_compare_opens_on_the_two_newest_comparable_runs():
    from latentscape.tracking.contract import CatalogColumn as C
    from latentscape.ui.charts import compare

    runs = pd.DataFrame({  # newest first
        C.RUN_ID: ["e3", "e2", "t1", "x1", "m3", "m2", "m1", "m0", "e1"],
        C.KIND: ["extract", "extract", "trial", "directions", "map", "map", "map", "map", "extract"],
        C.STATUS: ["FINISHED"] * 9,
        C.DATASET_NAME: ["demo", "demo", "demo", "demo", "faces", "digits", "demo", "digits", "demo"],
    })
    # Extractions wait while maps have a pair; the lone directions run and the faces map
    # have no partner; a digits map pairs with a digits map.
    assert compare.default_runs(runs) == ["m2", "m0"]
    assert compare.default_runs(runs[runs[C.KIND] == "extract"]) == ["e3", "e2"]
    assert compare.default_runs(runs[runs[C.KIND] == "directions"]) == ["x1"]
    assert compare.default_runs(runs.iloc[0:0]) == []


# -- overview --------------------------------------------------------------------------------------------
def test_the_timeline_adapts_to_the_span_of_recent_runs():
    from latentscape.tracking.contract import CatalogColumn as C
    from latentscape.ui.charts import overview

    start = pd.Timestamp("2026-12-07 13:00")
    for minutes, unit in ((20, "minute"), (150, "5 minutes"), (60 * 24 * 5, "6 hours")):
        runs = pd.DataFrame({C.RUN_ID: [str(i) for i in range(40)], C.KIND: "map",
                             C.START_TIME: [start + pd.Timedelta(minutes=minutes * i / 39) for i in range(40)]})
        info = overview.timeline_info(runs)
        assert info.unit == unit
        assert 2 <= len(info.frame) <= 40 and info.frame["n"].sum() == 40  # never one bar for a session's runs


def test_every_kind_has_its_own_colour():
    from latentscape.tracking.contract import Kind
    from latentscape.ui.charts import overview

    domain, colours = overview.kind_colours([k.value for k in Kind])
    assert len(set(colours)) == len(Kind) == len(domain)
    light_twins = set(palette.CATEGORY_COLOURS[9:])
    assert not light_twins & set(colours)  # no kind is the pale twin of another
    assert overview.kind_colours(["map"])[1] == overview.kind_colours(["map", "extract"])[1][1:]  # fixed per kind


def test_trials_fold_into_their_sweep_and_key_results_are_columns():
    from latentscape.tracking.contract import CatalogColumn as C
    from latentscape.ui.charts import overview

    runs = pd.DataFrame({C.RUN_ID: ["s", "t1", "t2", "m", "lone"], C.KIND: ["sweep", "trial", "trial", "map", "trial"],
                         C.PARENT_RUN_ID: [None, "s", "s", None, "gone"]})
    folded = overview.fold_trials(runs)
    assert list(folded[C.RUN_ID]) == ["s", "m", "lone"]  # a trial of an unlisted sweep stays
    assert dict(zip(folded[C.RUN_ID], folded[overview.TRIALS])) == {"s": 2, "m": 0, "lone": 0}
    metrics = pd.DataFrame({C.RUN_ID: ["m", "m", "L", "L", "L", "L"], C.KEY: ["ami", "nmi", "probe_accuracy",
                            "probe_accuracy", "probe_accuracy", "ami"], C.VALUE: [0.6, 0.7, 0.5, 0.9, 0.8, 0.3],
                            C.STEP: [0, 0, 0, 1, 2, 0]})
    results = overview.key_results(metrics)
    assert results.loc["m", "AMI"] == 0.6 and results.loc["L", "best layer's probe accuracy"] == 0.9
    assert pd.isna(results.loc["m", "best layer's probe accuracy"])


# -- chart hygiene ----------------------------------------------------------------------------------------
def _axis(spec, channel: str) -> dict:
    found = json_values(spec, channel, "axis")
    return next((a for a in found if isinstance(a, dict)), {})


def test_heatmaps_and_parallel_coordinates_name_every_row_and_axis():
    from latentscape.ui.charts import directions, features, sweeps, training

    auc = pd.DataFrame({Column.FEATURE: np.repeat(np.arange(30), 3), Column.LABEL: ["a", "b", "c"] * 30,
                        Column.AUC: np.linspace(0.5, 1, 90)})
    spec = features.heatmap_chart(features.heatmap_info(auc)).to_dict()
    assert _axis(spec, "y")["labelOverlap"] is False and _axis(spec, "x")["labelOverlap"] is False

    layers_table = pd.DataFrame({Column.CHECKPOINT: ["base"] * 2 + ["step 9"] * 2 + ["step 18"] * 2,
                                 Column.STEP: [0, 0, 9, 9, 18, 18], Column.LAYER: [0, 1] * 3,
                                 "probe_accuracy": np.linspace(0.5, 0.9, 6)})
    spec = training.heatmap_chart(training.heatmap_info(layers_table, "probe_accuracy")).to_dict()
    assert _axis(spec, "x")["labelOverlap"] is False  # every checkpoint has its x label

    trials = pd.DataFrame({Column.TRIAL: range(4), Column.STATE: "COMPLETE", Column.VALUE: [0.1, 0.3, 0.2, 0.4],
                           "params_reducer.n_neighbors": [5, 15, 30, 50], "params_clusterer.min_samples": [1, 2, 3, 4]})
    frame = sweeps.parallel_info(trials, objective="ami")
    spec = sweeps.parallel_chart(frame, objective="ami").to_dict()
    assert spec["encoding"]["x"]["title"] and _axis(spec, "x")["labelOverlap"] is False
    assert {"reducer.n_neighbors", "clusterer.min_samples", "ami"} <= set(frame["axis"])

    cosines = pd.DataFrame({Column.DIRECTION_A: ["a", "a", "b", "b"], Column.DIRECTION_B: ["a", "b", "a", "b"],
                            Column.COSINE: [1.0, -0.5, -0.5, 1.0]})
    spec = directions.angle_chart(directions.angle_info(cosines)).to_dict()
    texts = json_values(spec, "text", "field")
    assert texts == [Column.COSINE]  # the cells say what the legend says: cosine
    scale = json_values(spec, "color", "scale")[0]
    assert scale["domain"] == [-1, 1]


def test_the_legend_width_estimate_grows_with_its_names_up_to_the_label_limit():
    short = map_charts.legend_width_px(["a", "b"])
    named = map_charts.legend_width_px(["0", "1"], {"0": "soup, salt, lemon", "1": "x"})
    longest = map_charts.legend_width_px(["0"], {"0": "word " * 50})
    assert short < named < longest <= 36 + 220


def test_compare_draws_only_differences_that_share_a_scale():
    from latentscape.ui.charts import compare

    table = pd.DataFrame({"run_id": ["r1", "r2"], "metric.ami": [0.1, 0.5], "metric.n_clusters": [2, 8],
                          "metric.mutual_info": [0.1, 1.2], "metric.ari_clustered": [0.2, 0.8]})
    info = compare.compare_info(table)
    assert set(info.metrics["metric"]) == {"ami"}  # a count and nats would squash the 0-1 differences
    assert {"n_clusters", "mutual_info", "ari_clustered"} <= set(info.table["field"])  # still in the table


def test_a_deck_gl_map_writes_only_the_cluster_names_that_fit():
    import json

    rng = np.random.default_rng(3)
    n = 3000
    points = pd.DataFrame({Column.SAMPLE_ID: [str(i) for i in range(n)], Column.X: rng.normal(size=n),
                           Column.Y: rng.normal(size=n), Column.CLUSTER: np.arange(n) % 17})
    info = bigmap.deck_info(points, color_by=Column.CLUSTER)
    crowded = _labels(17, spread=0.3)  # 17 names piled in the middle of the map
    spec = json.loads(bigmap.deck_json(info, cluster_labels=crowded))
    written = next(layer for layer in spec["layers"] if layer["@@type"] == "TextLayer")["data"]
    assert 1 <= len(written) < 17
