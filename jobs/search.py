"""``latentscape search``: find where a new text lands in a run's latent space.

The text goes through the run's own model, pooling, max length and layer; its nearest
samples (cosine) are listed, and for a run with a map it is placed on the 2D map.

Placement is the distance-weighted mean position of the nearest samples on the map.
UMAP's ``transform`` would need the fitted reducer, and a fitted reducer can only be
shared as a pickle, which this project never loads; the neighbours' position needs
nothing but the logged map and agrees with ``transform`` where the neighbours agree.

A query is not an experiment, so nothing is logged: the result is printed (``--json``).
The UI keeps ``latentscape search --serve`` processes warm instead (one per model, so it
never imports torch itself): a request a stdin line, a reply a stdout line
(``tracking.contract.Reply``), the model, the run and its extraction kept loaded between
requests (measured: a new process pays 5-10 s of imports and model loading per query).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from latentscape.jobs._options import add_options, check_options, from_args, option
from latentscape.jobs._result import JobResult
from latentscape.tracking.contract import Artifact, Column, Kind, Param, Reply, Tag
from latentscape.tracking.errors import UsageError

__all__ = ["SearchConfig", "add_parser", "search", "serve", "Warm", "place_by_neighbours"]

_KINDS_WITH_MAPS = (Kind.MAP.value, Kind.SWEEP.value, Kind.TRIAL.value)


@dataclass(frozen=True)
class SearchConfig:
    """One query (``run`` and ``text``), or ``serve``: answer queries from stdin."""

    run: str | None = option(None, help="a map, sweep or extract run id (required unless --serve)")
    text: str | None = option(None, help="the text to look up (required unless --serve)")
    layer: int | None = option(None, help="layer to search (required for an extract run)")
    k: int = option(10, low=1, help="number of neighbours")
    serve: bool = option(False, help="answer JSON requests, one a stdin line, until stdin closes, keeping models "
                         "loaded (the app's search worker)")

    def __post_init__(self):
        check_options(self)
        if not self.serve and (self.run is None or self.text is None):
            raise UsageError("search needs a run and a text", "pass --run RUN_ID --text TEXT (or --serve)")


def add_parser(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "search", parents=parents, help="find the samples nearest to a new text, and place it on a map",
        description="Embed TEXT with a run's own model, pooling and layer, list its nearest samples (cosine "
        "distance), and place it on the run's 2D map when the run has one. Nothing is logged.",
        epilog="examples:\n  latentscape search --run MAP_RUN --text 'a recipe for soup'\n"
        "  latentscape search --run EXTRACT_RUN --layer 3 --text 'a recipe for soup' --k 5 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser, SearchConfig)
    parser.set_defaults(handler=_run_cli)


def _run_cli(args) -> JobResult | None:
    from latentscape.tracking.runs import open_store

    config = from_args(SearchConfig, args)
    if config.serve:
        serve(open_store(args.tracking_uri), sys.stdin)
        return None
    return search(open_store(args.tracking_uri), config.run, config.text, layer=config.layer, k=config.k)


class Warm:
    """What a serving process keeps between requests: models by folder, runs, extractions
    and maps by run id (the few most recent; a map of 100k points is a few MB)."""

    def __init__(self, store, *, runs: int = 8):
        self.store = store
        self._runs = runs
        self._encoders: dict[str, object] = {}
        self._kept: OrderedDict[tuple[str, str], object] = OrderedDict()

    def _keep(self, what: str, run_id: str, load):
        key = (what, run_id)
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        value = self._kept[key] = load()
        while len(self._kept) > 3 * self._runs:
            self._kept.popitem(last=False)
        return value

    def run(self, run_id: str):
        return self._keep("run", run_id, lambda: self.store.get_run(run_id))

    def extraction(self, run_id: str):
        from latentscape.jobs._source import load_extraction

        return self._keep("extraction", run_id, lambda: load_extraction(self.store, run_id))

    def table(self, run_id: str, artifact_path: str):
        from latentscape.tracking.runs import load_table

        return self._keep(artifact_path, run_id, lambda: load_table(self.store, run_id, artifact_path))

    def encoder(self, model_path: str):
        from latentscape.jobs._embedding import Encoder

        if model_path not in self._encoders:
            self._encoders[model_path] = Encoder.load(model_path)
        return self._encoders[model_path]


def serve(store, requests: Iterable[str], replies: TextIO | None = None) -> int:
    """Answer search requests until ``requests`` ends; returns how many were answered.

    requests: JSON lines ``{run_id, text, layer?, k?}``; each reply is one JSON line on
    ``replies`` (default: the process's real stdout, which anything a library prints no
    longer reaches: it goes to stderr), in the order asked."""
    from latentscape.tracking.privacy import masked

    if replies is None:
        replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
        sys.stdout.flush()
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    warm, answered = Warm(store), 0
    for line in requests:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            layer = request.get(Reply.LAYER)
            result = search(store, str(request[Reply.RUN_ID]), str(request[Reply.TEXT]),
                            layer=None if layer is None else int(layer), k=int(request.get(Reply.K, 10)), warm=warm)
            reply = json.loads(result.to_json())
            reply[Reply.DETAILS][Reply.WORKER] = os.getpid()
        except UsageError as error:
            reply = {Reply.ERROR: masked(f"latentscape search: error: {error}")}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            reply = {Reply.ERROR: f"latentscape search: error: a malformed request ({type(error).__name__}: {error}); "
                                  f"send one JSON object a line with {Reply.RUN_ID} and {Reply.TEXT}"}
        except Exception as error:  # the worker goes on: the next request may be of another run
            first = " ".join(str(error).split())[:300]
            reply = {Reply.FAILURE: masked(f"latentscape search: failed: {type(error).__name__}: {first}")}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
        answered += 1
    return answered


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


def search(store, run_id: str, text: str, *, layer: int | None = None, k: int = 10,
           warm: Warm | None = None) -> JobResult:
    """Nearest samples of ``text`` in run ``run_id`` (and its map position, if any);
    ``warm``: reuse (and keep) the runs, extractions, maps and models it holds."""
    if not text.strip():  # before the imports below (pandas) and the store's first query (MLflow)
        raise UsageError("the search text is empty", "pass --text with some words")
    SearchConfig(run=run_id, text=text, layer=layer, k=k)  # --k 1 or more
    from latentscape.jobs._reembed import embed_like, require_text_model
    from latentscape.jobs.core.walk import cosine_neighbours

    warm = warm or Warm(store, runs=1)
    run = warm.run(run_id)
    kind = run.kind
    map_frame = None
    if kind == Kind.EXTRACT.value:
        extraction = warm.extraction(run_id)
        if layer is None:
            raise UsageError(f"run {run_id} is an extraction with layers {extraction.layers}",
                             "pass --layer, or the id of a map run")
    elif kind in _KINDS_WITH_MAPS:
        extraction = warm.extraction(run.tags.get(Tag.SOURCE_RUN, ""))
        logged_layer = int(run.params.get(Param.LAYER, -1))
        if layer is not None and layer != logged_layer:
            raise UsageError(f"{kind} run {run_id} maps layer {logged_layer}, not {layer}", "omit --layer")
        layer = logged_layer
        map_frame = warm.table(run_id, Artifact.MAP)
    else:
        raise UsageError(f"run {run_id} is a {kind or 'non-latentscape'} run", "pass a map, sweep or extract run id")
    extraction.check_layer(layer)
    require_text_model(extraction, job="search")

    query = embed_like(extraction, [text], [layer], job="search", load_encoder=warm.encoder)[layer]
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
