"""``latentscape directions``: is there a direction for this concept?

For every label of an extraction, at one layer: the difference of the class mean and
the mean of the rest, and the weight vector of a one-vs-rest linear probe, both as
unit directions. Every sample is projected onto every direction (centred on the data
mean), and the cosines between all directions are logged: do independent concepts get
orthogonal axes, and do the two methods agree?
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from latentscape.jobs._options import add_options, check_options, from_args, option
from latentscape.jobs._result import JobResult
from latentscape.jobs.core.walk import DIRECTION_METHODS
from latentscape.tracking.contract import Artifact, Column, Kind, Metric, Param, Tag
from latentscape.tracking.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DirectionsConfig", "directions", "add_parser"]

_METHODS = tuple(DIRECTION_METHODS)


@dataclass(frozen=True)
class DirectionsConfig:
    run: str = option(help="id of a labelled extract run", metavar="EXTRACT_RUN")
    layer: int = option(help="layer to find directions in")
    methods: tuple[str, ...] = option(_METHODS, flag="--method", dest="method", choices=_METHODS, cli=lambda method: (method,),
                                      cli_default=None, help="one method only (default: both)")
    seed: int = option(0, help="seed of the probes")
    # A direction from fewer samples is noise, and its AUC undefined.
    min_class_size: int = option(2, low=1, metavar="N",
                                 help="no direction for a class with fewer samples; unlabelled rows left out (default 2)")

    def __post_init__(self):
        check_options(self)


def add_parser(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "directions", parents=parents, help="a direction per label (mean difference, probe) and their angles",
        description="For every label, derive a concept direction in one layer (class mean minus the rest's "
        "mean, and a one-vs-rest linear probe's weights), project every sample onto it and log the cosine "
        "matrix between the directions.",
        epilog="example:\n  latentscape directions --run EXTRACT_RUN --layer 6",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser, DirectionsConfig)
    parser.set_defaults(handler=_run_cli)


def _run_cli(args) -> JobResult:
    from latentscape.tracking.runs import open_store

    config = from_args(DirectionsConfig, args)
    return directions(config, store=open_store(args.tracking_uri), experiment=args.experiment)


def directions(config: DirectionsConfig, *, store, experiment: str | None = None) -> JobResult:
    """Directions for every label of ``config.run`` at ``config.layer``; one ``directions`` run."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from latentscape.jobs._source import label_selection_params, load_extraction
    from latentscape.jobs.core.walk import concept_directions, cosine_matrix, project
    from latentscape.tracking.run_log import tracked_run

    # Load and validate everything before a run exists.
    extraction = load_extraction(store, config.run)
    layer = extraction.check_layer(config.layer)
    if extraction.labels is None:
        raise UsageError(f"extract run {config.run} has no labels, and concept directions are derived from labels",
                         "extract a labelled data set (--label-col naming its label column)")
    # Directions of the classes big enough to have one; rare classes and unlabelled rows
    # are left out with a note rather than stop the job.
    selection = extraction.label_selection(config.min_class_size)
    if not selection.usable:
        raise UsageError(f"extract run {config.run} has fewer than two classes of {config.min_class_size}+ samples",
                         "pass a smaller --min-class-size, or extract more samples per class")
    note = selection.note()
    if note:
        print(f"latentscape directions: note: {note}", file=sys.stderr)
    keep = selection.keep
    labels = extraction.samples[Column.LABEL].to_numpy()[keep].astype(str)
    ids = extraction.ids[keep]
    x = extraction.embedding(layer)[keep].astype(np.float64)
    experiment_name = experiment or extraction.experiment_name
    experiment_id = store.experiment_id(experiment_name)

    with tracked_run(store, experiment_id, Kind.DIRECTIONS, run_name=f"directions · layer {layer}",
                     parent_run_id=extraction.run_id, source_run_id=extraction.run_id,
                     tags={**extraction.lineage_tags(), Tag.LAYER: layer, Tag.NOTE: note}) as log:
        log.params({Param.LAYER: layer, Param.METHODS: ",".join(config.methods), Param.SEED: config.seed,
                    Param.N_CLASSES: len(np.unique(labels)), **label_selection_params(selection)})

        # One unit direction per label and method; every sample projected onto each.
        found, frames, scores = [], [], {}
        for method in config.methods:
            result = concept_directions(method, x, labels, seed=config.seed)
            found.append(result)
            log.array(Artifact.direction_vectors(method), result.vectors.astype(np.float32))
            projections = project(x, result.vectors)
            aucs = {str(name): float(roc_auc_score(labels == name, projections[:, j]))
                    for j, name in enumerate(result.classes)}
            log.metrics({Metric.qualified(Metric.qualified(Metric.DIRECTION_AUC, method), name): auc
                         for name, auc in aucs.items()})
            scores[Metric.qualified(Metric.DIRECTION_AUC, method)] = float(np.mean(list(aucs.values())))
            frames.append(_projection_frame(ids, labels, method, result.classes, projections))
        log.table(Artifact.PROJECTIONS, pd.concat(frames, ignore_index=True))

        # Angles between every pair of directions, within and across methods.
        classes = np.concatenate([d.classes for d in found])
        methods = np.concatenate([[d.method] * len(d.classes) for d in found])
        cosines = cosine_matrix(np.concatenate([d.vectors for d in found]))
        log.table(Artifact.DIRECTION_COSINES, _cosine_frame(classes, methods, cosines))
        for d in found:
            block = cosine_matrix(d.vectors)
            off_diagonal = np.abs(block[~np.eye(len(block), dtype=bool)])
            scores[Metric.qualified(Metric.MEAN_ABS_COSINE, d.method)] = float(off_diagonal.mean())
        if len(found) == 2:
            scores[Metric.METHOD_AGREEMENT] = float(np.mean(np.sum(found[0].vectors * found[1].vectors, axis=1)))
        log.metrics(scores)
        run_id = log.run_id

    return JobResult(kind=Kind.DIRECTIONS.value, run_id=run_id, experiment=experiment_name, scores=scores,
                     details={"layer": layer, "labels": len(found[0].classes), "samples": len(x)})


def _projection_frame(ids: np.ndarray, labels, method: str, classes, projections: np.ndarray) -> pd.DataFrame:
    """Long table: one row per (sample, direction)."""
    import pandas as pd

    n, c = projections.shape
    return pd.DataFrame({
        Column.SAMPLE_ID: np.repeat(ids, c), Column.LABEL: np.repeat(labels, c),
        Column.DIRECTION: np.tile(classes.astype(str), n), Column.METHOD: method,
        Column.PROJECTION: projections.ravel(),
    })


def _cosine_frame(classes, methods, cosines: np.ndarray) -> pd.DataFrame:
    """Long table: one row per ordered pair of (label, method) directions."""
    import pandas as pd

    i, j = np.indices(cosines.shape)
    return pd.DataFrame({
        Column.DIRECTION_A: classes[i.ravel()].astype(str), Column.METHOD_A: methods[i.ravel()],
        Column.DIRECTION_B: classes[j.ravel()].astype(str), Column.METHOD_B: methods[j.ravel()],
        Column.COSINE: cosines.ravel(),
    })
