"""The sweep job: trials as child runs, the best map replayed, exact trial counts after a
SIGKILL and a resume, two processes on one study, and a sweep never worse than the defaults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from latentscape.jobs.core.scores import SCORE_NAMES
from latentscape.tracking.contract import MLFLOW_PARENT_RUN_ID, Artifact, Column, Kind, Metric, Param, Tag

N_EPOCHS = {Param.reducer_param("n_epochs"): 30}


def _extract_digits(store, limit=None):
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract

    result = extract(ExtractConfig(data="digits", limit=limit), store=store, experiment="sweeps")
    return load_extraction(store, result.run_id)


def _runs(store, kind, **filters):
    experiments = [e.experiment_id for e in store.client.search_experiments()]
    query = f"tags.`{Tag.KIND}` = '{kind}'"
    for key, value in filters.items():
        query += f" and tags.`{key}` = '{value}'"
    return store.client.search_runs(experiments, filter_string=query, max_results=1000)


def _study(store, study_name):
    from types import SimpleNamespace

    from latentscape.tracking.studies import opened_storage, study_trials

    with opened_storage(store.backend.optuna_url) as storage:  # one engine, disposed
        return SimpleNamespace(trials=study_trials(storage, study_name))


def _states(study):
    from collections import Counter

    return Counter(t.state.name for t in study.trials)


def test_sweep_logs_trials_as_children_and_keeps_the_best_map(store):
    from latentscape.jobs.map import replay
    from latentscape.jobs.sweep import SweepConfig, sweep
    from latentscape.tracking.runs import load_table

    extraction = _extract_digits(store, limit=300)
    result = sweep(SweepConfig(run=extraction.run_id, trials=5, fixed=N_EPOCHS), store=store)
    run = store.client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[Tag.KIND] == Kind.SWEEP and run.data.tags[MLFLOW_PARENT_RUN_ID] == extraction.run_id
    params, metrics = run.data.params, run.data.metrics
    assert params[Param.OBJECTIVE] == Metric.AMI and params[Param.DIRECTION] == "maximize"
    assert "reducer.n_neighbors" in params[Param.SEARCH_SPACE] and params[Param.SAMPLER].startswith("TPESampler")
    assert metrics[Metric.N_TRIALS_COMPLETE] == 5 and metrics[Metric.REPLAY_MAX_ABS_DIFF] == 0.0
    study_name = params[Param.STUDY_NAME]
    assert run.data.tags[Tag.STUDY] == study_name

    trials = _runs(store, Kind.TRIAL.value, **{MLFLOW_PARENT_RUN_ID: result.run_id})
    assert len(trials) == 5 and {t.info.status for t in trials} == {"FINISHED"}
    numbers = sorted(int(t.data.tags[Tag.TRIAL_NUMBER]) for t in trials)
    assert numbers == list(range(5))
    for trial in trials:
        assert trial.data.tags[Tag.STUDY] == study_name and trial.data.tags[Tag.TRIAL_STATE] == "COMPLETE"
        assert set(SCORE_NAMES) <= set(trial.data.metrics) and trial.data.metrics[Metric.TRIAL_SECONDS] > 0
        assert trial.data.params[Param.reducer_param("n_epochs")] == "30"
    best = max(trials, key=lambda t: t.data.metrics[Metric.AMI])
    assert metrics[Metric.BEST_VALUE] == pytest.approx(best.data.metrics[Metric.AMI])
    assert metrics[Metric.AMI] == pytest.approx(best.data.metrics[Metric.AMI])  # the replayed best map
    assert params[Param.BEST_PREFIX + "trial"] == best.data.tags[Tag.TRIAL_NUMBER]
    first = next(t for t in trials if t.data.tags[Tag.TRIAL_NUMBER] == "0")  # the default map comes first
    assert first.data.params[Param.reducer_param("n_neighbors")] == "15"

    points = load_table(store, result.run_id, Artifact.MAP)
    assert len(points) == 300 and {Column.X, Column.Y, Column.CLUSTER, Column.LABEL} <= set(points.columns)
    table = load_table(store, result.run_id, Artifact.TRIALS)
    assert sorted(table[Column.TRIAL]) == list(range(5)) and set(table[Column.STATE]) == {"COMPLETE"}
    assert {Column.VALUE, Column.RUN_ID, Column.DURATION, "reducer.n_neighbors", Metric.AMI} <= set(table.columns)
    importances = load_table(store, result.run_id, Artifact.IMPORTANCES)
    assert list(importances.columns) == [Column.PARAM, Column.IMPORTANCE]

    # Any trial replays exactly from its logged params.
    again = replay(store, trials[-1].info.run_id)
    assert store.client.get_run(again.run_id).data.metrics[Metric.REPLAY_MAX_ABS_DIFF] == 0.0

    # The same command again adds trials to the same study and sweep run.
    more = sweep(SweepConfig(run=extraction.run_id, trials=2, fixed=N_EPOCHS), store=store)
    assert more.run_id == result.run_id
    assert _states(_study(store, study_name))["COMPLETE"] == 7
    assert store.client.get_run(result.run_id).data.metrics[Metric.N_TRIALS_COMPLETE] == 7


def test_bad_sweep_settings_fail_before_any_run(store, tmp_path):
    from latentscape.jobs.sweep import SweepConfig, sweep
    from latentscape.tracking.errors import UsageError

    extraction = _extract_digits(store, limit=100)
    (tmp_path / "space.yaml").write_text("params:\n  reducer.n_neighbors: {low: 5, high: 500}\n")
    import yaml

    cases = [
        (dict(objective="accuracy"), "unknown objective"),
        (dict(objective=Metric.N_CLUSTERS), "no natural direction"),
        (dict(space=yaml.safe_load((tmp_path / "space.yaml").read_text())), "not below the number of samples"),
        (dict(reducer="isomap"), "unknown reducer"),
        (dict(fixed={Param.reducer_param("n_components"): 0}), "n_components=0 is below 1"),
        (dict(layer=2), "has no layer 2"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(UsageError, match=needle):
            sweep(SweepConfig(run=extraction.run_id, trials=2, **kwargs), store=store)
    assert not _runs(store, Kind.SWEEP.value)


def _sweep_command(store, run_id, *extra):
    return [sys.executable, "-m", "latentscape.jobs.cli", "sweep", "--tracking-uri", store.uri, "--run", run_id, *extra]


def _wait(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)  # polling MLflow costs CPU the sweep needs
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_exactly_the_requested_trials(store, tmp_path):
    extraction = _extract_digits(store, limit=300)
    # t-SNE trials take a second or so: long enough to be caught mid-trial.
    command = _sweep_command(store, extraction.run_id, "--trials", "5", "--reducer", "tsne", "--clusterer", "kmeans",
                             "-r", "max_iter=250", "--heartbeat", "1")
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def mid_trial():
            if process.poll() is not None:
                raise AssertionError(f"the sweep ended before it could be killed: {process.stderr.read()}")
            trials = _runs(store, Kind.TRIAL.value)
            running = [t for t in trials if t.info.status == "RUNNING"]
            finished = [t for t in trials if t.info.status == "FINISHED"]
            return running[0].info.run_id if running and len(finished) >= 2 else None

        killed_run = _wait(mid_trial, 240, "a trial to be running after two finished")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert store.client.get_run(killed_run).info.status == "RUNNING"  # nothing could end it

    done = subprocess.run([*command, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (sweep_run,) = _runs(store, Kind.SWEEP.value)
    assert sweep_run.info.status == "FINISHED"
    study = _study(store, sweep_run.data.params[Param.STUDY_NAME])
    states = _states(study)
    assert states["COMPLETE"] == 5 and states["FAIL"] >= 1 and "RUNNING" not in states
    assert len({t.number for t in study.trials}) == len(study.trials)

    killed = store.client.get_run(killed_run)
    assert killed.info.status == "KILLED" and killed.data.tags[Tag.ERROR]
    trials = _runs(store, Kind.TRIAL.value)
    assert not [t for t in trials if t.info.status == "RUNNING"]
    finished = [t for t in trials if t.info.status == "FINISHED"]
    assert len(finished) == 5
    assert len({t.data.tags[Tag.TRIAL_NUMBER] for t in finished}) == 5
    assert all(t.data.tags[MLFLOW_PARENT_RUN_ID] == sweep_run.info.run_id for t in trials)


@pytest.mark.slow
def test_two_processes_share_one_study(store, tmp_path):
    extraction = _extract_digits(store, limit=300)
    command = _sweep_command(store, extraction.run_id, "--trials", "4", "--reducer", "pca", "--clusterer", "kmeans")
    processes = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    errors = [process.communicate(timeout=600)[1] for process in processes]  # both end before any assert
    assert [process.returncode for process in processes] == [0, 0], errors

    (sweep_run,) = _runs(store, Kind.SWEEP.value)
    assert sweep_run.info.status == "FINISHED"
    study = _study(store, sweep_run.data.params[Param.STUDY_NAME])
    assert _states(study)["COMPLETE"] == 8
    trials = _runs(store, Kind.TRIAL.value)
    finished = [t for t in trials if t.info.status == "FINISHED"]
    assert len(finished) == 8 and len({t.data.tags[Tag.TRIAL_NUMBER] for t in finished}) == 8
    assert {t.data.tags[MLFLOW_PARENT_RUN_ID] for t in trials} == {sweep_run.info.run_id}
    from latentscape.tracking.runs import load_table

    table = load_table(store, sweep_run.info.run_id, Artifact.TRIALS)
    assert (table[Column.STATE] == "COMPLETE").sum() == 8
    # Both finish the study's last trials at about the same moment: one of them logs the best map.
    assert len(store.client.get_metric_history(sweep_run.info.run_id, Metric.BEST_VALUE)) == 1


def test_one_of_the_workers_finishing_together_claims_the_best_map(tmp_path):
    """The claim behind "one best-map log per study": workers, each with its own storage
    (engine), claim the study's target at the same instant; exactly one wins, and a study
    extended to a new target is claimed once more."""
    import threading
    from types import SimpleNamespace

    import optuna

    from latentscape.jobs.sweep._best import _Best
    from latentscape.tracking.studies import dispose, open_storage

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = open_storage(url, 5, None)
    optuna.create_study(study_name="claims", storage=first)
    workers = [SimpleNamespace(storage=open_storage(url, 5, None), plan=SimpleNamespace(study_name="claims"),
                               worker_id=f"w{i}") for i in range(4)]
    start, won = threading.Barrier(len(workers)), []

    def finish(worker, target):
        start.wait()
        if _Best._claim_best(worker, target):
            won.append(worker.worker_id)

    for target in (8, 12):
        threads = [threading.Thread(target=finish, args=(worker, target)) for worker in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 1, f"target {target}: {won} claimed the best map"
        won.clear()
    _Best._release_best(workers[0], 12)  # a failed log gives the claim back
    assert _Best._claim_best(workers[1], 12)
    for storage in [first, *(worker.storage for worker in workers)]:
        dispose(storage)


def test_an_enqueued_trial_goes_to_one_worker_on_local_sqlite(tmp_path):
    """Workers with their own connections take queued trials at once: each trial is handed
    out once (SQLite ignores the row lock Optuna relies on; without BEGIN IMMEDIATE a
    third to a half of these were handed out twice, and the second tell failed)."""
    import threading
    from collections import Counter

    import optuna

    from latentscape.tracking.studies import dispose, open_storage

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storages = [open_storage(url, 5, None) for _ in range(5)]  # one engine each, disposed at the end
    study = optuna.create_study(study_name="queue", storage=storages[0])
    for x in range(40):
        study.enqueue_trial({"x": x})
    workers = [optuna.load_study(study_name="queue", storage=storage) for storage in storages[1:]]
    start, taken = threading.Barrier(len(workers)), []

    def take(worker):
        start.wait()
        taken.extend(worker.ask().number for _ in range(10))

    threads = [threading.Thread(target=take, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 40 and not [n for n, count in Counter(taken).items() if count > 1]
    assert all(t.state.name == "RUNNING" for t in study.trials)
    for storage in storages:
        dispose(storage)


@pytest.mark.slow
def test_digits_sweep_of_30_trials_is_at_least_the_default_map(store):
    from latentscape.jobs.core.mapping import fit_map
    from latentscape.jobs.map import MapRequest, resolve_for
    from latentscape.jobs.sweep import SweepConfig, sweep

    extraction = _extract_digits(store)
    _, config = resolve_for(extraction, MapRequest(run=extraction.run_id))
    default = fit_map(extraction.embedding(0), extraction.labels, config, with_view=False).scores[Metric.AMI]
    result = sweep(SweepConfig(run=extraction.run_id, trials=30), store=store)
    best = store.client.get_run(result.run_id).data.metrics[Metric.BEST_VALUE]
    assert best >= default - 1e-12, (best, default)
    assert default >= 0.85


def test_cli_space_file_errors_are_one_line(store, tmp_path, capsys):
    from latentscape.jobs.cli import main

    extraction = _extract_digits(store, limit=100)
    (tmp_path / "bad.yaml").write_text("params: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    base = ["sweep", "--tracking-uri", store.uri, "--run", extraction.run_id, "--trials", "2"]
    for extra, needle in [(["--space", str(tmp_path / "none.yaml")], "does not exist"),
                          (["--space", str(tmp_path / "bad.yaml")], "not valid YAML"),
                          (["--space", str(tmp_path / "list.yaml")], "not a mapping"),
                          (["--trials", "0"], "--trials 0 must be positive"),
                          (["--direction", "up"], "unknown --direction 'up'; choose one of maximize, minimize")]:
        assert main([*base, *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("latentscape sweep: error:") and needle in lines[0], lines
    assert not _runs(store, Kind.SWEEP.value)


@pytest.mark.postgres
def test_postgres_out_of_connections_is_one_line_naming_the_setting(postgres, digits_extraction, session_store,
                                                                     capsys):
    """A real refusal, cheaply: a role with CONNECTION LIMIT 0 gets PostgreSQL's "too many
    connections for role", as a full server gives "too many clients". The sweep says so in
    one line naming the settings to change, exit 2, no traceback."""
    import uuid

    import psycopg2
    from psycopg2 import sql

    from latentscape.jobs.cli import main
    from latentscape.tracking.connections import connection_refusal

    postgres.require()
    role = f"ls_limited_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.user, dbname="postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 0").format(sql.Identifier(role)))
        url = f"postgresql://{role}@{postgres.host}:{postgres.port}/postgres"
        with pytest.raises(psycopg2.OperationalError) as refused:
            psycopg2.connect(url)
        assert connection_refusal(refused.value, where="x") is not None

        code = main(["sweep", "--run", digits_extraction.run_id, "--tracking-uri", session_store.uri,
                     "--layer", "0", "--reducer", "pca", "--clusterer", "kmeans", "--trials", "1", "--storage", url])
        error = capsys.readouterr().err
        assert code == 2, error
        lines = [line for line in error.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("latentscape sweep: error: PostgreSQL refused"), error
        assert "--db-pool-size" in lines[0] and "max_connections" in lines[0]
        assert "Traceback" not in error
    finally:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.close()
