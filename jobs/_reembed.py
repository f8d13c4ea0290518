"""Embed new texts exactly as an extraction embedded its data set: same model, pooling,
max length and layers. Used by jobs that take words or sentences the data set lacks
(``interpolate --from TEXT``, ``analogies``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from latentscape.tracking.contract import TABULAR_MODEL
from latentscape.tracking.errors import UsageError

__all__ = ["require_text_model", "embed_like"]


def require_text_model(extraction, *, job: str) -> Path:
    """The extraction's model folder; a one-line error when the run is tabular or the
    model is not on this machine."""
    if extraction.model == TABULAR_MODEL:
        raise UsageError(f"{job} needs text embedded by a model, and extract run {extraction.run_id} is tabular "
                         "(model none)", "pass the id of an extraction of text data")
    path = extraction.model_path
    if not path or not (Path(path) / "config.json").is_file():
        raise UsageError(f"the model of extract run {extraction.run_id} ({extraction.model or 'unknown'}) is not "
                         f"available at {path or '(no path logged)'}",
                         "run on the machine that extracted, or extract again here")
    return Path(path)


def embed_like(extraction, texts: Sequence[str], layers: Sequence[int], *, job: str,
               load_encoder=None) -> dict[int, np.ndarray]:
    """``{layer: (len(texts), dim) float64}`` through the extraction's own model, pooling
    and max length. ``load_encoder(model_path) -> Encoder`` (default ``Encoder.load``) lets
    a long-lived process keep its models loaded (``latentscape search --serve``)."""
    from latentscape.jobs._embedding import Encoder

    encoder = (load_encoder or Encoder.load)(str(require_text_model(extraction, job=job)))
    embedded, _ = encoder.encode(list(texts), pooling=extraction.pooling or "mean", layers=list(layers),
                                 max_length=extraction.max_length or 256)
    return {layer: values.astype(np.float64) for layer, values in embedded.items()}
