"""What each cluster of a map is: its size, purity, keywords and most central samples.

Pure numpy + scikit-learn. One call, :func:`describe_clusters`, gives one
:class:`ClusterSummary` per cluster (noise, ``-1``, as its own row flagged ``noise``):

- size, and share of all samples;
- purity against the true labels: the majority label and its share of the cluster
  (None / NaN for an unlabelled data set);
- keywords by class-based TF-IDF (c-TF-IDF, as BERTopic defines it: the texts of a
  cluster are one document; term frequency per cluster normalised to sum 1, times
  ``log(1 + A / f_t)`` where A is the mean number of words per cluster and f_t the
  term's frequency over all clusters). Words common to every cluster score low, words
  frequent in one cluster only score high. Stop words (scikit-learn's English list) and
  one-character tokens are dropped;
- the most central samples: closest (euclidean) to the cluster's mean in the clustering
  space, so they are the cluster's most typical members, not its borderline ones;
- where 2D map coordinates are given, the cluster's median position (where a label for
  it is drawn).

    summaries = describe_clusters(clusters, z=embedding, labels=labels, texts=texts, coords=xy)
    summaries[0].keywords   # ('soup', 'simmer', 'onions', ...)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ClusterSummary", "describe_clusters", "class_tfidf", "central_samples", "purity", "NOISE"]

NOISE = -1
DEFAULT_KEYWORDS = 8
DEFAULT_CENTRAL = 5


@dataclass(frozen=True)
class ClusterSummary:
    """One cluster of a map.

    cluster: its id (``-1`` noise); noise: True for the noise row; size: samples in it;
    share: size / all samples; majority_label / purity: the most frequent true label and
    its share of the cluster (None / NaN without labels); keywords / keyword_scores: the
    top c-TF-IDF terms, best first (empty without texts); central: row indices of the
    samples closest to the cluster's centre in the clustering space, closest first
    (empty for noise: it has no centre); x / y: median map position (NaN without coords).
    """

    cluster: int
    noise: bool
    size: int
    share: float
    majority_label: str | None
    purity: float
    keywords: tuple[str, ...]
    keyword_scores: tuple[float, ...]
    central: tuple[int, ...]
    x: float
    y: float


def purity(labels: np.ndarray) -> tuple[str | None, float]:
    """(majority label, its share) of ``labels: (m,)``; ties go to the label that sorts
    first. (None, NaN) for no labels."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return None, float("nan")
    values, counts = np.unique(labels.astype(str), return_counts=True)  # sorted: ties -> first
    best = int(np.argmax(counts))
    return str(values[best]), float(counts[best] / labels.size)


def class_tfidf(
    texts: Sequence[str],
    groups: np.ndarray,
    *,
    top: int = DEFAULT_KEYWORDS,
    stop_words: str | None = "english",
) -> dict[int, list[tuple[str, float]]]:
    """Top ``top`` (term, c-TF-IDF score) of every group, best first.

    texts: (n,) documents; groups: (n,) integer group of each document. Every group of
    ``groups`` gets an entry (an empty list where its texts hold no word). Ties in score
    go to the term that sorts first, so the result is deterministic.

    c-TF-IDF (BERTopic): with ``counts[c, t]`` the occurrences of term t in group c,
    ``tf = counts / counts.sum(axis=1)``, ``idf[t] = log(1 + mean_c(counts[c].sum()) /
    counts[:, t].sum())``, score ``tf * idf``.
    """
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer

    groups = np.asarray(groups)
    if len(texts) != len(groups):
        raise ValueError(f"{len(texts)} texts for {len(groups)} group labels")
    ids, inverse = np.unique(groups, return_inverse=True)
    result: dict[int, list[tuple[str, float]]] = {int(g): [] for g in ids}
    if len(texts) == 0:
        return result
    vectorizer = CountVectorizer(stop_words=stop_words, lowercase=True)
    try:
        per_doc = vectorizer.fit_transform([str(t) for t in texts])
    except ValueError:  # no word at all (empty texts, or only stop words)
        return result
    # Sum the documents of each group: one row per group (the "class document").
    membership = sparse.csr_matrix((np.ones(len(groups)), (inverse, np.arange(len(groups)))),
                                   shape=(len(ids), len(groups)))
    counts = (membership @ per_doc).astype(np.float64).tocsr()
    words_per_group = np.asarray(counts.sum(axis=1)).ravel()
    term_totals = np.asarray(counts.sum(axis=0)).ravel()
    idf = np.log1p(words_per_group.mean() / np.maximum(term_totals, 1e-12))
    tf = sparse.diags(1.0 / np.maximum(words_per_group, 1e-12)) @ counts
    scores = (tf @ sparse.diags(idf)).tocsr()
    terms = vectorizer.get_feature_names_out()
    for row, group in enumerate(ids):
        start, end = scores.indptr[row], scores.indptr[row + 1]
        columns, values = scores.indices[start:end], scores.data[start:end]
        keep = values > 0
        columns, values = columns[keep], values[keep]
        # Highest score first, then the term's alphabetical rank (vocabulary indices are sorted).
        order = np.lexsort((columns, -values))[:top]
        result[int(group)] = [(str(terms[c]), float(v)) for c, v in zip(columns[order], values[order])]
    return result


def central_samples(z: np.ndarray, members: np.ndarray, *, n: int = DEFAULT_CENTRAL) -> np.ndarray:
    """Row indices (of ``z``) of the ``n`` members closest to the members' mean, closest
    first (ties: lower index first).

    z: (n_samples, n_dims) clustering space; members: (m,) row indices of one cluster."""
    members = np.asarray(members, dtype=np.int64)
    if members.size == 0 or n <= 0:
        return members[:0]
    points = np.asarray(z[members], dtype=np.float64)
    distances = np.linalg.norm(points - points.mean(axis=0), axis=1)
    order = np.lexsort((members, distances))[:n]
    return members[order]


def describe_clusters(
    clusters: np.ndarray,
    *,
    z: np.ndarray,
    labels: np.ndarray | None = None,
    texts: Sequence[str] | None = None,
    coords: np.ndarray | None = None,
    n_keywords: int = DEFAULT_KEYWORDS,
    n_central: int = DEFAULT_CENTRAL,
    include_noise: bool = True,
) -> list[ClusterSummary]:
    """One :class:`ClusterSummary` per cluster, clusters in id order, noise (``-1``) first
    when ``include_noise`` and there is any.

    clusters: (n,) int cluster of each sample, -1 noise; z: (n, c) the space the clusters
    were found in; labels: (n,) true labels or None; texts: (n,) sample texts or None
    (tabular data: no keywords); coords: (n, 2) map positions or None.
    Noise takes part in the c-TF-IDF (as BERTopic's outlier topic does), so a word
    frequent everywhere, noise included, does not name any cluster.
    """
    clusters = np.asarray(clusters).astype(np.int64)
    n = len(clusters)
    if len(z) != n:
        raise ValueError(f"z has {len(z)} rows for {n} cluster labels")
    for name, values in (("labels", labels), ("texts", texts), ("coords", coords)):
        if values is not None and len(values) != n:
            raise ValueError(f"{name} has {len(values)} rows for {n} cluster labels")
    keywords = class_tfidf(texts, clusters, top=n_keywords) if texts is not None and n else {}
    ids, inverse = np.unique(clusters, return_inverse=True)
    by_cluster = np.argsort(inverse, kind="stable")  # members of each cluster, in row order
    bounds = np.searchsorted(inverse[by_cluster], np.arange(len(ids) + 1))
    summaries = []
    for position, cluster in enumerate(ids):
        cluster = int(cluster)
        is_noise = cluster == NOISE
        if is_noise and not include_noise:
            continue
        members = by_cluster[bounds[position]:bounds[position + 1]]
        majority, share = purity(np.asarray(labels)[members]) if labels is not None else (None, float("nan"))
        terms = keywords.get(cluster, [])
        central = () if is_noise else tuple(int(i) for i in central_samples(z, members, n=n_central))
        if coords is not None:
            x, y = np.median(np.asarray(coords, dtype=np.float64)[members], axis=0)
        else:
            x = y = float("nan")
        summaries.append(ClusterSummary(
            cluster=cluster, noise=is_noise, size=int(members.size), share=float(members.size / n),
            majority_label=majority, purity=share, keywords=tuple(t for t, _ in terms),
            keyword_scores=tuple(s for _, s in terms), central=central, x=float(x), y=float(y),
        ))
    return summaries
