"""The run catalog against asking MLflow directly.

Logs 20,000 runs (2,000 with --quick) to a local SQLite store: extractions and layer
analyses with per-layer curves (``step=layer``), maps, sweeps with 95 trial children
each (parent links), 10 params and ~10 metrics a run, five users over 90 days, and one
map of 100,000 points. The store is built once and kept under ``$LATENTSCAPE_CACHE/bench/``:
each run is a copy of a run MLflow itself created (every column MLflow fills), written
with SQL inserts into MLflow's own tables (through MLflow's API the 20,000 runs took 12
minutes, 27 runs/s; the fixture is what is read, not what is measured).

Then, from one process: the first sync, a no-change refresh, a refresh after 100 new
and 10 deleted runs, and each UI query on the catalog against the same answer through
``mlflow.search_runs`` (or ``get_metric_history`` / an artifact download where that is
what the UI would need). Aim: every query under 200 ms and >= 20x faster; a no-change
refresh under 1 s.

    .venv/bin/python bench/catalog.py [--quick] [--rebuild]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, print_rows  # noqa: E402

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from latentscape.tracking.contract import (  # noqa: E402
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_USER,
    Artifact,
    Column,
    Kind,
    Metric,
    Param,
    Tag,
)

STORE_VERSION = 2  # bump when the logged history changes
USERS = ["ada", "grace", "alan", "barbara", "edsger"]
MODELS = ["minilm", "bert-base", "gpt2", "esm2"]
DATASETS = ["demo", "digits", "reviews", "proteins", "news"]
LAYERS = 7
DAY_MS = 86_400_000
MAP_POINTS = 100_000


@dataclass
class Spec:
    """One run to log."""

    key: str
    experiment: str
    kind: Kind
    name: str
    start_ms: int
    params: dict
    metrics: dict
    curves: dict = field(default_factory=dict)  # name -> {layer: value}
    tags: dict = field(default_factory=dict)
    parent: str | None = None  # key of the parent spec
    source: str | None = None  # key of the source spec


def plan(n_runs: int, seed: int = 0) -> list[list[Spec]]:
    """The runs to log, in waves (a run's parent and source are in an earlier wave)."""
    rng = np.random.default_rng(seed)
    experiments = ["bench-a", "bench-b"]
    budget = (n_runs - 1) // len(experiments)  # one run is the big map
    waves: list[list[Spec]] = [[], [], []]
    now = int(time.time() * 1000) - DAY_MS
    span = 90 * DAY_MS
    clock = iter(np.sort(rng.integers(now - span, now, size=n_runs + 10)))

    def base(experiment: str, kind: Kind, name: str, key: str, model: str, dataset: str) -> Spec:
        return Spec(key=key, experiment=experiment, kind=kind, name=name, start_ms=int(next(clock)),
                    params={Param.MODEL: model, Param.DATASET: dataset, Param.SEED: int(rng.integers(0, 100))},
                    metrics={}, tags={Tag.KIND: kind.value, Tag.MODEL: model, Tag.DATASET_NAME: dataset,
                                      Tag.DATASET_DIGEST: f"{dataset}-{model}"[:12], Tag.POOLING: "mean",
                                      MLFLOW_USER: USERS[int(rng.integers(0, len(USERS)))]})

    for experiment in experiments:
        n_extract = max(2, budget // 500)
        n_maps = budget // 30
        rest = budget - 2 * n_extract - n_maps
        n_sweeps = max(1, rest // 96)
        n_trials = rest - n_sweeps
        prefix = experiment[-1]
        extracts = []
        for i in range(n_extract):
            model, dataset = MODELS[i % len(MODELS)], DATASETS[i % len(DATASETS)]
            spec = base(experiment, Kind.EXTRACT, f"{prefix}-extract{i:03d}", f"{experiment}/e{i}", model, dataset)
            spec.params.update({Param.N_LAYERS: LAYERS, Param.MAX_LENGTH: 256, Param.BATCH_SIZE: 64,
                                Param.N_SAMPLES: 2000, Param.DIM: 384, Param.POOLING: "mean", Param.LAYERS: "all"})
            spec.metrics = {Metric.EXTRACT_SECONDS: float(rng.uniform(5, 50)),
                            Metric.SAMPLES_PER_S: float(rng.uniform(100, 500))}
            spec.curves = {Metric.MEAN_NORM: _curve(rng), Metric.ANISOTROPY: _curve(rng)}
            waves[0].append(spec)
            extracts.append(spec)
        for i in range(n_extract):
            source = extracts[i]
            spec = base(experiment, Kind.LAYERS, f"{prefix}-layers{i:03d}", f"{experiment}/l{i}",
                        source.params[Param.MODEL], source.params[Param.DATASET])
            spec.source = source.key
            spec.params.update({Param.STABLE_CKA: 0.95, Param.DEBIASED: "true", Param.PROBE_FOLDS: 5,
                                Param.KNN_K: 10, Param.N_SAMPLES: 2000, Param.DIM: 384})
            spec.metrics = {Metric.CKA_SECONDS: float(rng.uniform(0.1, 2)), Metric.PROBE_CHANCE: 0.1}
            spec.curves = {Metric.PROBE_ACCURACY: _curve(rng), Metric.CKA_PREVIOUS: _curve(rng),
                           Metric.INTRINSIC_DIM: _curve(rng)}
            waves[1].append(spec)
        for i in range(n_maps):
            source = extracts[i % n_extract]
            layer = int(rng.integers(0, LAYERS))
            spec = base(experiment, Kind.MAP, f"{prefix}-map{i:04d}-layer{layer}", f"{experiment}/m{i}",
                        source.params[Param.MODEL], source.params[Param.DATASET])
            spec.source = source.key
            spec.tags[Tag.LAYER] = str(layer)
            spec.params.update(_map_params(rng, layer))
            spec.metrics = _scores(rng)
            waves[1].append(spec)
        per_sweep = -(-n_trials // n_sweeps)
        for s in range(n_sweeps):
            source = extracts[s % n_extract]
            sweep = base(experiment, Kind.SWEEP, f"{prefix}-sweep{s:03d}", f"{experiment}/s{s}",
                         source.params[Param.MODEL], source.params[Param.DATASET])
            sweep.source = source.key
            sweep.params.update({Param.TRIALS: per_sweep, Param.OBJECTIVE: Metric.AMI, Param.DIRECTION: "maximize",
                                 Param.SAMPLER: "tpe", Param.LAYER: 6})
            sweep.metrics = {Metric.BEST_VALUE: float(rng.uniform(0.5, 0.95)), Metric.N_TRIALS_COMPLETE: per_sweep}
            waves[1].append(sweep)
            for t in range(min(per_sweep, n_trials - s * per_sweep)):
                trial = base(experiment, Kind.TRIAL, f"{prefix}-sweep{s:03d}-trial{t:03d}", f"{experiment}/s{s}/t{t}",
                             source.params[Param.MODEL], source.params[Param.DATASET])
                trial.parent, trial.source = sweep.key, source.key
                trial.tags[Tag.TRIAL_NUMBER] = str(t)
                trial.tags[Tag.TRIAL_STATE] = "COMPLETE"
                trial.params.update(_map_params(rng, 6))
                trial.metrics = {**_scores(rng), Metric.TRIAL_SECONDS: float(rng.uniform(1, 10))}
                waves[2].append(trial)
    return waves


def _curve(rng) -> dict[int, float]:
    return {layer: float(value) for layer, value in enumerate(np.cumsum(rng.uniform(0, 0.2, LAYERS)))}


def _map_params(rng, layer: int) -> dict:
    return {Param.LAYER: layer, Param.REDUCER: "umap", Param.CLUSTERER: "hdbscan",
            Param.reducer_param("n_neighbors"): int(rng.integers(5, 50)),
            Param.reducer_param("min_dist"): round(float(rng.uniform(0, 0.5)), 3),
            Param.clusterer_param("min_cluster_size"): int(rng.integers(5, 40)), Param.NOISE_POLICY: "keep"}


def _scores(rng) -> dict:
    return {name: float(rng.uniform(0, 1)) for name in (
        Metric.AMI, Metric.NMI, Metric.ARI, Metric.HOMOGENEITY, Metric.COMPLETENESS, Metric.V_MEASURE,
        Metric.SILHOUETTE, Metric.TRUSTWORTHINESS, Metric.NOISE_FRACTION, Metric.REDUCE_SECONDS)}


def _template_run(store, experiment_id: str, db: Path) -> tuple[dict, dict]:
    """A run created by MLflow (its row and tags, as MLflow fills them), then removed."""
    run_id = store.client.create_run(experiment_id, run_name="template").info.run_id
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.row_factory = sqlite3.Row
        row = dict(connection.execute("SELECT * FROM runs WHERE run_uuid = ?", (run_id,)).fetchone())
        tags = dict(connection.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall())
        for table in ("tags", "params", "metrics", "latest_metrics", "runs"):
            connection.execute(f"DELETE FROM {table} WHERE run_uuid = ?", (run_id,))
        connection.commit()
    return row, tags


def _spec_rows(spec: Spec, run_id: str, experiment_id: str, run_ids: dict, template: tuple[dict, dict]):
    """(runs row, tags, params, metrics, latest metrics) of one spec, MLflow's columns."""
    row, template_tags = template
    tags = {**template_tags, **spec.tags, "mlflow.runName": spec.name}
    if spec.parent:
        tags[MLFLOW_PARENT_RUN_ID] = run_ids[spec.parent]
    tags[Tag.SOURCE_RUN] = run_ids[spec.source] if spec.source else ""
    run = {**row, "run_uuid": run_id, "name": spec.name, "experiment_id": int(experiment_id),
           "status": "FINISHED", "start_time": spec.start_ms, "end_time": spec.start_ms + 60_000,
           "user_id": tags.get(MLFLOW_USER, row["user_id"]),
           "artifact_uri": row["artifact_uri"].replace(row["run_uuid"], run_id)
           .replace(f"/{row['experiment_id']}/", f"/{experiment_id}/")}
    stamp = spec.start_ms + 1000
    metrics = [(k, float(v), stamp, run_id, 0, 0) for k, v in spec.metrics.items()]
    metrics += [(k, float(v), stamp, run_id, layer, 0) for k, curve in spec.curves.items() for layer, v in curve.items()]
    latest: dict[str, tuple] = {}
    for key, value, timestamp, _, step, is_nan in metrics:  # MLflow's rule: the largest step wins
        if key not in latest or step >= latest[key][3]:
            latest[key] = (key, value, timestamp, step, is_nan, run_id)
    return (run, [(k, str(v), run_id) for k, v in tags.items()],
            [(k, str(v), run_id) for k, v in spec.params.items()], metrics, list(latest.values()))


def build_store(folder: Path, n_runs: int) -> None:
    """Write the planned history into ``folder/mlflow.db`` (artifacts beside it)."""
    import uuid

    from latentscape.tracking.run_log import tracked_run
    from latentscape.tracking.runs import open_store

    db = folder / "mlflow.db"
    store = open_store(f"sqlite:///{db}")
    waves = plan(n_runs)
    experiment_ids = {name: store.experiment_id(name) for name in sorted({s.experiment for w in waves for s in w})}
    template = _template_run(store, next(iter(experiment_ids.values())), db)
    run_ids: dict[str, str] = {}
    runs, tags, params, metrics, latest = [], [], [], [], []
    for spec in (spec for wave in waves for spec in wave):
        run_ids[spec.key] = uuid.uuid4().hex
        run, *rest = _spec_rows(spec, run_ids[spec.key], experiment_ids[spec.experiment], run_ids, template)
        runs.append(run)
        for bucket, values in zip((tags, params, metrics, latest), rest):
            bucket.extend(values)
    columns = list(template[0])
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.executemany(f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                               [tuple(run[c] for c in columns) for run in runs])
        connection.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tags)
        connection.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", params)
        connection.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                               "VALUES (?, ?, ?, ?, ?, ?)", metrics)
        connection.executemany("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                               "VALUES (?, ?, ?, ?, ?, ?)", latest)
        connection.commit()
    print(f"   wrote {len(runs)} runs, {len(metrics)} metric rows", file=sys.stderr, flush=True)
    # One big map: 100,000 points as Parquet.
    rng = np.random.default_rng(1)
    points = pd.DataFrame({
        Column.SAMPLE_ID: np.arange(MAP_POINTS), Column.X: rng.normal(size=MAP_POINTS).astype(np.float32),
        Column.Y: rng.normal(size=MAP_POINTS).astype(np.float32), Column.CLUSTER: rng.integers(-1, 30, MAP_POINTS),
        Column.LABEL: rng.choice(DATASETS, MAP_POINTS),
        Column.TEXT: [f"sample text number {i} about something or other" for i in range(MAP_POINTS)]})
    with tracked_run(store, experiment_ids["bench-a"], Kind.MAP, run_name="a-bigmap-layer6",
                     source_run_id=run_ids["bench-a/e0"], tags={Tag.LAYER: 6, MLFLOW_USER: USERS[0]}) as log:
        log.params({Param.LAYER: 6, Param.REDUCER: "umap"})
        log.table(Artifact.MAP, points)
    # A self-contained file: fold the write-ahead log in.
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def cached_store(n_runs: int, rebuild: bool = False) -> Path:
    from latentscape.tracking.cache_folder import cache_root

    folder = cache_root() / "bench" / f"catalog-{n_runs}-v{STORE_VERSION}"
    if rebuild and folder.exists():
        shutil.rmtree(folder)
    if not (folder / "done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        started = time.perf_counter()
        print(f"   building a store of {n_runs} runs in {folder} (once)", file=sys.stderr, flush=True)
        build_store(folder, n_runs)
        (folder / "done").write_text(f"{time.perf_counter() - started:.0f} s\n")
    return folder


# -- timing ----------------------------------------------------------------------------------

def best_of(function, repeat: int):
    """(median seconds, last result) over ``repeat`` calls after one warm-up call."""
    result = function()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def once(function):
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def main(quick: bool = False, rebuild: bool = False) -> list[Row]:
    import mlflow
    from mlflow.tracking import MlflowClient

    from latentscape.tracking import queries as q
    from latentscape.tracking.catalog import Catalog

    n_runs = 2_000 if quick else 20_000
    source = cached_store(n_runs, rebuild)
    work = Path(tempfile.mkdtemp(prefix="latentscape-bench-catalog-"))
    rows: list[Row] = []
    try:
        shutil.copyfile(source / "mlflow.db", work / "mlflow.db")
        uri = f"sqlite:///{work / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        experiment_ids = [e.experiment_id for e in client.search_experiments()]

        def search_all(**kwargs) -> pd.DataFrame:
            return mlflow.search_runs(experiment_ids, max_results=100_000, **kwargs)

        # First sync (a fresh catalog) against reading every run once through MLflow.
        catalog = Catalog.open(uri, work / "catalog.duckdb")
        first_s, stats = once(lambda: catalog.refresh(progress=True))
        plain_all_s, everything = once(search_all)
        print(f"   first sync: {first_s:.1f} s ({stats.total} runs, {stats.histories} metric histories); "
              f"mlflow.search_runs of all runs: {plain_all_s:.1f} s", file=sys.stderr, flush=True)
        rows.append(Row(f"catalog: first sync of {stats.total} runs", plain_all_s, first_s,
                        f"{stats.total} runs vs {len(everything)}", stats.total == len(everything)))

        # No change: what every page load would pay without a catalog.
        nochange_s, stats = best_of(catalog.refresh, 3)
        rows.append(Row("catalog: no-change refresh", plain_all_s, nochange_s,
                        f"{stats.fetched} runs fetched, written={stats.written}",
                        not stats.written and stats.new == stats.changed == stats.deleted == 0))

        # 100 new runs, 10 deleted: the incremental path.
        added = _log_more(client, experiment_ids[0], 100)
        trials = everything[everything[f"tags.{Tag.KIND}"] == Kind.TRIAL.value]
        deleted = trials["run_id"].iloc[-10:].tolist()
        for run_id in deleted:
            client.delete_run(run_id)
        incremental_s, stats = once(catalog.refresh)
        plain_again_s, everything = once(search_all)
        same = set(everything["run_id"]) == set(q.runs(catalog, limit=None)["run_id"])
        rows.append(Row("catalog: refresh after +100/-10 runs", plain_again_s, incremental_s,
                        f"+{stats.new} -{stats.deleted}, same ids as MLflow: {same}",
                        same and stats.new == len(added) and stats.deleted == len(deleted)))

        rows += _queries(catalog, client, experiment_ids, everything, plain_again_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _log_more(client, experiment_id: str, n: int) -> list[str]:
    from mlflow.entities import Metric as MlflowMetric
    from mlflow.entities import Param as MlflowParam

    ids = []
    for i in range(n):
        run = client.create_run(experiment_id, run_name=f"a-late{i:03d}", tags={Tag.KIND: Kind.MAP.value})
        client.log_batch(run.info.run_id, metrics=[MlflowMetric(Metric.AMI, 0.5, 0, 0)],
                         params=[MlflowParam(Param.LAYER, "3")])
        client.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
    return ids


def _queries(catalog, client, experiment_ids, everything: pd.DataFrame, scan_s: float) -> list[Row]:
    """Each UI query against its plain answer. ``everything`` is ``mlflow.search_runs`` of
    every run, read in ``scan_s`` seconds: the plain answers that need every run (the
    experiments overview, runs per day) start from it and are charged its time, rather
    than scanning the store again (~25-35 s a scan)."""
    import mlflow
    import mlflow.artifacts

    from latentscape.tracking import queries as q

    rows = []

    def compare(workload, ours, plain, check, repeat=5, plain_repeat=1, plain_scan=False):
        ours_s, ours_result = best_of(ours, repeat)
        plain_s, plain_result = best_of(plain, plain_repeat) if plain_repeat > 1 else once(plain)
        plain_s += scan_s if plain_scan else 0.0
        held, quality = check(ours_result, plain_result)
        rows.append(Row(workload, plain_s, ours_s, quality, held))
        print(f"   {workload}: {ours_s * 1000:.1f} ms vs {plain_s * 1000:.0f} ms", file=sys.stderr, flush=True)

    def same_ids(ours, plain):
        a, b = set(ours["run_id"]), set(plain["run_id"])
        return a == b, f"{len(a)} runs, same ids: {a == b}"

    # Overview: the newest runs of every experiment.
    compare("query: overview, newest 5,000 runs", lambda: q.runs(catalog, limit=5000),
            lambda: mlflow.search_runs(experiment_ids, max_results=5000, order_by=["attributes.start_time DESC"]),
            same_ids)

    # Filters: kind + model + the last 30 days.
    since = pd.Timestamp.now(tz="UTC").tz_localize(None) - pd.Timedelta(days=30)
    since_ms = int(since.tz_localize("UTC").timestamp() * 1000)
    compare("query: filter kind+model+30 days",
            lambda: q.runs(catalog, kinds=["trial"], models=["minilm"], since=since, limit=None),
            lambda: mlflow.search_runs(experiment_ids, max_results=100_000, filter_string=(
                f"tags.{Tag.KIND} = 'trial' and tags.{Tag.MODEL} = 'minilm' and attributes.start_time >= {since_ms}")),
            same_ids, plain_repeat=3)

    # Text search in run names.
    compare("query: text search in names",
            lambda: q.runs(catalog, text="a-sweep001-trial01", limit=None),
            lambda: mlflow.search_runs(experiment_ids, max_results=100_000,
                                       filter_string="attributes.run_name ILIKE '%a-sweep001-trial01%'"),
            same_ids, plain_repeat=3)

    # Experiments with run counts and last start.
    def plain_experiments():
        return everything.groupby("experiment_id").agg(n_runs=("run_id", "size"), last_start=("start_time", "max"))

    compare("query: experiments overview", lambda: q.experiments(catalog), plain_experiments,
            lambda ours, plain: (
                ours.set_index("experiment_id")["n_runs"].reindex(plain.index).tolist() == plain["n_runs"].tolist(),
                f"{len(plain)} experiments, {int(plain['n_runs'].sum())} runs"), plain_scan=True)

    # A sweep's trials (children).
    sweep = everything[everything[f"tags.{Tag.KIND}"] == Kind.SWEEP.value]["run_id"].iloc[0]
    compare("query: children of a sweep", lambda: q.children(catalog, sweep),
            lambda: mlflow.search_runs(experiment_ids, max_results=100_000,
                                       filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{sweep}'"),
            same_ids, plain_repeat=3)

    # Compare 100 runs side by side: params and latest metrics.
    chosen = everything[everything[f"tags.{Tag.KIND}"] == Kind.TRIAL.value]["run_id"].iloc[:100].tolist()

    def plain_table():
        id_list = ", ".join(f"'{run_id}'" for run_id in chosen)
        return mlflow.search_runs(experiment_ids, max_results=1000, filter_string=f"attributes.run_id IN ({id_list})")

    def same_table(ours, plain):
        key = f"{Metric.AMI}"
        a = ours.set_index("run_id")[f"metric.{key}"].sort_index()
        b = plain.set_index("run_id")[f"metrics.{key}"].sort_index()
        p = ours.set_index("run_id")[f"param.{Param.reducer_param('n_neighbors')}"].sort_index()
        r = plain.set_index("run_id")[f"params.{Param.reducer_param('n_neighbors')}"].sort_index()
        held = len(a) == len(chosen) and np.allclose(a.values, b.values) and (p == r).all()
        return held, f"{len(a)} runs x {ours.shape[1]} columns, values equal: {held}"

    compare("query: run table of 100 runs", lambda: q.run_table(catalog, chosen), plain_table, same_table,
            plain_repeat=3)

    # Per-layer curves of five extractions, three metrics each.
    layer_runs = everything[everything[f"tags.{Tag.KIND}"] == Kind.LAYERS.value]["run_id"].iloc[:5].tolist()
    keys = [Metric.PROBE_ACCURACY, Metric.CKA_PREVIOUS, Metric.INTRINSIC_DIM]

    def plain_curves():
        return pd.DataFrame([(run_id, key, m.step, m.value) for run_id in layer_runs for key in keys
                             for m in client.get_metric_history(run_id, key)],
                            columns=["run_id", "key", "layer", "value"])

    def same_curves(ours, plain):
        a = ours.sort_values(["run_id", "key", "layer"])["value"].to_numpy()
        b = plain.sort_values(["run_id", "key", "layer"])["value"].to_numpy()
        held = len(a) == len(b) == len(layer_runs) * len(keys) * LAYERS and np.allclose(a, b)
        return held, f"{len(a)} points, equal: {held}"

    compare("query: layer curves (5 runs x 3 metrics)", lambda: q.layer_curves(catalog, layer_runs, keys),
            plain_curves, same_curves, plain_repeat=3)

    # Runs per day by user (the overview's activity chart).
    def plain_activity():
        frame = everything
        return frame.groupby([frame["start_time"].dt.floor("D"), f"tags.{MLFLOW_USER}"], dropna=False).size()

    compare("query: runs per day by user", lambda: q.activity(catalog), plain_activity,
            lambda ours, plain: (int(ours["n_runs"].sum()) == int(plain.sum()), f"{int(plain.sum())} runs"),
            plain_scan=True)

    # A 100,000-point map: three columns through the cache against download + read.
    big = q.runs(catalog, text="a-bigmap-layer6")["run_id"].iloc[0]
    columns = [Column.X, Column.Y, Column.CLUSTER]

    def plain_map():
        with tempfile.TemporaryDirectory() as scratch:
            local = mlflow.artifacts.download_artifacts(run_id=big, artifact_path=Artifact.MAP, dst_path=scratch)
            return pd.read_parquet(local)

    compare("query: 100k-point map, 3 columns", lambda: q.map_points(catalog, big, columns=columns), plain_map,
            lambda ours, plain: (bool(np.allclose(ours[Column.X], plain[Column.X])) and len(ours) == MAP_POINTS,
                                 f"{len(ours)} points"), plain_repeat=3)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 runs instead of 20,000")
    parser.add_argument("--rebuild", action="store_true", help="log the store again instead of the cached one")
    args = parser.parse_args()
    result = main(args.quick, args.rebuild)
    print()
    print_rows(result)
    slow = [row.workload for row in result if row.workload.startswith("query") and
            (row.latentscape_s > 0.2 or row.ratio < 20)]
    print(f"\nqueries over 200 ms or under 20x: {', '.join(slow) if slow else 'none'}")
