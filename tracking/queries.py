"""Every read the UI makes (docs/CATALOG_API.md): plain functions over a
:class:`latentscape.tracking.catalog.Catalog`, each returning a pandas DataFrame.

Every value is bound as a parameter, never formatted into SQL; the only identifiers
put into SQL text are Parquet column names checked against the file's own schema, and
quoted. Text that matches nothing (hostile text included) returns an empty frame; the
catalog is attached read-only, so no query can change it.

Times are naive UTC timestamps. Lists of ids, kinds, etc. are any sequence of strings;
an empty sequence matches nothing, ``None`` matches everything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from latentscape.tracking.catalog import ArtifactNotFound, Catalog
from latentscape.tracking.contract import Artifact, CatalogColumn as C
from latentscape.tracking.errors import UsageError

__all__ = [
    "experiments",
    "runs",
    "run_table",
    "params",
    "tags",
    "metrics",
    "layer_curves",
    "children",
    "facets",
    "activity",
    "map_points",
    "sweep_trials",
    "table",
    "parquet_columns",
]

_IDS = "(SELECT unnest(?::VARCHAR[]))"

# The columns of queries.runs (CatalogColumn.RUNS), from the runs table r and experiments e.
_RUNS_SELECT = """
SELECT r.run_id, e.name AS experiment, r.name, r.kind, r.status, r."user", r.start_time, r.end_time,
       r.parent_run_id, r.source_run, r.model, r.dataset_name, r.dataset_digest, r.pooling, r.layer,
       r.error, r.experiment_id
FROM runs r LEFT JOIN experiments e ON e.experiment_id = r.experiment_id
"""
_NEWEST_FIRST = " ORDER BY r.start_time DESC NULLS LAST, r.run_id"
_BUCKETS = {"hour": "hour", "day": "day", "week": "week", "month": "month"}


def _frame(catalog: Catalog, sql: str, args: Sequence = ()) -> pd.DataFrame:
    return catalog.cursor().execute(sql, list(args)).df()


def _strings(values, what: str) -> list[str]:
    if isinstance(values, str):
        values = [values]
    try:
        return [str(value) for value in values]
    except TypeError:
        raise UsageError(f"{what} must be a list of strings, not {type(values).__name__}") from None


def _limit(limit) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise UsageError(f"limit must be a non-negative integer or None, not {limit!r}"[:200])
    return limit


def _utc(value, what: str) -> tuple[dt.datetime, bool]:
    """``value`` as a naive UTC datetime, and whether it was a bare date."""
    is_date = isinstance(value, dt.date) and not isinstance(value, dt.datetime)
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise UsageError(f"{what} {str(value)[:100]!r} is not a date or time", "pass e.g. 2026-11-28") from None
    if pd.isna(stamp):
        raise UsageError(f"{what} is missing", "pass a date or time, or None")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime(), is_date


def experiments(catalog: Catalog) -> pd.DataFrame:
    """Active experiments: experiment_id, experiment, n_runs, last_start (newest first)."""
    return _frame(catalog, """
        SELECT e.experiment_id, e.name AS experiment, count(r.run_id) AS n_runs, max(r.start_time) AS last_start
        FROM experiments e LEFT JOIN runs r ON r.experiment_id = e.experiment_id
        WHERE e.lifecycle_stage = ?
        GROUP BY e.experiment_id, e.name
        ORDER BY last_start DESC NULLS LAST, e.name""", ["active"])


def _run_filters(*, kinds=None, experiments=None, models=None, datasets=None, since=None, until=None, text=None,
                 parent_run_id=None, run_ids=None) -> tuple[list[str], list]:
    clauses: list[str] = []
    args: list = []
    if kinds is not None:
        clauses.append("list_contains(?, r.kind)")
        args.append(_strings(kinds, "kinds"))
    if experiments is not None:
        names = _strings(experiments, "experiments")
        clauses.append("(list_contains(?, e.name) OR list_contains(?, r.experiment_id))")
        args += [names, names]
    if models is not None:
        clauses.append("list_contains(?, r.model)")
        args.append(_strings(models, "models"))
    if datasets is not None:
        names = _strings(datasets, "datasets")
        clauses.append("(list_contains(?, r.dataset_name) OR list_contains(?, r.dataset_digest))")
        args += [names, names]
    if since is not None:
        clauses.append("r.start_time >= ?")
        args.append(_utc(since, "since")[0])
    if until is not None:
        moment, is_date = _utc(until, "until")
        if is_date:  # a bare date includes that whole day
            clauses.append("r.start_time < ?")
            args.append(moment + dt.timedelta(days=1))
        else:
            clauses.append("r.start_time <= ?")
            args.append(moment)
    if text is not None and str(text).strip():
        # r.search_text: name, run id, kind, model, data set, user, pooling, status, lower-cased
        clauses.append("(contains(r.search_text, ?) OR contains(lower(e.name), ?))")
        args += [str(text).strip().lower()] * 2
    if parent_run_id is not None:
        clauses.append("r.parent_run_id = ?")
        args.append(str(parent_run_id))
    if run_ids is not None:
        clauses.append(f"r.run_id IN {_IDS}")
        args.append(_strings(run_ids, "run_ids"))
    return clauses, args


def runs(catalog: Catalog, *, kinds=None, experiments=None, models=None, datasets=None, since=None, until=None,
         text=None, parent_run_id=None, run_ids=None, limit: int | None = 5000) -> pd.DataFrame:
    """Runs, newest first, with the columns ``CatalogColumn.RUNS``.

    experiments: names or ids; datasets: names or digests; since/until: on start_time
    (a bare date for ``until`` includes that day); text: a case-insensitive substring of
    the name, run id, experiment, kind, model, data set, user, pooling or status;
    run_ids: only these runs (additive to the agreed API)."""
    clauses, args = _run_filters(kinds=kinds, experiments=experiments, models=models, datasets=datasets, since=since,
                                 until=until, text=text, parent_run_id=parent_run_id, run_ids=run_ids)
    sql = _RUNS_SELECT + (" WHERE " + " AND ".join(clauses) if clauses else "") + _NEWEST_FIRST
    limit = _limit(limit)
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return _frame(catalog, sql, args)


def children(catalog: Catalog, parent_run_id: str, kind: str | None = None) -> pd.DataFrame:
    """Child runs (``mlflow.parentRunId``) of one run, oldest first; runs columns."""
    sql = _RUNS_SELECT + " WHERE r.parent_run_id = ?"
    args: list = [str(parent_run_id)]
    if kind is not None:
        sql += " AND r.kind = ?"
        args.append(str(kind))
    return _frame(catalog, sql + " ORDER BY r.start_time NULLS LAST, r.run_id", args)


def params(catalog: Catalog, run_ids) -> pd.DataFrame:
    """run_id, key, value (strings) of the given runs."""
    return _frame(catalog, f"SELECT run_id, key, value FROM params WHERE run_id IN {_IDS} ORDER BY run_id, key",
                  [_strings(run_ids, "run_ids")])


def tags(catalog: Catalog, run_ids) -> pd.DataFrame:
    """run_id, key, value of the given runs' tags (MLflow's system tags included)."""
    return _frame(catalog, f"SELECT run_id, key, value FROM tags WHERE run_id IN {_IDS} ORDER BY run_id, key",
                  [_strings(run_ids, "run_ids")])


def metrics(catalog: Catalog, run_ids, keys=None) -> pd.DataFrame:
    """run_id, key, value, step: the full history of metrics logged at several steps
    (per-layer curves, ``step=layer``), the latest value of the others."""
    sql = f"SELECT run_id, key, value, step FROM metrics WHERE run_id IN {_IDS}"
    args: list = [_strings(run_ids, "run_ids")]
    if keys is not None:
        sql += " AND list_contains(?, key)"
        args.append(_strings(keys, "keys"))
    return _frame(catalog, sql + " ORDER BY run_id, key, step, timestamp", args)


def layer_curves(catalog: Catalog, run_ids, keys) -> pd.DataFrame:
    """run_id, run_name, key, layer, value: one point per (run, metric, layer), the last
    logged where a layer has several."""
    return _frame(catalog, f"""
        SELECT m.run_id, r.name AS run_name, m.key, m.step AS layer, m.value
        FROM metrics m JOIN runs r ON r.run_id = m.run_id
        WHERE m.run_id IN {_IDS} AND list_contains(?, m.key)
        QUALIFY row_number() OVER (PARTITION BY m.run_id, m.key, m.step ORDER BY m.timestamp DESC) = 1
        ORDER BY m.run_id, m.key, layer""", [_strings(run_ids, "run_ids"), _strings(keys, "keys")])


def run_table(catalog: Catalog, run_ids) -> pd.DataFrame:
    """One row per run (newest first): the runs columns, then ``param.<key>`` (strings)
    and ``metric.<key>`` (latest value) columns, each group sorted by key; a run
    without that param or metric has None / NaN there."""
    ids = _strings(run_ids, "run_ids")
    cursor = catalog.cursor()
    base = cursor.execute(_RUNS_SELECT + f" WHERE r.run_id IN {_IDS}" + _NEWEST_FIRST, [ids]).df()
    if base.empty:
        return base
    position = {run_id: i for i, run_id in enumerate(base[C.RUN_ID])}
    wide: dict[str, np.ndarray] = {}
    for table, prefix, empty in (("params", C.PARAM_PREFIX, None), ("latest_metrics", C.METRIC_PREFIX, np.nan)):
        long = cursor.execute(f"SELECT run_id, key, value FROM {table} WHERE run_id IN {_IDS}", [ids]).fetchnumpy()
        if len(long["key"]) == 0:
            continue
        # Pivot by hand: measured 10x faster than DataFrame.pivot on a few thousand rows.
        keys, column = np.unique(np.asarray(long["key"], dtype=object), return_inverse=True)
        row = np.fromiter((position[run_id] for run_id in long["run_id"]), dtype=np.int64, count=len(column))
        values = np.full((len(base), len(keys)), empty, dtype=object if empty is None else np.float64)
        values[row, column] = np.asarray(long["value"])
        wide.update({prefix + key: values[:, j] for j, key in enumerate(keys)})
    if not wide:
        return base
    return pd.concat([base, pd.DataFrame(wide, index=base.index)], axis=1)


def facets(catalog: Catalog) -> pd.DataFrame:
    """facet, value, n_runs: the values the overview filters offer (kind, model,
    dataset_name, user, experiment), most used first."""
    return _frame(catalog, """
        SELECT facet, value, count(*) AS n_runs FROM (
            SELECT r.run_id, unnest(['kind', 'model', 'dataset_name', 'user', 'experiment']) AS facet,
                   unnest([r.kind, r.model, r.dataset_name, r."user", e.name]) AS value
            FROM runs r LEFT JOIN experiments e ON e.experiment_id = r.experiment_id)
        WHERE value IS NOT NULL AND value <> ''
        GROUP BY facet, value ORDER BY facet, n_runs DESC, value""")


def activity(catalog: Catalog, *, experiments=None, kinds=None, since=None, until=None,
             bucket: str = "day") -> pd.DataFrame:
    """bucket, user, kind, n_runs: runs started per hour/day/week/month, by user and kind."""
    unit = _BUCKETS.get(bucket)
    if unit is None:
        raise UsageError(f"bucket {str(bucket)[:50]!r} is not one of {', '.join(_BUCKETS)}")
    clauses, args = _run_filters(experiments=experiments, kinds=kinds, since=since, until=until)
    where = " WHERE r.start_time IS NOT NULL" + "".join(f" AND {clause}" for clause in clauses)
    return _frame(catalog, f"""
        SELECT date_trunc(?, r.start_time) AS bucket, r."user", r.kind, count(*) AS n_runs
        FROM runs r LEFT JOIN experiments e ON e.experiment_id = r.experiment_id {where}
        GROUP BY ALL ORDER BY bucket, r."user", r.kind""", [unit, *args])


# -- Parquet artifacts -------------------------------------------------------------------

def _parquet(catalog: Catalog, run_id: str, artifact_path: str) -> Path:
    if not isinstance(artifact_path, str) or not artifact_path.endswith(".parquet"):
        raise ArtifactNotFound(f"artifact {str(artifact_path)[:200]!r} is not a Parquet table")
    path = catalog.artifact(run_id, artifact_path)
    if path is None or not path.is_file():
        raise ArtifactNotFound(f"run {str(run_id)[:64]!r} has no artifact {artifact_path[:200]!r} in the catalog")
    return path


def _columns(cursor, path: Path) -> list[str]:
    return [row[0] for row in cursor.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()]


def parquet_columns(catalog: Catalog, run_id: str, artifact_path: str = Artifact.MAP) -> list[str]:
    """The column names of a run's Parquet artifact (read from its footer)."""
    return _columns(catalog.cursor(), _parquet(catalog, run_id, artifact_path))


def _read(catalog: Catalog, run_id: str, artifact_path: str, columns=None, limit=None) -> pd.DataFrame:
    path = _parquet(catalog, run_id, artifact_path)
    limit = _limit(limit)
    cursor = catalog.cursor()
    select = "*"
    if columns is not None:
        wanted = _strings(columns, "columns")
        known = set(_columns(cursor, path))
        if not wanted or any(name not in known for name in wanted):
            return pd.DataFrame()  # a column the table does not have: nothing
        select = ", ".join('"' + name.replace('"', '""') + '"' for name in wanted)
    sql = f"SELECT {select} FROM read_parquet(?)"
    args: list = [str(path)]
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return cursor.execute(sql, args).df()


def map_points(catalog: Catalog, run_id: str, columns=None, limit: int | None = None) -> pd.DataFrame:
    """A map run's ``map.parquet`` (sample_id, x, y, cluster, label, text, ...), read by
    DuckDB straight from the cached file: ``columns`` reads only those columns (a name the
    file lacks gives an empty frame), ``limit`` the first rows.
    Raises ArtifactNotFound (a LookupError) when the run has no map."""
    return _read(catalog, run_id, Artifact.MAP, columns, limit)


def sweep_trials(catalog: Catalog, sweep_run_id: str) -> pd.DataFrame:
    """A sweep run's ``trials.parquet``. Raises ArtifactNotFound when it has none (yet)."""
    return _read(catalog, sweep_run_id, Artifact.TRIALS)


def table(catalog: Catalog, run_id: str, artifact_path: str, columns=None, limit: int | None = None) -> pd.DataFrame:
    """Any Parquet artifact of a run (the per-kind tables of ``latentscape.tracking.contract.Artifact``).
    Raises ArtifactNotFound when the run has no such table."""
    return _read(catalog, run_id, artifact_path, columns, limit)
