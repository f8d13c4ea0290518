"""Every read the app makes, and the only module with ``st.cache_*``.

- The catalog (DuckDB, synced from MLflow) is a ``cache_resource``: one shared object
  per process, opened at once with what its file already holds. Syncing it with MLflow
  runs in a background thread, one at a time per process (:func:`start_sync`; a new
  browser session starts one when the last is older than 30 s): the first open of a
  large store took over 10 s before any page drew. A sync writes a new file and swaps
  it in (``latentscape.tracking.catalog``), so a reader sees the whole of a sync or none of it.
  The app polls :func:`sync_status` and reruns when a sync finishes.
- Each rerun reads through one cursor (:func:`begin_rerun`, called by ``ui/app.py``):
  every query of a rerun sees the same version of the catalog, and no two sessions'
  threads share a cursor.
- On a tracking server each rerun's cursor sees only the experiments the session's login
  may read (:func:`latentscape.ui.auth.scope`, :func:`latentscape.tracking.access.restrict`),
  and nothing before a login; artifacts and searches of other runs are refused.
- Query results are ``cache_data`` (each caller gets its own copy), keyed by their
  arguments and the session's scope; :func:`clear_cache` drops them all but searches (the app calls it when a
  sync finished since the session's last rerun).

Pages never call ``latentscape.tracking.queries`` themselves: they call these functions with
hashable arguments (tuples, not lists).

Search by a new text is asked of a warm ``latentscape search --serve`` worker per model
(:mod:`latentscape.ui.search_workers`): the text has to go through the run's own model,
and this process never imports torch or the jobs. Its answer is cached per (run, text,
layer, k).
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import streamlit as st

from latentscape.tracking import access, privacy, queries
from latentscape.tracking.catalog import ArtifactNotFound, Catalog, RefreshStats
from latentscape.tracking.contract import CatalogColumn as C
from latentscape.tracking.contract import Column, Reply
from latentscape.ui.charts import bigmap
from latentscape.ui.search_workers import SearchWorkers, WorkerFailed, serve_command

__all__ = [
    "catalog",
    "tracking_uri",
    "begin_rerun",
    "start_sync",
    "ensure_fresh",
    "sync_status",
    "wait_for_sync",
    "clear_cache",
    "experiments",
    "facets",
    "runs",
    "run_table",
    "metrics",
    "layer_curves",
    "children",
    "map_points",
    "map_size",
    "big_map",
    "search",
    "search_workers",
    "SearchResult",
    "SearchFailed",
    "sweep_trials",
    "table",
    "artifact",
    "CatalogStatus",
]

# A worker's first search loads the run's model: seconds, more on a busy machine.
_SEARCH_TIMEOUT_S = 600
# Warm search workers kept (one per model, ~0.3-0.5 GB each with MiniLM and its extraction).
_SEARCH_WORKERS = 2
# A new browser session starts a sync when this process last tried one longer ago than this.
_STALE_AFTER_S = 30.0
_TTL = 3600  # cached frames also expire on their own after an hour


@dataclass(frozen=True)
class CatalogStatus:
    """What the sidebar says about the catalog.

    synced_at: when a sync last wrote the catalog file (any process; None: never, so the
    catalog is empty because it was never synced); syncing: a sync is running in this
    process, ``progress`` its stage (e.g. "1,000 runs read"); last: this process's last
    finished sync; error: its failure as one line (None when it succeeded); generation:
    syncs finished in this process (a change means the pages may show older data)."""

    tracking_uri: str
    path: str
    synced_at: float | None
    syncing: bool
    progress: str | None
    last: RefreshStats | None
    error: str | None
    generation: int

    @property
    def first_sync(self) -> bool:
        """The catalog was never synced and its first sync is running, or about to start
        (the app starts it after drawing the page)."""
        return self.synced_at is None and (self.syncing or (self.generation == 0 and self.error is None))


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= 300 else text[:299] + "…"


class _BackgroundSync:
    """Syncs one catalog with MLflow in a daemon thread, at most one sync at a time.

    A second start while one runs is refused (the Refresh button, new sessions): the
    catalog would serialise them anyway, each one fetching again."""

    def __init__(self, catalog: Catalog):
        self._catalog = catalog
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.started_at: float | None = None  # the last attempt, in this process
        self.last: RefreshStats | None = None
        self.error: str | None = None
        self.progress: str | None = None
        self.generation = 0
        _SYNCS.add(self)

    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> bool:
        """Start a sync; False when one is already running."""
        with self._lock:
            if self.running():
                return False
            self.started_at, self.progress = time.time(), None
            self._thread = threading.Thread(target=self._run, name=SYNC_THREAD, daemon=True)
            self._thread.start()
            return True

    def _advance(self, stage: str, done: int, total: int | None) -> None:
        what = stage.removeprefix("catalog: ")
        self.progress = f"{done:,} {what} read" if total is None else f"{what}: {done:,} of {total:,}"

    def _run(self) -> None:
        try:
            stats, error = self._catalog.refresh(progress=self._advance), None
        except Exception as failed:  # shown in the sidebar; the next sync tries again
            stats, error = None, _one_line(failed)
        with self._lock:
            self.last = stats if stats is not None else self.last
            self.error, self.progress = error, None
            self.generation += 1


SYNC_THREAD = "latentscape-catalog-sync"
_SYNCS: "weakref.WeakSet[_BackgroundSync]" = weakref.WeakSet()  # for wait_for_sync


@st.cache_resource(show_spinner=False)
def _opened() -> tuple[Catalog, _BackgroundSync]:
    cat = Catalog.open()  # $MLFLOW_TRACKING_URI and $LATENTSCAPE_CATALOG, as `latentscape ui` sets them
    return cat, _BackgroundSync(cat)


def catalog() -> Catalog:
    """The process-wide catalog (opened on first use, holding what its file holds)."""
    return _opened()[0]


def start_sync() -> bool:
    """Sync the catalog with MLflow in the background; False when a sync is already running."""
    return _opened()[1].start()


def ensure_fresh(max_age_s: float = _STALE_AFTER_S) -> bool:
    """Start a sync when this process has not tried one in ``max_age_s`` (called once
    per browser session). True when one was started."""
    sync = _opened()[1]
    if sync.started_at is not None and time.time() - sync.started_at <= max_age_s:
        return False
    return sync.start()


def sync_status() -> CatalogStatus:
    """The catalog's state; the URI and error with passwords masked. A session bound to a
    login (a shared store) is not told the sync's run counts: they count every experiment
    the app's own account reads."""
    cat, sync = _opened()
    whole_view = _scope() is None
    return CatalogStatus(tracking_uri=privacy.masked(cat.tracking_uri), path=str(cat.path),
                         synced_at=cat.last_refresh, syncing=sync.running(),
                         progress=sync.progress if whole_view else None, last=sync.last if whole_view else None,
                         error=None if sync.error is None else privacy.masked(sync.error), generation=sync.generation)


def tracking_uri(*, masked: bool = False) -> str:
    """The store the app reads; ``masked``: with any password as ``***`` (to show or log)."""
    uri = catalog().tracking_uri
    return privacy.masked(uri) if masked else uri


def wait_for_sync(stall_s: float | None = None) -> bool:
    """Wait for this process's running syncs (tests, benchmarks). A sync is waited for as
    long as it moves on; False when one stood still (no progress) for ``stall_s`` seconds,
    so a slow machine makes the wait longer, never a false alarm."""
    for sync in list(_SYNCS):
        seen, still_since = None, time.monotonic()
        while sync.running():
            now = (sync.progress, sync.generation)
            if now != seen:
                seen, still_since = now, time.monotonic()
            elif stall_s is not None and time.monotonic() - still_since > stall_s:
                return False
            thread = sync._thread
            if thread is not None:
                thread.join(0.5)
    return True


class _RerunCatalog:
    """The shared catalog as ``latentscape.tracking.queries`` sees it during one rerun: every query
    gets the rerun's cursor (one DuckDB cursor per rerun, one rerun per thread), bound to the
    session's :func:`latentscape.ui.auth.scope` (the experiments its login may read)."""

    def __init__(self, shared: Catalog, scope: frozenset[str] | None):
        self._shared = shared
        self.scope = scope
        self._cursor: duckdb.DuckDBPyConnection = shared.cursor()
        if scope is not None:
            access.restrict(self._cursor, scope)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self._cursor

    def visible(self, run_id: str) -> bool:
        """The run is one this session may read (its cursor holds it)."""
        return self._cursor.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone() is not None

    def artifact(self, run_id: str, artifact_path: str) -> Path | None:
        if self.scope is not None and not self.visible(run_id):
            return None  # the shared catalog would fetch it: it sees every run of the service account
        return self._shared.artifact(run_id, artifact_path)

    def __getattr__(self, name: str):
        return getattr(self._shared, name)


_rerun = threading.local()


def _scope() -> frozenset[str] | None:
    from latentscape.ui import auth  # auth asks data for the store's URI

    return auth.scope()


def begin_rerun() -> None:
    """Give this rerun (this thread) a fresh cursor on the latest catalog, bound to the session's scope."""
    _rerun.catalog = _RerunCatalog(catalog(), _scope())


def _reader() -> _RerunCatalog:
    reader = getattr(_rerun, "catalog", None)
    if reader is None or reader._shared is not catalog() or reader.scope != _scope():
        begin_rerun()
        reader = _rerun.catalog
    return reader


def clear_cache() -> None:
    """Drop every cached query result (after a sync: they may be older than the catalog)."""
    for function in _CACHED:
        function.clear()


def _cached(**options):
    """``st.cache_data(**options)``, keyed also by the session's scope: one user's answers
    are never served to another whose login may read other experiments."""
    def decorate(function):
        def scoped(scope, /, *args, **kwargs):
            return function(*args, **kwargs)

        # Streamlit keys a cache by the function's module, qualified name and source.
        scoped.__module__, scoped.__qualname__ = function.__module__, f"{function.__qualname__}.scoped"
        cached = st.cache_data(**options)(scoped)

        @functools.wraps(function)
        def public(*args, **kwargs):
            scope = _scope()
            return cached(None if scope is None else tuple(sorted(scope)), *args, **kwargs)

        public.clear = cached.clear
        return public
    return decorate


def _tuple(values) -> tuple | None:
    return None if values is None else tuple(values)


@_cached(ttl=_TTL, show_spinner=False)
def experiments() -> pd.DataFrame:
    return queries.experiments(_reader())


@_cached(ttl=_TTL, show_spinner=False)
def facets() -> pd.DataFrame:
    """facet, value, n_runs: what the Overview filters offer."""
    return queries.facets(_reader())


def _newest_first(frame: pd.DataFrame) -> pd.DataFrame:
    if C.START_TIME in frame and not frame.empty:
        frame = frame.sort_values(C.START_TIME, ascending=False, kind="stable", na_position="last")
    return frame.reset_index(drop=True)


@_cached(ttl=_TTL, show_spinner=False)
def runs(*, kinds: tuple[str, ...] | None = None, experiments: tuple[str, ...] | None = None,
         models: tuple[str, ...] | None = None, datasets: tuple[str, ...] | None = None,
         since: dt.date | None = None, until: dt.date | None = None, text: str | None = None,
         parent_run_id: str | None = None, limit: int = 5000) -> pd.DataFrame:
    """``queries.runs``, newest first."""
    return _newest_first(queries.runs(
        _reader(), kinds=_tuple(kinds), experiments=_tuple(experiments), models=_tuple(models),
        datasets=_tuple(datasets), since=since, until=until, text=text or None, parent_run_id=parent_run_id,
        limit=limit))


@_cached(ttl=_TTL, show_spinner=False)
def run_table(run_ids: tuple[str, ...]) -> pd.DataFrame:
    """One row per run with ``param.<key>`` and ``metric.<key>`` columns, in the order asked."""
    if not run_ids:
        return pd.DataFrame({C.RUN_ID: []})
    frame = queries.run_table(_reader(), list(run_ids))
    order = {run_id: i for i, run_id in enumerate(run_ids)}
    return frame.sort_values(C.RUN_ID, key=lambda ids: ids.map(order)).reset_index(drop=True)


@_cached(ttl=_TTL, show_spinner=False)
def tags(run_ids: tuple[str, ...], key: str) -> dict[str, str]:
    """run_id -> the value of tag ``key``, for the runs that have it."""
    if not run_ids:
        return {}
    frame = queries.tags(_reader(), list(run_ids))
    frame = frame[frame[C.KEY] == key]
    return dict(zip(frame[C.RUN_ID], frame[C.VALUE]))


@_cached(ttl=_TTL, show_spinner=False)
def metrics(run_ids: tuple[str, ...], keys: tuple[str, ...] | None = None) -> pd.DataFrame:
    """run_id, key, value, step (full history of per-layer metrics)."""
    if not run_ids:
        return pd.DataFrame({C.RUN_ID: [], C.KEY: [], C.VALUE: [], C.STEP: []})
    return queries.metrics(_reader(), list(run_ids), keys=None if keys is None else list(keys))


@_cached(ttl=_TTL, show_spinner=False)
def layer_curves(run_ids: tuple[str, ...], keys: tuple[str, ...]) -> pd.DataFrame:
    if not run_ids or not keys:
        return pd.DataFrame({C.RUN_ID: [], C.RUN_NAME: [], C.KEY: [], C.LAYER: [], C.VALUE: []})
    return queries.layer_curves(_reader(), list(run_ids), list(keys))


@_cached(ttl=_TTL, show_spinner=False)
def children(parent_run_id: str, kind: str | None = None) -> pd.DataFrame:
    """Child runs, newest first."""
    return _newest_first(queries.children(_reader(), parent_run_id, kind=kind))


@_cached(ttl=_TTL, show_spinner="Loading the map…")
def map_points(run_id: str) -> pd.DataFrame | None:
    """The run's ``map.parquet``, or None when it has none."""
    return _or_none(lambda: queries.map_points(_reader(), run_id))


@_cached(ttl=_TTL, show_spinner=False)
def map_size(run_id: str) -> int | None:
    """Points in the run's ``map.parquet`` (one float column read), or None without one."""
    frame = _or_none(lambda: queries.map_points(_reader(), run_id, columns=[Column.X]))
    return None if frame is None or Column.X not in frame else len(frame)


@_cached(ttl=_TTL, show_spinner="Preparing the large map…", max_entries=6)
def big_map(run_id: str, color_by: str) -> bigmap.DeckInfo | None:
    """A large map's deck.gl layers (:func:`latentscape.ui.charts.bigmap.deck_info`), reading only the
    columns the deck draws: no sample ids above ``bigmap.HOVER_POINTS`` points (only the
    hover sample would show them), never the ``meta.*`` columns."""
    reader = _reader()
    try:
        columns = bigmap.columns_for(map_size(run_id) or 0, queries.parquet_columns(reader, run_id))
        points = queries.map_points(reader, run_id, columns=columns)
    except ArtifactNotFound:
        return None
    return bigmap.deck_info(points, color_by=color_by)


class SearchFailed(RuntimeError):
    """The search process failed for a reason other than the user's input (not cached)."""


@dataclass(frozen=True)
class SearchResult:
    """What a search worker (``latentscape search --serve``) answered.

    neighbours: rank, sample_id, label, text, distance (cosine), nearest first; x / y:
    the text's place on the run's map (None for an extraction, or a map without those
    samples); layer: the layer searched; error: the command's one-line error when the
    input cannot be searched (e.g. the run's model is not on this machine), else None;
    seconds: the worker's answer, as the app waited for it."""

    neighbours: pd.DataFrame
    x: float | None
    y: float | None
    layer: int | None
    error: str | None
    seconds: float
    worker: int | None = None  # the pid of the worker process that answered


@st.cache_resource(show_spinner=False, on_release=SearchWorkers.close)
def search_workers() -> SearchWorkers:
    """The process's warm ``latentscape search --serve`` workers (at most two models),
    closed when the app exits or the cache lets them go."""
    # The store through the environment: a URI with a password never goes on a command line.
    env = {**os.environ, "MLFLOW_TRACKING_URI": catalog().tracking_uri, "LATENTSCAPE_PROGRESS": "0",
           "TOKENIZERS_PARALLELISM": "false"}
    workers = SearchWorkers(serve_command(sys.executable), env, capacity=_SEARCH_WORKERS)
    atexit.register(workers.close)
    return workers


@_cached(ttl=_TTL, show_spinner="Embedding the text with the run's own model…", max_entries=256)
def search(run_id: str, text: str, layer: int | None = None, k: int = 10) -> SearchResult:
    """The ``k`` samples nearest to ``text`` in run ``run_id`` (a map, sweep or trial run;
    an extract run with ``layer``), asked of the warm search worker of the run's model
    (:func:`search_workers`) and cached per (run, text, layer, k), so a shared link
    answers at once. A usage error (no such layer, a tabular run, the model not
    available here) comes back as ``error`` and is cached like an answer; any other
    failure raises :class:`SearchFailed` and is not cached."""
    empty = pd.DataFrame({Column.RANK: [], Column.SAMPLE_ID: [], Column.LABEL: [], Column.TEXT: [],
                          Column.DISTANCE: []})
    reader = _reader()
    if reader.scope is not None and not reader.visible(run_id):  # the search runs as the service account
        return SearchResult(empty, None, None, layer, f"run {run_id[:8]} is not available here", 0.0)
    found = queries.runs(reader, run_ids=[run_id], limit=1)
    model = str(found[C.MODEL].iloc[0] or "") if not found.empty else ""
    request = {Reply.RUN_ID: run_id, Reply.TEXT: text, Reply.K: int(k)}
    if layer is not None:
        request[Reply.LAYER] = int(layer)
    try:
        reply, pid, seconds = search_workers().ask(model, request, timeout=_SEARCH_TIMEOUT_S)
    except WorkerFailed as failed:
        raise SearchFailed(privacy.masked(str(failed))) from None
    if Reply.ERROR in reply:
        return SearchResult(empty, None, None, layer, str(reply[Reply.ERROR]), seconds, pid)
    if Reply.FAILURE in reply:
        raise SearchFailed(str(reply[Reply.FAILURE]))
    details = reply.get(Reply.DETAILS, {})
    neighbours = pd.DataFrame(details.get(Reply.NEIGHBOURS, []), columns=list(empty.columns))
    x, y = details.get(Reply.X), details.get(Reply.Y)
    return SearchResult(neighbours, None if x is None else float(x), None if y is None else float(y),
                        details.get(Reply.LAYER, layer), None, seconds, details.get(Reply.WORKER, pid))


@_cached(ttl=_TTL, show_spinner=False)
def sweep_trials(sweep_run_id: str) -> pd.DataFrame | None:
    """The sweep's ``trials.parquet``, or None (not written yet: the sweep is running)."""
    return _or_none(lambda: queries.sweep_trials(_reader(), sweep_run_id))


@_cached(ttl=_TTL, show_spinner=False)
def table(run_id: str, artifact_path: str) -> pd.DataFrame | None:
    """Any Parquet artifact of a run, or None when the run has no such artifact."""
    return _or_none(lambda: queries.table(_reader(), run_id, artifact_path))


@_cached(ttl=_TTL, show_spinner=False)
def artifact(run_id: str, artifact_path: str) -> bytes | None:
    """The bytes of a (small) artifact such as an image, or None when absent."""
    path = _reader().artifact(run_id, artifact_path)
    return path.read_bytes() if path is not None and path.is_file() else None


def _or_none(read):
    """A table read that may find no artifact: None instead of ``ArtifactNotFound``."""
    try:
        return read()
    except ArtifactNotFound:
        return None


# Not ``search``: its answer depends on a run's model and logged embeddings, which no sync
# changes, and a shared link is to answer at once even after the catalog was synced.
_CACHED = (experiments, facets, runs, run_table, metrics, layer_curves, children, map_points, map_size, big_map,
           sweep_trials, table, artifact)
