"""The per-layer measures, one registry: one :class:`LayerMeasure` record per measure that
a run logs with ``step=layer``, every list derived (the map scores' twin: :mod:`latentscape.tracking.scores`).

A record says what the layers job, its verdict and the Layers page all need to know of a
measure, with no function attached, so that the UI can read it without importing ``jobs``:

- ``name``: its metric name and ``layers.parquet`` column (a :class:`latentscape.tracking.contract.Metric`
  constant);
- ``title``: the Layers page's panel title, or None where the measure is no panel of its own
  (``ami.kmeans`` is drawn as ``ami``; a spread is drawn as a band around its curve);
- ``axis``: the panel's y axis;
- ``kind``: the run kind that logs it (the layers job measures most; an extraction logs its
  mean norm, a compare-models run the CKA to the base model);
- ``labelled``: computed against the labels (NaN, or absent, on unlabelled data);
- ``interval``: the layers job logs a bootstrap interval of its own (``<name>_ci_low`` /
  ``_ci_high`` columns and metrics) for it;
- ``same_as``: the measure it is another name for (``ami`` is ``ami.kmeans``, whose interval
  it shows);
- ``scorer``: a way of clustering each layer (``ami.<scorer>``, logged with
  ``n_clusters.<scorer>`` and ``noise_fraction.<scorer>`` and an interval);
- ``chance``: its chance level where that is one number (0 for the adjusted AMI);
  ``chance_metric``: the once-per-run metric holding it where it depends on the data (a
  probe's majority-class accuracy);
- ``verdict``: its name in the layer verdict (people's words, no commas, so a list of them
  reads as one), or None where the verdict leaves it out; ``context``: in the verdict but
  not in the agreement (it answers another question);
- ``direction``: which way is better (the verdict takes its best layer that way);
- ``default``: a Layers page panel shown before the user picks.

The functions are the jobs': :func:`latentscape.jobs._layer_measuring.measure` computes the layers
job's measures and a test checks that it returns every one registered here. Adding a per-layer
measure is its computation there, one record here and its contract name.
"""

from __future__ import annotations

from dataclasses import dataclass

from latentscape.tracking.contract import Kind, Metric

__all__ = [
    "MAXIMIZE",
    "MINIMIZE",
    "LayerMeasure",
    "MEASURES",
    "BY_NAME",
    "LAYERS_COLUMNS",
    "INTERVALS",
    "LABELLED",
    "SCORERS",
    "VERDICT_LABELLED",
    "VERDICT_CONTEXT",
    "LOWER_IS_BETTER",
    "CURVE_TITLES",
    "AXIS_TITLES",
    "DEFAULT_CURVES",
    "VERDICT_TITLES",
    "CHANCE",
    "CHANCE_METRICS",
    "INTERVAL_OF",
]

MAXIMIZE = "maximize"
MINIMIZE = "minimize"


@dataclass(frozen=True)
class LayerMeasure:
    """One per-layer measure; see the module docstring for each field."""

    name: str
    title: str | None
    axis: str = ""
    kind: str = Kind.LAYERS.value
    labelled: bool = False
    interval: bool = False
    same_as: str | None = None
    scorer: str | None = None
    chance: float | None = None
    chance_metric: str | None = None
    verdict: str | None = None
    context: bool = False
    direction: str = MAXIMIZE
    default: bool = False


# In the order of the verdict and of the Layers page's panels.
MEASURES: tuple[LayerMeasure, ...] = (
    LayerMeasure(Metric.PROBE_ACCURACY, "linear-probe accuracy", "accuracy", labelled=True, interval=True,
                 chance_metric=Metric.PROBE_CHANCE, verdict="linear probe", default=True),
    # The probe's spread over its folds: a band around the probe's curve where it has no interval.
    LayerMeasure(Metric.PROBE_ACCURACY_STD, None, labelled=True),
    LayerMeasure(Metric.KNN_AGREEMENT, "k-NN label agreement", "agreement", labelled=True, interval=True,
                 verdict="k-NN label agreement"),
    LayerMeasure(Metric.AMI, "AMI, k-means at k = classes (default)", "AMI", labelled=True, same_as=Metric.AMI_KMEANS,
                 chance=0.0, default=True),
    LayerMeasure(Metric.AMI_KMEANS, None, "AMI", labelled=True, scorer="kmeans", chance=0.0,
                 verdict="AMI of k-means at k = classes"),
    LayerMeasure(Metric.AMI_MAP, "AMI of the map's clusterer", "AMI", labelled=True, scorer="map", chance=0.0,
                 verdict="AMI of the map's clusterer"),
    LayerMeasure(Metric.AMI_HDBSCAN, "AMI, HDBSCAN at the classes' granularity", "AMI", labelled=True,
                 scorer="hdbscan", chance=0.0, verdict="AMI of HDBSCAN at class granularity"),
    LayerMeasure(Metric.AMI_TUNED, "AMI at each layer's best settings (--tune)", "AMI", labelled=True,
                 scorer="tuned", chance=0.0, verdict="AMI tuned per layer"),
    # Its minimum is the largest change: context for the verdict, not a vote on the classes.
    LayerMeasure(Metric.CKA_PREVIOUS, "CKA to the previous layer", "CKA", direction=MINIMIZE, context=True,
                 verdict="largest change (lowest CKA to the layer before)", default=True),
    LayerMeasure(Metric.CKA_TO_BASE, "CKA to the base model's same layer", "CKA", kind=Kind.COMPARE_MODELS.value,
                 default=True),
    LayerMeasure(Metric.COSINE_PREVIOUS, "cosine to the previous layer", "cosine", default=True),
    LayerMeasure(Metric.INTRINSIC_DIM, "intrinsic dimension (TwoNN)", "dimensions", default=True),
    LayerMeasure(Metric.ANISOTROPY, "anisotropy", "mean cosine"),
    LayerMeasure(Metric.MEAN_NORM, "mean norm", "norm", kind=Kind.EXTRACT.value),
)

BY_NAME: dict[str, LayerMeasure] = {measure.name: measure for measure in MEASURES}

_LAYERS = tuple(m for m in MEASURES if m.kind == Kind.LAYERS.value)
# The layers job's own per-layer columns (each clustering's come with its scorer).
LAYERS_COLUMNS: tuple[str, ...] = tuple(m.name for m in _LAYERS if m.scorer is None)
# Those with a bootstrap interval of their own, measured per sample.
INTERVALS: tuple[str, ...] = tuple(m.name for m in _LAYERS if m.interval)
LABELLED: tuple[str, ...] = tuple(m.name for m in _LAYERS if m.labelled and m.scorer is None)
# The ways of clustering each layer, in the order they are measured.
SCORERS: tuple[str, ...] = tuple(m.scorer for m in _LAYERS if m.scorer is not None)

# The verdict: which layer holds the classes, and (context only) where the representation changes most.
VERDICT_LABELLED: tuple[str, ...] = tuple(m.name for m in MEASURES if m.verdict and not m.context)
VERDICT_CONTEXT: tuple[str, ...] = tuple(m.name for m in MEASURES if m.verdict and m.context)
LOWER_IS_BETTER: tuple[str, ...] = tuple(m.name for m in MEASURES if m.direction == MINIMIZE)

# The Layers page: panel titles (in panel order), y axes, the panels shown first, the verdict in words.
CURVE_TITLES: dict[str, str] = {m.name: m.title for m in MEASURES if m.title}
AXIS_TITLES: dict[str, str] = {m.name: m.axis for m in MEASURES if m.title}
DEFAULT_CURVES: tuple[str, ...] = tuple(m.name for m in MEASURES if m.default)
VERDICT_TITLES: dict[str, str] = {m.name: m.verdict for m in MEASURES if m.verdict}
# Chance: a fixed level, or the once-per-run metric that holds it.
CHANCE: dict[str, float] = {m.name: m.chance for m in MEASURES if m.chance is not None}
CHANCE_METRICS: dict[str, str] = {m.name: m.chance_metric for m in MEASURES if m.chance_metric}
# A curve whose interval the run logs under the name it is the same as.
INTERVAL_OF: dict[str, str] = {m.name: m.same_as for m in MEASURES if m.same_as}
