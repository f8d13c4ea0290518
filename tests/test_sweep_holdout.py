"""sweep --holdout: tuned on one part, reported on the other, held-out labels never read
while tuning; every trial and the best map replay to 1e-9."""

from __future__ import annotations

import pytest

from latentscape.jobs.core.scores import LABEL_SCORES, label_scores
from latentscape.tracking.contract import MLFLOW_PARENT_RUN_ID, Artifact, Column, Kind, Metric, Param, Tag

FAST = dict(reducer="pca", clusterer="kmeans", trials=4, progress=False)


def _extract_digits(store, limit=300):
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract

    result = extract(ExtractConfig(data="digits", limit=limit), store=store, experiment="sweeps")
    return load_extraction(store, result.run_id)


def _trials(store, sweep_run_id: str) -> list:
    experiments = [e.experiment_id for e in store.client.search_experiments()]
    query = f"tags.`{Tag.KIND}` = '{Kind.TRIAL.value}' and tags.`{MLFLOW_PARENT_RUN_ID}` = '{sweep_run_id}'"
    runs = store.client.search_runs(experiments, filter_string=query, max_results=100)
    return sorted(runs, key=lambda run: int(run.data.tags[Tag.TRIAL_NUMBER]))


def test_holdout_tunes_on_one_part_and_reports_the_other(store):
    from latentscape.jobs._trust import split_for
    from latentscape.jobs.map import replay
    from latentscape.jobs.sweep import SweepConfig, sweep
    from latentscape.tracking.runs import load_table

    extraction = _extract_digits(store)
    result = sweep(SweepConfig(run=extraction.run_id, holdout=0.3, seed=2, **FAST), store=store)
    run = store.client.get_run(result.run_id)
    params, metrics = run.data.params, run.data.metrics
    assert params[Param.HOLDOUT] == "0.3"
    assert result.scores[Metric.holdout(Metric.AMI)] == metrics[Metric.holdout(Metric.AMI)]

    # The best map's label scores are over the tuning rows; holdout.<score> over the others.
    labels = extraction.labels
    tune, held = split_for(labels, 0.3, 2)
    assert len(held) == 90 and not set(tune) & set(held)
    clusters = load_table(store, result.run_id, Artifact.MAP)[Column.CLUSTER].to_numpy()
    tuning, held_out = label_scores(labels[tune], clusters[tune]), label_scores(labels[held], clusters[held])
    for name in LABEL_SCORES:
        assert metrics[name] == pytest.approx(tuning[name], abs=1e-12)
        assert metrics[Metric.holdout(name)] == pytest.approx(held_out[name], abs=1e-12)
    assert metrics[Metric.REPLAY_MAX_ABS_DIFF] == 0.0
    assert metrics["ami_p_value"] == 1 / 101  # the best map's chance baseline (tuning rows)

    # Every trial, and the sweep's best map, replay to 1e-9 (scored on the same rows).
    for logged in [*_trials(store, result.run_id), run]:
        if logged is not run:
            assert logged.data.params[Param.HOLDOUT] == "0.3"
        again = store.client.get_run(replay(store, logged.info.run_id).run_id)
        assert again.data.metrics[Metric.REPLAY_MAX_ABS_DIFF] <= 1e-9
        for name in LABEL_SCORES:
            assert again.data.metrics[name] == pytest.approx(logged.data.metrics[name], abs=1e-9)
    assert again.data.metrics[Metric.holdout(Metric.AMI)] == pytest.approx(metrics[Metric.holdout(Metric.AMI)],
                                                                          abs=1e-12)


def test_held_out_labels_are_never_read_while_tuning(store, monkeypatch):
    """Poison every held-out label the moment the split is made: the search (every
    trial's objective, the best settings, the best map's tuning scores) is unchanged;
    only the held-out report sees the poison."""
    from latentscape.jobs.core import trust
    from latentscape.jobs.sweep import SweepConfig, sweep

    extraction = _extract_digits(store)
    clean = sweep(SweepConfig(run=extraction.run_id, holdout=0.3, seed=1, study="clean", **FAST), store=store)

    real_split = trust.holdout_split

    def poisoning_split(labels, fraction, *, seed=0):
        tune, held = real_split(labels, fraction, seed=seed)
        labels[held] = "POISON"  # in place: the very array the sweep goes on to use
        return tune, held

    monkeypatch.setattr(trust, "holdout_split", poisoning_split)
    poisoned = sweep(SweepConfig(run=extraction.run_id, holdout=0.3, seed=1, study="poisoned", **FAST), store=store)

    clean_trials, poisoned_trials = _trials(store, clean.run_id), _trials(store, poisoned.run_id)
    assert len(clean_trials) == len(poisoned_trials) == 4
    for a, b in zip(clean_trials, poisoned_trials):
        assert a.data.params == b.data.params
        for name in LABEL_SCORES:
            assert a.data.metrics[name] == b.data.metrics[name], name
    runs = [store.client.get_run(r.run_id) for r in (clean, poisoned)]
    best = [{k: v for k, v in r.data.params.items() if k.startswith(Param.BEST_PREFIX)} for r in runs]
    assert best[0] == best[1]
    for name in LABEL_SCORES:
        assert runs[0].data.metrics[name] == runs[1].data.metrics[name]
    # The held-out report did read the (poisoned) held-out labels: one class left, no information.
    assert runs[0].data.metrics[Metric.holdout(Metric.AMI)] > 0.3
    assert runs[1].data.metrics[Metric.holdout(Metric.MUTUAL_INFO)] == 0.0


def test_holdout_settings_are_checked_before_any_run(store, tmp_path):
    from latentscape.jobs.sweep import SweepConfig, sweep
    from latentscape.tracking.errors import UsageError

    with pytest.raises(UsageError, match="--holdout 1.5"):
        SweepConfig(run="x", holdout=1.5)
    extraction = _extract_digits(store, limit=30)  # 3 samples per digit
    with pytest.raises(UsageError, match="every class"):
        sweep(SweepConfig(run=extraction.run_id, holdout=0.05, **FAST), store=store)
    experiments = [e.experiment_id for e in store.client.search_experiments()]
    kinds = {r.data.tags.get(Tag.KIND) for r in store.client.search_runs(experiments)}
    assert kinds == {Kind.EXTRACT.value}
