"""One catalog refresh: what changed in MLflow since the previous catalog file
(:class:`Sync`, asking MLflow as little as it can, the previous file read through
:class:`Snapshot`), the change as a :class:`Delta`, and :func:`write_delta`, which writes
it into a new file's tables in the caller's transaction. :mod:`latentscape.tracking.catalog`
owns the files, the lock and the swap."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from latentscape.tracking._catalog_reader import UNFINISHED, MlflowReader, RunRows, flatten, id_list, window_filter
from latentscape.tracking.errors import UsageError
from latentscape.tracking.privacy import masked

if TYPE_CHECKING:
    from latentscape.tracking.catalog import Catalog

__all__ = ["IDS", "ProgressCallback", "Progress", "Snapshot", "Delta", "Sync", "write_delta", "set_meta"]

# MLflow's lifecycle stages (its own vocabulary, not ours).
_DELETED = "deleted"
_ACTIVE = "active"
_MAX_EXCLUDE = 5000  # ids in one NOT IN filter (measured: 2,000 ids add ~80 ms on SQLite)
_HISTORY_THREADS = 8  # concurrent get_metric_history calls (mostly waiting on I/O)
# A bound list of ids as a semi-join (a hash join: list_contains would compare every pair).
IDS = "(SELECT unnest(?::VARCHAR[]))"
_EXPERIMENT_KEY = ("experiment_id", "name", "lifecycle_stage", "artifact_location")  # a change rewrites them
_RUN_TABLES = ("params", "tags", "latest_metrics", "metrics", "runs")
_RUN_FRAME_COLUMNS = (
    "run_id", "experiment_id", "name", "status", "user", "start_ms", "end_ms", "parent_run_id",
    "source_run", "kind", "model", "dataset_name", "dataset_digest", "pooling", "layer", "error",
    "artifact_uri", "fingerprint", "search_text",
)


ProgressCallback = Callable[[str, int, "int | None"], None]


class Progress:
    """``progress=True``: tqdm bars on stderr (``LATENTSCAPE_PROGRESS=0`` turns them off);
    a callable: called as ``progress(stage, done, total_or_None)``; False: silent."""

    def __init__(self, progress: bool | ProgressCallback):
        self._callback = progress if callable(progress) else None
        self._bars = bool(progress) and not callable(progress) and os.environ.get("LATENTSCAPE_PROGRESS", "1") != "0"

    @contextlib.contextmanager
    def stage(self, name: str, total: int | None, unit: str) -> Iterator[Callable[[int], None]]:
        done = [0]
        bar = None
        if self._bars:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=name, unit=unit, file=sys.stderr, mininterval=0.5,
                       dynamic_ncols=True, leave=False)

        def advance(n: int) -> None:
            done[0] += n
            if bar is not None:
                bar.update(n)
            if self._callback is not None:
                self._callback(name, done[0], total)

        try:
            yield advance
        finally:
            if bar is not None:
                bar.close()


class Snapshot:
    """Read-only view of the current catalog file (or of nothing, for a first sync)."""

    def __init__(self, con: duckdb.DuckDBPyConnection | None):
        self.con = con

    @property
    def usable(self) -> bool:
        return self.con is not None

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        if self.con is None:
            return []
        return self.con.execute(sql, list(params)).fetchall()

    def horizons(self) -> dict[str, int]:
        return dict(self.rows("SELECT experiment_id, horizon_ms FROM sync_state"))

    def experiment_ids_with_runs(self) -> set[str]:
        return {row[0] for row in self.rows(
            "SELECT DISTINCT experiment_id FROM runs UNION SELECT experiment_id FROM sync_state "
            "UNION SELECT DISTINCT experiment_id FROM deleted_runs")}

    def recent(self, experiment_ids: list[str], column: str, since_ms: int) -> list[tuple[str, int]]:
        """(run_id, time) of known runs (deleted ones too) with ``column`` >= since, newest first."""
        assert column in ("start_ms", "end_ms")
        return self.rows(
            f"SELECT run_id, {column} FROM runs WHERE experiment_id IN {IDS} AND {column} >= ? "
            f"UNION ALL SELECT run_id, {column} FROM deleted_runs WHERE experiment_id IN {IDS} "
            f"AND {column} >= ? ORDER BY 2 DESC",
            [experiment_ids, since_ms, experiment_ids, since_ms])

    def unfinished(self, experiment_ids: list[str]) -> list[str]:
        return [row[0] for row in self.rows(
            f"SELECT run_id FROM runs WHERE experiment_id IN {IDS} AND list_contains(?, status)",
            [experiment_ids, list(UNFINISHED)])]

    def deleted(self, experiment_ids: list[str]) -> list[str]:
        return [row[0] for row in self.rows(
            f"SELECT run_id FROM deleted_runs WHERE experiment_id IN {IDS}", [experiment_ids])]

    def all_deleted(self) -> set[str]:
        return {row[0] for row in self.rows("SELECT run_id FROM deleted_runs")}

    def run_ids(self, experiment_ids: list[str]) -> set[str]:
        return {row[0] for row in self.rows(
            f"SELECT run_id FROM runs WHERE experiment_id IN {IDS}", [experiment_ids])}

    def fingerprints(self, run_ids: list[str]) -> dict[str, tuple[str, str]]:
        return {run_id: (fingerprint, status) for run_id, fingerprint, status in self.rows(
            f"SELECT run_id, fingerprint, status FROM runs WHERE run_id IN {IDS}", [run_ids])}

    def latest(self, run_ids: list[str]) -> dict[tuple[str, str], tuple[float, int, int]]:
        return {(r, k): (v, s, t) for r, k, v, s, t in self.rows(
            f"SELECT run_id, key, value, step, timestamp FROM latest_metrics WHERE run_id IN {IDS}", [run_ids])}

    def histories(self, run_ids: list[str]) -> list[tuple]:
        return self.rows(f"SELECT run_id, key, value, step, timestamp FROM metrics WHERE run_id IN {IDS}", [run_ids])

    def experiment_rows(self) -> list[tuple] | None:
        if self.con is None:
            return None
        return self.rows(f"SELECT {', '.join(_EXPERIMENT_KEY)} FROM experiments ORDER BY experiment_id")


@dataclass
class Delta:
    experiments: pd.DataFrame
    experiments_changed: bool
    reset_experiments: list[str] = field(default_factory=list)  # fetched whole: replace their rows
    gone_experiments: list[str] = field(default_factory=list)  # deleted or vanished: drop their rows
    synced: list[str] = field(default_factory=list)  # experiments whose horizon moves
    upserts: list[RunRows] = field(default_factory=list)
    metric_rows: list[tuple] = field(default_factory=list)
    removed: set[str] = field(default_factory=set)
    deleted: dict[str, tuple[str, int | None, int | None]] = field(default_factory=dict)  # newly known deleted
    undeleted: set[str] = field(default_factory=set)
    new: int = 0
    changed: int = 0
    fetched: int = 0
    histories: int = 0

    def empty(self) -> bool:
        return not (self.experiments_changed or self.reset_experiments or self.gone_experiments or self.upserts
                    or self.removed or self.deleted or self.undeleted)


class Sync:
    """Works out what changed since the previous catalog, asking MLflow as little as it can."""

    def __init__(self, catalog: Catalog, snapshot: Snapshot, progress: Progress, horizon_ms: int):
        self.catalog = catalog
        self.snapshot = snapshot
        self.progress = progress
        self.horizon_ms = horizon_ms
        self.mlflow = MlflowReader(catalog._mlflow())

    def run(self, requested: Sequence[str] | None, full: bool) -> Delta:
        experiments = self.mlflow.experiments()
        scope, gone = self._scope(experiments, requested)
        frame = _experiments_frame(experiments)
        changed = self.snapshot.experiment_rows() != [
            tuple(row) for row in frame[list(_EXPERIMENT_KEY)].itertuples(index=False)]
        delta = Delta(experiments=frame, experiments_changed=changed, gone_experiments=gone)

        horizons = self.snapshot.horizons()
        whole = [e for e in scope if full or e not in horizons]
        by_horizon: dict[int, list[str]] = {}
        for experiment_id in scope:
            if experiment_id not in whole:
                by_horizon.setdefault(horizons[experiment_id], []).append(experiment_id)

        fetched: dict[str, Any] = {}
        deleted: dict[str, Any] = {}
        purged: set[str] = set()
        if whole:
            delta.reset_experiments = whole
            with self.progress.stage("catalog: runs", None, "run") as advance:
                for run in self.mlflow.search(whole, advance=advance):
                    self._classify(run, fetched, deleted)
        for horizon, group in sorted(by_horizon.items()):
            self._incremental(group, horizon, fetched, deleted, purged, delta)
        delta.synced = list(scope)
        delta.fetched = len(fetched) + len(deleted)
        self._decide(delta, fetched, deleted, purged, whole, full)
        return delta

    # -- which experiments ----------------------------------------------------------------
    def _scope(self, experiments: list, requested: Sequence[str] | None) -> tuple[list[str], list[str]]:
        active = {e.experiment_id for e in experiments if e.lifecycle_stage == _ACTIVE}
        if requested is None:
            scope = sorted(active)
            gone = sorted(self.snapshot.experiment_ids_with_runs() - active)
            return scope, gone
        by_name = {e.name: e.experiment_id for e in experiments}
        every = {e.experiment_id for e in experiments}
        scope, gone = [], []
        for item in requested:
            experiment_id = item if item in every else by_name.get(item)
            if experiment_id is None:
                raise UsageError(f"no experiment named {str(item)[:200]!r} in {masked(self.catalog.tracking_uri)}",
                                 "check the experiment name (or pass its id)")
            (scope if experiment_id in active else gone).append(experiment_id)
        return sorted(set(scope)), sorted(set(gone))

    # -- what to ask MLflow ---------------------------------------------------------------
    def _incremental(self, group: list[str], horizon_ms: int, fetched, deleted, purged, delta: Delta) -> None:
        since = horizon_ms - int(self.catalog.slack_s * 1000)
        mlflow, snapshot = self.mlflow, self.snapshot
        queries: list[Callable[[], list]] = []
        for attribute, column in (("start_time", "start_ms"), ("end_time", "end_ms")):
            known = snapshot.recent(group, column, since)
            window = since
            if len(known) > _MAX_EXCLUDE:
                # Too many to exclude: narrow the window to the newest known ones; older
                # runs in the window were seen by the previous sync.
                known = known[:_MAX_EXCLUDE]
                window = known[-1][1]
            exclude = [run_id for run_id, _ in known]
            queries.append(lambda a=attribute, w=window, x=exclude: mlflow.search(group, window_filter(a, w, x)))
        unfinished = snapshot.unfinished(group)
        queries.append(lambda: mlflow.by_ids(group, unfinished))
        queries.append(lambda: mlflow.search(group, "attributes.status = 'RUNNING'", view=mlflow.view.ACTIVE_ONLY))
        known_deleted = snapshot.deleted(group)
        exclude = known_deleted if len(known_deleted) <= _MAX_EXCLUDE else []
        deleted_filter = f"attributes.run_id NOT IN ({id_list(exclude)})" if exclude else ""
        queries.append(lambda: mlflow.search(group, deleted_filter, view=mlflow.view.DELETED_ONLY))
        queries.append(lambda: mlflow.by_ids(group, known_deleted, view=mlflow.view.ACTIVE_ONLY))
        # Independent calls: in parallel for a remote server's latency.
        with ThreadPoolExecutor(max_workers=len(queries)) as pool:
            results = list(pool.map(lambda query: query(), queries))
        for runs in results:
            for run in runs:
                self._classify(run, fetched, deleted)
        seen = {run.info.run_id for runs in results for run in runs}
        purged.update(run_id for run_id in unfinished if run_id not in seen)

    @staticmethod
    def _classify(run, fetched: dict, deleted: dict) -> None:
        if run.info.lifecycle_stage == _DELETED:
            deleted[run.info.run_id] = run
            fetched.pop(run.info.run_id, None)
        elif run.info.run_id not in deleted:
            fetched[run.info.run_id] = run

    # -- what to write --------------------------------------------------------------------
    def _decide(self, delta: Delta, fetched: dict, deleted: dict, purged: set[str], whole: list[str],
                full: bool) -> None:
        snapshot = self.snapshot
        whole_set = set(whole)
        rows = [flatten(run) for run in fetched.values()]
        ids = [row.run_id for row in rows]
        previous = snapshot.fingerprints(ids)
        known_deleted = snapshot.all_deleted()
        for row in rows:
            old = previous.get(row.run_id)
            if old is None:
                delta.new += 1
            elif old[0] != row.run["fingerprint"]:
                delta.changed += 1
            elif row.run["experiment_id"] not in whole_set:
                continue  # fetched again, unchanged
            delta.upserts.append(row)
            if row.run_id in known_deleted:
                delta.undeleted.add(row.run_id)
        old_ids_of_whole = snapshot.run_ids(whole) if whole else set()
        present = snapshot.fingerprints(list(deleted))
        for run_id, run in deleted.items():
            if run_id not in known_deleted or run.info.experiment_id in whole_set:
                delta.deleted[run_id] = (str(run.info.experiment_id), run.info.start_time, run.info.end_time)
            if run_id in present or run_id in old_ids_of_whole:
                delta.removed.add(run_id)
        delta.removed |= {run_id for run_id in purged}
        fetched_ids = set(ids)
        delta.removed |= {run_id for run_id in old_ids_of_whole if run_id not in fetched_ids}
        if delta.gone_experiments:
            delta.removed |= snapshot.run_ids(delta.gone_experiments)
        delta.metric_rows = self._metrics(delta, previous, reuse=not full)

    def _metrics(self, delta: Delta, previous: dict, *, reuse: bool) -> list[tuple]:
        """Metric rows of the written runs: the full history of stepped metrics (fetched
        again only when their latest value moved), the latest value of the others."""
        upserts = delta.upserts
        old_latest = self.snapshot.latest([row.run_id for row in upserts if row.run_id in previous]) if reuse else {}
        reusable: set[tuple[str, str]] = set()
        wanted: list[tuple[str, str]] = []
        rows: list[tuple] = []
        for row in upserts:
            stepped = set(row.stepped_keys())
            was_finished = row.run_id in previous and previous[row.run_id][1] not in UNFINISHED
            for key, value, step, timestamp in row.latest:
                if key not in stepped:
                    rows.append((row.run_id, key, value, step, timestamp))
                elif reuse and was_finished and old_latest.get((row.run_id, key)) == (value, step, timestamp):
                    reusable.add((row.run_id, key))
                else:
                    wanted.append((row.run_id, key))
        if reusable:
            rows += [r for r in self.snapshot.histories(sorted({run_id for run_id, _ in reusable}))
                     if (r[0], r[1]) in reusable]
        if wanted:
            with self.progress.stage("catalog: metric histories", len(wanted), "metric") as advance, \
                    ThreadPoolExecutor(max_workers=_HISTORY_THREADS) as pool:
                for history in pool.map(lambda pair: self.mlflow.history(*pair), wanted):
                    rows += history
                    advance(1)
        delta.histories = len(wanted)
        return rows


def _experiments_frame(experiments: list) -> pd.DataFrame:
    rows = sorted((str(e.experiment_id), e.name, e.lifecycle_stage, e.artifact_location or None, e.creation_time,
                   e.last_update_time) for e in experiments)
    return pd.DataFrame(rows, columns=[*_EXPERIMENT_KEY, "creation_ms", "last_update_ms"], dtype=object)


def write_delta(con: duckdb.DuckDBPyConnection, delta: Delta, horizon_ms: int) -> None:
    """The catalog tables after ``delta`` (inside the caller's transaction)."""
    # Experiments: the whole list (a few rows), written always (a new file needs them too).
    con.execute("DELETE FROM experiments")
    _insert(con, "experiments", delta.experiments.astype({"creation_ms": "Int64", "last_update_ms": "Int64"}),
            "experiment_id, name, lifecycle_stage, artifact_location, epoch_ms(creation_ms) AS creation_time, "
            "epoch_ms(last_update_ms) AS last_update_time")

    # Runs whose rows go (and come back, for upserts).
    reset = delta.reset_experiments + delta.gone_experiments
    affected = sorted(delta.removed | {row.run_id for row in delta.upserts})
    if affected or reset:
        con.execute("CREATE TEMP TABLE affected AS SELECT unnest(?::VARCHAR[]) AS run_id", [affected])
        if reset:
            con.execute(f"INSERT INTO affected SELECT run_id FROM runs WHERE experiment_id IN {IDS}", [reset])
            con.execute(f"DELETE FROM deleted_runs WHERE experiment_id IN {IDS}", [reset])
        for table in _RUN_TABLES:
            con.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT run_id FROM affected)")
        con.execute("DROP TABLE affected")
    if delta.gone_experiments:
        con.execute(f"DELETE FROM sync_state WHERE experiment_id IN {IDS}", [delta.gone_experiments])

    if delta.upserts:
        runs = pd.DataFrame([row.run for row in delta.upserts], columns=list(_RUN_FRAME_COLUMNS))
        runs = runs.astype({"start_ms": "Int64", "end_ms": "Int64", "layer": "Int64"})
        _insert(con, "runs", runs, "*, epoch_ms(start_ms) AS start_time, epoch_ms(end_ms) AS end_time")
        _insert(con, "params", pd.DataFrame(
            [(row.run_id, key, value) for row in delta.upserts for key, value in row.params],
            columns=["run_id", "key", "value"]))
        _insert(con, "tags", pd.DataFrame(
            [(row.run_id, key, value) for row in delta.upserts for key, value in row.tags],
            columns=["run_id", "key", "value"]))
        _insert(con, "latest_metrics", pd.DataFrame(
            [(row.run_id, *metric) for row in delta.upserts for metric in row.latest],
            columns=["run_id", "key", "value", "step", "timestamp"]))
        _insert(con, "metrics", pd.DataFrame(delta.metric_rows, columns=["run_id", "key", "value", "step", "timestamp"]))

    # Deleted runs we know of (so that the next refresh asks only for newer ones).
    gone_from_deleted = sorted(delta.undeleted | set(delta.deleted))
    if gone_from_deleted:
        con.execute(f"DELETE FROM deleted_runs WHERE run_id IN {IDS}", [gone_from_deleted])
    if delta.deleted:
        frame = pd.DataFrame([(run_id, *values) for run_id, values in delta.deleted.items()],
                             columns=["run_id", "experiment_id", "start_ms", "end_ms"])
        _insert(con, "deleted_runs", frame.astype({"start_ms": "Int64", "end_ms": "Int64"}))

    # The next refresh looks back from this one's start.
    if delta.synced:
        con.execute(f"DELETE FROM sync_state WHERE experiment_id IN {IDS}", [delta.synced])
        con.executemany("INSERT INTO sync_state VALUES (?, ?)", [[e, horizon_ms] for e in delta.synced])
    set_meta(con, {"refreshed_at": f"{time.time():.3f}"})


def _insert(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame, select: str = "*") -> None:
    if frame.empty:
        return
    name = f"{table}_frame"
    con.register(name, frame)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT {select} FROM {name}")
    finally:
        con.unregister(name)


def set_meta(con: duckdb.DuckDBPyConnection, values: dict[str, str]) -> None:
    con.execute(f"DELETE FROM meta WHERE key IN {IDS}", [list(values)])
    con.executemany("INSERT INTO meta VALUES (?, ?)", [[k, str(v)] for k, v in values.items()])
