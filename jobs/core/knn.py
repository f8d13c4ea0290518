"""k-nearest-neighbour graphs, computed once and shared by every map of the same data.

UMAP and the spectral reducer need a k-NN graph of the input. Computing it with UMAP's
own pynndescent costs 33-40 s of numba compilation in every new process (measured, see
../shared/NOTES.md); an exact graph from brute-force distances takes well under a second
at 5,000 x 384 and is passed to UMAP as ``precomputed_knn=(indices, distances, None)``.

Exact graphs break ties by sample index, so the first ``j`` columns of a graph of width
``k`` are exactly the graph of width ``j``: one graph of the largest width any map
needs serves them all, with the same result as a graph computed for each.

A :class:`GraphStore` given to :class:`KnnCache` keeps graphs beyond the process (the jobs'
disk cache, :mod:`latentscape.jobs._knn_store`): it is asked by a :class:`GraphKey`, which names
the data by :func:`fingerprint` (a hash of every byte of it), so a graph is only ever served
for the very array it was computed on.
"""

from __future__ import annotations

import hashlib
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["KnnGraph", "exact_knn", "approx_knn", "KnnCache", "GraphKey", "GraphStore", "fingerprint", "METRICS",
           "EXACT_MAX_SAMPLES"]

# Metrics that scikit-learn (exact graphs, scores) and umap/pynndescent (approximate
# graphs) both know by these names.
METRICS = ("euclidean", "cosine", "manhattan", "chebyshev", "correlation", "canberra", "braycurtis")

# Above this many samples the exact O(n^2) graph is slower than pynndescent even with its
# compilation (measured: 20k x 384 exact ~3 s on 2 cores; 50k ~20 s).
EXACT_MAX_SAMPLES = 30_000


@dataclass(frozen=True)
class KnnGraph:
    """``indices: (n, k)`` int32 neighbours of each row, nearest first, the row itself
    in column 0; ``distances: (n, k)`` float32, ascending (column 0 is 0). ``k`` counts the
    row itself, as UMAP's ``n_neighbors`` does."""

    indices: np.ndarray
    distances: np.ndarray
    metric: str
    exact: bool
    seed: int | None = None  # approximate graphs only

    @property
    def n(self) -> int:
        return self.indices.shape[0]

    @property
    def k(self) -> int:
        return self.indices.shape[1]

    def truncate(self, k: int) -> KnnGraph:
        """The first ``k`` columns as fresh arrays (UMAP writes into the ones it gets)."""
        if k > self.k:
            raise ValueError(f"graph has {self.k} neighbours, {k} requested")
        return KnnGraph(self.indices[:, :k].copy(), self.distances[:, :k].copy(), self.metric, self.exact, self.seed)

    def for_umap(self, k: int) -> tuple[np.ndarray, np.ndarray, None]:
        """UMAP's ``precomputed_knn`` for ``n_neighbors=k`` (no search index: no transform)."""
        graph = self.truncate(k)
        return graph.indices, graph.distances, None


def _chunk_rows(n: int) -> int:
    # Depends on n only, so the same data always gives bit-identical distances.
    return int(max(1, min(1024, 2**24 // max(n, 1))))


def pairwise(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """``(len(a), len(b))`` float64 distances under ``metric`` (scikit-learn's)."""
    from sklearn.metrics import pairwise_distances

    return pairwise_distances(a, b, metric=metric, n_jobs=1).astype(np.float64, copy=False)


class _Rows:
    """Distances from chunks of rows to all rows. Euclidean and cosine use one float32
    matrix product per chunk and compare squared distances (same order, 2x faster than
    scikit-learn's float64 path: measured 1.9 -> 0.9 s at 5,000 x 384 on one core);
    other metrics use scikit-learn. Depends on the data only, never on the chunk."""

    def __init__(self, x: np.ndarray, metric: str):
        self.metric = metric
        self.fast = metric in ("euclidean", "cosine")
        if self.fast:
            x = np.asarray(x, dtype=np.float32)
            if metric == "cosine":
                norms = np.linalg.norm(x, axis=1, keepdims=True)
                x = x / np.where(norms > 0, norms, 1.0)
            self.x = np.ascontiguousarray(x)
            self.sq = np.einsum("ij,ij->i", self.x, self.x)
        else:
            self.x = np.asarray(x, dtype=np.float64)

    def keys(self, start: int, stop: int) -> np.ndarray:
        """Sort keys (increasing with distance) from rows start..stop to every row."""
        if not self.fast:
            return pairwise(self.x[start:stop], self.x, self.metric)
        keys = self.x[start:stop] @ self.x.T
        keys *= -2.0
        keys += self.sq[start:stop, None]
        keys += self.sq[None, :]
        np.maximum(keys, 0.0, out=keys)
        return keys

    def distances(self, keys: np.ndarray) -> np.ndarray:
        """Keys of chosen neighbours back to distances under the metric."""
        if not self.fast:
            return keys
        if self.metric == "cosine":
            return keys / 2.0  # |a - b|^2 = 2 - 2 cos for unit rows
        return np.sqrt(keys)


def exact_knn(x: np.ndarray, k: int, *, metric: str = "euclidean") -> KnnGraph:
    """The exact k-NN graph of ``x: (n, d)`` (``k`` counts each row itself, 1 <= k <= n).

    Neighbours are ordered by (distance, index) with each row first in its own list, so
    the result is the same whatever ``k`` it was computed for, truncated. O(n^2 d) time,
    O(chunk * n) memory."""
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be within 1..{n}")
    source = _Rows(x, metric)
    indices = np.empty((n, k), dtype=np.int32)
    distances = np.empty((n, k), dtype=np.float32)
    step = _chunk_rows(n)
    for start in range(0, n, step):
        stop = min(n, start + step)
        rows = np.arange(stop - start)
        d = source.keys(start, stop)
        d[rows, rows + start] = -1.0  # the row itself first, whatever ties there are
        # Every entry up to the k-th smallest key (ties included), then the first k by
        # (key, index). np.partition of values plus a mask is ~2x faster than
        # argpartition (measured: 0.72 s against 1.41 s for 5,000 rows of 5,000).
        threshold = np.partition(d, k - 1, axis=1)[:, k - 1]
        hit_rows, hit_cols = np.nonzero(d <= threshold[:, None])
        order = np.lexsort((hit_cols, d[hit_rows, hit_cols], hit_rows))
        counts = np.bincount(hit_rows, minlength=len(rows))
        first = np.concatenate(([0], np.cumsum(counts)[:-1]))
        chosen = hit_cols[order][first[:, None] + np.arange(k)]
        chosen_d = source.distances(np.maximum(np.take_along_axis(d, chosen, axis=1), 0.0))
        chosen_d[:, 0] = 0.0  # the row itself
        indices[start:stop] = chosen
        distances[start:stop] = chosen_d
    return KnnGraph(indices, distances, metric, exact=True)


def approx_knn(x: np.ndarray, k: int, *, metric: str = "euclidean", seed: int = 0) -> KnnGraph:
    """An approximate k-NN graph from pynndescent (what UMAP itself uses), seeded.

    For data too large for :func:`exact_knn`; pays pynndescent's numba compilation once
    per process. Not truncation-consistent: the width is part of a map's configuration."""
    from pynndescent import NNDescent

    from latentscape.jobs.core._numba_cache import enable_numba_cache

    enable_numba_cache()
    index = NNDescent(np.asarray(x, dtype=np.float32), n_neighbors=k, metric=metric, random_state=seed,
                      n_jobs=1, low_memory=True, verbose=False)
    indices, distances = index.neighbor_graph
    return KnnGraph(indices.astype(np.int32), distances.astype(np.float32), metric, exact=False, seed=seed)


def fingerprint(x: np.ndarray) -> str:
    """A digest of ``x``: its shape, dtype and every byte (SHA-256; measured 0.1 s for
    100,000 x 384 float32, against a minute for the approximate graph it names)."""
    x = np.ascontiguousarray(x)
    digest = hashlib.sha256(f"{x.shape}|{x.dtype.str}|".encode())
    digest.update(memoryview(x).cast("B"))
    return digest.hexdigest()


@dataclass(frozen=True)
class GraphKey:
    """Which graph: of the data with this :func:`fingerprint` (``n`` rows), under
    ``metric``, exact (any stored width >= ``k`` serves) or approximate (this ``k`` and
    ``seed`` only)."""

    data: str
    n: int
    metric: str
    exact: bool
    k: int
    seed: int | None = None


class GraphStore(Protocol):
    """Graphs kept beyond one process. ``load`` returns the graph ``key`` names (an exact
    one possibly wider than ``key.k``) or None; ``save`` keeps one (never raises for want
    of room: a store that cannot keep it just forgets it); ``computing(key)`` is held while
    one process computes the graph, so others that want it wait and then load it."""

    def load(self, key: GraphKey) -> KnnGraph | None: ...

    def save(self, key: GraphKey, graph: KnnGraph) -> None: ...

    def computing(self, key: GraphKey) -> AbstractContextManager: ...


class KnnCache:
    """k-NN graphs of one data set, one per (metric, exact or approximate), shared by
    threads. Ask with the largest ``k`` first (``hint_k``) to compute each graph once.
    store: a :class:`GraphStore` asked before computing a graph and given every graph
    computed (None: this process only)."""

    def __init__(self, x: np.ndarray, *, hint_k: int = 0, store: GraphStore | None = None):
        self.x = x
        self.hint_k = hint_k
        self.store = store
        self._fingerprint: str | None = None
        self._graphs: dict[tuple, KnnGraph] = {}
        self._lock = threading.Lock()
        self.seconds = 0.0  # time spent computing graphs (and reading stored ones), all metrics together
        self.computed = 0  # graphs computed here
        self.loaded = 0  # graphs the store served

    def get(self, metric: str, k: int, *, exact: bool = True, seed: int = 0, width: int | None = None) -> KnnGraph:
        """A graph of width >= ``k`` (exact) or exactly ``width`` (approximate)."""
        import time

        key = (metric, True) if exact else (metric, False, seed, width)
        with self._lock:
            graph = self._graphs.get(key)
            if graph is None or graph.k < k:
                started = time.perf_counter()
                wanted = min(len(self.x), max(k, self.hint_k)) if exact else (width or k)
                graph = self._stored(metric, exact, wanted, seed)
                if graph is None:
                    # Another process wanting the same graph meanwhile waits, then loads this one's.
                    with self.store.computing(self._key(metric, exact, wanted, seed)) if self.store else nullcontext():
                        graph = self._stored(metric, exact, wanted, seed)  # saved while this one waited
                        if graph is None:
                            graph = self._compute(metric, exact, wanted, seed)
                            self.computed += 1
                self.seconds += time.perf_counter() - started
                self._graphs[key] = graph
            return graph

    def _compute(self, metric: str, exact: bool, k: int, seed: int) -> KnnGraph:
        """Compute the graph (and give it to the store)."""
        if exact:
            graph = exact_knn(self.x, k, metric=metric)
        else:
            graph = approx_knn(self.x, k, metric=metric, seed=seed)
        if self.store is not None:
            self.store.save(self._key(metric, exact, k, seed), graph)
        return graph

    def _key(self, metric: str, exact: bool, k: int, seed: int) -> GraphKey:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.x)
        return GraphKey(self._fingerprint, len(self.x), metric, exact, k, None if exact else seed)

    def _stored(self, metric: str, exact: bool, k: int, seed: int) -> KnnGraph | None:
        """The store's graph for this request, checked to fit it (None: none fits; counted in
        ``loaded`` when one does)."""
        if self.store is None:
            return None
        graph = self.store.load(self._key(metric, exact, k, seed))
        if graph is None or graph.n != len(self.x) or graph.metric != metric or graph.exact != exact:
            return None
        if (graph.k < k) if exact else (graph.k != k or graph.seed != seed):
            return None
        self.loaded += 1
        return graph
