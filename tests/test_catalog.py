"""The DuckDB catalog (latentscape.tracking.catalog) and its queries (latentscape.tracking.queries).

- After any sequence of new, finished, resumed, deleted and restored runs, new metrics
  and deleted experiments, an incremental refresh equals a full rebuild.
- Hostile text returns nothing and changes nothing.
- Readers (threads and another process) keep reading while refreshes swap files in; a
  refresh that fails or dies leaves the previous catalog usable.
- It reads a store built by the real extract job, and a remote ``mlflow server`` with
  basic auth, caching its artifacts once.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latentscape.tracking import _catalog_reader as catalog_reader
from latentscape.tracking import catalog as catalog_module
from latentscape.tracking import queries as q
from latentscape.tracking.catalog import ArtifactNotFound, Catalog, RefreshStats, default_catalog_path
from latentscape.tracking.contract import Artifact, CatalogColumn, Column, Kind, Metric, Param, Tag
from latentscape.tracking.errors import UsageError
from latentscape.tracking.run_log import tracked_run

REPO = Path(__file__).resolve().parents[1]
NEIGHBOURS = Param.reducer_param("n_neighbors")
HOSTILE = [
    "'; DROP TABLE runs; --",
    "\" OR 1=1 --",
    "x' OR '1'='1",
    "1; DELETE FROM params",
    "%",
    "_",
    "') UNION SELECT * FROM tags --",
    "../../../etc/passwd",
    "$1",
    "?",
]


def _dump(catalog: Catalog) -> dict[str, pd.DataFrame]:
    """Every table a reader sees, in a canonical order (sync bookkeeping left out)."""
    cursor = catalog.cursor()
    tables = {
        "experiments": "SELECT experiment_id, name, lifecycle_stage, artifact_location FROM experiments",
        "runs": "SELECT * FROM runs",
        "params": "SELECT * FROM params",
        "tags": "SELECT * FROM tags",
        "latest_metrics": "SELECT * FROM latest_metrics",
        "metrics": "SELECT * FROM metrics",
        "deleted_runs": "SELECT * FROM deleted_runs",
    }
    return {name: cursor.execute(f"{sql} ORDER BY ALL").df() for name, sql in tables.items()}


def _assert_same(left: dict, right: dict) -> None:
    for name in left:
        pd.testing.assert_frame_equal(left[name], right[name], check_dtype=False, obj=name)


def _rebuilt(store, tmp_path) -> dict:
    """The catalog a first sync into a new file gives."""
    fresh = Catalog.open(store.uri, tmp_path / f"rebuild-{time.monotonic_ns()}.duckdb")
    fresh.refresh()
    return _dump(fresh)


def _log_run(store, experiment_id, kind=Kind.MAP, *, name="run", parent=None, layers=3, seed=0, **tags):
    rng = np.random.default_rng(seed)
    with tracked_run(store, experiment_id, kind, run_name=name, parent_run_id=parent, source_run_id=parent,
                     tags=tags) as log:
        log.params({Param.SEED: seed, Param.REDUCER: "pca"})
        log.metrics({Metric.AMI: float(rng.random()), Metric.NMI: float(rng.random())})
        if layers:
            log.curve(Metric.PROBE_ACCURACY, {layer: float(rng.random()) for layer in range(layers)})
        return log.run_id


# -- incremental equals rebuild ------------------------------------------------------------

class _History:
    """Random changes to an MLflow store, of the kinds a refresh must follow."""

    def __init__(self, store, seed: int):
        self.store, self.client = store, store.client
        self.rng = random.Random(seed)
        self.experiments = [store.experiment_id("alpha")]
        self.finished: list[str] = []
        self.running: list[str] = []
        self.deleted: list[str] = []
        self.n = 0

    def step(self) -> str:
        options = ["new", "new", "start", "log", "finish", "delete", "restore", "resume", "experiment",
                   "drop_experiment"]
        while True:
            op = self.rng.choice(options)
            if getattr(self, f"_{op}")():
                return op

    def _experiment_id(self) -> str:
        return self.rng.choice(self.experiments)

    def _new(self) -> bool:
        for _ in range(self.rng.randint(1, 3)):
            parent = self.rng.choice(self.finished) if self.finished and self.rng.random() < 0.5 else None
            self.n += 1
            experiment_id = self.client.get_run(parent).info.experiment_id if parent else self._experiment_id()
            self.finished.append(_log_run(self.store, experiment_id, name=f"run {self.n}", parent=parent,
                                          layers=self.rng.choice([0, 3]), seed=self.n,
                                          **{Tag.MODEL: self.rng.choice(["a", "b"])}))
        return True

    def _start(self) -> bool:
        self.n += 1
        run = self.client.create_run(self._experiment_id(), run_name=f"live {self.n}", tags={Tag.KIND: Kind.SWEEP.value})
        log = self.store.run_log(run.info.run_id)
        log.params({Param.TRIALS: 5})
        log.curve(Metric.LOSS, {0: 1.0, 1: 0.5})
        self.running.append(run.info.run_id)
        return True

    def _log(self) -> bool:
        if not self.running:
            return False
        run_id = self.rng.choice(self.running)
        log = self.store.run_log(run_id)
        step = int(self.client.get_run(run_id).data.metrics.get(Metric.N_TRIALS_COMPLETE, 0)) + 1
        log.metrics({Metric.N_TRIALS_COMPLETE: step, Metric.BEST_VALUE: self.rng.random()})
        log.curve(Metric.LOSS, {step + 1: 1.0 / (step + 2)})
        log.tags({Tag.TRIAL_STATE: f"step {step}"})
        return True

    def _finish(self) -> bool:
        if not self.running:
            return False
        run_id = self.running.pop(self.rng.randrange(len(self.running)))
        self.client.set_terminated(run_id, status=self.rng.choice(["FINISHED", "FAILED", "KILLED"]))
        self.finished.append(run_id)
        return True

    def _delete(self) -> bool:
        pool = self.finished + self.running
        if not pool:
            return False
        run_id = self.rng.choice(pool)
        self.client.delete_run(run_id)
        (self.finished if run_id in self.finished else self.running).remove(run_id)
        self.deleted.append((run_id, self.client.get_run(run_id).info.status))
        return True

    def _restore(self) -> bool:
        if not self.deleted:
            return False
        run_id, status = self.deleted.pop(self.rng.randrange(len(self.deleted)))
        self.client.restore_run(run_id)
        (self.running if status == "RUNNING" else self.finished).append(run_id)
        return True

    def _resume(self) -> bool:
        if not self.finished:
            return False
        run_id = self.finished.pop(self.rng.randrange(len(self.finished)))
        self.client.update_run(run_id, status="RUNNING")
        self.running.append(run_id)
        return True

    def _experiment(self) -> bool:
        self.n += 1
        self.experiments.append(self.store.experiment_id(f"experiment {self.n}"))
        return self._new()

    def _drop_experiment(self) -> bool:
        if len(self.experiments) < 2:
            return False
        from mlflow.entities import ViewType

        experiment_id = self.experiments.pop()
        for run in self.client.search_runs([experiment_id], run_view_type=ViewType.ALL):
            run_id = run.info.run_id
            for pool in (self.finished, self.running):
                if run_id in pool:
                    pool.remove(run_id)
            if run.info.status == "RUNNING":  # leave no run open behind a deleted experiment
                deleted = run.info.lifecycle_stage == "deleted"
                if deleted:
                    self.client.restore_run(run_id)
                self.client.set_terminated(run_id)
                if deleted:
                    self.client.delete_run(run_id)
        self.deleted = [(r, s) for r, s in self.deleted if self.client.get_run(r).info.experiment_id != experiment_id]
        self.client.delete_experiment(experiment_id)
        return True

    def close(self) -> None:
        for run_id in self.running:
            self.client.set_terminated(run_id)
        for run_id, status in self.deleted:
            if status == "RUNNING":
                self.client.restore_run(run_id)
                self.client.set_terminated(run_id)


@pytest.mark.parametrize("seed", [0, 1])
def test_refresh_equals_full_rebuild_after_any_sequence(store, tmp_path, seed):
    history = _History(store, seed)
    # One catalog with the default look-back window, one with none at all: both must follow.
    catalogs = [Catalog.open(store.uri, tmp_path / "default.duckdb"),
                Catalog.open(store.uri, tmp_path / "no-slack.duckdb", slack_s=0)]
    seen = []
    try:
        for _ in range(9):
            seen.append(history.step())
            stats = [catalog.refresh() for catalog in catalogs]
            rebuilt = _rebuilt(store, tmp_path)
            for catalog in catalogs:
                _assert_same(_dump(catalog), rebuilt)
            assert stats[0].total == len(rebuilt["runs"])
        # Nothing changed: nothing fetched again, nothing written.
        again = catalogs[0].refresh()
        assert (again.new, again.changed, again.deleted, again.written) == (0, 0, 0, False)
    finally:
        history.close()
    assert len(set(seen)) >= 5, seen


def test_refresh_counts_new_changed_deleted_and_reuses_histories(store, tmp_path):
    experiment_id = store.experiment_id("counts")
    first = _log_run(store, experiment_id, name="first")
    live = store.client.create_run(experiment_id, run_name="live").info.run_id
    store.run_log(live).curve(Metric.LOSS, {0: 1.0, 1: 0.5})
    catalog = Catalog.open(store.uri, tmp_path / "catalog.duckdb")
    stats = catalog.refresh()
    assert isinstance(stats, RefreshStats)
    assert (stats.new, stats.changed, stats.deleted, stats.histories) == (2, 0, 0, 2)

    store.run_log(live).curve(Metric.LOSS, {2: 0.25})
    store.client.set_terminated(live)
    second = _log_run(store, experiment_id, name="second")
    store.client.delete_run(first)
    stats = catalog.refresh()
    # Only the live run's changed curve and the new run's curve are fetched again.
    assert (stats.new, stats.changed, stats.deleted, stats.histories) == (1, 1, 1, 2)
    assert set(q.runs(catalog)[CatalogColumn.RUN_ID]) == {live, second}
    curve = q.metrics(catalog, [live], keys=[Metric.LOSS])
    assert curve[CatalogColumn.STEP].tolist() == [0, 1, 2]
    assert catalog.refresh().written is False


# -- queries ---------------------------------------------------------------------------------

@pytest.fixture
def planted(store, tmp_path):
    """An extraction with per-layer curves, two maps of it (one with map.parquet), a
    sweep with three trials and trials.parquet; synced into a catalog."""
    experiment_id = store.experiment_id("planted")
    with tracked_run(store, experiment_id, Kind.EXTRACT, run_name="minilm · demo",
                     tags={Tag.MODEL: "minilm", Tag.DATASET_NAME: "demo", Tag.DATASET_DIGEST: "d1234"}) as log:
        log.params({Param.POOLING: "mean", Param.N_LAYERS: 3})
        log.curve(Metric.MEAN_NORM, {0: 1.0, 1: 2.0, 2: 3.0})
        log.curve(Metric.ANISOTROPY, {0: 0.5, 1: 0.4, 2: 0.3})
        extract = log.run_id
    maps = []
    for layer in (1, 2):
        with tracked_run(store, experiment_id, Kind.MAP, run_name=f"map layer {layer}", source_run_id=extract,
                         tags={Tag.LAYER: layer, Tag.MODEL: "minilm", Tag.DATASET_NAME: "demo"}) as log:
            log.params({Param.LAYER: layer})
            log.metrics({Metric.AMI: 0.1 * layer})
            if layer == 2:
                log.table(Artifact.MAP, pd.DataFrame({
                    Column.SAMPLE_ID: np.arange(50), Column.X: np.linspace(0, 1, 50), Column.Y: np.ones(50),
                    Column.CLUSTER: np.arange(50) % 3, Column.LABEL: ["a", "b"] * 25, Column.TEXT: ["t"] * 50}))
            maps.append(log.run_id)
    with tracked_run(store, experiment_id, Kind.SWEEP, run_name="sweep", source_run_id=extract) as sweep:
        trials = []
        for number in range(3):
            with tracked_run(store, experiment_id, Kind.TRIAL, run_name=f"trial {number}",
                             parent_run_id=sweep.run_id, source_run_id=extract) as trial:
                trial.params({NEIGHBOURS: 5 + number})
                trial.metrics({Metric.AMI: 0.2 * number})
                trials.append(trial.run_id)
        sweep.table(Artifact.TRIALS, pd.DataFrame({Column.TRIAL: [0, 1, 2], Column.VALUE: [0.0, 0.2, 0.4]}))
    catalog = Catalog.open(store.uri, tmp_path / "planted.duckdb")
    catalog.refresh()
    return catalog, {"extract": extract, "maps": maps, "sweep": sweep.run_id, "trials": trials}


def test_runs_filters_and_columns(planted):
    catalog, ids = planted
    everything = q.runs(catalog)
    assert tuple(everything.columns) == CatalogColumn.RUNS
    assert len(everything) == 7
    assert everything[CatalogColumn.START_TIME].is_monotonic_decreasing
    assert set(q.runs(catalog, kinds=["map"])[CatalogColumn.RUN_ID]) == set(ids["maps"])
    assert set(q.runs(catalog, kinds=["map", "extract"], models=["minilm"])[CatalogColumn.RUN_ID]) == {
        ids["extract"], *ids["maps"]}
    assert q.runs(catalog, kinds=[]).empty
    assert len(q.runs(catalog, experiments=["planted"])) == 7
    assert set(q.runs(catalog, datasets=["d1234"])[CatalogColumn.RUN_ID]) == {ids["extract"]}
    assert set(q.runs(catalog, text="LAYER 2")[CatalogColumn.RUN_ID]) == {ids["maps"][1]}
    assert set(q.runs(catalog, parent_run_id=ids["sweep"])[CatalogColumn.RUN_ID]) == set(ids["trials"])
    assert len(q.runs(catalog, limit=2)) == 2
    first = everything[CatalogColumn.START_TIME].min()
    assert len(q.runs(catalog, since=first)) == 7
    assert q.runs(catalog, until=first - pd.Timedelta(seconds=1)).empty
    assert len(q.runs(catalog, until=first.date())) == 7  # a bare date includes its whole day
    assert len(q.runs(catalog, since=first.tz_localize("UTC").tz_convert("Asia/Tokyo"))) == 7
    row = everything.set_index(CatalogColumn.RUN_ID).loc[ids["maps"][1]]
    assert (row[CatalogColumn.KIND], row[CatalogColumn.LAYER], row[CatalogColumn.SOURCE_RUN]) == ("map", 2, ids["extract"])
    with pytest.raises(UsageError):
        q.runs(catalog, since="not a date")
    with pytest.raises(UsageError):
        q.runs(catalog, limit=-1)


def test_tables_of_params_metrics_and_curves(planted):
    catalog, ids = planted
    experiments = q.experiments(catalog)
    assert list(experiments.columns) == ["experiment_id", "experiment", "n_runs", "last_start"]
    assert experiments.set_index("experiment").loc["planted", "n_runs"] == 7

    table = q.run_table(catalog, ids["trials"] + [ids["maps"][0]])
    assert table[CatalogColumn.RUN_ID].tolist() == ids["trials"][::-1] + [ids["maps"][0]]  # newest first
    param, metric = CatalogColumn.PARAM_PREFIX, CatalogColumn.METRIC_PREFIX
    assert {param + NEIGHBOURS, param + Param.LAYER, metric + Metric.AMI} <= set(table.columns)
    trial = table.set_index(CatalogColumn.RUN_ID).loc[ids["trials"][2]]
    assert trial[param + NEIGHBOURS] == "7" and trial[metric + Metric.AMI] == pytest.approx(0.4)
    assert q.run_table(catalog, []).empty

    curves = q.layer_curves(catalog, [ids["extract"]], [Metric.MEAN_NORM, Metric.ANISOTROPY])
    assert list(curves.columns) == ["run_id", "run_name", "key", "layer", "value"]
    assert curves[curves.key == Metric.MEAN_NORM]["value"].tolist() == [1.0, 2.0, 3.0]
    assert set(q.metrics(catalog, [ids["extract"]])["key"]) == {Metric.MEAN_NORM, Metric.ANISOTROPY}
    assert set(q.params(catalog, [ids["extract"]])["key"]) == {Param.POOLING, Param.N_LAYERS}
    assert Tag.KIND in set(q.tags(catalog, [ids["extract"]])["key"])

    kids = q.children(catalog, ids["sweep"])
    assert kids[CatalogColumn.RUN_ID].tolist() == ids["trials"]
    assert q.children(catalog, ids["sweep"], kind="map").empty
    facets = q.facets(catalog)
    assert set(facets[facets.facet == "kind"]["value"]) == {"extract", "map", "sweep", "trial"}
    activity = q.activity(catalog, bucket="day")
    assert activity["n_runs"].sum() == 7


def test_parquet_artifacts_read_with_projection(planted):
    catalog, ids = planted
    points = q.map_points(catalog, ids["maps"][1])
    assert len(points) == 50 and {Column.X, Column.Y, Column.TEXT} <= set(points.columns)
    projected = q.map_points(catalog, ids["maps"][1], columns=[Column.X, Column.CLUSTER], limit=10)
    assert list(projected.columns) == [Column.X, Column.CLUSTER] and len(projected) == 10
    assert q.map_points(catalog, ids["maps"][1], columns=["x", "no such column"]).empty
    assert q.parquet_columns(catalog, ids["maps"][1])[:3] == [Column.SAMPLE_ID, Column.X, Column.Y]
    assert q.sweep_trials(catalog, ids["sweep"])[Column.VALUE].tolist() == [0.0, 0.2, 0.4]
    assert len(q.table(catalog, ids["sweep"], Artifact.TRIALS)) == 3
    with pytest.raises(ArtifactNotFound):
        q.map_points(catalog, ids["maps"][0])  # a map run without map.parquet
    with pytest.raises(LookupError):
        q.sweep_trials(catalog, ids["extract"])
    # A local store is read in place: nothing copied.
    assert catalog.artifact(ids["maps"][1], Artifact.MAP).is_relative_to(Path(catalog.path).parent / "mlartifacts")
    assert catalog.artifact(ids["maps"][1], "nope.parquet") is None


def test_hostile_text_returns_nothing_and_changes_nothing(planted, store):
    catalog, ids = planted
    before = _dump(catalog)
    size = catalog.path.stat().st_size
    runs_in_mlflow = len(store.client.search_runs([store.experiment_id("planted")]))
    for text in HOSTILE:
        assert q.runs(catalog, text=text).empty, text
        for name in ("kinds", "experiments", "models", "datasets", "run_ids"):
            assert q.runs(catalog, **{name: [text]}).empty
        assert q.runs(catalog, parent_run_id=text).empty
        assert q.children(catalog, text).empty and q.children(catalog, ids["sweep"], kind=text).empty
        assert q.run_table(catalog, [text]).empty
        assert q.params(catalog, [text]).empty and q.tags(catalog, [text]).empty
        assert q.metrics(catalog, [text]).empty and q.metrics(catalog, [ids["extract"]], keys=[text]).empty
        assert q.layer_curves(catalog, [text], [text]).empty
        assert q.layer_curves(catalog, [ids["extract"]], [text]).empty
        assert q.map_points(catalog, ids["maps"][1], columns=[text]).empty
        for reader in (lambda: q.map_points(catalog, text), lambda: q.sweep_trials(catalog, text),
                       lambda: q.table(catalog, text, text), lambda: q.table(catalog, ids["sweep"], text),
                       lambda: q.table(catalog, ids["sweep"], f"../{text}.parquet")):
            with pytest.raises(ArtifactNotFound):
                reader()
        assert catalog.artifact(text, Artifact.MAP) is None and catalog.artifact(ids["maps"][1], text) is None
        with pytest.raises(UsageError):
            q.runs(catalog, since=text)
        with pytest.raises(UsageError):
            catalog.refresh(experiments=[text])
    _assert_same(_dump(catalog), before)
    assert catalog.path.stat().st_size == size
    assert len(store.client.search_runs([store.experiment_id("planted")])) == runs_in_mlflow
    # Text that is data (a run named like an injection) is found literally.
    with tracked_run(store, store.experiment_id("planted"), Kind.MAP, run_name=HOSTILE[0]) as log:
        log.params({Param.METHOD: HOSTILE[1]})
    catalog.refresh()
    assert q.runs(catalog, text=HOSTILE[0])[CatalogColumn.NAME].tolist() == [HOSTILE[0]]
    assert len(q.runs(catalog)) == 8
    assert q.params(catalog, [log.run_id])["value"].tolist() == [HOSTILE[1]]


# -- readers, writers, crashes ------------------------------------------------------------

_READER = """
import sys, time
from latentscape.tracking.catalog import Catalog
catalog = Catalog.open(sys.argv[1], sys.argv[2])
catalog.cursor()
print("ready", flush=True)
deadline, worst, reads = time.monotonic() + float(sys.argv[3]), 0.0, 0
while time.monotonic() < deadline:
    started = time.monotonic()
    ok = catalog.cursor().execute(
        "SELECT (SELECT count(*) FROM params) = 2 * (SELECT count(*) FROM runs)").fetchone()[0]
    assert ok, "a reader saw half a refresh"
    worst, reads = max(worst, time.monotonic() - started), reads + 1
print(reads, worst)
"""


def test_readers_keep_reading_while_refreshes_swap_files(store, tmp_path):
    experiment_id = store.experiment_id("busy")
    path = tmp_path / "catalog.duckdb"
    catalog = Catalog.open(store.uri, path)
    _log_run(store, experiment_id, layers=0)
    catalog.refresh()
    other = subprocess.Popen([sys.executable, "-c", _READER, store.uri, str(path), "4"], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    errors, latencies, stop = [], [], threading.Event()

    def read():
        while not stop.is_set():
            started = time.monotonic()
            try:
                cursor = catalog.cursor()
                runs = cursor.execute("SELECT count(*) FROM runs").fetchone()[0]
                params = cursor.execute("SELECT count(*) FROM params").fetchone()[0]
                assert params == 2 * runs, (params, runs)
                q.runs(catalog)
            except Exception as error:  # collected, asserted below
                errors.append(error)
            latencies.append(time.monotonic() - started)

    assert other.stdout.readline().strip() == "ready", other.stderr.read()
    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in readers:
        thread.start()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            _log_run(store, experiment_id, layers=0)
            catalog.refresh()
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    out, err = other.communicate(timeout=60)
    assert other.returncode == 0, err
    reads, worst = out.split()
    assert not errors, errors[:3]
    assert int(reads) > 10 and len(latencies) > 10
    assert max(latencies) < 2.0 and float(worst) < 2.0  # never blocked for long (2 busy cores)
    assert len(q.runs(catalog)) == len(store.client.search_runs([experiment_id]))


def test_opening_a_catalog_does_not_wait_for_a_refresh_elsewhere(store, tmp_path):
    """The app opens the catalog at once and syncs in the background: an open must not
    wait on the lock a refresh (here: another process's, held) takes; a refresh does."""
    import fcntl

    experiment_id = store.experiment_id("open")
    path = tmp_path / "catalog.duckdb"
    Catalog.open(store.uri, path).refresh()
    _log_run(store, experiment_id, layers=0)
    opened, refreshed = [], []
    with open(path.with_name(path.name + ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            opener = threading.Thread(target=lambda: opened.append(Catalog.open(store.uri, path)))
            opener.start()
            opener.join(60)  # a bound for a hang, not a timing: it returns at once
            assert not opener.is_alive() and len(opened) == 1, "Catalog.open waited for the refresh lock"
            assert q.runs(opened[0]).empty, "it shows what the file holds (synced before the run was logged)"
            refresher = threading.Thread(target=lambda: refreshed.append(opened[0].refresh()))
            refresher.start()
            refresher.join(0.5)
            assert refresher.is_alive(), "a refresh takes its turn on the lock"
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    refresher.join(120)
    assert refreshed[0].new == 1 and len(q.runs(opened[0])) == 1


_CRASH = """
import os, sys
from latentscape.tracking import catalog as module

def die(con, delta, horizon_ms):
    con.execute("DELETE FROM runs")  # half-written, then the process dies
    os._exit(3)

module.write_delta = die
module.Catalog.open(sys.argv[1], sys.argv[2]).refresh()
"""


def test_a_failed_or_killed_refresh_keeps_the_previous_catalog(store, tmp_path, monkeypatch):
    experiment_id = store.experiment_id("crash")
    path = tmp_path / "catalog.duckdb"
    catalog = Catalog.open(store.uri, path)
    _log_run(store, experiment_id)
    catalog.refresh()
    before = _dump(catalog)
    _log_run(store, experiment_id, name="second", seed=1)

    # An error in the middle of writing: the exception surfaces, the old file stays.
    def fail(con, delta, horizon_ms):
        con.execute("DELETE FROM runs")
        raise RuntimeError("disk full")

    monkeypatch.setattr(catalog_module, "write_delta", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        catalog.refresh()
    _assert_same(_dump(catalog), before)
    assert not list(tmp_path.glob("catalog.duckdb.tmp-*"))
    monkeypatch.undo()

    # MLflow failing in the middle of a sync: same.
    def unreachable(self, run_id, key):
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(catalog_reader.MlflowReader, "history", unreachable)
    with pytest.raises(ConnectionError):
        catalog.refresh()
    _assert_same(_dump(catalog), before)
    monkeypatch.undo()

    # The refreshing process killed half-way: the old file is intact, the next refresh
    # clears the leftover and catches up.
    died = subprocess.run([sys.executable, "-c", _CRASH, store.uri, str(path)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert died.returncode == 3, died.stderr
    assert list(tmp_path.glob("catalog.duckdb.tmp-*"))
    _assert_same(_dump(catalog), before)
    assert catalog.refresh().new == 1
    assert not list(tmp_path.glob("catalog.duckdb.tmp-*"))
    _assert_same(_dump(catalog), _rebuilt(store, tmp_path))


def test_progress_paths_and_light_import(store, tmp_path, monkeypatch):
    monkeypatch.delenv("LATENTSCAPE_CATALOG", raising=False)
    experiment_id = store.experiment_id("progress")
    for seed in range(3):
        _log_run(store, experiment_id, seed=seed)
    calls = []
    catalog = Catalog.open(store.uri)  # default path: beside the SQLite file
    assert catalog.path == default_catalog_path(store.uri) and catalog.path.parent == tmp_path
    catalog.refresh(progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert ("catalog: runs", 3, None) in calls
    assert [c for c in calls if "histories" in c[0]][-1][1:] == (3, 3)
    monkeypatch.setenv("LATENTSCAPE_CATALOG", str(tmp_path / "elsewhere.duckdb"))
    assert Catalog.open(store.uri).path == tmp_path / "elsewhere.duckdb"
    # The catalog of another store in the same file is not reused.
    other = Catalog.open(f"sqlite:///{tmp_path / 'other.db'}", catalog.path)
    assert q.runs(other).empty
    # The UI process imports the catalog without MLflow, torch, umap, streamlit or the jobs.
    probe = ("import sys, latentscape.tracking.queries, latentscape.tracking.catalog; "
             "print(sorted(m for m in ('mlflow', 'torch', 'umap', 'streamlit', 'latentscape.jobs') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- real stores -----------------------------------------------------------------------------

def test_a_store_built_by_the_extract_job(digits_extraction, text_extraction, session_store, tmp_path):
    catalog = Catalog.open(session_store.uri, tmp_path / "catalog.duckdb")
    catalog.refresh(experiments=["demo", "digits"])
    extracts = q.runs(catalog, kinds=[Kind.EXTRACT.value])
    by_id = extracts.set_index(CatalogColumn.RUN_ID)
    text_run, digits_run = text_extraction.run_id, digits_extraction.run_id
    assert {text_run, digits_run} <= set(by_id.index)
    assert by_id.loc[text_run, CatalogColumn.EXPERIMENT] == "demo"
    assert by_id.loc[text_run, CatalogColumn.DATASET_DIGEST] and by_id.loc[text_run, CatalogColumn.STATUS] == "FINISHED"
    curves = q.layer_curves(catalog, [text_run, digits_run], [Metric.MEAN_NORM, Metric.ANISOTROPY])
    layers = curves.groupby(["run_id", "key"])["layer"].apply(list)
    assert layers[(text_run, Metric.MEAN_NORM)] == list(range(7))
    assert layers[(digits_run, Metric.MEAN_NORM)] == [0]
    table = q.run_table(catalog, [text_run])
    assert table.loc[0, CatalogColumn.PARAM_PREFIX + Param.N_LAYERS] == "7"
    samples = q.table(catalog, text_run, Artifact.SAMPLES)
    assert len(samples) == 240 and Column.TEXT in samples
    assert catalog.artifact(text_run, Artifact.embedding(6)).is_file()
    assert catalog.refresh(experiments=["demo", "digits"]).written is False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory, wait_for_health):
    """``mlflow server`` with basic auth, a SQLite backend and proxied artifacts."""
    from latentscape.tracking.runs import open_store

    folder = tmp_path_factory.mktemp("server")
    open_store(f"sqlite:///{folder / 'mlflow.db'}")
    port = _free_port()
    password = "admin-password-for-tests"
    # MLflow checks the password hash on every request unless its credential cache is on
    # (off by default): measured 5-7 s a request on 2 busy cores without it, 0.1-0.2 s with.
    config = folder / "basic_auth.ini"
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{folder / 'basic_auth.db'}\nadmin_username = admin\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                      "auth_cache_ttl_seconds = 600\n")
    env = {**os.environ, "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret", "MLFLOW_AUTH_ADMIN_PASSWORD": password,
           "MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(folder / "server.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
         f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--app-name", "basic-auth"],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, server, log=folder / "server.log", timeout_s=120, poll_s=0.3)
        yield url, "admin", password, f"sqlite:///{folder / 'mlflow.db'}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=3)
        except subprocess.TimeoutExpired:  # uvicorn drains slowly; the test data is disposable
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_remote_server_with_basic_auth_and_artifact_cache(auth_server, tmp_path, monkeypatch):
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from latentscape.tracking.runs import open_store

    url, user, password, backend = auth_server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    store = open_store(url)
    experiment_id = store.experiment_id("remote")
    # Fewer round trips on 2 busy cores: most runs are written straight into the
    # server's database; the catalog reads everything through the server.
    backstage = open_store(backend)
    extract = _log_run(backstage, experiment_id, Kind.EXTRACT, name="remote extract")
    with tracked_run(store, experiment_id, Kind.MAP, run_name="remote map", source_run_id=extract) as log:
        log.table(Artifact.MAP, pd.DataFrame({Column.X: [0.0, 1.0], Column.Y: [1.0, 0.0], Column.LABEL: ["a", "b"]}))
        remote_map = log.run_id

    catalog = Catalog.open(url, tmp_path / "catalog.duckdb")
    assert catalog.refresh().new == 2
    assert set(q.runs(catalog)[CatalogColumn.RUN_ID]) == {extract, remote_map}
    assert q.layer_curves(catalog, [extract], [Metric.PROBE_ACCURACY])["layer"].tolist() == [0, 1, 2]

    downloads = []
    real = mlflow.artifacts.download_artifacts
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda **kw: downloads.append(kw) or real(**kw))
    for _ in range(3):
        assert q.map_points(catalog, remote_map, columns=[Column.X])[Column.X].tolist() == [0.0, 1.0]
    assert len(downloads) == 1  # fetched once, then read from the cache
    cached = catalog.artifact(remote_map, Artifact.MAP)
    assert cached.is_relative_to(catalog.cache_dir)
    assert catalog.artifact(remote_map, "missing.parquet") is None
    assert catalog.artifact(remote_map, "missing.parquet") is None and len(downloads) == 2

    # Incremental through the server: a new run, a deleted run; its cached artifacts go too.
    newer = _log_run(backstage, experiment_id, name="newer")
    backstage.client.delete_run(remote_map)
    stats = catalog.refresh()
    assert (stats.new, stats.deleted) == (1, 1)
    assert not cached.exists()
    _assert_same(_dump(catalog), _dump_rebuilt_remote(url, tmp_path))
    assert newer in set(q.runs(catalog)[CatalogColumn.RUN_ID])

    # Without credentials the server refuses, and the catalog stays as it was.
    before = _dump(catalog)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(MlflowException):
        Catalog.open(url, tmp_path / "catalog.duckdb").refresh()
    _assert_same(_dump(catalog), before)


def _dump_rebuilt_remote(url, tmp_path) -> dict:
    fresh = Catalog.open(url, tmp_path / "rebuilt.duckdb")
    fresh.refresh()
    return _dump(fresh)
