"""How runs, numbers and layers read on screen. Pure functions (no Streamlit)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from latentscape.tracking.contract import CatalogColumn as C
from latentscape.tracking.contract import Metric

__all__ = ["run_label", "run_labels", "short_id", "number", "truncate", "score_text", "TRUST_HELP"]

TRUST_HELP = ("[low, high]: 95% bootstrap interval of the score (samples resampled); p: the share of label "
              "shuffles that score as high (the smallest possible is 1 / (shuffles + 1)); ± : spread over seeds.")

_SHORT_ID = 8


def short_id(run_id: str) -> str:
    """The first 8 characters of a run id: enough to tell runs apart on screen."""
    return str(run_id)[:_SHORT_ID]


def run_label(row: Mapping[str, Any]) -> str:
    """``"<name> · <kind> · <id8>"`` for a row of ``queries.runs`` (missing fields skipped)."""
    parts = [str(row.get(C.NAME) or "").strip(), str(row.get(C.KIND) or "").strip(), short_id(row.get(C.RUN_ID, ""))]
    return " · ".join(part for part in parts if part)


def run_labels(runs: pd.DataFrame) -> dict[str, str]:
    """run_id -> label for every row of a runs frame; labels made unique by their id."""
    if runs is None or runs.empty:
        return {}
    return {row[C.RUN_ID]: run_label(row) for row in runs.to_dict("records")}


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
    def get(key: str) -> float | None:
        return _finite(metrics.get(prefix + key))

    text = f"{name} {number(metrics.get(prefix + name))}"
    low, high = get(Metric.trust(name, Metric.CI_LOW_SUFFIX)), get(Metric.trust(name, Metric.CI_HIGH_SUFFIX))
    if low is not None and high is not None:
        text += f" [{number(low)}, {number(high)}]"
    p_value = get(Metric.trust(name, Metric.P_VALUE_SUFFIX))
    if p_value is not None:
        text += f" p={p_value:.2g}"
    spread = get(Metric.trust(name, Metric.STD_SUFFIX))
    if spread is not None:
        text += f" ±{number(spread)}"
    return text
