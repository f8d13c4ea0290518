"""Aligned 2D maps of consecutive layers: umap-learn's AlignedUMAP, reassembled for speed.

Maps of each layer made independently land in unrelated positions, rotations and
reflections, so stepping through layers makes the picture jump. AlignedUMAP (McInnes,
umap-learn's ``umap.AlignedUMAP``) lays out all layers at once: each layer's own UMAP
graph pulls its points together as usual, and a regulariser pulls each sample towards
its own position in the layers within ``window`` of it, weighted by how much its
neighbourhood is shared between those layers (Jaccard of the two neighbour sets). The
same sample in consecutive layers then sits in the same place unless its neighbourhood
really changed.

:func:`aligned_maps` runs the algorithm of ``AlignedUMAP.fit`` with umap-learn's own
pieces (fuzzy simplicial sets, spectral initialisation, Procrustes initial alignment,
the aligned layout epoch), for the special case the layers job needs (the same samples
in every layer), without three measured costs of ``AlignedUMAP.fit`` (umap-learn 0.5.12,
1,000 samples x 4 layers, 2 busy cores):

- it fits a complete standalone UMAP per layer (graph and full layout) only to keep its
  graph; here the graph comes from an exact k-NN graph (:mod:`latentscape.jobs.core.knn`) and
  ``fuzzy_simplicial_set``, with no throw-away layout (~22 s there, mostly a Python-level
  callable distance loop);
- its neighbourhood similarities test membership against a set rebuilt per sample,
  O(n^2) per pair of layers (~8 s there); here a sparse row-wise Jaccard;
- it builds a new numba function on every call, paying compilation each time, and its
  layout epoch reads numba typed lists of arrays in its innermost loop; here the same
  epoch, step for step, runs over stacked arrays (:mod:`latentscape.jobs.core._aligned_epoch`),
  compiled once and cached on disk: 3-3.5x faster on the same graphs (1,000 x 4 layers,
  100 epochs: 4.1 s against 14.0 s, interleaved on the same busy machine), with the
  same coordinates bit for bit (tests/test_aligned.py runs both).

The epochs are nearly all of the remaining time, linear in samples x layers x epochs.

One deliberate difference: ``AlignedUMAP`` leaves its layout's curve parameters at their
defaults whatever ``min_dist`` says; here ``a, b`` follow ``min_dist`` and ``spread`` as in
``umap.UMAP``. Seeded: the same inputs and seed give the same maps.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

__all__ = ["aligned_maps", "DEFAULT_N_NEIGHBORS", "DEFAULT_MIN_DIST", "DEFAULT_EPOCHS", "DEFAULT_WINDOW",
           "DEFAULT_REGULARISATION"]

DEFAULT_N_NEIGHBORS = 15
DEFAULT_MIN_DIST = 0.1
DEFAULT_EPOCHS = 200  # AlignedUMAP's own default
DEFAULT_WINDOW = 3  # AlignedUMAP's alignment_window_size
DEFAULT_REGULARISATION = 1e-2  # AlignedUMAP's alignment_regularisation

_EPOCH = None
_EPOCH_LOCK = threading.Lock()


def _epoch_function():
    """The aligned layout epoch (:mod:`latentscape.jobs.core._aligned_epoch`), compiled once per process
    and cached on disk where numba can; imported late (it imports numba and umap)."""
    global _EPOCH
    with _EPOCH_LOCK:
        if _EPOCH is None:
            from latentscape.jobs.core._aligned_epoch import aligned_epoch

            _EPOCH = aligned_epoch
        return _EPOCH


def _neighbour_sets(graph) -> object:
    """The graph's sparsity pattern as a 0/1 CSR matrix (who is whose neighbour)."""
    pattern = graph.tocsr(copy=True)
    pattern.data = np.ones_like(pattern.data, dtype=np.float32)
    return pattern


def _jaccard_rows(a, b) -> np.ndarray:
    """``(n,)`` Jaccard similarity of row i's neighbour set in ``a`` and in ``b`` (0/1 CSR,
    same shape); 1 where both are empty (as AlignedUMAP)."""
    inter = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    union = np.diff(a.indptr) + np.diff(b.indptr) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), 1.0).astype(np.float32)


def aligned_maps(
    layers: Sequence[np.ndarray],
    *,
    n_neighbors: int = DEFAULT_N_NEIGHBORS,
    min_dist: float = DEFAULT_MIN_DIST,
    spread: float = 1.0,
    n_epochs: int = DEFAULT_EPOCHS,
    window: int = DEFAULT_WINDOW,
    regularisation: float = DEFAULT_REGULARISATION,
    knn: Sequence | None = None,
    seed: int = 0,
) -> list[np.ndarray]:
    """One ``(n, 2)`` float32 map per layer, aligned across consecutive layers.

    layers: ``L`` arrays ``(n, d_l)`` of the same ``n`` samples in the same order (widths
    may differ). knn: optional exact Euclidean :class:`~latentscape.jobs.core.knn.KnnGraph` per layer,
    at least ``n_neighbors`` wide (computed here when None). window: how many layers on
    each side pull a sample towards its own position; regularisation: how hard (0: each
    layer laid out on its own, from aligned starting points). One layer gives one plain
    map. Points the graph leaves disconnected are NaN (as AlignedUMAP)."""
    import warnings

    from umap.aligned_umap import procrustes_align
    from umap.spectral import spectral_layout
    from umap.umap_ import find_ab_params, fuzzy_simplicial_set, make_epochs_per_sample

    from latentscape.jobs.core.knn import exact_knn
    from latentscape.jobs.core._numba_cache import enable_numba_cache

    layers = [np.asarray(x, dtype=np.float32) for x in layers]
    if not layers:
        raise ValueError("aligned maps need at least one layer")
    n = len(layers[0])
    if any(x.ndim != 2 or len(x) != n for x in layers):
        raise ValueError(f"every layer must be (n={n}, d), got {[x.shape for x in layers]}")
    if not 2 <= n_neighbors < n:
        raise ValueError(f"n_neighbors={n_neighbors} must be within 2..{n - 1} for {n} samples")
    if n_epochs < 1 or window < 1 or regularisation < 0:
        raise ValueError(f"need n_epochs >= 1, window >= 1, regularisation >= 0; got {n_epochs}, {window}, "
                         f"{regularisation}")
    enable_numba_cache()
    count = len(layers)
    random_state = np.random.RandomState(seed)

    # Each layer's fuzzy graph from an exact k-NN graph (the row itself in column 0, as UMAP's).
    graphs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # disconnected components: spectral layout copes
        for index, x in enumerate(layers):
            graph = knn[index] if knn is not None else exact_knn(x, n_neighbors)
            if graph.k < n_neighbors or graph.n != n:
                raise ValueError(f"k-NN graph of layer {index} ({graph.n} x {graph.k}) is too narrow")
            fuzzy, _, _ = fuzzy_simplicial_set(x, n_neighbors, random_state, "euclidean",
                                               knn_indices=graph.indices[:, :n_neighbors].astype(np.int64),
                                               knn_dists=graph.distances[:, :n_neighbors].astype(np.float32))
            graphs.append(fuzzy.tocsr())

        # Relations (the same sample in every layer) and how much each sample's
        # neighbourhood is shared with the layers around it.
        window = min(window, max(count - 1, 1))
        offsets = np.arange(-window, window + 1)
        relations = np.full((count, len(offsets), n), -1, dtype=np.int32)
        weights = np.zeros((count, len(offsets), n), dtype=np.float32)
        patterns = [_neighbour_sets(graph) for graph in graphs]
        for m in range(count):
            for column, offset in enumerate(offsets):
                other = m + offset
                if 0 <= other < count and offset != 0:
                    relations[m, column] = np.arange(n, dtype=np.int32)
                    weights[m, column] = _jaccard_rows(patterns[m], patterns[other])

        # Spectral starting points, each rotated onto the layer before it (AlignedUMAP's).
        transform_state = np.random.RandomState(seed)
        embeddings = []
        anchors = np.vstack([np.arange(n), np.arange(n)])
        for index, (x, graph) in enumerate(zip(layers, graphs)):
            start = spectral_layout(x, graph, 2, transform_state)
            start = (start * (10.0 / np.abs(start).max())).astype(np.float32, order="C")
            if index:
                start = np.ascontiguousarray(procrustes_align(embeddings[-1], start, anchors), dtype=np.float32)
            embeddings.append(start)

    # The layout: every layer's edges, with the pull towards the neighbouring layers.
    a, b = find_ab_params(spread, min_dist)
    negative_sample_rate = 5.0
    edges = [graph.tocoo() for graph in graphs]
    width = max(1, max(len(coo.data) for coo in edges))
    heads = np.zeros((count, width), dtype=np.int32)
    tails = np.zeros((count, width), dtype=np.int32)
    per_sample = np.full((count, width), -1.0)
    for m, coo in enumerate(edges):
        heads[m, :len(coo.data)] = coo.row
        tails[m, :len(coo.data)] = coo.col
        per_sample[m, :len(coo.data)] = make_epochs_per_sample(coo.data, n_epochs)
    per_negative = (per_sample / negative_sample_rate).astype(np.float32)
    next_negative = per_negative.copy()
    next_sample = per_sample.astype(np.float32)
    n_edges = np.array([len(coo.data) for coo in edges], dtype=np.int64)
    positions = np.ascontiguousarray(np.stack(embeddings), dtype=np.float32)
    rng_state = transform_state.randint(np.iinfo(np.int32).min + 1, np.iinfo(np.int32).max - 1, 3).astype(np.int64)
    epoch = _epoch_function()
    alpha = 1.0
    for step in range(n_epochs):
        epoch(positions, heads, tails, n_edges, per_sample, per_negative, next_negative, next_sample, weights,
              relations, float(a), float(b), 1.0, float(regularisation), alpha, step, rng_state)
        alpha = 1.0 - step / n_epochs

    maps = []
    for graph, position in zip(graphs, positions):
        out = np.array(position, dtype=np.float32)
        out[np.asarray(graph.sum(axis=1)).ravel() == 0] = np.nan
        maps.append(out)
    return maps
