"""``latentscape sae``: what else does this layer encode? A dictionary of sparse features.

Recipe: load one layer of an extraction (its pooled embeddings, or with ``--tokens`` the
token activations re-extracted from the run's model); train a TopK sparse autoencoder
(:mod:`latentscape.jobs._sae`, Gao et al. 2024) on all but a held-out share of the rows; score it
(normalised MSE and variance explained on the training and the held-out rows, L0, the
dead-feature fraction, the loss per step); describe every feature
(:func:`feature_table`); log one ``sae`` run, a child of the extraction, with the
weights as safetensors. ``--from-run`` retrains from a logged run's params (an ``sae`` run
or an SAE sweep trial) and logs how far the new weights and scores are from the old.

The pieces a sweep reuses: :func:`settings_for`, :func:`sae_params`, :func:`fit`,
:func:`config_from_params`.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from latentscape.jobs._options import add_options, from_args, option
from latentscape.jobs._result import JobResult
from latentscape.jobs._sae import DEFAULT_EXPANSION, SaeSettings
from latentscape.tracking.contract import TABULAR_MODEL, Artifact, Column, Kind, Metric, Param, Tag
from latentscape.tracking.errors import UsageError

__all__ = ["SaeConfig", "SaeData", "SaeFit", "sae", "add_parser", "load_data", "settings_for", "fit", "log_fit",
           "sae_params", "config_from_params", "feature_table", "find_directions", "replay_diff", "SCORE_NAMES",
           "DIRECTIONS", "KEYWORDS"]

# The natural direction of each score (sweep objectives).
DIRECTIONS = {Metric.NMSE: "minimize", Metric.VARIANCE_EXPLAINED: "maximize", Metric.holdout(Metric.NMSE): "minimize",
              Metric.holdout(Metric.VARIANCE_EXPLAINED): "maximize", Metric.L0: "minimize",
              Metric.DEAD_FRACTION: "minimize"}

# Every score a fit logs, so sweeps and replays can compare them by name.
SCORE_NAMES = (Metric.NMSE, Metric.VARIANCE_EXPLAINED, Metric.holdout(Metric.NMSE),
               Metric.holdout(Metric.VARIANCE_EXPLAINED), Metric.L0, Metric.DEAD_FRACTION)
KEYWORDS = 6  # c-TF-IDF terms kept per feature


@dataclass(frozen=True)
class SaeConfig(SaeSettings):
    """What ``latentscape sae`` does, validated once, logged whole: the training settings
    (:class:`SaeSettings`, the options of its ``training`` group) and what to train on.
    ``features`` None: 8 x the layer's width (checked against ``k`` once the width is
    known)."""

    features: int | None = option(None, low=1, help="dictionary size (default: 8 x the layer's width)")
    run: str | None = option(None, metavar="EXTRACT_RUN", help="id of an extract run")
    layer: int | None = option(None, help="layer to train on (default: the last one)")
    tokens: bool = option(False, help="train on token activations re-extracted from the run's model (needs its model)")
    max_tokens: int = option(20000, low=1, help="with --tokens: at most this many tokens")
    top_samples: int = option(10, low=1, help="top-activating samples kept per feature")
    directions_run: str | None = option(None, metavar="RUN_ID", help="directions run to compare features with "
                                        "(default: the newest of this extraction and layer, if any)")
    from_run: str | None = option(None, metavar="RUN_ID", help="retrain from a logged sae run or SAE sweep trial")

    def __post_init__(self):
        super().__post_init__()  # every option's bounds, the learning rate, holdout and device
        if self.features is not None and self.k > self.features:
            raise UsageError(f"--k {self.k} is more than --features {self.features}: TopK keeps k of the features",
                             f"pass --k at most {self.features}, or more --features")
        if self.from_run is None and not self.run:
            raise UsageError("no extraction to train on", "pass --run EXTRACT_RUN (an id printed by `latentscape "
                             "extract`), or --from-run SAE_RUN to replay one")


_TRAINING = tuple(field.name for field in fields(SaeSettings))  # the options of the `training` group


# -- command line --------------------------------------------------------------------
def add_parser(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "sae", parents=parents, help="sparse features of a layer: a TopK sparse autoencoder (logged as a run)",
        description="Train a TopK sparse autoencoder (Gao et al. 2024: TopK activation, unit-norm decoder rows, "
        "AuxK loss for dead latents, tied pre-bias) on one layer of an extraction: its pooled embeddings, or "
        "with --tokens the token activations re-extracted from the run's model. Logs an `sae` run (child of the "
        "extraction): normalised MSE and variance explained (also on the held-out rows), L0, dead fraction, the "
        "loss per step; the weights as safetensors; features.parquet (density, top samples, c-TF-IDF keywords, "
        "the label each feature separates best and its AUC, cosine to the `directions` run's label directions).",
        epilog="examples:\n  latentscape sae --run EXTRACT_RUN --layer 6\n"
        "  latentscape sae --run EXTRACT_RUN --layer 6 --features 3072 --k 16 --epochs 100\n"
        "  latentscape sae --run EXTRACT_RUN --layer 4 --tokens --max-tokens 20000\n"
        "  latentscape sae --from-run SAE_OR_TRIAL_RUN      # retrain from its logged settings\n"
        "  latentscape sweep --run EXTRACT_RUN --layer 6 --target sae --trials 10   # search features, k, lr",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser, SaeConfig, skip=_TRAINING)
    add_options(parser.add_argument_group("training"), SaeConfig,
                skip=[field.name for field in fields(SaeConfig) if field.name not in _TRAINING])
    parser.set_defaults(handler=_run_cli)


def _run_cli(args) -> JobResult:
    if args.from_run and (args.run or args.layer is not None or args.features is not None or args.tokens):
        raise UsageError("--from-run retrains with a logged run's settings and takes no --run, --layer, "
                         "--features or --tokens", "drop them, or drop --from-run")
    config = from_args(SaeConfig, args)
    from latentscape.tracking.runs import open_store

    return sae(config, store=open_store(args.tracking_uri), experiment=args.experiment)


# -- the data --------------------------------------------------------------------------
@dataclass
class SaeData:
    """The rows an SAE trains on: ``x: (m, d)``; ``sample: (m,)`` the sample index of each
    row (``arange(n)`` for pooled embeddings); ``tokens: (m,)`` the token of each row (None
    for pooled embeddings)."""

    extraction: Any
    layer: int
    x: np.ndarray
    sample: np.ndarray
    tokens: np.ndarray | None = None


def check_tokens(extraction) -> None:
    """UsageError unless ``extraction`` names a model its tokens can be re-extracted with."""
    from pathlib import Path

    path = extraction.model_path
    if extraction.model in ("", TABULAR_MODEL) or not path or not (Path(path) / "config.json").is_file():
        raise UsageError(f"extract run {extraction.run_id} has no model to re-extract token activations with "
                         f"(model {extraction.model or 'none'!r})",
                         "drop --tokens (train on the pooled embeddings), or pass an extraction of a text model")


def load_data(extraction, layer: int, *, tokens: bool = False, max_tokens: int = 20000, seed: int = 0) -> SaeData:
    """The layer's pooled embeddings, or its token activations (samples in a seeded
    order until ``max_tokens``), re-extracted with the run's model, pooling aside."""
    if not tokens:
        x = extraction.embedding(layer)
        return SaeData(extraction, layer, x, np.arange(len(x)))
    check_tokens(extraction)
    from latentscape.jobs._embedding import Encoder
    from latentscape.jobs._progress import progress

    order = np.random.default_rng(seed).permutation(len(extraction.samples))
    encoder = Encoder.load(extraction.model_path)
    with progress(len(order), "token activations", unit="text") as bar:
        x, owner, words = encoder.token_states(list(extraction.texts[order]), layer=layer,
                                               max_length=extraction.max_length or 256, max_tokens=max_tokens,
                                               on_batch=bar.update)
    return SaeData(extraction, layer, x, order[owner], words)


def settings_for(config: SaeConfig, dim: int):
    """The training settings of ``config`` on data of width ``dim`` (UsageError when k
    exceeds the resolved dictionary size)."""
    features = config.features or DEFAULT_EXPANSION * dim
    if config.k > features:
        raise UsageError(f"--k {config.k} is more than the {features} features", f"pass --k at most {features}")
    return SaeSettings(**{name: getattr(config, name) for name in _TRAINING if name != "features"}, features=features)


# -- fitting and scoring ----------------------------------------------------------------
@dataclass
class SaeFit:
    """A trained SAE, its codes of every row (``(m, features)`` float32) and its scores
    (named as SCORE_NAMES) and durations (``train_seconds``)."""

    model: Any
    codes: np.ndarray
    scores: dict[str, float]
    durations: dict[str, float]


def fit(data: SaeData, settings, *, on_epoch=None) -> SaeFit:
    """Train on ``data`` and score on its training and held-out rows."""
    from latentscape.jobs._sae import train_sae
    from latentscape.jobs.core.sae_scores import dead_fraction, l0, reconstruction

    groups = data.sample if data.tokens is not None else None
    model = train_sae(data.x, settings, groups=groups, on_epoch=on_epoch)
    codes = model.encode(data.x)
    train, test = model.train_rows, model.test_rows
    nmse, explained = reconstruction(data.x[train], model.reconstruct(data.x[train]), model.mean)
    held_nmse, held_explained = reconstruction(data.x[test], model.reconstruct(data.x[test]), model.mean)
    scores = {Metric.NMSE: nmse, Metric.VARIANCE_EXPLAINED: explained, Metric.holdout(Metric.NMSE): held_nmse,
              Metric.holdout(Metric.VARIANCE_EXPLAINED): held_explained, Metric.L0: l0(codes),
              Metric.DEAD_FRACTION: dead_fraction(codes)}
    return SaeFit(model, codes, scores, {Metric.TRAIN_SECONDS: model.seconds})


def sae_params(config: SaeConfig, settings, data: SaeData) -> dict[str, Any]:
    """The run's params: every resolved setting, enough for :func:`config_from_params`."""
    return {
        Param.LAYER: data.layer, Param.FEATURES: settings.features, Param.K: settings.k, Param.EPOCHS: settings.epochs,
        Param.LEARNING_RATE: settings.learning_rate, Param.BATCH_SIZE: settings.batch_size,
        Param.AUX_K: min(settings.aux_k or 2 * settings.k, settings.features), Param.AUX_COEF: settings.aux_coef,
        Param.DEAD_AFTER: settings.dead_after, Param.HOLDOUT: settings.holdout, Param.SEED: settings.seed,
        Param.TOKENS: config.tokens, Param.MAX_TOKENS: config.max_tokens if config.tokens else None,
        Param.N_ROWS: len(data.x), Param.DIM: int(data.x.shape[1]), Param.TOP_SAMPLES: config.top_samples,
    }


def config_from_params(params: dict[str, str], *, run: str) -> SaeConfig:
    """The SaeConfig of a logged ``sae`` run or SAE sweep trial (its params are strings)."""

    def optional(name: str):
        value = params.get(name)
        return None if value in (None, "None", "") else int(value)

    try:
        return SaeConfig(
            run=run, layer=int(params[Param.LAYER]), features=int(params[Param.FEATURES]), k=int(params[Param.K]),
            epochs=int(params[Param.EPOCHS]), learning_rate=float(params[Param.LEARNING_RATE]),
            batch_size=int(params[Param.BATCH_SIZE]), aux_k=optional(Param.AUX_K),
            aux_coef=float(params[Param.AUX_COEF]), dead_after=optional(Param.DEAD_AFTER),
            holdout=float(params[Param.HOLDOUT]), seed=int(params[Param.SEED]),
            tokens=params.get(Param.TOKENS) == "True", max_tokens=optional(Param.MAX_TOKENS) or 20000,
            top_samples=int(params.get(Param.TOP_SAMPLES, 10)),
            directions_run=None if params.get(Param.DIRECTIONS_RUN) in (None, "None", "") else params[Param.DIRECTIONS_RUN],
        )
    except KeyError as error:
        raise UsageError(f"the run's params lack {error.args[0]!r}: it is not an sae run or SAE trial",
                         "pass the id of an `latentscape sae` run or of a trial of `sweep --target sae`") from None


# -- what each feature means ----------------------------------------------------------
def sample_codes(codes: np.ndarray, sample: np.ndarray, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample activations: ``(samples (s,), codes (s, features))``, the largest
    activation over each sample's rows (one row each for pooled embeddings); only
    samples with rows."""
    present = np.unique(sample)
    if len(present) == len(sample) and np.array_equal(sample, np.arange(len(sample))):
        return present, codes
    out = np.zeros((n_samples, codes.shape[1]), dtype=codes.dtype)
    np.maximum.at(out, sample, codes)
    return present, out[present]


LABEL_AUC_MIN_CLASS_SIZE = 2


def feature_table(codes: np.ndarray, data: SaeData, *, top: int = 10, decoder: np.ndarray | None = None,
                  directions=None) -> tuple[Any, Any]:
    """``(features.parquet, feature_labels.parquet)`` frames for ``codes: (m, features)``.

    Per feature: density and mean activation over the rows; its ``top`` rows (sample ids,
    texts, activations, tokens with --tokens); c-TF-IDF keywords of those texts (the
    cluster-label code: a feature's top texts are its document); with labels, the label
    its per-sample activation separates best and that AUC; with ``decoder: (features, d)``
    and ``directions`` (classes (c,), vectors (c, d)), the label direction of largest
    |cosine| to its decoder row and that (signed) cosine."""
    import pandas as pd

    from latentscape.jobs.core.cluster_labels import class_tfidf
    from latentscape.jobs.core.sae_scores import density, feature_label_auc, top_rows

    extraction = data.extraction
    ids, texts, labels = extraction.ids, extraction.texts, extraction.labels
    n_features = codes.shape[1]
    fired = np.count_nonzero(codes, axis=0)
    rows, values = top_rows(codes, top)
    keep = values > 0
    owners = data.sample[rows]  # (features, top) sample index of each top row
    frame = pd.DataFrame({
        Column.FEATURE: np.arange(n_features),
        Column.DENSITY: density(codes),
        Column.MEAN_ACTIVATION: np.where(fired > 0, codes.sum(axis=0) / np.maximum(fired, 1), 0.0),
        Column.TOP_SAMPLES: [list(ids[o[m]]) for o, m in zip(owners, keep)],
        Column.TOP_TEXTS: [list(texts[o[m]]) for o, m in zip(owners, keep)],
        Column.TOP_ACTIVATIONS: [list(v[m].astype(float)) for v, m in zip(values, keep)],
        Column.TOP_TOKENS: ([list(data.tokens[r[m]].astype(str)) for r, m in zip(rows, keep)]
                            if data.tokens is not None else [[] for _ in range(n_features)]),
    })
    # Keywords: each feature's distinct top texts form one document.
    docs, groups = [], []
    for feature, (o, m) in enumerate(zip(owners, keep)):
        for sample in dict.fromkeys(o[m].tolist()):
            docs.append(texts[sample])
            groups.append(feature)
    keywords = class_tfidf(docs, np.asarray(groups, dtype=np.int64), top=KEYWORDS) if docs else {}
    frame[Column.KEYWORDS] = [[w for w, _ in keywords.get(f, [])] for f in range(n_features)]
    frame[Column.KEYWORD_SCORES] = [[s for _, s in keywords.get(f, [])] for f in range(n_features)]

    label_frame = pd.DataFrame(columns=[Column.FEATURE, Column.LABEL, Column.AUC])
    frame[Column.BEST_LABEL], frame[Column.AUC] = None, math.nan
    if labels is not None and len(np.unique(labels)) >= 2:
        present, per_sample = sample_codes(codes, data.sample, len(ids))
        # A class of one sample has no AUC worth reading, and an unlabelled row no class.
        labelled = extraction.label_selection(LABEL_AUC_MIN_CLASS_SIZE).keep[present]
        per_sample, present = per_sample[labelled], present[labelled]
        if len(np.unique(labels[present])) >= 2:
            classes, auc = feature_label_auc(per_sample, labels[present])
            best = auc.argmax(axis=1)
            frame[Column.BEST_LABEL] = classes[best].astype(str)
            frame[Column.AUC] = auc[np.arange(n_features), best]
            label_frame = pd.DataFrame({Column.FEATURE: np.repeat(np.arange(n_features), len(classes)),
                                        Column.LABEL: np.tile(classes.astype(str), n_features),
                                        Column.AUC: auc.ravel()})
    frame[Column.DIRECTION_LABEL], frame[Column.DIRECTION_COSINE] = None, math.nan
    if directions is not None and decoder is not None:
        classes, vectors = directions
        cosines = _unit(decoder) @ _unit(vectors).T  # (features, c)
        nearest = np.abs(cosines).argmax(axis=1)
        frame[Column.DIRECTION_LABEL] = np.asarray(classes).astype(str)[nearest]
        frame[Column.DIRECTION_COSINE] = cosines[np.arange(n_features), nearest]
    return frame, label_frame


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def find_directions(store, extraction, layer: int, run_id: str | None):
    """(run id, (classes, (c, d) vectors)) of the named directions run, else of the newest
    finished one of this extraction at this layer (any experiment); (None, None) when there
    is none."""
    from latentscape.tracking.runs import load_array

    if run_id is None:  # in any experiment: a job may log to another than its extraction's
        found = store.find_runs(store.experiment_ids(), kind=Kind.DIRECTIONS,
                                tags={Tag.SOURCE_RUN: extraction.run_id, Tag.LAYER: layer}, status="FINISHED",
                                newest_first=True, max_results=1)
        if not found:
            return None, None
        run_id = found[0].id
    run = store.get_run(run_id)
    if run.kind != Kind.DIRECTIONS.value or run.tags.get(Tag.SOURCE_RUN) != extraction.run_id:
        raise UsageError(f"run {run_id} is not a directions run of extract run {extraction.run_id}",
                         "pass --directions-run a `latentscape directions` run of the same extraction, or omit it")
    if run.tags.get(Tag.LAYER) != str(layer):
        raise UsageError(f"directions run {run_id} is of layer {run.tags.get(Tag.LAYER)}, not {layer}",
                         f"run `latentscape directions --run {extraction.run_id} --layer {layer}` first")
    method = (run.params.get(Param.METHODS) or "mean_difference").split(",")[0]
    vectors = load_array(store, run_id, Artifact.direction_vectors(method))
    # The directions job's rows: the classes it kept, in sorted order.
    classes = np.asarray(extraction.label_selection(int(run.params.get(Param.MIN_CLASS_SIZE) or 1)).classes_kept)
    return run_id, (classes, vectors)


def sae(config: SaeConfig, *, store, experiment: str | None = None) -> JobResult:
    """Train and log one ``sae`` run (or, with ``from_run``, a replay of one)."""
    from latentscape.jobs._progress import progress
    from latentscape.jobs._source import load_extraction
    from latentscape.tracking.run_log import tracked_run

    replay_of, logged = None, None
    if config.from_run:
        logged = store.get_run(config.from_run)
        replay_of = config.from_run
        config = config_from_params(dict(logged.params), run=logged.tags.get(Tag.SOURCE_RUN, ""))

    # Load and validate everything before a run exists.
    extraction = load_extraction(store, config.run)
    layer = max(extraction.layers) if config.layer is None else extraction.check_layer(config.layer)
    if config.tokens:
        check_tokens(extraction)
    dim = int(extraction.params.get(Param.DIM) or extraction.embedding(layer).shape[1])
    settings = settings_for(config, dim)
    directions_run, directions = (find_directions(store, extraction, layer, config.directions_run)
                                  if extraction.labels is not None else (None, None))
    data = load_data(extraction, layer, tokens=config.tokens, max_tokens=config.max_tokens, seed=config.seed)
    if len(data.x) < 4:
        raise UsageError(f"layer {layer} of run {extraction.run_id} has {len(data.x)} rows, too few to train and "
                         "hold some out", "extract more samples")
    experiment_name = experiment or extraction.experiment_name
    experiment_id = store.experiment_id(experiment_name)

    tags = {**extraction.lineage_tags(), Tag.LAYER: layer, Tag.REPLAY_OF: replay_of}
    name = f"sae · layer {layer} · {settings.features}x k{settings.k}" + (" · tokens" if config.tokens else "")
    with tracked_run(store, experiment_id, Kind.SAE, run_name=name, parent_run_id=extraction.run_id,
                     source_run_id=extraction.run_id, tags=tags) as log:
        log.params({**sae_params(config, settings, data), Param.DIRECTIONS_RUN: directions_run})
        log.json(Artifact.CONFIG, {**asdict(replace(config, from_run=None)), Param.FEATURES: settings.features,
                                   Param.LAYER: layer})

        # Train, then score on the training and the held-out rows.
        with progress(settings.epochs, "sae epochs", unit="epoch") as bar:
            result = fit(data, settings, on_epoch=bar.update)
        log.params({Param.DEVICE: result.model.device})
        scores, weights = log_fit(log, result, data, top=config.top_samples, directions=directions)

        # A replay: how far the new weights and scores are from the logged ones.
        if replay_of is not None:
            diff = replay_diff(store, replay_of, logged, result, weights)
            scores[Metric.REPLAY_MAX_ABS_DIFF] = diff
            log.metrics({Metric.REPLAY_MAX_ABS_DIFF: diff})
        run_id = log.run_id

    details = {"layer": layer, "features": settings.features, "k": settings.k, "rows": len(data.x),
               "device": result.model.device, "directions_run": directions_run}
    if replay_of:
        details["replay_of"] = replay_of
    return JobResult(kind=Kind.SAE.value, run_id=run_id, experiment=experiment_name, scores=scores, details=details)


def log_fit(log, result: SaeFit, data: SaeData, *, top: int = 10, directions=None) -> tuple[dict[str, float], bytes]:
    """Log a fitted SAE into ``log``: its scores, the loss per step, the weights
    (safetensors) and what each feature means (features.parquet, feature_labels.parquet,
    activations.parquet). Returns (scores with labels_covered, the weights' bytes)."""
    from latentscape.jobs.core.sae_scores import AUC_COVERED

    log.metrics({**result.scores, **result.durations})
    log.metric_rows([(Metric.LOSS, value, step) for step, value in enumerate(result.model.losses)])
    weights = result.model.to_bytes()
    log.bytes(Artifact.SAE_WEIGHTS, weights)
    features, feature_labels = feature_table(result.codes, data, top=top, decoder=result.model.decoder,
                                             directions=directions)
    log.table(Artifact.FEATURES, features)
    log.table(Artifact.FEATURE_LABELS, feature_labels)
    log.table(Artifact.ACTIVATIONS, _activation_frame(result.codes, data))
    scores = dict(result.scores)
    if not feature_labels.empty:
        best = feature_labels.groupby(Column.LABEL)[Column.AUC].max()
        scores[Metric.LABELS_COVERED] = float((best >= AUC_COVERED).sum())
        log.metrics({Metric.LABELS_COVERED: scores[Metric.LABELS_COVERED]})
    return scores, weights


def _activation_frame(codes: np.ndarray, data: SaeData):
    """``activations.parquet``: sample_id, feature, activation: each sample's nonzero
    activations (the largest over its tokens with --tokens)."""
    import pandas as pd

    present, per_sample = sample_codes(codes, data.sample, len(data.extraction.ids))
    rows, features = np.nonzero(per_sample)
    return pd.DataFrame({Column.SAMPLE_ID: data.extraction.ids[present][rows], Column.FEATURE: features.astype(np.int64),
                         Column.ACTIVATION: per_sample[rows, features].astype(np.float32)})


def replay_diff(store, run_id: str, logged, result: SaeFit, weights: bytes) -> float:
    """Largest |difference| between the replay and the logged run: over the weights when
    the run logged them (an sae run), and over the scores both have (NaN equals NaN)."""
    from latentscape.jobs._sae import load_sae
    from latentscape.tracking.runs import download

    worst = 0.0
    names = set(store.artifact_paths(run_id, Artifact.SAE_WEIGHTS.split("/")[0]))
    if Artifact.SAE_WEIGHTS in names:
        before = load_sae(download(store, run_id, Artifact.SAE_WEIGHTS).read_bytes()).model.state_dict()
        after = load_sae(weights).model.state_dict()
        for key, tensor in before.items():
            worst = max(worst, float((tensor.double() - after[key].double()).abs().max()))
    for name in SCORE_NAMES:
        if name in logged.metrics and name in result.scores:
            a, b = float(result.scores[name]), float(logged.metrics[name])
            if not (math.isnan(a) and math.isnan(b)):
                worst = max(worst, abs(a - b) if not (math.isnan(a) or math.isnan(b)) else math.inf)
    return worst
