"""The sweep's speed levers keep every result: --workers processes on one study, fewer
UMAP epochs while searching with a full refit of the best, trial runs written by a
background thread before Optuna records each trial, and --resume logging a trial
whose run is missing."""

from __future__ import annotations

import pytest

from latentscape.tracking.contract import MLFLOW_PARENT_RUN_ID, Artifact, Kind, Metric, Param, Tag

EPOCHS = Param.reducer_param("n_epochs")


def _extract_digits(store, limit=None):
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract

    result = extract(ExtractConfig(data="digits", limit=limit), store=store, experiment="sweeps")
    return load_extraction(store, result.run_id)


def _trial_runs(store, sweep_run_id):
    experiments = [e.experiment_id for e in store.client.search_experiments()]
    return store.client.search_runs(
        experiments, max_results=1000,
        filter_string=f"tags.`{Tag.KIND}` = 'trial' and tags.`{MLFLOW_PARENT_RUN_ID}` = '{sweep_run_id}'")


def _study(store, run):
    from types import SimpleNamespace

    from latentscape.tracking.studies import opened_storage, study_trials

    with opened_storage(store.backend.optuna_url) as storage:  # one engine, disposed
        return SimpleNamespace(trials=study_trials(storage, run.data.params[Param.STUDY_NAME]))


@pytest.mark.slow
def test_two_worker_processes_search_with_fewer_epochs_and_refit_the_best(store):
    from latentscape.jobs.map import replay
    from latentscape.jobs.sweep import SweepConfig, sweep
    from latentscape.tracking.runs import load_table

    extraction = _extract_digits(store)
    result = sweep(SweepConfig(run=extraction.run_id, trials=12, workers=2, search_epochs=30, progress=False),
                   store=store)
    run = store.client.get_run(result.run_id)
    params, metrics = run.data.params, run.data.metrics
    assert run.info.status == "FINISHED"
    assert (params[Param.WORKERS], params[Param.SEARCH_EPOCHS], params[Param.REFIT_EPOCHS]) == ("2", "30", "200")

    # Exactly the trials asked for, shared by the two processes: this one ran only some.
    trials = _trial_runs(store, result.run_id)
    assert len(trials) == 12 and {t.info.status for t in trials} == {"FINISHED"}
    assert sorted(int(t.data.tags[Tag.TRIAL_NUMBER]) for t in trials) == list(range(12))
    assert 0 < result.details["trials_here"] < 12
    assert {t.state.name for t in _study(store, run).trials} == {"COMPLETE"}
    assert {t.data.params[EPOCHS] for t in trials} == {"30"}

    # The best trial replays exactly at its search epochs; it and the default trial are
    # re-fitted at 200 epochs, and the sweep's map is the best of the three maps: never
    # worse than the search found, nor than the defaults at full epochs; replayable as logged.
    assert metrics[Metric.REPLAY_MAX_ABS_DIFF] == 0.0
    chosen = next(t for t in trials if t.data.tags[Tag.TRIAL_NUMBER] == str(int(metrics[Metric.BEST_TRIAL])))
    assert metrics[Metric.BEST_VALUE] == pytest.approx(chosen.data.metrics[Metric.AMI])
    assert params[Param.BEST_PREFIX + "trial"] == chosen.data.tags[Tag.TRIAL_NUMBER]
    searched_best = max(t.data.metrics[Metric.AMI] for t in trials)
    refits = store.client.get_metric_history(result.run_id, Metric.REFIT_VALUE)
    assert 1 <= len(refits) <= 2 and 0 in {r.step for r in refits} | {int(metrics[Metric.BEST_TRIAL])}
    assert metrics[Metric.AMI] == pytest.approx(max([searched_best] + [r.value for r in refits]))
    import json
    from pathlib import Path

    payload = json.loads(Path(store.client.download_artifacts(result.run_id, Artifact.CONFIG)).read_text())
    assert payload["map"]["reducer_params"]["n_epochs"] in (30, 200)
    again = replay(store, result.run_id)
    assert store.client.get_run(again.run_id).data.metrics[Metric.REPLAY_MAX_ABS_DIFF] == 0.0
    assert len(load_table(store, result.run_id, Artifact.MAP)) == len(extraction.labels)

    # Never worse than the default settings at the full epochs.
    from latentscape.jobs.core.mapping import fit_map
    from latentscape.jobs.map import MapRequest, resolve_for

    _, default_config = resolve_for(extraction, MapRequest(run=extraction.run_id))
    default_ami = fit_map(extraction.embedding(0), extraction.labels, default_config, with_view=False).scores[Metric.AMI]
    assert metrics[Metric.AMI] >= default_ami - 1e-12

    # MLflow on the trials' path is a hand-over to the writer thread; both are measured.
    assert metrics[Metric.MLFLOW_MS_PER_TRIAL] >= 0 and metrics[Metric.MLFLOW_WRITER_MS_PER_TRIAL] > 0


def test_search_epochs_are_checked_against_the_space(store, tmp_path):
    from latentscape.jobs.sweep import SweepConfig, sweep
    from latentscape.tracking.errors import UsageError

    extraction = _extract_digits(store, limit=100)
    cases = [
        (dict(search_epochs=500), "more than the map's 200 epochs"),
        (dict(search_epochs=50, reducer="pca"), "reducer pca has no layout epochs"),
        (dict(search_epochs=50, space={"params": {EPOCHS: {"low": 50, "high": 300}}}), "n_epochs is itself searched"),
        (dict(search_epochs=-1), "--search-epochs -1 must not be negative"),
        (dict(workers=0), "--workers 0 must be positive"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(UsageError, match=needle):
            sweep(SweepConfig(run=extraction.run_id, trials=2, **kwargs), store=store)


def test_search_epochs_default_and_full(store):
    """By default trials search at 100 epochs; pinned epochs and 'full' search at the map's."""
    from latentscape.jobs.sweep import SweepConfig
    from latentscape.jobs.sweep.targets import TARGETS

    make_plan = TARGETS["map"].make_plan
    extraction = _extract_digits(store, limit=100)
    plan = make_plan(SweepConfig(run=extraction.run_id), store, None)
    assert (plan.search_epochs, plan.refit_epochs) == (100, 200) and plan.space.fixed[EPOCHS] == 100
    for config in (SweepConfig(run=extraction.run_id, search_epochs=0),
                   SweepConfig(run=extraction.run_id, fixed={EPOCHS: 60}),
                   SweepConfig(run=extraction.run_id, reducer="pca")):
        plan = make_plan(config, store, None)
        assert plan.search_epochs is None and plan.refit_epochs is None
    pinned = make_plan(SweepConfig(run=extraction.run_id, fixed={EPOCHS: 60}, search_epochs=20), store, None)
    assert (pinned.search_epochs, pinned.refit_epochs) == (20, 60)


def test_every_trial_run_is_written_before_optuna_records_the_trial(store):
    """The run's end comes before Optuna's record, so a COMPLETE trial always has its run:
    a --resume worker started beside a live one (team mode's compose workers) cannot take
    a trial whose run is still on the writer thread for one whose run was lost."""
    from latentscape.jobs.sweep import SweepConfig, sweep

    extraction = _extract_digits(store, limit=300)
    result = sweep(SweepConfig(run=extraction.run_id, trials=6, reducer="pca", clusterer="kmeans", n_jobs=2,
                               progress=False), store=store)
    runs = {int(t.data.tags[Tag.TRIAL_NUMBER]): t for t in _trial_runs(store, result.run_id)}
    trials = [t for t in _study(store, store.client.get_run(result.run_id)).trials if t.state.name == "COMPLETE"]
    assert len(trials) == 6 and sorted(runs) == sorted(t.number for t in trials)
    for trial in trials:
        run = runs[trial.number]
        assert run.info.status == "FINISHED"
        assert run.info.end_time / 1000 <= trial.datetime_complete.timestamp(), \
            f"trial {trial.number} was recorded before its run ended"


def test_resume_logs_a_complete_trial_whose_run_is_missing(store):
    """A COMPLETE trial without its run (deleted, or left by a version that recorded
    trials before writing their runs): --resume replays the trial and logs it."""
    from latentscape.jobs.sweep import SweepConfig, sweep

    extraction = _extract_digits(store, limit=300)
    config = SweepConfig(run=extraction.run_id, trials=3, fixed={EPOCHS: 30}, progress=False)
    result = sweep(config, store=store)
    lost = next(t for t in _trial_runs(store, result.run_id) if t.data.tags[Tag.TRIAL_NUMBER] == "1")
    value = lost.data.metrics[Metric.AMI]
    store.client.delete_run(lost.info.run_id)  # as if never written

    sweep(SweepConfig(**{**config.__dict__, "resume": True}), store=store)
    (again,) = [t for t in _trial_runs(store, result.run_id) if t.data.tags[Tag.TRIAL_NUMBER] == "1"]
    assert again.info.status == "FINISHED" and again.data.tags[Tag.TRIAL_STATE] == "COMPLETE"
    assert "--resume" in again.data.tags[Tag.NOTE]
    assert again.data.metrics[Metric.AMI] == pytest.approx(value, abs=0)  # a replay: the same score
    assert again.data.params == lost.data.params


def test_search_sample_searches_a_subsample_and_refits_the_best_on_every_sample(store):
    """--search-sample 400 of 1,797 digits: every trial maps the same 400 rows (stratified,
    seeded), the best is replayed on them, then re-fitted on every sample with its sample
    counts scaled; the sweep's map has every sample and a different N is another study."""
    import numpy as np

    from latentscape.jobs.map import replay
    from latentscape.jobs.sweep import SweepConfig, sweep
    from latentscape.jobs.sweep.targets import TARGETS
    from latentscape.tracking.errors import UsageError
    from latentscape.tracking.runs import load_table

    extraction = _extract_digits(store)
    config = SweepConfig(run=extraction.run_id, trials=3, search_sample=400, search_epochs=30, progress=False)
    result = sweep(config, store=store)
    run = store.client.get_run(result.run_id)
    params, metrics = run.data.params, run.data.metrics
    assert run.info.status == "FINISHED" and params[Param.SEARCH_SAMPLE] == "400"
    trials = _trial_runs(store, result.run_id)
    assert len(trials) == 3 and {t.data.params[Param.SEARCH_SAMPLE] for t in trials} == {"400"}
    assert metrics[Metric.REPLAY_MAX_ABS_DIFF] == 0.0  # the best trial, replayed on its subsample
    assert len(load_table(store, result.run_id, Artifact.MAP)) == len(extraction.labels) == 1797
    assert metrics[Metric.AMI] == pytest.approx(result.scores[Metric.AMI])  # the refit's scores are the sweep's
    assert 1 <= len(store.client.get_metric_history(result.run_id, Metric.REFIT_VALUE)) <= 2
    # The best trial's searched sample counts, scaled by 1797 / 400 for the refit.
    for name in ("clusterer.min_cluster_size", "clusterer.min_samples"):
        searched = int(params[Param.BEST_PREFIX + name])
        assert int(params[Param.REFIT_PREFIX + name]) == max(2 if "cluster_size" in name else 1,
                                                             round(searched * 1797 / 400))
    # The sweep's map replays as logged (on every sample); a trial, which mapped a subsample, is refused.
    assert store.client.get_run(replay(store, result.run_id).run_id).data.metrics[Metric.REPLAY_MAX_ABS_DIFF] == 0.0
    with pytest.raises(UsageError, match="subsample of 400 samples"):
        replay(store, trials[0].info.run_id)

    # The plan: the same rows in every process (--workers), stratified (every class keeps
    # its share within a row), another study than without it or with another N.
    make_plan = TARGETS["map"].make_plan
    plan = make_plan(config, store, None)
    assert len(plan.sample) == 400 and np.array_equal(plan.sample, make_plan(config, store, None).sample)
    assert plan.shape.n_samples == 400 and plan.full_shape.n_samples == 1797
    classes, counts = np.unique(extraction.labels, return_counts=True)
    picked = dict(zip(*np.unique(extraction.labels[plan.sample], return_counts=True)))
    assert all(abs(picked[c] - 400 * k / 1797) < 1 for c, k in zip(classes, counts))
    names = {make_plan(SweepConfig(**{**config.__dict__, "search_sample": n}), store, None).study_name
             for n in (None, 500)}
    assert plan.study_name == params[Param.STUDY_NAME] and plan.study_name not in names and len(names) == 2
    # N at or above the samples: no subsample, the study of a sweep without it.
    whole = make_plan(SweepConfig(**{**config.__dict__, "search_sample": 5000}), store, None)
    assert whole.sample is None and whole.study_name in names
    # With --holdout the subsample is drawn from the tuning part only.
    held = make_plan(SweepConfig(**{**config.__dict__, "holdout": 0.3}), store, None)
    assert len(held.sample) == 400 and set(held.sample) <= set(held.tune) and not set(held.sample) & set(held.held)


def test_search_sample_is_checked(store):
    from latentscape.jobs.sweep import SweepConfig, sweep
    from latentscape.tracking.errors import UsageError

    for kwargs, needle in [(dict(search_sample=0), "--search-sample 0 is out of range; pass 100 or more"),
                           (dict(search_sample=500, target="sae"), "drop --search-sample")]:
        with pytest.raises(UsageError, match=needle):
            sweep(SweepConfig(run="R", trials=2, **kwargs), store=store)
