"""``clusters.parquet``: what each cluster of a map is (size, purity, keywords, central
samples, label position), logged beside ``map.parquet`` by ``map`` and by ``sweep`` for
its best map. The numbers come from :mod:`latentscape.jobs.core.cluster_labels`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from latentscape.tracking.contract import TABULAR_MODEL, Artifact, Column

__all__ = ["clusters_frame", "log_clusters"]


def _texts(extraction) -> np.ndarray | None:
    """The samples' texts, or None for a data set without text (tabular features, whose
    text column only names each sample)."""
    samples = extraction.samples
    if extraction.model == TABULAR_MODEL or Column.TEXT not in samples or samples[Column.TEXT].isna().all():
        return None
    return samples[Column.TEXT].fillna("").astype(str).to_numpy()


def clusters_frame(extraction, clusters: np.ndarray, embedding: np.ndarray,
                   coords: np.ndarray | None = None) -> pd.DataFrame | None:
    """One row per cluster (noise, -1, as its own row with ``noise`` True), or None when
    the map found no cluster at all (everything noise).

    clusters: (n,) of the map; embedding: (n, c) the space they were found in;
    coords: (n, 2) display coordinates (the label positions ``x``, ``y``)."""
    from latentscape.jobs.core.cluster_labels import describe_clusters

    clusters = np.asarray(clusters)
    if not (clusters != -1).any():
        return None
    texts = _texts(extraction)
    ids = extraction.ids
    summaries = describe_clusters(clusters, z=embedding, labels=extraction.labels, texts=texts, coords=coords)
    # List columns as plain Python lists: a pandas ArrowDtype would be written into the
    # Parquet's pandas metadata, which pandas 3.1 cannot read back.
    strings = floats = "object"
    return pd.DataFrame({
        Column.CLUSTER: pd.Series([s.cluster for s in summaries], dtype="int64"),
        Column.NOISE: pd.Series([s.noise for s in summaries], dtype="bool"),
        Column.SIZE: pd.Series([s.size for s in summaries], dtype="int64"),
        Column.SHARE: pd.Series([s.share for s in summaries], dtype="float64"),
        Column.MAJORITY_LABEL: pd.Series([s.majority_label for s in summaries], dtype="object"),
        Column.PURITY: pd.Series([s.purity for s in summaries], dtype="float64"),
        Column.KEYWORDS: pd.Series([list(s.keywords) for s in summaries], dtype=strings),
        Column.KEYWORD_SCORES: pd.Series([list(s.keyword_scores) for s in summaries], dtype=floats),
        Column.CENTRAL_SAMPLES: pd.Series([[str(ids[i]) for i in s.central] for s in summaries], dtype=strings),
        Column.CENTRAL_TEXTS: pd.Series([[str(texts[i]) for i in s.central] if texts is not None else []
                                         for s in summaries], dtype=strings),
        Column.X: pd.Series([s.x for s in summaries], dtype="float64"),
        Column.Y: pd.Series([s.y for s in summaries], dtype="float64"),
    })


def log_clusters(log, extraction, result) -> None:
    """Log ``clusters.parquet`` of a :class:`~latentscape.jobs.core.mapping.MapResult` into an open
    run (nothing when the map has no cluster)."""
    frame = clusters_frame(extraction, result.clusters, result.embedding, result.coords)
    if frame is not None:
        log.table(Artifact.CLUSTERS, frame)
