"""k-NN graphs kept on disk, so a graph is computed once per data set on a machine.

Every map of a layer needs the same k-NN graph, and every new process (``latentscape map``
again, each ``sweep --workers`` process, ``layers``' per-layer map, a map after a sweep)
computed it again: about a minute for an approximate graph of 100,000 x 384 on one core,
several seconds for an exact one of 30,000. :class:`DiskGraphStore` is the
:class:`~latentscape.jobs.core.knn.GraphStore` that keeps them in the cache folder's
``knn/`` (:func:`latentscape.tracking.cache_folder.cache_root`); ``LATENTSCAPE_KNN_CACHE=0``
turns it off.

A stale hit cannot happen: a file is named by a digest of the caller's scope (the
extraction run and layer) and the data's fingerprint (every byte of the array), the metric,
exact or approximate, the width and (approximate) the seed. An exact graph of width k serves
any width up to k (exact graphs truncate exactly). A file is written whole under a
temporary name and renamed into place (``os.replace``), so a reader never sees a torn one,
and two processes writing the same graph leave one whole file; while one process computes
a graph, another that wants it waits on a lock file and then reads it (:meth:`computing`). One ``.npy`` holds both
arrays, ``(2, n, k)`` int32: the indices, then the float32 distances' bits, so one rename
publishes both. Reads are memory-mapped.

Disk use is bounded: past ``max_bytes`` (2 GB by default: ~160 graphs of 100,000 x 15) the
least recently used files go (a hit refreshes a file's time).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from latentscape.jobs.core.knn import GraphKey, KnnGraph

__all__ = ["DiskGraphStore", "KNN_CACHE_ENV", "DEFAULT_MAX_BYTES", "layer_graph_store"]

KNN_CACHE_ENV = "LATENTSCAPE_KNN_CACHE"  # "0": no disk cache of k-NN graphs
DEFAULT_MAX_BYTES = 2 * 2**30
_STALE_TEMP_S = 24 * 3600  # a temporary file this old belongs to a process that died
_WIDTH = re.compile(r"-k(\d+)\.npy$")


class DiskGraphStore:
    """k-NN graphs as ``.npy`` files in ``folder`` (made when first needed). scope: what
    the caller knows of the data beyond its bytes (e.g. ``"<run id>/<layer>"``), part of
    every name; max_bytes: the most the folder's graphs may take."""

    def __init__(self, folder: Path, *, scope: str = "", max_bytes: int = DEFAULT_MAX_BYTES):
        self.folder = Path(folder)
        self.scope = scope
        self.max_bytes = int(max_bytes)

    def _stem(self, key: GraphKey) -> str:
        data = hashlib.sha256(f"{self.scope}|{key.data}|{key.n}".encode()).hexdigest()[:32]
        return f"{data}-{key.metric}-exact" if key.exact else f"{data}-{key.metric}-approx-s{key.seed}"

    def _path(self, key: GraphKey) -> Path:
        return self.folder / f"{self._stem(key)}-k{key.k}.npy"

    def _exact_widths(self, key: GraphKey) -> list[tuple[int, Path]]:
        """The stored exact graphs of ``key``'s data and metric, narrowest first."""
        found = []
        for path in self.folder.glob(f"{self._stem(key)}-k*.npy"):
            width = _WIDTH.search(path.name)
            if width:
                found.append((int(width.group(1)), path))
        return sorted(found)

    def load(self, key: GraphKey) -> KnnGraph | None:
        """The graph ``key`` names (an exact one: the narrowest stored of width >= k), or None."""
        if key.exact:
            paths = [path for width, path in self._exact_widths(key) if width >= key.k]
        else:
            paths = [self._path(key)]
        for path in paths:
            graph = self._read(path, key)
            if graph is not None:
                return graph
        return None

    def _read(self, path: Path, key: GraphKey) -> KnnGraph | None:
        try:
            both = np.load(path, mmap_mode="r")
        except (OSError, ValueError):  # gone meanwhile (evicted), or not a whole .npy: a miss
            return None
        if both.dtype != np.int32 or both.ndim != 3 or both.shape[0] != 2 or both.shape[1] != key.n:
            return None
        try:
            os.utime(path)  # recently used: the last to be evicted
        except OSError:
            pass
        return KnnGraph(both[0], both[1].view(np.float32), key.metric, key.exact, key.seed)

    @contextlib.contextmanager
    def computing(self, key: GraphKey) -> Iterator[None]:
        """Held while this process computes ``key``'s graph: another process asking for it
        (a ``sweep --workers`` sibling) waits here, then loads the graph instead of computing
        it again. The kernel drops the lock when its holder dies, SIGKILL included; a folder
        that cannot hold a lock file just computes without one."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            lock = self.folder / f".{self._stem(key)}.lock"
            handle = open(lock, "a+")
            os.utime(lock)  # in use: not a stale lock file for evict
        except OSError:
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            handle.close()

    def save(self, key: GraphKey, graph: KnnGraph) -> None:
        """Write ``graph`` whole, then rename it into place; then drop narrower exact graphs
        of the same data (this one serves them) and evict past the size cap. A disk that
        cannot take it (full, read-only) leaves the store as it was."""
        both = np.stack([np.asarray(graph.indices, dtype=np.int32),
                         np.asarray(graph.distances, dtype=np.float32).view(np.int32)])
        target = self.folder / f"{self._stem(key)}-k{graph.k}.npy"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as file:
                    np.save(file, both)
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError:
            return
        if key.exact:
            for width, path in self._exact_widths(key):
                if width < graph.k:
                    path.unlink(missing_ok=True)
        self.evict(keep=target)

    def evict(self, *, keep: Path | None = None) -> None:
        """Delete the least recently used graphs until the folder's graphs fit ``max_bytes``
        (never ``keep``), and the temporary and lock files of a day ago."""
        now = time.time()
        files = []
        for path in self.folder.iterdir():
            try:
                stat = path.stat()
            except OSError:
                continue
            if path.suffix in (".tmp", ".lock"):
                if now - stat.st_mtime > _STALE_TEMP_S:
                    path.unlink(missing_ok=True)
            elif path.suffix == ".npy":
                files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size


def layer_graph_store(extraction, layer: int) -> DiskGraphStore | None:
    """The disk store for the k-NN graphs of one layer of an extraction (its run id and
    layer scope the names), or None when ``LATENTSCAPE_KNN_CACHE=0``."""
    if os.environ.get(KNN_CACHE_ENV, "1") == "0":
        return None
    from latentscape.tracking.cache_folder import cache_root

    return DiskGraphStore(cache_root() / "knn", scope=f"{extraction.run_id}/{int(layer)}")
