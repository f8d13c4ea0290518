"""What a job returns in Python: its run, its scores, its tables and the app's chart of it.

Tables and charts are read through the DuckDB catalog, the same reads the Streamlit app
makes, so ``result.chart()`` is the chart the app's page draws for that run.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from latentscape.tracking.contract import Artifact, Metric, Param
from latentscape.tracking.contract import CatalogColumn as C
from latentscape.tracking.errors import UsageError

__all__ = ["Result", "catalog"]

_CATALOGS: dict[str, Any] = {}


def catalog(tracking_uri: str | None = None):
    """The DuckDB catalog of a store (one per store and process), synced with MLflow now."""
    from latentscape.tracking.catalog import Catalog
    from latentscape.tracking.backends import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if uri not in _CATALOGS:
        _CATALOGS[uri] = Catalog.open(uri)
    opened = _CATALOGS[uri]
    opened.refresh()
    return opened


class Result:
    """One logged run of a job.

    ``run_id``, ``kind``, ``experiment`` and ``scores`` (the key scores the CLI prints)
    are there at once; the tables (``.map``, ``.clusters``, ``.layers``, ``.trials``,
    ``.verdict``, or any Parquet artifact with :meth:`table`) load on first use, as
    DataFrames; :meth:`chart` is the app's Altair chart of the run.
    """

    def __init__(self, kind: str, run_id: str, experiment: str, *, scores: Mapping[str, float] | None = None,
                 details: Mapping[str, Any] | None = None, tracking_uri: str | None = None):
        from latentscape.tracking.backends import resolve_tracking_uri

        self.kind, self.run_id, self.experiment = kind, run_id, experiment
        self.scores = dict(scores or {})
        self.details = dict(details or {})
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self._tables: dict[str, pd.DataFrame] = {}
        self._synced = None

    def _catalog(self):
        """The catalog, synced once for this result: its run is finished and does not change."""
        if self._synced is None:
            self._synced = catalog(self.tracking_uri)
        return self._synced

    @classmethod
    def of(cls, job_result, *, tracking_uri: str | None = None) -> Result:
        """From the ``JobResult`` a job's handler returns."""
        return cls(job_result.kind, job_result.run_id, job_result.experiment, scores=job_result.scores,
                   details=job_result.details, tracking_uri=tracking_uri)

    # -- tables ------------------------------------------------------------------------------
    def table(self, artifact_path: str) -> pd.DataFrame:
        """Any Parquet artifact of the run (names in ``latentscape.tracking.contract.Artifact``)."""
        if artifact_path not in self._tables:
            from latentscape.tracking import queries
            from latentscape.tracking.catalog import ArtifactNotFound

            try:
                self._tables[artifact_path] = queries.table(self._catalog(), self.run_id, artifact_path)
            except ArtifactNotFound:
                raise UsageError(f"this {self.kind} run ({self.run_id}) has no {artifact_path}",
                                 "see result.artifacts() for what it logged") from None
        return self._tables[artifact_path].copy()

    def artifacts(self) -> list[str]:
        """The Parquet tables this run logged (what :meth:`table` can read)."""
        from latentscape.tracking.runs import open_store

        return sorted(p for p in open_store(self.tracking_uri).artifact_paths(self.run_id) if p.endswith(".parquet"))

    @property
    def map(self) -> pd.DataFrame:
        """map.parquet: sample_id, x, y, cluster, label, text (a map, a trial, a sweep's best)."""
        return self.table(Artifact.MAP)

    @property
    def clusters(self) -> pd.DataFrame:
        """clusters.parquet: one row per cluster with its size, purity and top words."""
        return self.table(Artifact.CLUSTERS)

    @property
    def layers(self) -> pd.DataFrame:
        """layers.parquet: one row per layer, every measure (a layers run)."""
        return self.table(Artifact.LAYER_SUMMARY)

    @property
    def verdict(self) -> pd.DataFrame:
        """verdict.parquet: each measure's best layer, its interval and ties (a layers run)."""
        return self.table(Artifact.VERDICT)

    @property
    def trials(self) -> pd.DataFrame:
        """trials.parquet: one row per Optuna trial (a sweep)."""
        return self.table(Artifact.TRIALS)

    def metrics(self) -> pd.DataFrame:
        """run_id, key, value, step: every metric's history (per-layer curves at step = layer)."""
        from latentscape.tracking import queries

        return queries.metrics(self._catalog(), [self.run_id])

    def params(self) -> dict[str, str]:
        from latentscape.tracking import queries

        frame = queries.params(self._catalog(), [self.run_id])
        return dict(zip(frame[C.KEY], frame[C.VALUE]))

    # -- the app's chart ---------------------------------------------------------------------
    def chart(self):
        """The Altair chart the app draws for this run (it shows itself in a notebook)."""
        from latentscape.tracking.job_specs import SHOWN, resolve

        shown = SHOWN.get(self.kind)
        if shown is None or shown.chart is None:
            raise UsageError(f"the app draws no single chart of a {self.kind} run",
                             f"read its tables instead: {', '.join(self.artifacts()) or 'none'}")
        return resolve(shown.chart)(self)

    # -- how it shows ------------------------------------------------------------------------
    def __repr__(self) -> str:
        scores = ", ".join(f"{k}={_number(v)}" for k, v in self.scores.items())
        return f"<{self.kind} run {self.run_id} in {self.experiment!r}" + (f": {scores}>" if scores else ">")

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_number(v))}</td></tr>"
                       for k, v in self.scores.items())
        return (f"<div><b>{html.escape(self.kind)}</b> run <code>{html.escape(self.run_id)}</code> in "
                f"experiment <i>{html.escape(self.experiment)}</i>"
                + (f"<table><tr><th>score</th><th>value</th></tr>{rows}</table>" if rows else "") + "</div>")


def _number(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


# -- the app's chart of each run kind: named in tracking/job_specs.py, drawn from a Result ---------

def map_chart(result: Result):
    from latentscape.ui.charts import maps

    try:
        names = maps.cluster_labels(result.clusters)
    except UsageError:  # a trial whose cluster table was not kept
        names = None
    # A notebook draws the plot at Altair's default width (300 px) and map_chart's height.
    width_px, height_px = 300, 440
    info = maps.map_info(result.map, color_by=maps.COLOR_BY[0], aspect=width_px / height_px)
    if names is not None:
        names = maps.placed_labels(names, x_domain=info.x_domain, y_domain=info.y_domain, width_px=width_px,
                                   height_px=height_px)
    return maps.map_chart(info, labels=names)


def sweep_chart(result: Result):
    from latentscape.ui.charts import sweeps

    params = result.params()
    return sweeps.history_chart(sweeps.history_info(
        result.trials, direction=params.get(Param.DIRECTION, "maximize"),
        objective=params.get(Param.OBJECTIVE, Metric.AMI)))


def layer_chart(result: Result):
    from latentscape.tracking import queries
    from latentscape.ui.charts import layers

    curves = queries.layer_curves(result._catalog(), [result.run_id], list(layers.CURVE_TITLES))
    if curves.empty:
        raise UsageError(f"this {result.kind} run ({result.run_id}) logged no per-layer curves",
                         "run ls.layers() on its extraction")
    params = result.params()
    marks = {result.run_id: {layers.MARK_STABLE: _int(params.get(Param.FIRST_STABLE_LAYER)),
                             layers.MARK_LARGEST: _int(params.get(Param.LAYER_OF_LARGEST_CHANGE))}}
    present = set(curves[C.KEY])
    keys = [k for k in layers.DEFAULT_CURVES if k in present] or None
    return layers.curves_chart(layers.curves_info(curves, keys=keys, marks=marks))


def walk_chart(result: Result):
    from latentscape.ui.charts import interpolation

    return interpolation.neighbour_chart(interpolation.path_info(result.table(Artifact.PATH),
                                                                 result.table(Artifact.NEIGHBOURS)))


def analogy_chart(result: Result):
    from latentscape.ui.charts import interpolation

    return interpolation.analogy_chart(interpolation.analogy_info(result.metrics(), labels={result.run_id: result.kind}))


def directions_chart(result: Result):
    from latentscape.ui.charts import directions

    return directions.projection_chart(directions.projection_info(result.table(Artifact.PROJECTIONS)))


def features_chart(result: Result):
    from latentscape.ui.charts import features

    return features.heatmap_chart(features.heatmap_info(result.table(Artifact.FEATURE_LABELS)))


def training_chart(result: Result):
    from latentscape.ui.charts import training

    return training.loss_chart(training.loss_info(result.metrics()))


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None
