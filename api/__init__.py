"""latentscape: what a neural network has learned, layer by layer, tracked in MLflow.

In a notebook::

    import latentscape as ls

    extraction = ls.extract(data="demo")                # every layer of the bundled model
    view = ls.map(extraction, layer=6)                   # reduce, cluster, score one layer
    view.scores["ami"], view.map.head()                  # the scores; map.parquet as a DataFrame
    view.chart()                                         # the app's chart of the map
    best = ls.sweep(extraction, layer=6, trials=30)      # Optuna over the reduction
    depth = ls.layers(extraction)                        # how the representation changes
    ls.runs(kinds="map")                                 # every map so far, params and metrics

Every job is the CLI's sub-command of the same name (``ls.compare_models`` is
``latentscape compare-models``), with its options as keywords, the same validation, and
the same runs logged; bad input raises :class:`UsageError` with the CLI's one-line
message. Runs go to ``tracking_uri=`` if given, else ``$MLFLOW_TRACKING_URI``, else
``./mlflow.db``.

The installed parts: ``latentscape.jobs`` (the jobs and their numeric core),
``latentscape.tracking`` (MLflow, the run contract, the DuckDB catalog) and
``latentscape.ui`` (the Streamlit app).
"""

from __future__ import annotations

from latentscape.tracking.privacy import telemetry_off

# Before MLflow is imported anywhere in this process: no usage telemetry unless the user
# set MLFLOW_DISABLE_TELEMETRY=false themselves (every latentscape process imports this).
telemetry_off()

from latentscape._jobs import JobFunction  # noqa: E402
from latentscape.tracking.errors import UsageError  # noqa: E402

from latentscape.tracking.job_specs import JOBS  # noqa: E402

# One function per job of the command line (``ls.compare_models`` is ``latentscape
# compare-models``), from the job specs; ``ls.map`` never shadows the builtin in user code.
_FUNCTIONS = {spec.function: JobFunction(spec.command) for spec in JOBS if spec.notebook}
globals().update(_FUNCTIONS)

__all__ = [*_FUNCTIONS, "runs", "result", "models", "Result", "UsageError"]


def runs(*, kinds=None, experiments=None, models=None, datasets=None, since=None, until=None, text=None,
         parent=None, limit: int | None = 5000, tracking_uri: str | None = None):
    """Runs from the DuckDB catalog (synced with MLflow first), newest first, one row each
    with the run columns then ``param.<key>`` and ``metric.<key>`` columns: a DataFrame to
    compare in pandas. ``kinds`` etc. take a name or a list of names; ``parent``: a run id
    (or Result) whose child runs to list."""
    from latentscape._result import Result, catalog
    from latentscape.tracking import queries
    from latentscape.tracking.contract import CatalogColumn

    def names(value):
        return [value] if isinstance(value, str) else value

    if isinstance(parent, Result):
        parent = parent.run_id
    opened = catalog(tracking_uri)
    found = queries.runs(opened, kinds=names(kinds), experiments=names(experiments), models=names(models),
                         datasets=names(datasets), since=since, until=until, text=text, parent_run_id=parent,
                         limit=limit)
    if found.empty:
        return found
    return queries.run_table(opened, list(found[CatalogColumn.RUN_ID]))  # newest first, as runs() lists them


def models():
    """The model shelf (``latentscape models``): one row per model that ``model=NAME`` finds
    offline, with its layers, width, how its tokenizer reads inputs, and its folder."""
    import pandas as pd

    from latentscape.jobs.models import describe

    return pd.DataFrame(describe())


def result(run_id: str, *, tracking_uri: str | None = None):
    """A run logged earlier (by the CLI, a notebook or a teammate) as a :class:`Result`: its
    tables and chart as for a run just made; ``scores`` are its latest metrics."""
    import pandas as pd

    from latentscape._result import Result, catalog
    from latentscape.tracking import queries
    from latentscape.tracking.contract import CatalogColumn

    opened = catalog(tracking_uri)
    found = queries.run_table(opened, [str(run_id)])
    if found.empty:
        raise UsageError(f"no run {run_id!r} in {opened.tracking_uri}",
                         "check the id (ls.runs() lists them) and the tracking_uri")
    row = found.iloc[0]
    scores = {key.removeprefix(CatalogColumn.METRIC_PREFIX): float(value) for key, value in row.items()
              if key.startswith(CatalogColumn.METRIC_PREFIX) and pd.notna(value)}
    return Result(str(row[CatalogColumn.KIND]), str(run_id), str(row[CatalogColumn.EXPERIMENT]), scores=scores,
                  tracking_uri=tracking_uri)


def __getattr__(name: str):
    if name == "Result":  # pandas comes with it: loaded when first asked for
        from latentscape._result import Result

        return Result
    raise AttributeError(f"module 'latentscape' has no attribute {name!r}")
