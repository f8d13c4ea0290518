"""Named map recipes (``latentscape map --preset NAME``), one registry.

A preset is a starting point: it names a reducer and a clusterer with some of their
settings, the pooling its recipe assumes of the extraction (an extraction choice, so it
is checked, never changed), and the scores the recipe reports. Anything the user sets
explicitly overrides it; every other setting stays at latentscape's defaults, and the
map logs its fully resolved configuration as any other map does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from latentscape.tracking.contract import Metric

__all__ = ["Preset", "PRESETS", "pooling_note"]


@dataclass(frozen=True)
class Preset:
    """name / description: for ``--help``; reducer, clusterer and their params: the
    recipe's settings (unset ones keep latentscape's defaults); pooling: the extraction
    pooling the recipe was written for (None: any); scores: what it reports."""

    name: str
    description: str
    reducer: str
    clusterer: str
    reducer_params: Mapping[str, Any] = field(default_factory=dict)
    clusterer_params: Mapping[str, Any] = field(default_factory=dict)
    pooling: str | None = None
    scores: tuple[str, ...] = ()


PRESETS: dict[str, Preset] = {
    # The tutorial this project grew from: first-token embeddings, UMAP to 2D with 15
    # neighbours and min_dist 0.1, k-means with k = the number of classes on the 2D map,
    # scored by mutual information, NMI and AMI. k-means' k is left to its default, which
    # is the number of classes of the data.
    "tutorial": Preset(
        name="tutorial",
        description="the tutorial's recipe: first-token (cls) pooling, UMAP to 2D (15 neighbours, min_dist 0.1), "
                    "k-means with k = number of classes on the 2D map; MI, NMI, AMI",
        reducer="umap",
        clusterer="kmeans",
        reducer_params={"n_neighbors": 15, "min_dist": 0.1, "n_components": 2},
        pooling="cls",
        scores=(Metric.MUTUAL_INFO, Metric.NMI, Metric.AMI),
    ),
}


def pooling_note(preset: Preset, pooling: str) -> str | None:
    """A one-line note when the extraction's ``pooling`` is not the one ``preset``
    assumes (None when it is, or when the preset assumes none)."""
    if preset.pooling is None or pooling == preset.pooling:
        return None
    return (f"preset {preset.name} assumes {preset.pooling} pooling and this extraction used "
            f"{pooling or 'an unknown pooling'}: to reproduce the recipe, extract again with --pooling "
            f"{preset.pooling}")
