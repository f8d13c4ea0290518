"""``latentscape search``: find where a new text lands in a run's latent space.

The text goes through the run's own model, pooling, max length and layer; its nearest
samples (cosine) are listed, and for a run with a map it is placed on the 2D map.

Placement is the distance-weighted mean position of the nearest samples on the map.
UMAP's ``transform`` would need the fitted reducer, and a fitted reducer can only be
shared as a pickle, which this project never loads; the neighbours' position needs
nothing but the logged map and agrees with ``transform`` where the neighbours agree.

A query is not an experiment, so nothing is logged: the result is printed (``--json``
for the UI, which runs this command in a subprocess and so never imports torch).
"""

from __future__ import annotations

import argparse

import numpy as np

from latentscape.jobs._result import JobResult
from latentscape.tracking.contract import Artifact, Column, Kind, Param, Reply, Tag
from latentscape.tracking.errors import UsageError

__all__ = ["add_parser", "search", "place_by_neighbours"]

_KINDS_WITH_MAPS = (Kind.MAP.value, Kind.SWEEP.value, Kind.TRIAL.value)


def add_parser(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "search", parents=parents, help="find the samples nearest to a new text, and place it on a map",
        description="Embed TEXT with a run's own model, pooling and layer, list its nearest samples (cosine "
        "distance), and place it on the run's 2D map when the run has one. Nothing is logged.",
        epilog="examples:\n  latentscape search --run MAP_RUN --text 'a recipe for soup'\n"
        "  latentscape search --run EXTRACT_RUN --layer 3 --text 'a recipe for soup' --k 5 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run", required=True, help="a map, sweep or extract run id")
    parser.add_argument("--text", required=True, help="the text to look up")
    parser.add_argument("--layer", type=int, help="layer to search (required for an extract run)")
    parser.add_argument("--k", type=int, default=10, help="number of neighbours (default 10)")
    parser.set_defaults(handler=_run_cli)


def _run_cli(args) -> JobResult:
    from latentscape.tracking.runs import open_store

    return search(open_store(args.tracking_uri), args.run, args.text, layer=args.layer, k=args.k)


def place_by_neighbours(xy: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """The distance-weighted mean of the neighbours' map positions.

    xy: (k, 2) positions of the k nearest samples; distances: (k,) their cosine
    distances to the query. A neighbour at distance 0 puts the query on it.
    """
    if len(xy) == 0:
        raise ValueError("placing a point needs at least one neighbour")
    if np.any(distances <= 1e-9):
        return xy[int(np.argmin(distances))].astype(float)
    weights = 1.0 / distances
    return (xy * weights[:, None]).sum(axis=0) / weights.sum()


def search(store, run_id: str, text: str, *, layer: int | None = None, k: int = 10) -> JobResult:
    """Nearest samples of ``text`` in run ``run_id`` (and its map position, if any)."""
    if not text.strip():  # before the imports below (pandas) and the store's first query (MLflow)
        raise UsageError("the search text is empty", "pass --text with some words")
    if k < 1:
        raise UsageError(f"--k {k} must be positive", "pass --k 1 or more")
    from latentscape.jobs._reembed import embed_like, require_text_model
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.core.walk import cosine_neighbours
    from latentscape.tracking.runs import load_table

    run = store.get_run(run_id)
    kind = run.kind
    map_frame = None
    if kind == Kind.EXTRACT.value:
        extraction = load_extraction(store, run_id)
        if layer is None:
            raise UsageError(f"run {run_id} is an extraction with layers {extraction.layers}",
                             "pass --layer, or the id of a map run")
    elif kind in _KINDS_WITH_MAPS:
        extraction = load_extraction(store, run.tags.get(Tag.SOURCE_RUN, ""))
        logged_layer = int(run.params.get(Param.LAYER, -1))
        if layer is not None and layer != logged_layer:
            raise UsageError(f"{kind} run {run_id} maps layer {logged_layer}, not {layer}", "omit --layer")
        layer = logged_layer
        map_frame = load_table(store, run_id, Artifact.MAP)
    else:
        raise UsageError(f"run {run_id} is a {kind or 'non-latentscape'} run", "pass a map, sweep or extract run id")
    extraction.check_layer(layer)
    require_text_model(extraction, job="search")

    query = embed_like(extraction, [text], [layer], job="search")[layer]
    found = cosine_neighbours(query, extraction.embedding(layer), k=k)
    rows = found.indices[0]
    samples = extraction.samples.iloc[rows]
    neighbours = [
        {Column.RANK: rank + 1, Column.SAMPLE_ID: str(sample[Column.SAMPLE_ID]),
         Column.LABEL: None if sample[Column.LABEL] is None else str(sample[Column.LABEL]),
         Column.TEXT: str(sample[Column.TEXT]), Column.DISTANCE: float(distance)}
        for rank, ((_, sample), distance) in enumerate(zip(samples.iterrows(), found.distances[0]))
    ]
    details: dict = {Reply.LAYER: layer, Reply.TEXT: text, Reply.NEIGHBOURS: neighbours}
    if map_frame is not None:
        positions = map_frame.set_index(Column.SAMPLE_ID)[[Column.X, Column.Y]]
        on_map = [i for i, sample_id in enumerate(samples[Column.SAMPLE_ID]) if sample_id in positions.index]
        if on_map:
            xy = positions.loc[samples[Column.SAMPLE_ID].iloc[on_map]].to_numpy(dtype=float)
            x, y = place_by_neighbours(xy, found.distances[0][on_map])
            details.update({Reply.X: float(x), Reply.Y: float(y)})
    return JobResult(kind=Reply.SEARCH, run_id=run_id, experiment=extraction.experiment_name,
                     scores={Reply.NEAREST_DISTANCE: float(found.distances[0][0])}, details=details)
