"""Training charts: the loss curve of a fine-tuning, layer x checkpoint heatmaps of what
each checkpoint's layers hold, and the cross-model CKA heatmap of two extractions."""

from __future__ import annotations

from dataclasses import dataclass

import altair as alt
import pandas as pd

from latentscape.tracking.contract import CatalogColumn as C
from latentscape.tracking.contract import Column, Metric
from latentscape.ui.charts.layers import cka_cells

__all__ = [
    "CURVES",
    "HEATMAP_TITLES",
    "LossInfo",
    "loss_info",
    "loss_chart",
    "HeatmapInfo",
    "heatmap_info",
    "heatmap_chart",
    "CrossInfo",
    "cross_info",
    "cross_chart",
]

# metric -> (panel, split) of the loss curve
CURVES: dict[str, tuple[str, str]] = {
    Metric.TRAIN_LOSS: ("loss", "train"),
    Metric.HELDOUT_LOSS: ("loss", "held-out"),
    Metric.TRAIN_ACCURACY: ("accuracy", "train"),
    Metric.HELDOUT_ACCURACY: ("accuracy", "held-out"),
}
CLUSTER_SCORE = Metric.qualified(Metric.AMI, "kmeans")
HEATMAP_TITLES: dict[str, str] = {
    Metric.CKA_TO_BASE: "CKA to the base",
    Metric.PROBE_ACCURACY: "linear-probe accuracy",
    CLUSTER_SCORE: "k-means AMI (k = classes)",
}


@dataclass(frozen=True)
class LossInfo:
    """frame: ``step``, ``value``, ``panel`` (loss / accuracy), ``split`` (train / held-out)."""

    frame: pd.DataFrame

    @property
    def empty(self) -> bool:
        return self.frame.empty


def loss_info(metrics: pd.DataFrame) -> LossInfo:
    """metrics: ``queries.metrics`` rows (run_id, key, value, step) of one finetune run."""
    columns = [C.STEP, C.VALUE, "panel", "split"]
    if metrics is None or metrics.empty:
        return LossInfo(pd.DataFrame({c: [] for c in columns}))
    frame = metrics[metrics[C.KEY].isin(list(CURVES))].copy()
    frame["panel"] = frame[C.KEY].map(lambda k: CURVES[k][0])
    frame["split"] = frame[C.KEY].map(lambda k: CURVES[k][1])
    frame[C.STEP] = frame[C.STEP].astype(int)
    frame = frame.drop_duplicates([C.KEY, C.STEP], keep="last").sort_values(["panel", "split", C.STEP])
    return LossInfo(frame[columns].reset_index(drop=True))


def loss_chart(info: LossInfo) -> alt.ConcatChart:
    """Two panels (loss, accuracy) over training steps, train and held-out lines."""
    color = alt.Color("split:N", title="split", scale=alt.Scale(domain=["train", "held-out"]))
    panels = []
    for panel in ("loss", "accuracy"):
        data = info.frame[info.frame["panel"] == panel]
        panels.append(
            alt.Chart(data, title=panel).mark_line(point=True).encode(
                x=alt.X(f"{C.STEP}:Q", title="training step"),
                y=alt.Y(f"{C.VALUE}:Q", title=panel, scale=alt.Scale(zero=False)),
                color=color,
                tooltip=["split:N", f"{C.STEP}:Q", alt.Tooltip(f"{C.VALUE}:Q", format=".4f")],
            ).properties(width=320, height=200))
    return alt.hconcat(*panels).resolve_scale(color="shared")


@dataclass(frozen=True)
class HeatmapInfo:
    """One measure per (layer, checkpoint): frame ``checkpoint``, ``step``, ``layer``,
    ``value``; checkpoints: in training order (the base first)."""

    frame: pd.DataFrame
    checkpoints: list[str]
    measure: str

    @property
    def empty(self) -> bool:
        return self.frame.empty


def heatmap_info(model_layers: pd.DataFrame | None, measure: str) -> HeatmapInfo:
    """model_layers: a compare-models run's ``model_layers.parquet``; measure: one of its
    per-layer columns (``HEATMAP_TITLES``)."""
    columns = [Column.CHECKPOINT, Column.STEP, Column.LAYER, C.VALUE]
    if model_layers is None or model_layers.empty or measure not in model_layers:
        return HeatmapInfo(pd.DataFrame({c: [] for c in columns}), [], measure)
    frame = model_layers[[Column.CHECKPOINT, Column.STEP, Column.LAYER, measure]].rename(columns={measure: C.VALUE})
    frame = frame.sort_values([Column.STEP, Column.LAYER], kind="stable").reset_index(drop=True)
    return HeatmapInfo(frame, list(dict.fromkeys(frame[Column.CHECKPOINT])), measure)


def heatmap_chart(info: HeatmapInfo) -> alt.LayerChart:
    """Layers up, checkpoints across; the value in each cell."""
    base = alt.Chart(info.frame, title=HEATMAP_TITLES.get(info.measure, info.measure)).encode(
        # Every checkpoint named (a band axis drops labels it finds crowded).
        x=alt.X(f"{Column.CHECKPOINT}:O", title="checkpoint", sort=info.checkpoints,
                axis=alt.Axis(labelAngle=-30, labelOverlap=False, labelLimit=160)),
        y=alt.Y(f"{Column.LAYER}:O", title="layer", sort="descending", axis=alt.Axis(labelOverlap=False)),
    )
    cells = base.mark_rect().encode(
        color=alt.Color(f"{C.VALUE}:Q", title=None, scale=alt.Scale(scheme="viridis")),
        tooltip=[f"{Column.CHECKPOINT}:O", f"{Column.LAYER}:O", alt.Tooltip(f"{C.VALUE}:Q", format=".3f")],
    )
    text = base.mark_text(fontSize=10, color="white").encode(text=alt.Text(f"{C.VALUE}:Q", format=".2f"))
    return alt.layer(cells, text).properties(width=alt.Step(56), height=alt.Step(26))


@dataclass(frozen=True)
class CrossInfo:
    """Every layer of run A against every layer of run B: frame ``layer_a``, ``layer_b``,
    ``cka`` (A's layers on the y axis whichever order the pair was stored in)."""

    frame: pd.DataFrame
    run_a: str
    run_b: str

    @property
    def empty(self) -> bool:
        return self.frame.empty


def cross_info(cross: pd.DataFrame | None, run_a: str, run_b: str) -> CrossInfo:
    """cross: a compare-models run's ``cross_cka.parquet`` (run_a, run_b, layer_a,
    layer_b, cka); the pair may be stored as (B, A), then it is transposed."""
    columns = [Column.LAYER_A, Column.LAYER_B, Column.CKA]
    empty = CrossInfo(pd.DataFrame({c: [] for c in columns}), run_a, run_b)
    if cross is None or cross.empty:
        return empty
    forward = cross[(cross[Column.RUN_A] == run_a) & (cross[Column.RUN_B] == run_b)]
    if forward.empty:
        backward = cross[(cross[Column.RUN_A] == run_b) & (cross[Column.RUN_B] == run_a)]
        forward = backward.rename(columns={Column.LAYER_A: Column.LAYER_B, Column.LAYER_B: Column.LAYER_A})
    if forward.empty:
        return empty
    frame = forward[columns].sort_values([Column.LAYER_A, Column.LAYER_B]).reset_index(drop=True)
    return CrossInfo(frame, run_a, run_b)


def cross_chart(info: CrossInfo, *, title_a: str = "model A", title_b: str = "model B") -> alt.LayerChart:
    """Heatmap: A's layers up, B's across, linear CKA (0-1) in each cell."""
    cells = cka_cells(info.frame, title="Cross-model linear CKA", x_title=f"layer of {title_b}",
                      y_title=f"layer of {title_a}")
    return alt.layer(*cells).properties(width=alt.Step(40), height=alt.Step(40))
