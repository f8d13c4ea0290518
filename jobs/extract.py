"""``latentscape extract``: embeddings of every layer of a model, logged as one run.

One run per (model, data set digest, pooling, max length, layers, backend); running the
same extraction again returns that run unless ``--force``.

``--backend onnx`` runs an exported ONNX graph of the model (see ``latentscape.jobs._embedding``) and
checks itself: a seeded sample of the texts is encoded by the fp32 torch model too, and
each layer's linear CKA between the two must be at least ``BACKEND_MIN_CKA``, else the
run fails (the CKA of every layer is logged either way).

Memory follows the batch, not the data set: the samples are encoded a shard at a time
(``latentscape.jobs._shards``: ~64 MiB of rows over all layers), each shard's rows written
to one staged ``.npy`` a layer as they complete, and the finished files logged at the end.
A killed extraction leaves its staged shards; ``--resume`` continues from the last complete
one (the killed run, left RUNNING by SIGKILL, is ended KILLED and named by the new run's
``resume_of`` tag), and an unfinished one is never reused without it. ``--dtype float16``
halves what is stored (the model still computes in float32). ``--engine ray`` runs the
batches on Ray Data actors (``latentscape.jobs._ray_engine``); this process writes the same
shards.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from latentscape.jobs._embedding import BACKENDS
from latentscape.jobs._options import add_options, check_options, from_args, option
from latentscape.jobs._result import JobResult
from latentscape.jobs._shards import DTYPES, return_freed_memory
from latentscape.jobs._tokens import LONG_POLICIES
from latentscape.tracking.contract import DEFAULT_EXPERIMENT, TABULAR_MODEL, Artifact, Column, Kind, Metric, Param, Tag
from latentscape.tracking.errors import UsageError

__all__ = ["ExtractConfig", "extract", "prepare", "Prepared", "add_parser", "TABULAR_MODEL", "BackendAgreement", "backend_agreement",
           "BACKEND_MIN_CKA", "BACKEND_CHECK_SAMPLES", "DEFAULT_BATCH_SIZE"]

BACKEND_MIN_CKA = 0.99  # per layer, against the fp32 torch result (int8 ONNX measured 0.93-0.95 cosine)
BACKEND_CHECK_SAMPLES = 256  # texts encoded by both backends for the check
# Texts per forward pass when --batch-size is not given, measured with one batch per core
# on 2 cores: ONNX Runtime ran MiniLM 13-25% faster in batches of 16 than of 64 (the
# working set stays in cache); torch 3-8% faster in batches of 32 than of 64.
DEFAULT_BATCH_SIZE = {"torch": 32, "onnx": 16}
ENGINES = ("local", "ray")  # where the batches run: this process, or Ray Data actors


def _parse_layers(text: str) -> tuple[int, ...] | None:
    if text in ("", "all"):
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers {text!r} must be 'all' or comma-separated integers") from None


@dataclass(frozen=True)
class ExtractConfig:
    data: str = option("demo", help="'demo', 'wordnet', 'wordnet-all', 'digits', 'peptides' (modlamp's AMPvsTMset; "
                       "'peptides:NAME' for its others) or a CSV/JSONL/Parquet/FASTA file (default demo)")
    text_col: str = option("text", help="column holding the text")
    # '' on the command line: no label / id column.
    label_col: str | None = option("label", cli=lambda column: column or None,
                                   help="column holding the true label; '' for none (default label)")
    id_col: str | None = option("id", cli=lambda column: column or None,
                                help="column holding a unique sample id (default id, else row number)")
    limit: int | None = option(None, help="keep this many samples, balanced across labels")
    # None: bundled MiniLM; "none": tabular features as layer 0.
    model: str | None = option(None, help="local Hugging Face model folder or a name on the shelf (`latentscape "
                               "models`: e.g. antiberty); default: bundled all-MiniLM-L6-v2; 'none' for tabular data")
    # Checked by hand below: its unknown value is the config's one-line error, not argparse's usage.
    pooling: str = option("mean", help="mean (mask-aware), cls, max or last (default mean)")
    layers: tuple[int, ...] | None = option(None, type=_parse_layers, help="'all' or e.g. 0,3,6 (default all)")
    max_length: int = option(256, low=2, help="tokens a text is cut to (default 256; never more than the model's "
                             "positions)")
    # A text longer than max_length: truncate, or window (mean over windows).
    long: str = option("truncate", choices=LONG_POLICIES,
                       help="a text longer than that: truncate (default; the share is logged as truncated_fraction) "
                       "or window: pooled over overlapping windows, mean per layer")
    label_from_header: str | None = option(None, metavar="REGEX",
                                           help="FASTA: the label in each header line (its first group, else the "
                                           "whole match), e.g. 'class=(\\w+)'")
    labels: str | None = option(None, metavar="TABLE", help="FASTA: a CSV/TSV side table of labels joined on the id "
                                "(columns --id-col and --label-col)")
    # None: DEFAULT_BATCH_SIZE of the backend.
    batch_size: int | None = option(None, low=1, help="texts per forward pass (default 32; 16 with --backend onnx)")
    device: str = option("auto", help="auto (CUDA when present), cpu or cuda")
    threads: int | None = option(None, help="batches run at once on the CPU, one core each (default: every core "
                                 "this process may use)")
    backend: str = option("torch", choices=BACKENDS,
                          help="torch (default, the fp32 reference) or onnx: an ONNX Runtime graph of the model, "
                          "exported once and cached, faster on CPUs; the job checks its per-layer CKA against "
                          "torch on a sample and fails below 0.99")
    # How embeddings are stored; computation stays float32.
    dtype: str = option("float32", choices=DTYPES,
                        help="how embeddings are stored: float32 (default) or float16 (half the disk and memory; "
                        "the model computes in float32 either way, readers get float32)")
    resume: bool = option(False, help="continue an interrupted extraction of the same data and settings from its "
                          "last complete shard")
    fresh: bool = option(False, help="discard an interrupted extraction of the same data and settings and start over")
    engine: str = option("local", choices=ENGINES,
                         help="local (default: this process) or ray: Ray Data actors, one per GPU or CPU worker, on "
                         "the cluster at RAY_ADDRESS or a local Ray started for the job (pip install "
                         "'latentscape[ray]')")
    # Samples staged at a time; None: ~64 MiB over all layers.
    shard_rows: int | None = option(None, low=1, help="samples encoded and written to disk at a time (default: about "
                                    "64 MiB over all layers); a resume repeats at most one shard")
    force: bool = option(False, help="extract again even if an identical run exists")

    def __post_init__(self):
        from latentscape.jobs.core.pooling import POOLINGS

        check_options(self)
        if self.pooling not in POOLINGS:
            raise UsageError(f"unknown pooling {self.pooling!r}", f"choose one of {', '.join(POOLINGS)}")
        if self.resume and self.fresh:
            raise UsageError("--resume and --fresh contradict each other", "pass one of them")

    @property
    def batch(self) -> int:
        """Texts per forward pass: ``batch_size``, else the backend's default."""
        return self.batch_size or DEFAULT_BATCH_SIZE[self.backend]


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
    add_options(parser, ExtractConfig)
    parser.set_defaults(handler=_run_cli)


def _run_cli(args) -> JobResult:
    config = from_args(ExtractConfig, args)
    # The data set and the model folder are checked before MLflow is imported or a store
    # opened (measured: a missing file took 5.2 s to report when the store came first).
    prepared = prepare(config)
    from latentscape.tracking.runs import open_store

    return extract(config, store=open_store(args.tracking_uri), experiment=args.experiment, prepared=prepared)


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` loaded and checked: the data set and the model it runs through."""

    dataset: object  # latentscape.jobs.datasets.Dataset
    tabular: bool
    model_name: str
    model_path: str


def prepare(config: ExtractConfig, *, model_name: str | None = None) -> Prepared:
    """Load ``config.data`` and resolve the model: every check that needs no store.

    The file checks come before pandas is imported (``check_source``); nothing here
    imports MLflow, and torch is imported only later, to load a text model."""
    from latentscape.jobs._embedding import resolve_model
    from latentscape.jobs.datasets import check_source, load_dataset

    check_source(config.data)
    dataset = load_dataset(config.data, text_col=config.text_col, label_col=config.label_col,
                           id_col=config.id_col, limit=config.limit, label_from_header=config.label_from_header,
                           labels=config.labels)
    tabular = dataset.features is not None
    if tabular and config.model not in (None, TABULAR_MODEL):
        raise UsageError(f"data set {dataset.name!r} is tabular and has no text for model {config.model!r}",
                         "omit --model: its features are tracked as layer 0")
    if not tabular and config.model == TABULAR_MODEL:
        raise UsageError(f"data set {dataset.name!r} is text and needs a model", "omit --model or pass a model folder")
    if tabular:
        model_name, model_path = TABULAR_MODEL, ""
    else:
        default_name, path = resolve_model(config.model)
        model_name = model_name or default_name
        model_path = str(path)
    if config.backend == "onnx":
        _check_onnx_backend(config, tabular)
    if config.engine == "ray":
        if tabular:
            raise UsageError("--engine ray runs a model, and a tabular data set has none", "omit --engine")
        from latentscape.jobs._ray_engine import require_ray

        require_ray()
    return Prepared(dataset=dataset, tabular=tabular, model_name=model_name, model_path=model_path)


def extract(config: ExtractConfig, *, store, experiment: str | None = None, parent_run_id: str | None = None,
            source_run_id: str | None = None, tags: dict | None = None, model_name: str | None = None,
            prepared: Prepared | None = None) -> JobResult:
    """Embed ``config.data`` and log one ``extract`` run (or return the identical one).

    ``parent_run_id`` / ``source_run_id`` / ``tags``: lineage of an extraction made by
    another job (``finetune`` extracts each checkpoint as its child); ``model_name`` names
    the model in place of its folder's name (a checkpoint's folder is named by its step
    only, the same in every training). ``prepared``: :func:`prepare`'s result when the
    caller checked the data before opening ``store``."""
    from latentscape.jobs._progress import progress
    from latentscape.jobs._shards import shard_rows_for, staging_lock
    from latentscape.jobs.core.geometry import anisotropy, mean_norm_of_chunks
    from latentscape.tracking.run_log import tracked_run

    # Load and validate everything before a run exists.
    prepared = prepared or prepare(config, model_name=model_name)
    dataset, tabular = prepared.dataset, prepared.tabular
    model_name, model_path = prepared.model_name, prepared.model_path
    experiment_id = store.experiment_id(experiment)
    identity = {
        Tag.KIND: Kind.EXTRACT.value, Tag.MODEL: model_name, Tag.DATASET_DIGEST: dataset.digest,
        Tag.POOLING: config.pooling if not tabular else TABULAR_MODEL,
    }
    layers_param = "all" if config.layers is None else ",".join(map(str, sorted(set(config.layers))))
    max_length = config.max_length if not tabular else 0

    # Reuse an identical finished extraction.
    if not config.force:
        previous = _find_identical(store, experiment_id, identity, max_length, layers_param, config.backend,
                                   config.long, config.dtype)
        if previous is not None:
            return JobResult(kind=Kind.EXTRACT.value, run_id=previous, experiment=experiment or DEFAULT_EXPERIMENT,
                             reused=True)

    # Load the model (and export or open its ONNX graph) before a run exists, and check that
    # its tokenizer knows the first batch's tokens (a protein model fed the wrong way
    # reads every sequence as one unknown token).
    encoder = None if tabular else _load_encoder(config, dataset.texts, model_name)
    if tabular:
        return _extract_tabular(config, store, experiment, experiment_id, dataset, identity,
                                parent_run_id=parent_run_id, source_run_id=source_run_id, tags=tags)

    # Where the layers are staged as they are made; an interrupted extraction of the same
    # data and settings is resumed (--resume) or started over (--fresh), never silently.
    layers = encoder.check_layers(config.layers)
    dim = int(encoder.model.config.hidden_size)
    shard_rows = config.shard_rows or shard_rows_for(len(layers), dim, np.dtype(config.dtype).itemsize, config.batch)
    folder = _staging_folder(store, config, prepared, layers, max_length, shard_rows)
    with staging_lock(folder, f"{dataset.name} with {model_name}"):
        staged, interrupted = _open_staging(folder, config, dataset, dim, layers, shard_rows, identity)
        with staged.dropped_if_empty(), tracked_run(
                store, experiment_id, Kind.EXTRACT,
                run_name=f"{model_name.split('/')[-1]} · {dataset.name} · {identity[Tag.POOLING]}",
                parent_run_id=parent_run_id, source_run_id=source_run_id,
                tags={**identity, Tag.DATASET_NAME: dataset.name, Tag.RESUME_OF: interrupted, **(tags or {})}) as log:
            staged.claim(log.run_id)
            if interrupted:
                _end_interrupted(store, interrupted, f"interrupted; continued by run {log.run_id} (--resume)")
            samples = dataset.samples_frame()
            log.dataset(samples, name=dataset.name, source=dataset.source, digest=dataset.digest,
                        targets=Column.LABEL if dataset.labels is not None else None)
            done = staged.complete_rows if interrupted else 0
            log.params({
                Param.DATASET: dataset.name, Param.MODEL: model_name, Param.MODEL_PATH: model_path,
                Param.POOLING: identity[Tag.POOLING], Param.MAX_LENGTH: max_length, Param.BATCH_SIZE: config.batch,
                Param.LAYERS: layers_param, Param.N_SAMPLES: len(dataset), Param.N_CLASSES: dataset.n_classes,
                Param.TEXT_COL: dataset.text_col, Param.LABEL_COL: dataset.label_col, Param.ID_COL: dataset.id_col,
                Param.BACKEND: config.backend, Param.LONG: config.long, Param.DTYPE: config.dtype,
                Param.ENGINE: config.engine, Param.SHARD_ROWS: staged.shard_rows,
                Param.RESUMED_AT: done if interrupted else None,
            })
            if dataset.label_from:
                log.params({Param.LABEL_FROM: dataset.label_from})
            if config.backend == "onnx":
                runner = encoder.onnx(config.pooling, threads=config.threads)
                log.params({Param.ONNX_FILE: str(runner.path)})
                if runner.export_seconds is not None:
                    log.metrics({Metric.ONNX_EXPORT_SECONDS: runner.export_seconds})

            # Encode the shards not yet staged, writing each as it completes.
            started = time.perf_counter()
            tokens, shares = _encode(encoder, dataset.texts, config, progress, log, model_name, staged, done)
            seconds = time.perf_counter() - started
            agreement = None
            if config.backend == "onnx":
                agreement = _check_against_torch(encoder, dataset.texts, {layer: staged.mapped(layer) for layer
                                                                          in layers}, config, log, progress)

            # Log every layer: its staged file, per-layer summaries (step=layer) read back a
            # chunk at a time, throughput of the samples this run encoded.
            summary_rows = []
            for layer in layers:
                log.file(Artifact.embedding(layer), staged.path(layer))
                summary_rows.append((Metric.MEAN_NORM, mean_norm_of_chunks(staged.chunks(layer)), layer))
                summary_rows.append((Metric.ANISOTROPY, anisotropy(staged.mapped(layer)), layer))
            log.metric_rows(summary_rows)
            log.params({Param.N_LAYERS: len(layers), Param.DIM: staged.dim, Param.DEVICE: encoder.device})
            encoded = len(dataset) - done
            throughput = {Metric.EXTRACT_SECONDS: seconds, Metric.SAMPLES_PER_S: encoded / max(seconds, 1e-9),
                          Metric.TOKENS_PER_S: tokens / max(seconds, 1e-9)}
            log.metrics(throughput)
            log.table(Artifact.SAMPLES, samples)
            run_id = log.run_id
        staged.remove()  # logged: the run's artifacts are the copy that stays
    if agreement is not None:  # logged by the check; shown with the scores
        throughput[Metric.BACKEND_CKA_MIN] = agreement.min_cka

    details = {"layers": len(layers), "samples": len(dataset), "model": model_name, "dataset": dataset.name}
    if interrupted:
        details["resumed"] = f"{interrupted} at sample {done:,}"
    return JobResult(kind=Kind.EXTRACT.value, run_id=run_id, experiment=experiment or DEFAULT_EXPERIMENT,
                     scores={**shares, **throughput}, details=details)


def _extract_tabular(config: ExtractConfig, store, experiment, experiment_id: str, dataset, identity: dict, *,
                     parent_run_id, source_run_id, tags) -> JobResult:
    """A tabular data set's features as layer 0: already in memory, written in one go."""
    from latentscape.jobs.core.geometry import anisotropy, mean_norm
    from latentscape.tracking.run_log import tracked_run

    values = dataset.features.astype(config.dtype)
    with tracked_run(store, experiment_id, Kind.EXTRACT,
                     run_name=f"{TABULAR_MODEL} · {dataset.name} · {identity[Tag.POOLING]}",
                     parent_run_id=parent_run_id, source_run_id=source_run_id,
                     tags={**identity, Tag.DATASET_NAME: dataset.name, **(tags or {})}) as log:
        samples = dataset.samples_frame()
        log.dataset(samples, name=dataset.name, source=dataset.source, digest=dataset.digest,
                    targets=Column.LABEL if dataset.labels is not None else None)
        log.params({
            Param.DATASET: dataset.name, Param.MODEL: TABULAR_MODEL, Param.MODEL_PATH: "",
            Param.POOLING: identity[Tag.POOLING], Param.MAX_LENGTH: 0, Param.BATCH_SIZE: config.batch,
            Param.LAYERS: "all" if config.layers is None else ",".join(map(str, sorted(set(config.layers)))),
            Param.N_SAMPLES: len(dataset), Param.N_CLASSES: dataset.n_classes, Param.TEXT_COL: dataset.text_col,
            Param.LABEL_COL: dataset.label_col, Param.ID_COL: dataset.id_col, Param.BACKEND: config.backend,
            Param.LONG: config.long, Param.DTYPE: config.dtype, Param.N_LAYERS: 1, Param.DIM: values.shape[1],
            Param.DEVICE: "cpu",
        })
        if dataset.label_from:
            log.params({Param.LABEL_FROM: dataset.label_from})
        log.array(Artifact.embedding(0), values)
        log.metric_rows([(Metric.MEAN_NORM, mean_norm(values.astype(np.float32)), 0),
                         (Metric.ANISOTROPY, anisotropy(values), 0)])
        log.metrics({Metric.EXTRACT_SECONDS: 0.0})
        log.table(Artifact.SAMPLES, samples)
        run_id = log.run_id
    return JobResult(kind=Kind.EXTRACT.value, run_id=run_id, experiment=experiment or DEFAULT_EXPERIMENT,
                     scores={Metric.EXTRACT_SECONDS: 0.0},
                     details={"layers": 1, "samples": len(dataset), "model": TABULAR_MODEL, "dataset": dataset.name})


# -- staging -------------------------------------------------------------------------
def _staging_folder(store, config: ExtractConfig, prepared: Prepared, layers: list[int], max_length: int,
                    shard_rows: int):
    """The staging folder of this extraction: named by everything that determines its arrays
    (the shard decides which texts share a batch; the engine is left out: a Ray run and a
    local one write equal shards)."""
    from latentscape.jobs._shards import staging_key, staging_root

    key = staging_key({
        "dataset_digest": prepared.dataset.digest, "n_samples": len(prepared.dataset), "model": prepared.model_name,
        "model_path": prepared.model_path, "pooling": config.pooling, "layers": layers, "max_length": max_length,
        "long": config.long, "dtype": config.dtype, "batch": config.batch, "backend": config.backend, "shard_rows": shard_rows,
    })
    return staging_root(store.backend.folder) / key


def _open_staging(folder, config: ExtractConfig, dataset, dim: int, layers: list[int], shard_rows: int,
                  identity: dict):
    """The staged layers to write, and the id of the interrupted run they continue (None for
    a new extraction). Raises the one-line offer to --resume or --fresh when an unfinished
    extraction is there and neither was passed."""
    from latentscape.jobs._shards import StagedLayers

    existing = StagedLayers.existing(folder)
    unfinished = existing is not None and existing.run_id is not None
    if config.resume and not unfinished:
        raise UsageError(f"--resume found no interrupted extraction of {dataset.name} with these settings",
                         "drop --resume to extract from the start")
    if unfinished and not (config.resume or config.fresh):
        raise UsageError(
            f"an unfinished extraction of {dataset.name} with these settings (run {existing.run_id}, "
            f"{existing.complete_rows:,} of {existing.n_rows:,} samples) is staged in {folder}",
            "rerun with --resume to continue, or --fresh to start over")
    if unfinished and config.resume:
        existing.cut_to(existing.complete_rows)  # a shard cut short by the kill is written again
        return existing, existing.run_id
    return StagedLayers.create(folder, n_rows=len(dataset), dim=dim, layers=layers, dtype=config.dtype,
                               shard_rows=shard_rows, identity=identity), None


def _end_interrupted(store, run_id: str, reason: str) -> None:
    """End an interrupted extraction KILLED if its process died leaving it RUNNING (SIGKILL
    or a lost machine); a run that ended FAILED or KILLED already keeps its status."""
    if store.get_run(run_id).status == "RUNNING":
        store.kill(run_id, reason)


def _check_onnx_backend(config: ExtractConfig, tabular: bool) -> None:
    from latentscape.jobs._embedding import require_onnx_backend

    if tabular:
        raise UsageError("--backend onnx runs a model, and a tabular data set has none", "omit --backend")
    if config.device not in ("auto", "cpu"):
        raise UsageError(f"--backend onnx runs on the CPU, not --device {config.device}",
                         "omit --device, or run with --backend torch")
    require_onnx_backend()


def _load_encoder(config: ExtractConfig, texts, model_name: str):
    """The model, its layers checked, and its tokenizer checked on the first batch of
    ``texts``: more than MAX_UNK_FRACTION unknown tokens stop the job here, before a run,
    an ONNX export or a forward pass."""
    from latentscape.jobs import _tokens
    from latentscape.jobs._embedding import Encoder

    device = "cpu" if config.backend == "onnx" else config.device
    encoder = Encoder.load(config.model, device=device, threads=config.threads)
    encoder.check_layers(config.layers)
    first = encoder.tokenize(texts[:_tokens.UNK_CHECK_TEXTS], max_length=config.max_length, long=config.long)
    first.require_known(model=model_name, kind=encoder.input_kind,
                        where=f"the first {min(_tokens.UNK_CHECK_TEXTS, len(texts))} texts")
    if config.backend == "onnx":
        encoder.onnx(config.pooling, threads=config.threads)  # export (or read the cached graph) now
    return encoder


_TRIM_EVERY_BATCHES = 16  # malloc_trim costs about a millisecond; a batch tens of them


def _encode(encoder, texts, config: ExtractConfig, progress, log, model_name: str, staged, done: int):
    """Encode samples ``done ..`` a shard at a time into ``staged``; the tokens run through
    the model and the unknown and truncated shares."""
    # Every text tokenized, its unknown and truncated shares logged and checked before the
    # first forward pass.
    tokenized = encoder.tokenize(texts, max_length=config.max_length, long=config.long)
    log.params({Param.INPUT_KIND: encoder.input_kind})
    shares = {Metric.UNK_FRACTION: tokenized.unk_fraction, Metric.TRUNCATED_FRACTION: tokenized.truncated_fraction}
    log.metrics(shares)
    tokenized.require_known(model=model_name, kind=encoder.input_kind, where=f"the {len(texts)} texts")
    remaining = tokenized.of_texts(done, len(texts))
    shards = [(start, min(start + staged.shard_rows, len(texts))) for start in range(done, len(texts), staged.shard_rows)]
    with progress(len(remaining.owner), f"extract {len(staged.layers)} layers ({config.backend})",
                  unit="text" if len(tokenized.owner) == len(texts) else "window") as bar:
        if config.engine == "ray":
            from latentscape.jobs._ray_engine import encode_shards
        else:
            encode_shards = _encode_shards
        batches = 0

        def on_batch(rows: int) -> None:
            nonlocal batches
            bar.update(rows)
            batches += 1
            if batches % _TRIM_EVERY_BATCHES == 0:
                return_freed_memory()  # else RSS creeps up batch after batch, with the samples

        for start, pooled in encode_shards(encoder, texts, tokenized, shards, config, list(staged.layers), on_batch):
            staged.write(start, pooled)
            del pooled
            return_freed_memory()
    return int(remaining.lengths.sum()), shares


def _encode_shards(encoder, texts, tokenized, shards, config: ExtractConfig, layers: list[int], on_batch):
    """``(start, {layer: (rows, dim)})`` of each shard ``(start, stop)``, in order, encoded in
    this process (each shard's texts sorted by length and batched, as ``Encoder.encode`` does)."""
    for start, stop in shards:
        pooled, _ = encoder.encode(
            texts[start:stop], pooling=config.pooling, layers=layers, max_length=config.max_length,
            batch_size=config.batch, on_batch=on_batch, backend=config.backend, threads=config.threads,
            tokenized=tokenized.of_texts(start, stop),
        )
        yield start, pooled


# -- the backend check -------------------------------------------------------------
@dataclass(frozen=True)
class BackendAgreement:
    """How far a backend's embeddings are from the fp32 torch ones on the same samples."""

    cka: dict[int, float]  # layer -> linear CKA (NaN where a layer has no variance in the sample)
    max_abs_diff: dict[int, float]  # layer -> largest |difference| of any coordinate
    n_samples: int

    @property
    def min_cka(self) -> float:
        values = [value for value in self.cka.values() if not np.isnan(value)]
        return min(values) if values else float("nan")

    def require(self, backend: str, threshold: float = BACKEND_MIN_CKA) -> None:
        """Raise a one-line UsageError naming the first layer whose CKA is below ``threshold``
        (a layer without variance must instead match to 1e-3)."""
        for layer, value in sorted(self.cka.items()):
            if np.isnan(value):
                if self.max_abs_diff[layer] <= 1e-3:
                    continue
                problem = f"max |difference| {self.max_abs_diff[layer]:.2g} (no variance for CKA)"
            elif value >= threshold:
                continue
            else:
                problem = f"CKA {value:.4f} < {threshold}"
            raise UsageError(
                f"the {backend} backend changes layer {layer} against fp32 torch ({problem} on "
                f"{self.n_samples} samples)", "run with --backend torch",
            )


def backend_agreement(reference: dict[int, np.ndarray], candidate: dict[int, np.ndarray]) -> BackendAgreement:
    """Per-layer linear CKA (latentscape.jobs.core.similarity) and max |difference| of ``candidate``
    against ``reference``: both ``{layer: (n, dim)}`` over the same samples and layers."""
    from latentscape.jobs.core.similarity import linear_cka

    cka, diff = {}, {}
    for layer, expected in reference.items():
        got = candidate[layer]
        diff[layer] = float(np.abs(got.astype(np.float64) - expected).max())
        cka[layer] = linear_cka(got, expected) if len(expected) >= 2 else float("nan")
    return BackendAgreement(cka=cka, max_abs_diff=diff, n_samples=len(next(iter(reference.values()))))


def check_sample(n: int, size: int = BACKEND_CHECK_SAMPLES, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``min(n, size)`` samples drawn without replacement."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(n, size), replace=False))


def _check_against_torch(encoder, texts, embeddings: dict, config: ExtractConfig, log, progress) -> BackendAgreement:
    """Encode a sample with fp32 torch, log the per-layer agreement, fail below the threshold."""
    started = time.perf_counter()
    rows = check_sample(len(texts))
    with progress(len(rows), "check against torch", unit="text") as bar:
        reference, _ = encoder.encode(
            [texts[i] for i in rows], pooling=config.pooling, layers=list(embeddings),
            max_length=config.max_length, batch_size=DEFAULT_BATCH_SIZE["torch"], on_batch=bar.update,
            backend="torch", long=config.long,
        )
    agreement = backend_agreement(reference, {layer: values[rows] for layer, values in embeddings.items()})
    log.params({Param.BACKEND_CHECK_SAMPLES: agreement.n_samples})
    log.metric_rows([(Metric.BACKEND_CKA, value, layer) for layer, value in agreement.cka.items()])
    log.metrics({
        Metric.BACKEND_CKA_MIN: agreement.min_cka,
        Metric.BACKEND_MAX_ABS_DIFF: max(agreement.max_abs_diff.values()),
        Metric.BACKEND_CHECK_SECONDS: time.perf_counter() - started,
    })
    agreement.require(config.backend)
    return agreement


def _find_identical(store, experiment_id: str, identity: dict, max_length: int, layers: str,
                    backend: str, long: str = "truncate", dtype: str = "float32") -> str | None:
    runs = store.find_runs(experiment_id, tags=identity, params={Param.MAX_LENGTH: max_length, Param.LAYERS: layers},
                           status="FINISHED", newest_first=True, max_results=50)
    # Runs from before --backend, --long and --dtype existed ran torch, truncated and stored float32.
    same = [run for run in runs if run.params.get(Param.BACKEND, "torch") == backend
            and run.params.get(Param.LONG, "truncate") == long
            and run.params.get(Param.DTYPE, "float32") == dtype]
    return same[0].id if same else None
