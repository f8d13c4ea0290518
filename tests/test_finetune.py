"""``latentscape finetune`` and ``latentscape compare-models`` on a real store with real
torch training: a tiny random BERT where only the plumbing is checked, the bundled
MiniLM on ``demo`` for the must-hold finding (fine-tuning moves the top layers most and
sharpens the last one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latentscape.tracking.contract import MLFLOW_PARENT_RUN_ID, Artifact, Column, Kind, Metric, Param, Tag

TINY = dict(data="demo", limit=200, holdout=0.3, epochs=1, checkpoints=2, batch_size=16, max_length=32,
            learning_rate=1e-3)


def _no_running(store) -> None:
    experiments = [e.experiment_id for e in store.client.search_experiments()]
    running = store.client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")
    assert not running, f"runs left RUNNING: {[r.info.run_id for r in running]}"


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    from latentscape.tracking.runs import open_store

    opened = open_store(f"sqlite:///{tmp_path_factory.mktemp('finetune') / 'mlflow.db'}")
    yield opened
    _no_running(opened)


@pytest.fixture(scope="module")
def tiny_training(tiny_store, tiny_bert):
    """One fine-tuning of the tiny BERT (2 checkpoints), extracted and compared."""
    from latentscape.jobs.finetune import FinetuneConfig, finetune

    return finetune(FinetuneConfig(model=str(tiny_bert), **TINY), store=tiny_store, experiment="tiny")


def _children(store, run_id: str) -> list:
    experiments = [e.experiment_id for e in store.client.search_experiments()]
    return store.client.search_runs(experiments, filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run_id}'",
                                    order_by=["attributes.start_time ASC"])


# -- cross-model CKA ---------------------------------------------------------------------------
def test_cross_cka_of_an_extraction_against_itself_is_one_on_the_diagonal(text_extraction):
    from latentscape.jobs.core.similarity import cka_matrix, cross_cka

    layers = [text_extraction.embedding(layer) for layer in text_extraction.layers]
    matrix = cross_cka(layers, layers)
    assert matrix.shape == (7, 7)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-6)
    np.testing.assert_allclose(matrix, cka_matrix(layers, dtype=np.float64), atol=1e-6)
    rectangular = cross_cka(layers[:3], layers)
    assert rectangular.shape == (3, 7) and rectangular[0, 6] < 0.9
    np.testing.assert_allclose(cross_cka(layers[:2], layers[:2], debiased=True),
                               cka_matrix(layers[:2], debiased=True, dtype=np.float64), atol=1e-6)
    rotation, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((384, 384)))
    turned = cross_cka(layers[-1:], [layers[-1] @ rotation * 3.0])  # invariant to rotation and scale
    assert turned[0, 0] == pytest.approx(1.0, abs=1e-6)


def test_cross_cka_matches_an_independent_gram_computation_on_two_checkpoints(tiny_training, tiny_store):
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.core.similarity import linear_cka_gram
    from latentscape.tracking.runs import load_table

    steps = load_table(tiny_store, tiny_training.run_id, Artifact.CHECKPOINTS)
    first, second = (load_extraction(tiny_store, run_id) for run_id in steps[Column.EXTRACT_RUN])
    compare = tiny_training.details["compare_models_run"]
    cross = load_table(tiny_store, compare, Artifact.CROSS_CKA)
    pair = cross[(cross[Column.RUN_A] == first.run_id) & (cross[Column.RUN_B] == second.run_id)]
    assert len(pair) == len(first.layers) * len(second.layers) == 9
    order = pd.Index(second.ids).get_indexer(first.ids)
    for row in pair.itertuples():
        expected = linear_cka_gram(first.embedding(row.layer_a), second.embedding(row.layer_b)[order])
        assert abs(row.cka - expected) < 1e-6, (row.layer_a, row.layer_b)
    assert pair[Column.CKA].min() < 0.999, "two different checkpoints are not identical"


# -- one training, one tree -----------------------------------------------------------------------
def test_checkpoints_extractions_and_comparison_form_one_tree(tiny_training, tiny_store):
    from latentscape.tracking.runs import load_table

    run = tiny_store.get_run(tiny_training.run_id)
    assert run.status == "FINISHED" and run.tags[Tag.KIND] == Kind.FINETUNE
    assert run.params[Param.SEED] == "0" and len(run.tags[Tag.DATASET_DIGEST]) == 16
    total = int(run.params[Param.TOTAL_STEPS])
    history = tiny_store.client.get_metric_history(run.id, Metric.TRAIN_LOSS)
    assert [m.step for m in history] == list(range(1, total + 1))
    lr = {m.step: m.value for m in tiny_store.client.get_metric_history(run.id, Metric.LR)}
    assert max(lr.values()) == pytest.approx(TINY["learning_rate"]) and lr[total] < lr[2]
    held = tiny_store.client.get_metric_history(run.id, Metric.HELDOUT_ACCURACY)
    assert held[0].step == 0 and held[-1].step == total

    children = _children(tiny_store, run.id)
    kinds = [child.data.tags[Tag.KIND] for child in children]
    assert kinds == [Kind.EXTRACT] * 3 + [Kind.COMPARE_MODELS]
    assert all(child.data.tags[Tag.SOURCE_RUN] == run.id for child in children)
    checkpoints = load_table(tiny_store, run.id, Artifact.CHECKPOINTS)
    assert list(checkpoints[Column.STEP]) == [total // 2, total] or len(checkpoints) == 2
    assert [int(c.data.tags[Tag.CHECKPOINT_STEP]) for c in children[:3]] == [0, *checkpoints[Column.STEP]]
    assert list(checkpoints[Column.EXTRACT_RUN]) == [c.info.run_id for c in children[1:3]]
    assert children[2].data.tags[Tag.MODEL] == f"tiny-bert0-ft-{run.id[:8]}-step{total}"
    table = load_table(tiny_store, children[3].info.run_id, Artifact.MODEL_LAYERS)
    assert set(table[Column.CHECKPOINT]) == {"base", *(f"step {s}" for s in checkpoints[Column.STEP])}
    assert {Metric.CKA_TO_BASE, Metric.PROBE_ACCURACY, Metric.qualified(Metric.AMI, "kmeans")} <= set(table)


def test_a_checkpoint_is_a_safetensors_model_folder_that_loads_again(tiny_training, tiny_store):
    from latentscape.jobs._embedding import Encoder
    from latentscape.jobs._source import load_extraction
    from latentscape.tracking.runs import download, load_table

    row = load_table(tiny_store, tiny_training.run_id, Artifact.CHECKPOINTS).iloc[-1]
    folder = download(tiny_store, row[Column.RUN_ID], row[Column.PATH])
    files = {path.name for path in folder.iterdir()}
    assert {"config.json", "model.safetensors", Artifact.HEAD_WEIGHTS} <= files
    state = {a.path for a in tiny_store.client.list_artifacts(tiny_training.run_id, Artifact.TRAINING_STATE_DIR)}
    assert state == {f"{Artifact.TRAINING_STATE_DIR}/{Artifact.TRAINING_STATE}",
                     f"{Artifact.TRAINING_STATE_DIR}/{Artifact.TRAINING_INFO}"}
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pkl"))], files
    extraction = load_extraction(tiny_store, row[Column.EXTRACT_RUN])
    encoder = Encoder.load(str(folder), device="cpu")
    again, _ = encoder.encode(list(extraction.texts[:8]), layers=[2], max_length=32)
    np.testing.assert_allclose(again[2], extraction.embedding(2)[:8], atol=1e-4)


# -- errors -----------------------------------------------------------------------------------------
def test_compare_models_names_the_mismatch_when_sample_sets_differ(tiny_training, tiny_store, tiny_bert):
    from latentscape.jobs.compare_models import CompareModelsConfig, compare_models
    from latentscape.jobs.extract import ExtractConfig, extract
    from latentscape.tracking.errors import UsageError
    from latentscape.tracking.runs import load_table

    base = load_table(tiny_store, tiny_training.run_id, Artifact.CHECKPOINTS)[Column.EXTRACT_RUN].iloc[0]
    other = extract(ExtractConfig(data="demo", limit=50, model=str(tiny_bert), max_length=32), store=tiny_store,
                    experiment="tiny").run_id
    before = len(tiny_store.client.search_runs([tiny_store.experiment_id("tiny")]))
    with pytest.raises(UsageError, match=rf"{base} and {other} hold different samples: \d+ only in {base}"):
        compare_models(CompareModelsConfig(runs=(base, other)), store=tiny_store)
    assert len(tiny_store.client.search_runs([tiny_store.experiment_id("tiny")])) == before


@pytest.mark.parametrize("argv, message", [
    (["finetune", "--epochs", "0"], "--epochs 0 must be positive"),
    (["finetune", "--holdout", "1.5"], "--holdout 1.5 is out of range"),
    (["finetune", "--data", "nope.csv"], "neither a file nor a built-in"),
    (["finetune", "--model", "TINY", "--freeze-below", "9"], "--freeze-below 9 is outside the model's layers 0..2"),
    (["finetune", "--resume", "--model", "TINY"], "--resume found no finetune run"),
    (["compare-models", "--runs", "0123456789abcdef0123456789abcdef"], "no run with id"),
])
def test_bad_input_is_one_line_exit_2_and_no_running_run(store, tiny_bert, capsys, argv, message):
    from latentscape.jobs.cli import main

    argv = [str(tiny_bert) if part == "TINY" else part for part in argv]
    code = main([*argv, "--tracking-uri", store.uri])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    experiments = [e.experiment_id for e in store.client.search_experiments()]
    assert not store.client.search_runs(experiments, filter_string=f"tags.`{Tag.KIND}` = 'finetune'")


# -- freezing, Ctrl-C, resume -------------------------------------------------------------------------
def test_freeze_below_keeps_the_lower_layers_as_the_base_has_them(store, tiny_bert):
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.finetune import FinetuneConfig, finetune

    result = finetune(FinetuneConfig(model=str(tiny_bert), **{**TINY, "checkpoints": 1}, freeze_below=2,
                                     compare=False), store=store, experiment="frozen")
    base, after = (load_extraction(store, run_id) for run_id in
                   store.get_run(result.run_id).params[Param.RUNS].split(","))
    for layer in (0, 1):
        np.testing.assert_allclose(after.embedding(layer), base.embedding(layer), atol=1e-5)
    assert np.abs(after.embedding(2) - base.embedding(2)).max() > 1e-2, "the unfrozen block was trained"


def test_ctrl_c_keeps_the_checkpoints_and_resume_continues_from_the_last(store, tiny_bert, monkeypatch):
    import latentscape.jobs._finetune as loop
    from latentscape.jobs.finetune import FinetuneConfig, finetune
    from latentscape.tracking.runs import load_table

    config = FinetuneConfig(model=str(tiny_bert), **{**TINY, "checkpoints": 3}, extract=False, compare=False)
    original = loop.learning_rate_at
    stop_at = {}

    def interrupting(step, **kwargs):
        if "first" in stop_at and step == stop_at["first"] + 1:
            raise KeyboardInterrupt
        return original(step, **kwargs)

    original_save = loop.FineTuner.save

    def saving(self, folder):
        stop_at.setdefault("first", self.step)
        return original_save(self, folder)

    monkeypatch.setattr(loop, "learning_rate_at", interrupting)
    monkeypatch.setattr(loop.FineTuner, "save", saving)
    with pytest.raises(KeyboardInterrupt):
        finetune(config, store=store, experiment="resume")
    monkeypatch.undo()
    experiment = store.experiment_id("resume")
    (killed,) = store.client.search_runs([experiment])
    assert killed.info.status == "KILLED"
    kept = load_table(store, killed.info.run_id, Artifact.CHECKPOINTS)
    assert list(kept[Column.STEP]) == [stop_at["first"]]
    assert [a.path for a in store.client.list_artifacts(killed.info.run_id, Artifact.CHECKPOINTS_DIR)] == \
        [Artifact.checkpoint(stop_at["first"])]

    resumed = finetune(FinetuneConfig(**{**config.__dict__, "resume": True}), store=store, experiment="resume")
    run = store.get_run(resumed.run_id)
    assert run.tags[Tag.RESUME_OF] == killed.info.run_id == run.tags[MLFLOW_PARENT_RUN_ID]
    steps = [m.step for m in store.client.get_metric_history(resumed.run_id, Metric.TRAIN_LOSS)]
    assert steps[0] == stop_at["first"] + 1 and steps[-1] == int(run.params[Param.TOTAL_STEPS])
    checkpoints = load_table(store, resumed.run_id, Artifact.CHECKPOINTS)
    assert len(checkpoints) == 3 and checkpoints[Column.RUN_ID].iloc[0] == killed.info.run_id
    assert set(checkpoints[Column.RUN_ID][1:]) == {resumed.run_id}
    with pytest.raises(Exception, match="not interrupted"):
        finetune(FinetuneConfig(**{**config.__dict__, "resume": True}), store=store, experiment="resume")


# -- the must-hold finding on demo with MiniLM ----------------------------------------------------------
def test_finetuning_minilm_on_demo_moves_the_top_layer_most_and_sharpens_it(store):
    """Merchant et al. (2020) on the bundled MiniLM: after a short fine-tuning the first
    block stays closer to the base than the last, and the last layer's held-out probe
    accuracy rises above the base's."""
    from latentscape.jobs.finetune import FinetuneConfig, finetune

    result = finetune(FinetuneConfig(data="demo", limit=300, holdout=0.4, learning_rate=2e-4, checkpoints=1,
                                     batch_size=16, max_length=64, threads=1), store=store, experiment="demo-finetune")
    scores = result.scores
    assert scores["cka_to_base_layer_1"] > scores["cka_to_base_last_layer"] + 0.05, scores
    assert scores["probe_accuracy_last_layer"] > scores["probe_accuracy_last_layer_base"], scores


# -- the Training page ---------------------------------------------------------------------------------
def test_training_charts_order_checkpoints_and_transpose_a_reversed_pair():
    from latentscape.ui.charts import training as charts

    table = pd.DataFrame({Column.RUN_ID: ["c", "c", "a", "a", "b", "b"], Column.STEP: [20, 20, 0, 0, 10, 10],
                          Column.CHECKPOINT: ["step 20", "step 20", "base", "base", "step 10", "step 10"],
                          Column.LAYER: [0, 1] * 3, Metric.CKA_TO_BASE: [0.9, 0.5, 1, 1, 0.95, 0.8]})
    info = charts.heatmap_info(table, Metric.CKA_TO_BASE)
    assert info.checkpoints == ["base", "step 10", "step 20"]
    charts.heatmap_chart(info).to_dict()
    cross = pd.DataFrame({Column.RUN_A: "x", Column.RUN_B: "y", Column.LAYER_A: [0, 0, 1, 1],
                          Column.LAYER_B: [0, 1, 0, 1], Column.CKA: [1.0, 0.2, 0.3, 0.9]})
    reversed_pair = charts.cross_info(cross, "y", "x").frame.set_index([Column.LAYER_A, Column.LAYER_B])[Column.CKA]
    assert reversed_pair[(0, 1)] == 0.3 and reversed_pair[(1, 0)] == 0.2
    assert charts.cross_info(cross, "x", "z").empty
    metrics = pd.DataFrame({"run_id": "r", "key": [Metric.TRAIN_LOSS, Metric.HELDOUT_LOSS, Metric.LR],
                            "value": [2.0, 1.5, 1e-4], "step": [1, 1, 1]})
    assert sorted(charts.loss_info(metrics).frame["split"]) == ["held-out", "train"]


def test_training_page_shows_the_loss_heatmaps_and_a_cross_model_heatmap(tiny_training, tiny_store, tmp_path,
                                                                        monkeypatch):
    import json

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from latentscape.tracking.runs import load_table
    from latentscape.ui import data

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_store.uri)
    monkeypatch.setenv("LATENTSCAPE_CATALOG", str(tmp_path / "catalog.duckdb"))
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "ui" / "app.py"), default_timeout=120)
        app.run()
        assert data.wait_for_sync(120), "the catalog's background sync did not finish"
        app.run()  # the Overview (as the sidebar's poll reruns it): the training, then its children under it
        table = next(d.value for d in app.dataframe if "run_id" in d.value).reset_index(drop=True)
        top = int(table.index[table["run_id"] == tiny_training.run_id][0])
        assert [name.startswith("└ ") for name in table["name"][top:top + 5]] == [False] + [True] * 4
        assert list(table["kind"][top + 1:top + 5]) == [Kind.EXTRACT] * 3 + [Kind.COMPARE_MODELS]
        app.query_params = {"run": tiny_training.run_id}
        app.switch_page("views/training.py").run()
        assert not app.exception, [e.value for e in app.exception]
        assert not app.error and not app.warning
        specs = [json.loads(element.proto.spec) for element in app.get("vega_lite_chart")]
        assert len(specs) == 5, "loss curve, three heatmaps, the cross-model heatmap"
        text = json.dumps(specs)
        assert "CKA to the base" in text and "k-means AMI" in text and "Cross-model linear CKA" in text
        checkpoints = load_table(tiny_store, tiny_training.run_id, Artifact.CHECKPOINTS)
        assert app.selectbox[1].value != app.selectbox[2].value
        assert app.selectbox[2].value == checkpoints[Column.EXTRACT_RUN].iloc[-1]
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()


def test_overview_lists_each_run_under_its_parent():
    from latentscape.tracking.contract import CatalogColumn as C
    from latentscape.ui.charts import overview as charts

    runs = pd.DataFrame({  # newest first, as the catalog lists them
        C.RUN_ID: ["other", "cmp", "ck2", "ck1", "train", "orphan"],
        C.NAME: ["o", "compare", "step 2", "step 1", "finetune", "x"],
        C.PARENT_RUN_ID: [None, "train", "train", "train", None, "gone"],
        C.START_TIME: pd.to_datetime(["2026-12-03 10:05", "2026-12-03 10:04", "2026-12-03 10:03",
                                      "2026-12-03 10:02", "2026-12-03 10:01", "2026-12-03 09:00"]),
    })
    ordered = charts.tree_order(runs)
    assert list(ordered[C.RUN_ID]) == ["other", "train", "ck1", "ck2", "cmp", "orphan"]
    assert list(ordered["depth"]) == [0, 0, 1, 1, 1, 0]
    assert charts.tree_names(ordered)[2].endswith("└ step 1")


def test_compare_models_command_takes_a_finetune_run_for_its_checkpoints(tiny_training, tiny_store, capsys):
    import json

    from latentscape.jobs.cli import main

    code = main(["compare-models", "--runs", tiny_training.run_id, "--probe-folds", "2", "--json",
                 "--tracking-uri", tiny_store.uri])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and out["kind"] == Kind.COMPARE_MODELS and out["details"]["runs"] == 3
    run = tiny_store.get_run(out["run_id"])
    assert run.tags[MLFLOW_PARENT_RUN_ID] == tiny_training.run_id == run.tags[Tag.SOURCE_RUN]
    assert run.params[Param.RUNS] == tiny_store.get_run(tiny_training.run_id).params[Param.RUNS]
    assert 0 < out["scores"]["cka_to_base_last_layer"] <= 1
