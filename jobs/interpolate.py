"""``latentscape interpolate``: what lies between two inputs in one layer.

Walks from A to B (sample ids, or new texts embedded with the extraction's own model,
pooling, max length and layer) by lerp and/or slerp, and logs the k nearest samples
(cosine) at every step as an ``interpolate`` run, a child of the extract run.

For tabular data such as ``digits`` (no model), ``--decoder autoencoder`` trains a
small seeded autoencoder on the layer (its own ``autoencoder`` run, reused when the
same one exists), walks its latent space instead, and renders every step as an image.
Latent arithmetic (mean of one class minus mean of another plus A) is logged too.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING
import numpy as np

from latentscape.jobs._options import add_options, check_options, from_args, option
from latentscape.jobs._result import JobResult
from latentscape.jobs.core.walk import INTERPOLATIONS
from latentscape.tracking.contract import TABULAR_MODEL, Artifact, Column, Kind, Metric, Param, Tag
from latentscape.tracking.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["InterpolateConfig", "interpolate", "add_parser", "DECODERS", "ARITHMETIC_METHOD"]

DECODERS = ("autoencoder",)
# The ``method`` value of the neighbours of the arithmetic result (step 0).
ARITHMETIC_METHOD = "arithmetic"


@dataclass(frozen=True)
class InterpolateConfig:
    run: str = option(help="id of an extract run", metavar="EXTRACT_RUN")
    layer: int = option(help="layer to walk in")
    start: str = option(flag="--from", metavar="A", help="a sample id, or a new text")
    end: str = option(flag="--to", metavar="B", help="a sample id, or a new text")
    methods: tuple[str, ...] = option(tuple(INTERPOLATIONS), flag="--method", dest="method", choices=tuple(INTERPOLATIONS),
                                      cli=lambda method: (method,), cli_default=None,
                                      help="interpolation (default: both)")
    steps: int = option(11, low=2, high=1000, help="points on the path, endpoints included")
    k: int = option(5, low=1, help="nearest samples per step")
    decoder: str | None = option(None, choices=DECODERS,
                                 help="tabular data only: walk an autoencoder's latent space and render each step")
    add: str | None = option(None, metavar="LABEL", help="latent arithmetic: mean of LABEL ... (with --subtract)")
    subtract: str | None = option(None, metavar="LABEL", help="... minus mean of LABEL plus A "
                                  "(default: label of B minus label of A, when both are labelled samples)")
    latent_dim: int = option(8, low=1, help="autoencoder latent size")
    epochs: int = option(40, low=1, help="autoencoder training epochs")
    seed: int = option(0, help="seed of the autoencoder")

    def __post_init__(self):
        check_options(self)
        if (self.add is None) != (self.subtract is None):
            raise UsageError("latent arithmetic needs both --add and --subtract", "pass both labels, or neither")
        if self.start == self.end:
            raise UsageError(f"--from and --to are the same ({self.start!r})", "pass two different samples or texts")


@dataclass(frozen=True)
class _Endpoint:
    spec: str
    index: int  # row of the data set, -1 for a new text
    vector: np.ndarray  # (dim,) in the layer's space


def add_parser(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "interpolate", parents=parents, help="walk from one input to another and log the nearest samples",
        description="Interpolate between two samples (or new texts) in one layer of an extraction, by lerp "
        "and slerp, and log the k nearest samples (cosine) at every step. For tabular data (digits), "
        "--decoder autoencoder trains a small autoencoder and renders every step as an image.",
        epilog="examples:\n"
        "  latentscape interpolate --run EXTRACT_RUN --layer 6 --from demo-0001 --to demo-0002\n"
        "  latentscape interpolate --run EXTRACT_RUN --layer 6 --from demo-0001 --to 'a rainy day'\n"
        "  latentscape interpolate --run DIGITS_RUN --layer 0 --from digit-0000 --to digit-0001 "
        "--decoder autoencoder --add 7 --subtract 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser, InterpolateConfig)
    parser.set_defaults(handler=_run_cli)


def _run_cli(args) -> JobResult:
    config = from_args(InterpolateConfig, args)
    from latentscape.tracking.runs import open_store

    return interpolate(config, store=open_store(args.tracking_uri), experiment=args.experiment)


def interpolate(config: InterpolateConfig, *, store, experiment: str | None = None) -> JobResult:
    """Walk from ``config.start`` to ``config.end`` and log one ``interpolate`` run."""
    import pandas as pd

    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.core.walk import class_arithmetic, cosine_neighbours
    from latentscape.jobs.core.walk import interpolate as walk
    from latentscape.tracking.run_log import tracked_run

    # Load and validate everything before a run exists.
    extraction = load_extraction(store, config.run)
    layer = extraction.check_layer(config.layer)
    x = extraction.embedding(layer).astype(np.float64)
    labels = extraction.labels
    tabular = extraction.model == TABULAR_MODEL
    if config.decoder and not tabular:
        raise UsageError(f"--decoder {config.decoder} needs a tabular extraction (model none, e.g. digits); "
                         f"run {config.run} embeds text with {extraction.model}", "omit --decoder")
    start, end = _endpoints(extraction, layer, x, config)
    add, subtract = _arithmetic_labels(config, labels, start, end)
    experiment_name = experiment or extraction.experiment_name
    experiment_id = store.experiment_id(experiment_name)

    # The space to walk: the layer itself, or the latent space of an autoencoder on it.
    space, autoencoder, autoencoder_run = x, None, None
    if config.decoder == "autoencoder":
        autoencoder, autoencoder_run = _autoencoder(store, experiment_id, extraction, layer, x, config)
        space = autoencoder.encode(x)
        start = _Endpoint(start.spec, start.index, space[start.index])
        end = _Endpoint(end.spec, end.index, space[end.index])

    with tracked_run(store, experiment_id, Kind.INTERPOLATE,
                     run_name=f"{_short(start.spec)} → {_short(end.spec)} · layer {layer}",
                     parent_run_id=extraction.run_id, source_run_id=extraction.run_id,
                     tags={**extraction.lineage_tags(), Tag.LAYER: layer}) as log:
        log.params({
            Param.LAYER: layer, Param.FROM: start.spec, Param.TO: end.spec, Param.METHODS: ",".join(config.methods),
            Param.STEPS: config.steps, Param.K: config.k, Param.DECODER: config.decoder or "none",
            Param.ADD: add, Param.SUBTRACT: subtract, Param.SEED: config.seed, Param.AUTOENCODER_RUN: autoencoder_run,
        })

        # Every path and the nearest samples at each of its steps.
        path_frames, neighbour_frames, decoded = [], [], {}
        prefer = np.full(config.steps, -1)
        prefer[0], prefer[-1] = start.index, end.index
        for method in config.methods:
            path = walk(method, start.vector, end.vector, steps=config.steps)
            found = cosine_neighbours(path, space, k=config.k, prefer=prefer)
            path_frames.append(_path_frame(method, path, start.vector, end.vector))
            neighbour_frames.append(_neighbour_frame(extraction, method, found))
            if autoencoder is not None:
                decoded[method] = autoencoder.decode(path)

        # Latent arithmetic: mean(add) - mean(subtract) + A, and what lies nearest to it.
        scores = {}
        if add is not None:
            result = class_arithmetic(space, labels, add=add, subtract=subtract, base=start.vector)
            found = cosine_neighbours(result[None, :], space, k=config.k)
            neighbour_frames.append(_neighbour_frame(extraction, ARITHMETIC_METHOD, found))
            scores[Metric.ARITHMETIC_HIT_RATE] = float(np.mean(labels[found.indices[0]] == add))
            log.metrics(scores)
            if autoencoder is not None:
                parts = [start.vector, space[labels == add].mean(0), space[labels == subtract].mean(0), result]
                decoded[ARITHMETIC_METHOD] = autoencoder.decode(np.stack(parts))

        # Decoded steps as images (8x8 digits upscaled), one strip per path.
        images = _log_images(log, decoded, lo=float(x.min()), hi=float(x.max())) if decoded else {}
        path_table = pd.concat(path_frames, ignore_index=True)
        path_table[Column.IMAGE] = [images.get((m, s)) for m, s in zip(path_table[Column.METHOD], path_table[Column.STEP])]
        log.table(Artifact.PATH, path_table)
        log.table(Artifact.NEIGHBOURS, pd.concat(neighbour_frames, ignore_index=True))
        run_id = log.run_id

    middle = config.steps // 2
    details = {"from": _short(start.spec), "to": _short(end.spec), "space": "autoencoder" if autoencoder else f"layer {layer}"}
    for frame in neighbour_frames[:len(config.methods)]:
        nearest = frame[(frame[Column.STEP] == middle) & (frame[Column.RANK] == 1)].iloc[0]
        label = f" [{nearest[Column.LABEL]}]" if nearest[Column.LABEL] is not None else ""
        details[f"midpoint ({nearest[Column.METHOD]})"] = f"{nearest[Column.SAMPLE_ID]}{label}"
    if autoencoder_run:
        details["autoencoder_run"] = autoencoder_run
        details["images"] = len(images)
    if add is not None:
        details["arithmetic"] = f"mean({add}) - mean({subtract}) + {_short(start.spec)}"
    return JobResult(kind=Kind.INTERPOLATE.value, run_id=run_id, experiment=experiment_name, scores=scores,
                     details=details)


# -- endpoints --------------------------------------------------------------------
def _endpoints(extraction, layer: int, x: np.ndarray, config: InterpolateConfig) -> tuple[_Endpoint, _Endpoint]:
    """Sample ids resolve to their rows; anything else is a new text for the model."""
    rows = {sample_id: i for i, sample_id in enumerate(extraction.ids)}
    specs = (config.start, config.end)
    new_texts = [spec for spec in specs if spec not in rows]
    if new_texts and extraction.model == TABULAR_MODEL:
        raise UsageError(f"{new_texts[0]!r} is not a sample id of extract run {extraction.run_id}, and tabular "
                         "data has no model to embed new input", f"pass sample ids such as {extraction.ids[0]!r}")
    embedded = dict(zip(new_texts, _embed_texts(extraction, new_texts, layer))) if new_texts else {}
    return tuple(
        _Endpoint(spec, rows[spec], x[rows[spec]]) if spec in rows else _Endpoint(spec, -1, embedded[spec])
        for spec in specs
    )


def _embed_texts(extraction, texts: list[str], layer: int) -> list[np.ndarray]:
    """New texts through the extraction's own model, pooling, max length and layer."""
    from latentscape.jobs._reembed import embed_like

    return list(embed_like(extraction, texts, [layer], job="interpolate")[layer])


def _arithmetic_labels(config: InterpolateConfig, labels, start: _Endpoint, end: _Endpoint):
    """``(add, subtract)`` for latent arithmetic, or ``(None, None)`` for none."""
    if config.add is None:
        if labels is None or start.index < 0 or end.index < 0 or labels[start.index] == labels[end.index]:
            return None, None
        return str(labels[end.index]), str(labels[start.index])
    if labels is None:
        raise UsageError("--add/--subtract need labels, and this extraction has none", "omit --add and --subtract")
    known = set(labels.tolist())
    for name in (config.add, config.subtract):
        if name not in known:
            raise UsageError(f"no sample has label {name!r}", f"choose among {', '.join(sorted(known)[:20])}")
    return config.add, config.subtract


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -- tables -------------------------------------------------------------------------
def _path_frame(method: str, path: np.ndarray, a: np.ndarray, b: np.ndarray) -> pd.DataFrame:
    import pandas as pd

    from latentscape.jobs.core.geometry import unit_rows

    unit = unit_rows(path)
    ends = unit_rows(np.stack([a, b]).astype(np.float64))
    ts = np.linspace(0.0, 1.0, len(path))
    return pd.DataFrame({
        Column.METHOD: method, Column.STEP: np.arange(len(path)), Column.T: ts,
        Column.NORM: np.linalg.norm(path, axis=1), Column.COSINE_FROM: unit @ ends[0], Column.COSINE_TO: unit @ ends[1],
    })


def _neighbour_frame(extraction, method: str, found) -> pd.DataFrame:
    import pandas as pd

    steps, ranks = np.indices(found.indices.shape)
    rows = found.indices.ravel()
    labels = extraction.labels
    return pd.DataFrame({
        Column.METHOD: method, Column.STEP: steps.ravel(), Column.RANK: ranks.ravel() + 1,
        Column.SAMPLE_ID: extraction.ids[rows], Column.LABEL: labels[rows] if labels is not None else None,
        Column.TEXT: extraction.texts[rows], Column.DISTANCE: found.distances.ravel(),
    })


def _log_images(log, decoded: dict[str, np.ndarray], *, lo: float, hi: float) -> dict[tuple[str, int], str]:
    """Log each decoded vector as a PNG and each path as a strip; ``{(method, step): path}``."""
    from latentscape.jobs._images import png_bytes, square_side, strip, vector_image

    first = next(iter(decoded.values()))
    if square_side(first.shape[1]) is None:
        return {}  # not a square image (a tabular data set other than digits): nothing to draw
    paths = {}
    for method, vectors in decoded.items():
        pictures = [vector_image(v, lo=lo, hi=hi) for v in vectors]
        if method == ARITHMETIC_METHOD:  # A, mean(add), mean(subtract), the result
            log.bytes(Artifact.ARITHMETIC_IMAGE, png_bytes(strip(pictures)))
            continue
        for step, picture in enumerate(pictures):
            paths[(method, step)] = Artifact.step_image(method, step)
            log.bytes(paths[(method, step)], png_bytes(picture))
        log.bytes(Artifact.strip_image(method), png_bytes(strip(pictures)))
    return paths


# -- the autoencoder ------------------------------------------------------------------
def _autoencoder(store, experiment_id: str, extraction, layer: int, x: np.ndarray, config: InterpolateConfig):
    """The autoencoder for this layer and settings: the identical finished run's weights
    when there is one (read with ``weights_only=True``), else trained and logged as a new
    ``autoencoder`` run (child of the extract run). Returns ``(autoencoder, run_id)``."""
    from latentscape.jobs._autoencoder import AutoencoderConfig, load_autoencoder, train_autoencoder
    from latentscape.tracking.run_log import tracked_run
    from latentscape.tracking.runs import download

    settings = AutoencoderConfig(latent_dim=config.latent_dim, epochs=config.epochs, seed=config.seed)
    # Params as strings, so that the search below compares exactly what was logged.
    params = {
        Param.LAYER: str(layer), Param.LATENT_DIM: str(settings.latent_dim), Param.HIDDEN: str(settings.hidden),
        Param.EPOCHS: str(settings.epochs), Param.BATCH_SIZE: str(settings.batch_size),
        Param.LEARNING_RATE: repr(settings.learning_rate), Param.HOLDOUT: repr(settings.holdout),
        Param.SEED: str(settings.seed),
    }
    previous = store.find_runs(experiment_id, kind=Kind.AUTOENCODER, tags={Tag.SOURCE_RUN: extraction.run_id},
                               params=params, status="FINISHED", newest_first=True, max_results=1)
    if previous:
        run_id = previous[0].id
        weights = download(store, run_id, Artifact.AUTOENCODER_WEIGHTS).read_bytes()
        return load_autoencoder(weights, config=settings), run_id

    with tracked_run(store, experiment_id, Kind.AUTOENCODER, run_name=f"autoencoder · layer {layer}",
                     parent_run_id=extraction.run_id, source_run_id=extraction.run_id,
                     tags={**extraction.lineage_tags(), Tag.LAYER: layer}) as log:
        log.params(params)
        model = train_autoencoder(x, config=settings)
        # Loss curve with step=epoch; held-out MSE against the per-feature-mean baseline.
        log.curve(Metric.LOSS, dict(enumerate(model.losses)))
        log.metrics({Metric.RECONSTRUCTION_MSE: model.reconstruction_mse, Metric.BASELINE_MSE: model.baseline_mse})
        log.bytes(Artifact.AUTOENCODER_WEIGHTS, model.state_bytes())
        _log_reconstructions(log, model, x)
        run_id = log.run_id
    return model, run_id


def _log_reconstructions(log, model, x: np.ndarray, *, count: int = 10) -> None:
    """Two rows of images: ``count`` inputs above their reconstructions."""
    from latentscape.jobs._images import png_bytes, square_side, strip, vector_image

    if square_side(x.shape[1]) is None:
        return
    lo, hi = float(x.min()), float(x.max())
    rows = np.linspace(0, len(x) - 1, count).astype(int)
    top = strip([vector_image(v, lo=lo, hi=hi) for v in x[rows]])
    bottom = strip([vector_image(v, lo=lo, hi=hi) for v in model.decode(model.encode(x[rows]))])
    gap = np.full((4, top.shape[1]), 255, dtype=np.uint8)
    log.bytes(Artifact.RECONSTRUCTIONS_IMAGE, png_bytes(np.vstack([top, gap, bottom])))
