"""``latentscape extract``: embeddings of every layer of a model, logged as one run.

One run per (model, data set digest, pooling, max length, layers); running the same
extraction again returns that run unless ``--force``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from jobs._result import JobResult
from tracking.contract import DEFAULT_EXPERIMENT, TABULAR_MODEL, Artifact, Column, Kind, Metric, Param, Tag
from tracking.errors import UsageError

__all__ = ["ExtractConfig", "extract", "add_parser", "TABULAR_MODEL"]


@dataclass(frozen=True)
class ExtractConfig:
    data: str = "demo"
    text_col: str = "text"
    label_col: str | None = "label"
    id_col: str | None = "id"
    limit: int | None = None
    model: str | None = None  # None: bundled MiniLM; "none": tabular features as layer 0
    pooling: str = "mean"
    layers: tuple[int, ...] | None = None
    max_length: int = 256
    batch_size: int = 64
    device: str = "auto"
    threads: int | None = None
    force: bool = False

    def __post_init__(self):
        from jobs.core.pooling import POOLINGS

        if self.pooling not in POOLINGS:
            raise UsageError(f"unknown pooling {self.pooling!r}", f"choose one of {', '.join(POOLINGS)}")
        if self.max_length < 2:
            raise UsageError(f"--max-length {self.max_length} is too small", "pass 2 or more (default 256)")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size} must be positive", "pass 1 or more (default 64)")


def _parse_layers(text: str) -> tuple[int, ...] | None:
    if text in ("", "all"):
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers {text!r} must be 'all' or comma-separated integers") from None


def add_parser(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "extract", parents=parents, help="embed a data set with a model and log every layer",
        description="Run a data set through a model and log the pooled embeddings of every hidden layer "
        "(embedding layer + each block) as one MLflow run. Tabular data (digits) needs no model: "
        "its features become layer 0.",
        epilog="examples:\n  latentscape extract --data demo\n  latentscape extract --data digits\n"
        "  latentscape extract --data reviews.csv --text-col body --label-col stars --model ./my-model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", default="demo", help="'demo', 'digits' or a CSV/JSONL/Parquet file (default demo)")
    parser.add_argument("--text-col", default="text", help="column holding the text (default text)")
    parser.add_argument("--label-col", default="label", help="column holding the true label; '' for none (default label)")
    parser.add_argument("--id-col", default="id", help="column holding a unique sample id (default id, else row number)")
    parser.add_argument("--limit", type=int, help="keep this many samples, balanced across labels")
    parser.add_argument("--model", help="local Hugging Face model folder (default: bundled all-MiniLM-L6-v2; 'none' for tabular data)")
    parser.add_argument("--pooling", default="mean", help="mean (mask-aware), cls, max or last (default mean)")
    parser.add_argument("--layers", type=_parse_layers, default=None, help="'all' or e.g. 0,3,6 (default all)")
    parser.add_argument("--max-length", type=int, default=256, help="truncate texts to this many tokens (default 256)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--force", action="store_true", help="extract again even if an identical run exists")
    parser.set_defaults(handler=_run_cli)


def _run_cli(args) -> JobResult:
    config = ExtractConfig(
        data=args.data, text_col=args.text_col, label_col=args.label_col or None, id_col=args.id_col or None,
        limit=args.limit, model=args.model, pooling=args.pooling, layers=args.layers,
        max_length=args.max_length, batch_size=args.batch_size, device=args.device, threads=args.threads,
        force=args.force,
    )
    from tracking.runs import open_store

    return extract(config, store=open_store(args.tracking_uri), experiment=args.experiment)


def extract(config: ExtractConfig, *, store, experiment: str | None = None) -> JobResult:
    """Embed ``config.data`` and log one ``extract`` run (or return the identical one)."""
    from jobs._embedding import DEFAULT_MODEL, resolve_model
    from jobs._progress import progress
    from jobs.datasets import load_dataset
    from tracking.runs import tracked_run

    # Load and validate everything before a run exists.
    dataset = load_dataset(config.data, text_col=config.text_col, label_col=config.label_col,
                           id_col=config.id_col, limit=config.limit)
    tabular = dataset.features is not None
    if tabular and config.model not in (None, TABULAR_MODEL):
        raise UsageError(f"data set {dataset.name!r} is tabular and has no text for model {config.model!r}",
                         "omit --model: its features are tracked as layer 0")
    if not tabular and config.model == TABULAR_MODEL:
        raise UsageError(f"data set {dataset.name!r} is text and needs a model", "omit --model or pass a model folder")
    if tabular:
        model_name, model_path = TABULAR_MODEL, ""
    else:
        model_name, path = resolve_model(config.model)
        model_path = str(path)
    experiment_id = store.experiment_id(experiment)
    identity = {
        Tag.KIND: Kind.EXTRACT.value, Tag.MODEL: model_name, Tag.DATASET_DIGEST: dataset.digest,
        Tag.POOLING: config.pooling if not tabular else TABULAR_MODEL,
    }
    layers_param = "all" if config.layers is None else ",".join(map(str, sorted(set(config.layers))))
    max_length = config.max_length if not tabular else 0

    # Reuse an identical finished extraction.
    if not config.force:
        previous = _find_identical(store, experiment_id, identity, max_length, layers_param)
        if previous is not None:
            return JobResult(kind=Kind.EXTRACT.value, run_id=previous, experiment=experiment or DEFAULT_EXPERIMENT,
                             reused=True)

    with tracked_run(store, experiment_id, Kind.EXTRACT,
                     run_name=f"{model_name.split('/')[-1]} · {dataset.name} · {identity[Tag.POOLING]}",
                     tags={**identity, Tag.DATASET_NAME: dataset.name}) as log:
        samples = dataset.samples_frame()
        log.dataset(samples, name=dataset.name, source=dataset.source, digest=dataset.digest,
                    targets=Column.LABEL if dataset.labels is not None else None)
        log.params({
            Param.DATASET: dataset.name, Param.MODEL: model_name, Param.MODEL_PATH: model_path,
            Param.POOLING: identity[Tag.POOLING], Param.MAX_LENGTH: max_length, Param.BATCH_SIZE: config.batch_size,
            Param.LAYERS: layers_param, Param.N_SAMPLES: len(dataset), Param.N_CLASSES: dataset.n_classes,
            Param.TEXT_COL: dataset.text_col, Param.LABEL_COL: dataset.label_col, Param.ID_COL: dataset.id_col,
        })
        started = time.perf_counter()
        if tabular:
            embeddings, tokens, device = {0: dataset.features.astype(np.float32)}, 0, "cpu"
        else:
            embeddings, tokens, device = _encode(dataset.texts, config, progress)
        seconds = time.perf_counter() - started

        # Log every layer: arrays, per-layer summaries (step=layer), throughput.
        from jobs.core.geometry import anisotropy, mean_norm

        summary_rows = []
        for layer, values in embeddings.items():
            log.array(Artifact.embedding(layer), values)
            summary_rows.append((Metric.MEAN_NORM, mean_norm(values), layer))
            summary_rows.append((Metric.ANISOTROPY, anisotropy(values), layer))
        log.metric_rows(summary_rows)
        log.params({Param.N_LAYERS: len(embeddings), Param.DIM: next(iter(embeddings.values())).shape[1],
                    Param.DEVICE: device})
        throughput = {Metric.EXTRACT_SECONDS: seconds}
        if not tabular:
            throughput[Metric.SAMPLES_PER_S] = len(dataset) / max(seconds, 1e-9)
            throughput[Metric.TOKENS_PER_S] = tokens / max(seconds, 1e-9)
        log.metrics(throughput)
        log.table(Artifact.SAMPLES, samples)
        run_id = log.run_id

    return JobResult(
        kind=Kind.EXTRACT.value, run_id=run_id, experiment=experiment or DEFAULT_EXPERIMENT,
        scores=throughput,
        details={"layers": len(embeddings), "samples": len(dataset), "model": model_name, "dataset": dataset.name},
    )


def _encode(texts, config: ExtractConfig, progress):
    from jobs._embedding import Encoder

    encoder = Encoder.load(config.model, device=config.device, threads=config.threads)
    layers = encoder.check_layers(config.layers)
    with progress(len(texts), f"extract {len(layers)} layers", unit="text") as bar:
        embeddings, tokens = encoder.encode(
            texts, pooling=config.pooling, layers=layers, max_length=config.max_length,
            batch_size=config.batch_size, on_batch=bar.update,
        )
    return embeddings, tokens, encoder.device


def _find_identical(store, experiment_id: str, identity: dict, max_length: int, layers: str) -> str | None:
    clauses = [f"tags.`{key}` = '{value}'" for key, value in identity.items()]
    clauses += [f"params.`{Param.MAX_LENGTH}` = '{max_length}'", f"params.`{Param.LAYERS}` = '{layers}'",
                "attributes.status = 'FINISHED'"]
    runs = store.client.search_runs([experiment_id], filter_string=" and ".join(clauses),
                                    max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None
