"""``layers --compare-poolings``: the other extractions of the same model and data with
another pooling (found or named, checked before any run exists), their labelled curves
measured as this extraction's are, and the pooling that carries the labels best."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from latentscape.jobs import _layer_measuring as measuring
from latentscape.tracking import layer_measures
from latentscape.tracking.contract import Column, Kind, Metric, Param, Tag
from latentscape.tracking.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

    from latentscape.jobs.layers import LayersConfig

__all__ = ["POOLING_CURVES", "pooling_of", "pooling_extractions", "compare_poolings", "best_pooling"]

# The curves compared across poolings (poolings.parquet, metrics "<curve>.<pooling>").
POOLING_CURVES = (*layer_measures.LABELLED, Metric.AMI_STD)


def pooling_of(extraction) -> str:
    return extraction.pooling or extraction.tags.get(Tag.POOLING, "") or "unknown"


def pooling_extractions(store, extraction, config: LayersConfig) -> list:
    """The other extractions to compare poolings with, checked before any run exists:
    ``config.pooling_runs``, or every other finished extraction of the same model, data
    set digest and maximum length in the extraction's experiment (the newest per pooling)."""
    from latentscape.jobs._source import load_extraction
    from latentscape.tracking.contract import TABULAR_MODEL

    own = pooling_of(extraction)
    if extraction.labels is None:
        raise UsageError("comparing poolings compares how well each carries the labels, and extract run "
                         f"{extraction.run_id} is unlabelled", "extract labelled data (--label-col)")
    if own == TABULAR_MODEL or extraction.model == TABULAR_MODEL:
        raise UsageError(f"extract run {extraction.run_id} is tabular data: it has no pooling to compare",
                         "compare poolings of text extracted by a model")
    if config.pooling_runs:
        others = [load_extraction(store, run_id) for run_id in config.pooling_runs]
    else:
        found = store.find_runs(extraction.experiment_id, kind=Kind.EXTRACT,
                                tags={Tag.MODEL: extraction.model, Tag.DATASET_DIGEST: extraction.dataset_digest},
                                params={Param.MAX_LENGTH: extraction.max_length}, status="FINISHED",
                                newest_first=True, max_results=200)
        newest: dict[str, str] = {}
        for run in found:
            pooling = run.params.get(Param.POOLING, "")
            if pooling and pooling != own and pooling not in newest:
                newest[pooling] = run.id
        if not newest:
            raise UsageError(f"no other extraction of {extraction.model} on this data set with another pooling "
                             f"in experiment {extraction.experiment_name!r}",
                             "extract it again with e.g. --pooling cls (same --data, --model, --max-length), "
                             "or name runs with --pooling-runs")
        others = [load_extraction(store, run_id) for run_id in newest.values()]
    seen = {own: extraction.run_id}
    for other in others:
        pooling = pooling_of(other)
        if other.model != extraction.model or other.dataset_digest != extraction.dataset_digest:
            raise UsageError(f"extract run {other.run_id} embeds other data or another model than run "
                             f"{extraction.run_id}", "compare extractions of the same model and data set")
        if not np.array_equal(other.ids, extraction.ids):
            raise UsageError(f"extract run {other.run_id} has its samples in another order than run "
                             f"{extraction.run_id}", "extract both with the same --data, --limit and --id-col")
        if other.layers != extraction.layers:
            raise UsageError(f"extract run {other.run_id} has layers {other.layers}, run {extraction.run_id} "
                             f"{extraction.layers}", "extract both with the same --layers")
        if pooling in seen:
            raise UsageError(f"runs {seen[pooling]} and {other.run_id} both use pooling {pooling!r}",
                             "compare one extraction per pooling")
        seen[pooling] = other.run_id
    return others


def compare_poolings(extraction, table: pd.DataFrame, others: list, measured: measuring.Rows, config: LayersConfig,
                      mapper: measuring.Mapper | None) -> pd.DataFrame:
    """``poolings.parquet``: one row per (pooling, layer) with the labelled curves, this
    extraction's rows taken from ``table`` (measured once), the others measured here."""
    import pandas as pd

    from latentscape.jobs._knn_store import layer_graph_store
    from latentscape.jobs._progress import progress

    present = [name for name in POOLING_CURVES if name in table]
    frames = [table[[Column.LAYER, *present]].assign(**{Column.POOLING: pooling_of(extraction)})]
    with progress(len(others) * len(extraction.layers), "compare poolings", unit="layer") as bar:
        for other in others:
            rows = []
            for layer in other.layers:
                found = measuring.measure(other.embedding(layer), None, measured, config, mapper,
                                          store=layer_graph_store(other, layer))
                rows.append({Column.LAYER: layer, **{name: found.get(name, math.nan) for name in present}})
                bar.update()
            other._cache.clear()  # one pooling's layers at a time
            frames.append(pd.DataFrame(rows).assign(**{Column.POOLING: pooling_of(other)}))
    compared = pd.concat(frames, ignore_index=True)
    return compared[[Column.POOLING, Column.LAYER, *present]]


def best_pooling(compared: pd.DataFrame) -> str:
    """The pooling whose best layer has the highest probe accuracy (ties: higher AMI)."""
    best = compared.groupby(Column.POOLING, sort=False)[[Metric.PROBE_ACCURACY, Metric.AMI]].max()
    best = best.fillna(-np.inf).sort_values([Metric.PROBE_ACCURACY, Metric.AMI], ascending=False, kind="stable")
    return str(best.index[0])
