"""The sae job: a TopK sparse autoencoder recovers planted directions, logs a replayable
run with features.parquet, and refuses bad input with one line and exit 2."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from latentscape.jobs._sae import SaeSettings, load_sae, split_rows, train_sae
from latentscape.jobs.core.sae_scores import (
    dead_fraction,
    feature_label_auc,
    l0,
    max_cosines,
    plant_sparse_directions,
    reconstruction,
    top_rows,
)
from latentscape.jobs.sae import SaeConfig, sae
from latentscape.tracking.contract import MLFLOW_PARENT_RUN_ID, Artifact, Column, Kind, Metric, Param, Tag
from latentscape.tracking.runs import download, load_table

EXPERIMENT = "sae-tests"  # beside the shared extractions, in an experiment of its own
FAST = dict(features=256, k=16, epochs=8, batch_size=64)  # 240 x 384 rows: ~1-2 s


def _running(store) -> list[str]:
    experiments = [e.experiment_id for e in store.client.search_experiments()]
    return [r.info.run_id for r in store.client.search_runs(experiments, "attributes.status = 'RUNNING'")]


# -- the method on planted structure ----------------------------------------------------
def test_a_planted_sparse_dictionary_is_recovered():
    # measured: 30 of 32 at cosine >= 0.95 (seeds 1-3 of the data and model: 31, 27, 30)
    planted = plant_sparse_directions(n=1500, d=24, m=32, active=3, noise=0.01, seed=0)
    model = train_sae(planted.x, SaeSettings(features=64, k=3, epochs=25, learning_rate=5e-3, batch_size=128))
    cosines = max_cosines(model.decoder, planted.directions)
    assert np.mean(cosines >= 0.95) >= 0.8, np.sort(cosines)[:8]
    codes = model.encode(planted.x)
    assert l0(codes) <= 3 and codes.min() >= 0
    test = model.test_rows
    _, explained = reconstruction(planted.x[test], model.reconstruct(planted.x[test]), model.mean)
    assert explained > 0.8
    np.testing.assert_allclose(np.linalg.norm(model.decoder, axis=1), 1.0, atol=1e-5)
    # safetensors round trip: the same codes from the reloaded weights.
    again = load_sae(model.to_bytes())
    assert again.k == 3
    np.testing.assert_array_equal(again.encode(planted.x[:50]), codes[:50])


def test_scores_on_hand_made_codes():
    codes = np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert l0(codes) == 1.0 and dead_fraction(codes) == pytest.approx(1 / 3)
    classes, auc = feature_label_auc(codes, np.array(["a", "b", "b", "a"]))
    assert list(classes) == ["a", "b"]
    np.testing.assert_allclose(auc[:, 1], [1.0, 0.0, 0.5])  # feature 0 fires on b only; 2 never fires
    rows, values = top_rows(codes, 2)
    assert rows[0].tolist() == [2, 1] and values[1].tolist() == [2.0, 1.0]
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert reconstruction(x, x, x.mean(axis=0)) == (0.0, 1.0)
    train, test = split_rows(10, 0.3, 0, groups=np.repeat(np.arange(5), 2))
    assert len(test) % 2 == 0 and set(np.repeat(np.arange(5), 2)[test]).isdisjoint(np.repeat(np.arange(5), 2)[train])


# -- the job ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sae_run(text_extraction):
    """An sae run at layer 6 beside a directions run of the same layer."""
    from latentscape.jobs.directions import DirectionsConfig, directions

    store = text_extraction.store
    directions_run = directions(DirectionsConfig(run=text_extraction.run_id, layer=6, methods=("mean_difference",)),
                                store=store, experiment=EXPERIMENT).run_id
    result = sae(SaeConfig(run=text_extraction.run_id, layer=6, **FAST), store=store, experiment=EXPERIMENT)
    return result, directions_run


def test_sae_run_is_a_child_of_the_extraction_with_scores_weights_and_features(text_extraction, sae_run):
    result, directions_run = sae_run
    store = text_extraction.store
    run = store.get_run(result.run_id)
    assert run.tags[Tag.KIND] == Kind.SAE.value
    assert run.tags[MLFLOW_PARENT_RUN_ID] == text_extraction.run_id == run.tags[Tag.SOURCE_RUN]
    params, metrics = run.params, run.metrics
    assert (params[Param.FEATURES], params[Param.K], params[Param.LAYER]) == ("256", "16", "6")
    assert params[Param.DIRECTIONS_RUN] == directions_run
    assert metrics[Metric.L0] <= 16
    assert 0 <= metrics[Metric.DEAD_FRACTION] <= 1
    assert metrics[Metric.VARIANCE_EXPLAINED] > metrics[Metric.holdout(Metric.VARIANCE_EXPLAINED)] > 0
    assert metrics[Metric.NMSE] == pytest.approx(1 - metrics[Metric.VARIANCE_EXPLAINED])
    losses = store.client.get_metric_history(result.run_id, Metric.LOSS)
    steps = FAST["epochs"] * -(-int(round(240 * 0.8)) // FAST["batch_size"])
    assert len(losses) == steps and losses[-1].value < losses[0].value

    # The weights are safetensors (a JSON header, never a pickle) and reload.
    content = download(store, result.run_id, Artifact.SAE_WEIGHTS).read_bytes()
    assert content[8:9] == b"{"
    model = load_sae(content)
    assert model.decoder.shape == (256, 384)

    features = load_table(store, result.run_id, Artifact.FEATURES)
    assert len(features) == 256 and features[Column.FEATURE].tolist() == list(range(256))
    live = features[features[Column.DENSITY] > 0]
    assert len(live) == round(256 * (1 - metrics[Metric.DEAD_FRACTION]))
    row = live.sort_values(Column.AUC).iloc[-1]
    assert list(row[Column.TOP_ACTIVATIONS]) == sorted(row[Column.TOP_ACTIVATIONS], reverse=True)
    texts = dict(zip(text_extraction.ids, text_extraction.texts))
    assert [texts[s] for s in row[Column.TOP_SAMPLES]] == list(row[Column.TOP_TEXTS])
    assert len(row[Column.KEYWORDS]) > 0 and row[Column.BEST_LABEL] in set(text_extraction.labels)
    assert 0.5 < row[Column.AUC] <= 1
    assert features[Column.DIRECTION_LABEL].notna().all()
    assert features[Column.DIRECTION_COSINE].abs().between(0, 1 + 1e-9).all()

    labels = load_table(store, result.run_id, Artifact.FEATURE_LABELS)
    assert len(labels) == 256 * 10
    assert metrics[Metric.LABELS_COVERED] == (labels.groupby(Column.LABEL)[Column.AUC].max() >= 0.9).sum()
    activations = load_table(store, result.run_id, Artifact.ACTIVATIONS)
    assert (activations.groupby(Column.SAMPLE_ID).size() <= 16).all() and (activations[Column.ACTIVATION] > 0).all()


def test_from_run_replays_the_weights_and_scores_exactly(text_extraction, sae_run):
    result, _ = sae_run
    store = text_extraction.store
    replay = sae(SaeConfig(from_run=result.run_id), store=store, experiment=EXPERIMENT)
    assert replay.scores[Metric.REPLAY_MAX_ABS_DIFF] == 0.0
    before = download(store, result.run_id, Artifact.SAE_WEIGHTS).read_bytes()
    after = download(store, replay.run_id, Artifact.SAE_WEIGHTS).read_bytes()
    assert before == after
    run = store.get_run(replay.run_id)
    assert run.tags[Tag.REPLAY_OF] == result.run_id
    original = store.get_run(result.run_id)
    for name in (Metric.VARIANCE_EXPLAINED, Metric.holdout(Metric.NMSE), Metric.DEAD_FRACTION):
        assert run.metrics[name] == original.metrics[name]
    assert pd.testing.assert_frame_equal(load_table(store, replay.run_id, Artifact.FEATURES),
                                         load_table(store, result.run_id, Artifact.FEATURES)) is None


def test_tokens_train_on_token_activations_of_the_runs_model(text_extraction):
    store = text_extraction.store
    result = sae(SaeConfig(run=text_extraction.run_id, layer=3, tokens=True, max_tokens=400, **FAST),
                 store=store, experiment=EXPERIMENT)
    run = store.get_run(result.run_id)
    assert run.params[Param.TOKENS] == "True" and run.params[Param.N_ROWS] == "400"
    features = load_table(store, result.run_id, Artifact.FEATURES)
    fired = features[features[Column.DENSITY] > 0].iloc[0]
    assert len(fired[Column.TOP_TOKENS]) == len(fired[Column.TOP_SAMPLES]) > 0
    assert all(isinstance(t, str) and t for t in fired[Column.TOP_TOKENS])


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("fixture, extra, words", [
    ("text_extraction", ["--layer", "99"], "has no layer 99"),
    ("text_extraction", ["--layer", "6", "--features", "8", "--k", "16"], "--k 16 is more than --features 8"),
    ("text_extraction", ["--layer", "6", "--k", "4000"], "--k 4000 is more than the 3072 features"),
    ("digits_extraction", ["--layer", "0", "--tokens"], "no model to re-extract token activations"),
])
def test_bad_input_is_one_line_exit_2_and_no_run(request, capsys, fixture, extra, words):
    from latentscape.jobs.cli import main

    extraction = request.getfixturevalue(fixture)
    store = extraction.store
    before = len(store.client.search_runs([extraction.experiment_id]))
    code = main(["sae", "--run", extraction.run_id, *extra, "--tracking-uri", store.uri])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("latentscape sae: error: ") and words in err and "\n" not in err
    assert len(store.client.search_runs([extraction.experiment_id])) == before
    assert not _running(store)


# -- sweep --target sae ------------------------------------------------------------------
def test_sweep_searches_sae_settings_with_child_trials_resume_and_replay(store):
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract
    from latentscape.jobs.sweep import SweepConfig, sweep

    extraction = load_extraction(store, extract(ExtractConfig(data="digits", limit=300), store=store).run_id)
    space = {"target": "sae", "params": {Param.FEATURES: {"low": 64, "high": 256, "log": True},
                                         Param.K: {"low": 4, "high": 16}, Param.EPOCHS: 5}}
    config = SweepConfig(run=extraction.run_id, layer=0, trials=3, target="sae", space=space, progress=False)
    result = sweep(config, store=store)
    run = store.get_run(result.run_id)
    assert run.tags[Tag.KIND] == Kind.SWEEP.value and run.params[Param.TARGET] == "sae"
    assert run.params[Param.OBJECTIVE] == Metric.holdout(Metric.VARIANCE_EXPLAINED)
    assert run.metrics[Metric.REPLAY_MAX_ABS_DIFF] == 0.0
    experiments = [e.experiment_id for e in store.client.search_experiments()]
    trials = store.client.search_runs(experiments, f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{result.run_id}'")
    assert len(trials) == 3 and {t.data.tags[Tag.KIND] for t in trials} == {Kind.TRIAL.value}
    assert all(t.info.status == "FINISHED" and 64 <= int(t.data.params[Param.FEATURES]) <= 256 for t in trials)
    table = load_table(store, result.run_id, Artifact.TRIALS)
    assert len(table) == 3 and table[Metric.holdout(Metric.VARIANCE_EXPLAINED)].notna().all()
    best = table.loc[table[Column.VALUE].idxmax()]
    assert run.metrics[Metric.BEST_VALUE] == best[Column.VALUE]
    assert len(load_table(store, result.run_id, Artifact.FEATURES)) == int(best[f"params_{Param.FEATURES}"])

    # --resume adds no trial; a trial replays exactly from its params.
    again = sweep(SweepConfig(**{**config.__dict__, "resume": True}), store=store)
    assert again.run_id == result.run_id
    assert len(store.client.search_runs(experiments, f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{result.run_id}'")) == 3
    replay = sae(SaeConfig(from_run=trials[0].info.run_id), store=store)
    assert replay.scores[Metric.REPLAY_MAX_ABS_DIFF] == 0.0
