"""The MLflow adapter: runs always end, artifacts are never lost, batches respect MLflow's limits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from latentscape.tracking.contract import Kind, Tag
from latentscape.tracking.errors import UsageError
from latentscape.tracking.run_log import tracked_run
from latentscape.tracking.runs import load_array, load_table, open_store


def _only_run(store):
    runs = store.client.search_runs([store.experiment_id()])
    assert len(runs) == 1
    return runs[0]


def test_a_failing_job_ends_failed_with_its_error_and_keeps_its_artifacts(store):
    with pytest.raises(UsageError):
        with tracked_run(store, store.experiment_id(), Kind.MAP) as log:
            log.table("partial.parquet", pd.DataFrame({"a": [1, 2]}))
            raise UsageError("layer 9 does not exist", "pass --layer 0..6")
    run = _only_run(store)
    assert run.info.status == "FAILED"
    assert run.data.tags[Tag.ERROR] == "layer 9 does not exist; pass --layer 0..6"
    assert list(load_table(store, run.info.run_id, "partial.parquet")["a"]) == [1, 2]


def test_ctrl_c_ends_killed(store):
    with pytest.raises(KeyboardInterrupt):
        with tracked_run(store, store.experiment_id(), Kind.SWEEP):
            raise KeyboardInterrupt
    assert _only_run(store).info.status == "KILLED"


def test_sigterm_ends_killed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = textwrap.dedent(f"""
        import time
        from latentscape.tracking.contract import Kind
        from latentscape.tracking.run_log import tracked_run
        from latentscape.tracking.runs import open_store
        store = open_store({uri!r})
        with tracked_run(store, store.experiment_id(), Kind.SWEEP):
            print("started", flush=True)
            time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "started"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert process.returncode != 0
    run = _only_run(open_store(uri))
    assert run.info.status == "KILLED"
    assert "signal" in run.data.tags[Tag.ERROR]


def test_batches_respect_mlflows_limits(store):
    with tracked_run(store, store.experiment_id(), Kind.LAYERS) as log:
        log.params({f"p{i}": i for i in range(250)})
        log.metric_rows([("curve", float(i), i) for i in range(2500)])
        log.array("a.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    run = _only_run(store)
    assert len(run.data.params) == 250
    assert len(store.client.get_metric_history(run.info.run_id, "curve")) == 2500
    assert load_array(store, run.info.run_id, "a.npy").shape == (2, 3)


def test_two_processes_writing_one_local_store_never_lock(tmp_path):
    """Both processes start on a store that does not exist yet: each may create it and
    its experiment, and neither loses or blocks the other's runs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = textwrap.dedent(f"""
        from latentscape.tracking.contract import Kind
        from latentscape.tracking.run_log import tracked_run
        from latentscape.tracking.runs import open_store
        store = open_store({uri!r})
        experiment = store.experiment_id("shared")
        for i in range(60):
            with tracked_run(store, experiment, Kind.TRIAL) as log:
                log.params({{"i": i}})
                log.metrics({{"value": i * 0.5}})
    """)
    env = {**os.environ}
    started = time.perf_counter()
    workers = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, env=env)
               for _ in range(2)]
    errors = [worker.communicate(timeout=300)[1] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), errors
    store = open_store(uri)
    runs = store.client.search_runs([store.experiment_id("shared")], max_results=1000)
    assert len(runs) == 120 and all(run.info.status == "FINISHED" for run in runs)
    assert time.perf_counter() - started < 300


def test_background_runs_end_like_tracked_runs_and_surface_write_errors(store):
    from latentscape.tracking.run_writer import RunWriter, background_run

    writer = RunWriter(store.client)
    experiment = store.experiment_id()
    with background_run(writer, experiment, Kind.TRIAL, run_name="ok", tags={Tag.LAYER: 3}) as run:
        run.log(params={"a": 1}, metrics={"m": 0.5, "inf": float("inf")}, tags={"t": "x"})
    with pytest.raises(ValueError):
        with background_run(writer, experiment, Kind.TRIAL, run_name="bad") as run:
            run.log(params={"a": 2})
            raise ValueError("no such layer")
    with pytest.raises(KeyboardInterrupt):
        with background_run(writer, experiment, Kind.TRIAL, run_name="stopped"):
            raise KeyboardInterrupt
    writer.flush()
    runs = {r.info.run_name: r for r in store.client.search_runs([experiment])}
    assert runs["ok"].info.status == "FINISHED" and runs["ok"].data.params == {"a": "1"}
    assert runs["ok"].data.metrics == {"m": 0.5} and runs["ok"].data.tags[Tag.LAYER] == "3"
    assert runs["bad"].info.status == "FAILED" and "no such layer" in runs["bad"].data.tags[Tag.ERROR]
    assert runs["stopped"].info.status == "KILLED"
    assert writer.busy_s > 0 and writer.path_s >= 0

    # A write that fails is raised again by the next check / flush / close.
    def broken():
        raise OSError("disk full")

    writer.submit(broken)
    writer.submit(lambda: None)  # later writes are still attempted
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert writer.failed


def test_find_runs_matches_values_holding_quotes(store):
    experiment = store.experiment_id()
    tricky = "it's a \"quoted\" name, back\\slash"
    with tracked_run(store, experiment, Kind.MAP, tags={Tag.MODEL: tricky}) as log:
        log.params({"note": "o'clock"})
        wanted = log.run_id
    # A near miss: what the LIKE of a value holding both quotes also matches.
    with tracked_run(store, experiment, Kind.MAP, tags={Tag.MODEL: tricky.replace("'", "x")}) as log:
        log.params({"note": "o'clock!"})
    assert [run.id for run in store.find_runs(experiment, params={"note": "o'clock"})] == [wanted]
    found = store.find_runs(experiment, kind=Kind.MAP, tags={Tag.MODEL: tricky}, params={"note": "o'clock"},
                            status="FINISHED")
    assert [run.id for run in found] == [wanted]
    assert [run.id for run in store.find_runs(experiment, tags={Tag.MODEL: tricky})] == [wanted]
    assert store.find_runs([experiment], tags={Tag.MODEL: "it"}) == []
    assert len(store.find_runs(experiment, kind=Kind.MAP, newest_first=True, max_results=1)) == 1
    assert len(store.find_runs(experiment, kind=Kind.MAP, status="FINISHED")) == 2


def test_attach_resumes_a_run_and_ends_it_as_tracked_run_does(store):
    from latentscape.tracking.run_log import attach

    experiment = store.experiment_id()
    with tracked_run(store, experiment, Kind.SWEEP, run_name="sweep") as log:
        run_id = log.run_id
    with attach(store, run_id) as log:
        assert store.get_run(run_id).status == "RUNNING"
        log.metrics({"m": 1.0})
    assert store.get_run(run_id).status == "FINISHED"
    with pytest.raises(KeyboardInterrupt):
        with attach(store, run_id):
            raise KeyboardInterrupt
    assert store.get_run(run_id).status == "KILLED"
    with pytest.raises(ValueError):
        with attach(store, run_id):
            raise ValueError("broken")
    run = store.get_run(run_id)
    assert run.status == "FAILED" and "broken" in run.tags[Tag.ERROR]
    assert run.metrics == {"m": 1.0}


def test_kill_ends_a_run_killed_with_its_reason_and_tags(store):
    experiment = store.experiment_id()
    other = store.client.create_run(experiment).info.run_id
    store.kill(other, "its process died", tags={Tag.TRIAL_STATE: "FAIL"})
    run = store.get_run(other)
    assert run.status == "KILLED" and run.tags[Tag.ERROR] == "its process died"
    assert run.tags[Tag.TRIAL_STATE] == "FAIL"


def test_the_store_hands_out_run_records_not_mlflow_runs(store):
    from latentscape.tracking.records import RunRecord

    experiment = store.experiment_id()
    with tracked_run(store, experiment, Kind.SWEEP, run_name="parent") as parent:
        with tracked_run(store, experiment, Kind.TRIAL, run_name="child", parent_run_id=parent.run_id,
                         source_run_id="source-id", tags={Tag.LAYER: 2}) as child:
            child.batch(params={"a": 1}, metrics={"m": 0.5})
    record = store.get_run(child.run_id)
    assert isinstance(record, RunRecord) and record.id == child.run_id and record.name == "child"
    assert record.kind == Kind.TRIAL.value and record.parent_id == parent.run_id
    assert record.source_run_id == "source-id" and record.experiment_id == experiment
    assert record.finished and record.params == {"a": "1"} and record.metrics == {"m": 0.5}
    assert record.tags[Tag.LAYER] == "2" and record.artifact_uri
    assert record.start_ms is not None and record.end_ms is not None and record.start_ms <= record.end_ms
    with pytest.raises(TypeError):
        record.params["a"] = "2"  # read-only: the record is what the store said
    (found,) = store.find_runs(experiment, kind=Kind.TRIAL)
    assert isinstance(found, RunRecord) and found.id == record.id and store.get_run(parent.run_id).parent_id is None
