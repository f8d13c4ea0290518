"""``latentscape compare-models``: the same samples through several models (or checkpoints
of one), compared layer by layer.

Given extract runs A B [C ...] (or a ``finetune`` run, which stands for its base and
checkpoint extractions), matched by ``sample_id``:

- linear CKA between every layer of each run and every layer of every other run
  (``cross_cka.parquet``: run_a, run_b, layer_a, layer_b, cka; Kornblith et al.'s
  cross-model heatmap);
- per layer, CKA of each run to the first (the reference, the base of a fine-tuning);
- per layer per run, linear-probe accuracy and the cluster score: k-means with k = the
  number of classes on the raw layer, scored by AMI (``ami.kmeans``).

``model_layers.parquet`` holds the per-layer values (one row per run and layer), and
each curve is a metric ``<name>.<checkpoint>`` with ``step=layer``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from latentscape.jobs._options import add_options, check_options, from_args, option
from latentscape.jobs._result import JobResult
from latentscape.tracking.contract import Artifact, Column, Kind, Metric, Param, Tag
from latentscape.tracking.errors import UsageError

__all__ = ["CompareModelsConfig", "compare_models", "add_parser", "CLUSTER_SCORE", "cluster_score"]

# The cluster score of a layer: the layers verdict's default, k-means at k = classes on
# the raw layer, scored by AMI.
CLUSTER_SCORE = Metric.AMI_KMEANS
BASE = "base"


@dataclass(frozen=True)
class CompareModelsConfig:
    runs: tuple[str, ...] = option(nargs="+", metavar="RUN",
                                   help="extract runs (the first is the reference), or a finetune run")
    probe_folds: int = option(5, low=2, help="cross-validation folds of the probe")
    seed: int = option(0, low=0, help="seed of the probe folds and k-means")
    debiased: bool = option(False, help="debiased CKA (unbiased HSIC)")
    # Label scores leave out smaller classes (None: the probe's folds).
    min_class_size: int | None = option(None, low=1, metavar="N",
                                        help="probe and AMI leave out classes with fewer samples, and unlabelled "
                                        "rows (default and least: the probe's folds)")

    def __post_init__(self):
        object.__setattr__(self, "runs", tuple(self.runs))
        if not self.runs:
            raise UsageError("compare-models needs runs to compare", "pass --runs A B (extract runs) or a finetune run")
        check_options(self)


def add_parser(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "compare-models", parents=parents, help="compare models or checkpoints layer by layer (cross-model CKA)",
        description="Linear CKA between every layer of each extraction and every layer of the others on the "
        "shared samples (matched by sample_id), per-layer CKA of each to the first (the base), and probe "
        "accuracy and k-means AMI per layer per run. A finetune run stands for its base and checkpoint "
        "extractions.",
        epilog="examples:\n  latentscape compare-models --runs BASE_EXTRACT_RUN TUNED_EXTRACT_RUN\n"
        "  latentscape compare-models --runs FINETUNE_RUN",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser, CompareModelsConfig)
    parser.set_defaults(handler=_run_cli)


def _run_cli(args) -> JobResult:
    config = from_args(CompareModelsConfig, args)
    from latentscape.tracking.runs import open_store

    return compare_models(config, store=open_store(args.tracking_uri), experiment=args.experiment)


def cluster_score(x: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> float:
    """AMI of k-means (k = number of classes of ``labels: (n,)``) on ``x: (n, d)``."""
    from latentscape.jobs.core.scores import label_scores
    from latentscape.jobs.core.verdict import kmeans_at_classes

    return float(label_scores(labels, kmeans_at_classes(x, labels, seed=seed))[Metric.AMI])


def compare_models(config: CompareModelsConfig, *, store, experiment: str | None = None,
                   parent_run_id: str | None = None, source_run_id: str | None = None) -> JobResult:
    """Compare the extractions of ``config.runs`` and log one ``compare_models`` run."""
    from latentscape.jobs._progress import progress
    from latentscape.jobs._source import label_selection_params
    from latentscape.jobs.core.probes import probe_accuracy
    from latentscape.jobs.core.similarity import cross_cka
    from latentscape.tracking.run_log import tracked_run

    # Load and validate everything before a run exists.
    extractions, training = _expand(store, config.runs)
    if len(extractions) < 2:
        raise UsageError(f"compare-models needs two or more extractions, got {len(extractions)}",
                         "pass --runs A B (extract runs), or a finetune run that extracted its checkpoints")
    reference = extractions[0]
    orders = [_aligned_rows(reference, other) for other in extractions]
    # The probe needs every class in every fold: smaller classes and unlabelled rows are
    # left out of the label scores, never a reason to stop.
    selection = reference.label_selection(max(config.min_class_size or 0, config.probe_folds))
    notes = [note] if (note := selection.note()) else []
    labels = keep = None
    if not selection.usable:
        notes.append("fewer than two labelled classes are big enough: probe accuracy and k-means AMI skipped")
    else:
        keep = selection.keep[orders[0]]
        labels = reference.samples[Column.LABEL].to_numpy()[orders[0]][keep].astype(str)
    names = _display_names(extractions)
    steps = [int(e.tags.get(Tag.CHECKPOINT_STEP, index)) for index, e in enumerate(extractions)]
    layers = [[e.embedding(layer)[order] for layer in e.layers] for e, order in zip(extractions, orders)]
    parent = parent_run_id or training or reference.run_id
    experiment_name = experiment or reference.experiment_name
    experiment_id = store.experiment_id(experiment_name)
    for note in notes:
        print(f"latentscape compare-models: note: {note}", file=sys.stderr)

    with tracked_run(store, experiment_id, Kind.COMPARE_MODELS,
                     run_name=f"compare-models · {len(extractions)} runs · {reference.tags.get(Tag.DATASET_NAME, '')}",
                     parent_run_id=parent, source_run_id=source_run_id or parent,
                     tags={**reference.lineage_tags(), Tag.NOTE: "; ".join(notes) or None}) as log:
        log.params({Param.RUNS: ",".join(e.run_id for e in extractions), Param.N_SAMPLES: len(orders[0]),
                    Param.PROBE_FOLDS: config.probe_folds, Param.SEED: config.seed, Param.DEBIASED: config.debiased,
                    **label_selection_params(selection)})

        # Every layer of each run against every layer of every other run.
        cross_rows = []
        with progress(len(extractions) * (len(extractions) - 1) // 2, "cross-model CKA", unit="pair") as bar:
            for i in range(len(extractions)):
                for j in range(i + 1, len(extractions)):
                    matrix = cross_cka(layers[i], layers[j], debiased=config.debiased)
                    a, b = np.meshgrid(extractions[i].layers, extractions[j].layers, indexing="ij")
                    cross_rows.append(pd.DataFrame({
                        Column.RUN_A: extractions[i].run_id, Column.RUN_B: extractions[j].run_id,
                        Column.LAYER_A: a.ravel(), Column.LAYER_B: b.ravel(), Column.CKA: matrix.ravel()}))
                    bar.update()
        cross = pd.concat(cross_rows, ignore_index=True)

        # Each run's layers: CKA to the reference's same layer, probe accuracy, clusters.
        to_base = cross[cross[Column.RUN_A] == reference.run_id]
        to_base = to_base[to_base[Column.LAYER_A] == to_base[Column.LAYER_B]]
        rows = []
        # One BLAS thread, as the layers job measures: small products, slowed by a second thread.
        from threadpoolctl import threadpool_limits

        with progress(sum(len(e.layers) for e in extractions), "probe layers", unit="layer") as bar, \
                threadpool_limits(limits=1):
            for index, (extraction, values) in enumerate(zip(extractions, layers)):
                for layer, x in zip(extraction.layers, values):
                    row = {Column.RUN_ID: extraction.run_id, Column.STEP: steps[index],
                           Column.CHECKPOINT: names[index], Column.LAYER: layer}
                    if index == 0:
                        row[Metric.CKA_TO_BASE] = 1.0
                    else:
                        found = to_base[(to_base[Column.RUN_B] == extraction.run_id) & (to_base[Column.LAYER_A] == layer)]
                        row[Metric.CKA_TO_BASE] = float(found[Column.CKA].iloc[0]) if len(found) else np.nan
                    if labels is not None:
                        x = x[keep]
                        row[Metric.PROBE_ACCURACY] = probe_accuracy(x, labels, folds=config.probe_folds,
                                                                    seed=config.seed).mean
                        row[CLUSTER_SCORE] = cluster_score(x, labels, seed=config.seed)
                    rows.append(row)
                    bar.update()
        table = pd.DataFrame(rows)
        curves = [name for name in (Metric.CKA_TO_BASE, Metric.PROBE_ACCURACY, CLUSTER_SCORE) if name in table]
        log.metric_rows([
            (Metric.qualified(name, str(row[Column.CHECKPOINT])), float(row[name]), int(row[Column.LAYER]))
            for row in table.to_dict("records") for name in curves if np.isfinite(row[name])
        ])
        log.table(Artifact.CROSS_CKA, cross)
        log.table(Artifact.MODEL_LAYERS, table)
        run_id = log.run_id

    return JobResult(kind=Kind.COMPARE_MODELS.value, run_id=run_id, experiment=experiment_name,
                     scores=_headline(table, reference.run_id, extractions[-1].run_id),
                     details={"runs": len(extractions), "samples": len(orders[0]),
                              "compared": ", ".join(names)})


def _headline(table: pd.DataFrame, reference: str, last: str) -> dict[str, float]:
    """CKA of the last run to the reference at layer 1 and at the last layer; probe
    accuracy at the last layer of both."""
    scores = {}
    mine = table[table[Column.RUN_ID] == last].set_index(Column.LAYER)
    base = table[table[Column.RUN_ID] == reference].set_index(Column.LAYER)
    top = int(mine.index.max())
    if 1 in mine.index:
        scores["cka_to_base_layer_1"] = float(mine.loc[1, Metric.CKA_TO_BASE])
    scores["cka_to_base_last_layer"] = float(mine.loc[top, Metric.CKA_TO_BASE])
    if Metric.PROBE_ACCURACY in table and top in base.index:
        scores["probe_accuracy_last_layer_base"] = float(base.loc[top, Metric.PROBE_ACCURACY])
        scores["probe_accuracy_last_layer"] = float(mine.loc[top, Metric.PROBE_ACCURACY])
    return scores


def _expand(store, run_ids: tuple[str, ...]):
    """The extractions of ``run_ids`` in order; a finetune run becomes its child
    extractions in checkpoint order (the base first). Returns ``(extractions, training)``
    where ``training`` is the finetune run every extraction derives from, else None."""
    from latentscape.jobs._source import load_extraction

    extractions = []
    for run_id in run_ids:
        run = store.get_run(run_id)
        if run.kind == Kind.FINETUNE.value:
            children = run.params.get(Param.RUNS, "")
            if not children:
                raise UsageError(f"finetune run {run_id} extracted no checkpoints",
                                 "pass extract runs, or fine-tune again without --no-extract")
            extractions.extend(load_extraction(store, child) for child in children.split(","))
        else:
            extractions.append(load_extraction(store, run_id))
    sources = {e.tags.get(Tag.SOURCE_RUN, "") for e in extractions}
    training = None
    if len(sources) == 1 and (source := sources.pop()):
        if store.get_run(source).kind == Kind.FINETUNE.value:
            training = source
    return extractions, training


def _aligned_rows(reference, other) -> np.ndarray:
    """Row indices that put ``other``'s samples in ``reference``'s order (by sample_id);
    a one-line error naming the mismatch when the two hold different samples or labels."""
    ids, theirs = reference.ids, other.ids
    if len(set(theirs)) != len(theirs):
        raise UsageError(f"extract run {other.run_id} has repeated sample ids", "extract with a unique --id-col")
    only_ref = sorted(set(ids) - set(theirs))
    only_other = sorted(set(theirs) - set(ids))
    if only_ref or only_other:
        def some(values):
            return ", ".join(repr(v) for v in values[:3]) + (" ..." if len(values) > 3 else "")

        parts = []
        if only_ref:
            parts.append(f"{len(only_ref)} only in {reference.run_id} ({some(only_ref)})")
        if only_other:
            parts.append(f"{len(only_other)} only in {other.run_id} ({some(only_other)})")
        raise UsageError(f"extract runs {reference.run_id} and {other.run_id} hold different samples: "
                         + "; ".join(parts), "extract both from the same data (--data, --limit, --id-col)")
    order = pd.Index(theirs).get_indexer(ids)
    if reference.labels is not None and other.labels is not None \
            and not np.array_equal(reference.labels, other.labels[order]):
        raise UsageError(f"extract runs {reference.run_id} and {other.run_id} label the same samples differently",
                         "extract both with the same --label-col")
    return order


def _display_names(extractions) -> list[str]:
    """``base`` / ``step N`` for a fine-tuning's extractions, else the model and run id."""
    names = []
    for e in extractions:
        step = e.tags.get(Tag.CHECKPOINT_STEP)
        if step is not None:
            name = BASE if int(step) == 0 else f"step {int(step)}"
        else:
            name = f"{e.model.split('/')[-1]} {e.run_id[:6]}"
        while name in names:
            name = f"{name} {e.run_id[:6]}"
        names.append(name)
    return names
