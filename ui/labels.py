"""How runs, numbers and layers read on screen. Pure functions (no Streamlit)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from latentscape.tracking.contract import TABULAR_MODEL, Kind, Metric, Param
from latentscape.tracking.contract import CatalogColumn as C

__all__ = ["run_label", "run_labels", "model_name", "method_name", "short_id", "number", "truncate", "score_text",
           "TRUST_HELP"]

TRUST_HELP = ("[low, high]: 95% bootstrap interval of the score (samples resampled); p: the share of label "
              "shuffles that score as high (the smallest possible is 1 / (shuffles + 1)); ± : spread over seeds.")

_SHORT_ID = 8


def short_id(run_id: str) -> str:
    """The first 8 characters of a run id: enough to tell runs apart on screen."""
    return str(run_id)[:_SHORT_ID]


# Methods as papers spell them (the params are lower case).
_METHOD_NAMES = {"umap": "UMAP", "hdbscan": "HDBSCAN", "pca": "PCA", "kmeans": "k-means", "tsne": "t-SNE",
                 "aligned_umap": "AlignedUMAP", "gmm": "GMM", "agglomerative": "agglomerative"}
# What a run of each kind is, where its data set, model and layer do not say it all.
_KIND_WORDS = {
    Kind.LAYERS: "every layer", Kind.INTERPOLATE: "interpolation", Kind.ANALOGIES: "analogies",
    Kind.DIRECTIONS: "directions", Kind.AUTOENCODER: "autoencoder", Kind.SAE: "sparse autoencoder",
    Kind.FINETUNE: "fine-tuning", Kind.COMPARE_MODELS: "model comparison",
}
_CHECKPOINT = re.compile(r"^(?P<base>.+)-ft-[0-9a-f]{8}-step(?P<step>\d+)$")
# Folder names that say nothing of the model (a bundled or saved model's own folder).
_GENERIC_FOLDERS = {"model", "models", "checkpoint", "snapshot", "hf", ""}


def model_name(model: Any) -> str:
    """A model as people call it: ``sentence-transformers/all-MiniLM-L6-v2`` ->
    ``MiniLM-L6``; a fine-tuning checkpoint ``all-MiniLM-L6-v2-ft-b6bf05e8-step18`` ->
    ``MiniLM-L6 ft step 18``; no model (tabular data) -> ``""``. The organisation, the
    ``all-`` prefix and a trailing ``-vN`` are dropped: they rarely tell two runs apart."""
    text = "" if model is None or (isinstance(model, float) and math.isnan(model)) else str(model).strip()
    if text in ("", TABULAR_MODEL):
        return ""
    checkpoint = _CHECKPOINT.match(text.rsplit("/", 1)[-1])
    if checkpoint:
        return f"{model_name(checkpoint['base'])} ft step {int(checkpoint['step'])}"
    text = text.rstrip("/").rsplit("/", 1)[-1]
    text = re.sub(r"-v\d+$", "", text)
    return text.removeprefix("all-") or text


def method_name(reducer: Any, clusterer: Any) -> str:
    """``umap``, ``hdbscan`` -> ``UMAP+HDBSCAN``; either may be missing (``""`` if both are)."""
    parts = [_METHOD_NAMES.get(str(p).lower(), str(p)) for p in (reducer, clusterer)
             if isinstance(p, str) and p.strip()]
    return "+".join(parts)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value is not pd.NA \
        and str(value).strip() != ""


def run_label(row: Mapping[str, Any], *, base_model: str | None = None) -> str:
    """The one name of a run for people, everywhere (pickers, headers, legends, axis
    titles): data set, model, layer, method and a short id, e.g. ``demo · MiniLM-L6 ·
    layer 6 · UMAP+HDBSCAN (783dc90b)``; ``digits (no model) · layer 0 · PCA+k-means
    (a96b726f)``; an extraction is ``demo · MiniLM-L6 (14fa3433)``.

    row: a row of ``queries.runs``, with ``param.reducer`` / ``param.clusterer`` where
    known (a ``run_table`` row has them); base_model: the model to name where the run's
    own says nothing (a fine-tuning's base extraction, whose model is a folder called
    ``model``). Missing fields are skipped; the id makes every label unique."""
    kind = str(row.get(C.KIND) or "")
    dataset = str(row.get(C.DATASET_NAME) or "").strip() if _present(row.get(C.DATASET_NAME)) else ""
    model = row.get(C.MODEL)
    raw_model = str(model).strip() if _present(model) else ""
    if raw_model.rstrip("/").rsplit("/", 1)[-1] in _GENERIC_FOLDERS and base_model:
        raw_model = base_model
    model = model_name(raw_model)
    parts = []
    if raw_model == TABULAR_MODEL:
        parts.append(f"{dataset or 'data'} (no model)")
    else:
        parts += [p for p in (dataset, model) if p]
    layer = row.get(C.LAYER)
    if _present(layer) and kind not in (Kind.EXTRACT, Kind.LAYERS):
        try:
            parts.append(f"layer {int(float(layer))}")
        except (TypeError, ValueError):
            pass
    method = method_name(row.get(C.PARAM_PREFIX + Param.REDUCER), row.get(C.PARAM_PREFIX + Param.CLUSTERER))
    if kind == Kind.SWEEP:
        parts.append(f"sweep of {method}" if method else "sweep")
    elif kind == Kind.TRIAL:
        name = str(row.get(C.NAME) or "trial").strip()
        parts.append(f"{method} {name}" if method else name)
    elif kind == Kind.MAP:
        parts.append(method or "map")
    elif kind in _KIND_WORDS:
        parts.append(_KIND_WORDS[Kind(kind)])
    if not parts:  # a run with no data set, model or kind we know: its own name
        parts.append(str(row.get(C.NAME) or kind or "run").strip())
    run_id = row.get(C.RUN_ID, "")
    return " · ".join(parts) + (f" ({short_id(run_id)})" if run_id else "")


def run_labels(runs: pd.DataFrame, details: pd.DataFrame | None = None,
               others: pd.DataFrame | None = None) -> dict[str, str]:
    """run_id -> :func:`run_label` for every row of a runs frame (unique: each ends in its id).

    details: a ``run_table`` frame of (some of) these runs, for the method params;
    others: more runs (e.g. ``queries.runs`` of every kind) in which a run's source is
    looked up, so that a fine-tuning's base extraction is named by the base model."""
    if runs is None or runs.empty:
        return {}
    rows = runs.to_dict("records")
    if details is not None and not details.empty and C.RUN_ID in details:
        params = [c for c in details.columns if c.startswith(C.PARAM_PREFIX)]
        extra = details.set_index(C.RUN_ID)[params].to_dict("index")
        rows = [{**extra.get(row[C.RUN_ID], {}), **row} for row in rows]
    models = {}
    for frame in (others, runs):
        if frame is not None and not frame.empty and C.MODEL in frame:
            models.update(zip(frame[C.RUN_ID], frame[C.MODEL]))
    labels = {}
    for row in rows:
        source = row.get(C.SOURCE_RUN)
        base = models.get(source) if _present(source) else None
        labels[row[C.RUN_ID]] = run_label(row, base_model=str(base) if _present(base) else None)
    return labels


def number(value: Any, digits: int = 3) -> str:
    """A score for display: 3 significant decimals, integers as integers, NaN as '–'."""
    if value is None:
        return "–"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(value):
        return "–"
    if value.is_integer() and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.{digits}f}"


def truncate(text: Any, limit: int = 160) -> str:
    """Text for a tooltip or a table cell: one line, at most ``limit`` characters."""
    flat = " ".join(str(text if text is not None else "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def score_text(name: str, metrics: Mapping[str, Any], *, prefix: str = "") -> str:
    """``"ami 0.812 [0.790, 0.831] p=0.0099 ±0.004"``: a score with whatever of its trust
    measures the run logged (bootstrap interval, permutation p-value, spread over seeds).
    ``metrics``: metric name (with ``prefix``, e.g. ``metric.`` of a run_table row) -> value."""
    return f"{name} {score_value_text(name, metrics, prefix=prefix)}"


def score_value_text(name: str, metrics: Mapping[str, Any], *, prefix: str = "", spread: bool = True) -> str:
    """``"0.812 [0.790, 0.831] p=0.0099 ±0.004"``: :func:`score_text` without the name ('–'
    when the score is missing); ``spread``: whether the spread over seeds is added."""
    def get(key: str) -> float | None:
        return _finite(metrics.get(prefix + key))

    if get(name) is None:
        return "–"
    text = number(get(name))
    low, high = get(Metric.trust(name, Metric.CI_LOW_SUFFIX)), get(Metric.trust(name, Metric.CI_HIGH_SUFFIX))
    if low is not None and high is not None:
        text += f" [{number(low)}, {number(high)}]"
    p_value = get(Metric.trust(name, Metric.P_VALUE_SUFFIX))
    if p_value is not None:
        text += f" p={p_value:.2g}"
    deviation = get(Metric.trust(name, Metric.STD_SUFFIX)) if spread else None
    if deviation is not None:
        text += f" ±{number(deviation)}"
    return text
