"""k-NN graphs kept on disk (latentscape.jobs._knn_store) and served through KnnCache:
a graph comes back equal, only ever for the same array, exact ones at any smaller width,
never from a half-written file, and the folder stays under its size cap."""

from __future__ import annotations

import os
import threading

import numpy as np

from latentscape.jobs._knn_store import DiskGraphStore
from latentscape.jobs.core.knn import GraphKey, KnnCache, KnnGraph, exact_knn, fingerprint


def _data(n=300, d=8, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _same(a: KnnGraph, b: KnnGraph) -> None:
    np.testing.assert_array_equal(np.asarray(a.indices), np.asarray(b.indices))
    np.testing.assert_array_equal(np.asarray(a.distances), np.asarray(b.distances))
    assert (a.metric, a.exact, a.seed) == (b.metric, b.exact, b.seed)


def test_an_exact_graph_computed_once_comes_back_from_disk_in_a_new_cache(tmp_path):
    x = _data()
    first = KnnCache(x, store=DiskGraphStore(tmp_path))
    computed = first.get("cosine", 12)
    assert (first.computed, first.loaded) == (1, 0)
    later = KnnCache(x, store=DiskGraphStore(tmp_path))  # another process, as far as it knows
    served = later.get("cosine", 12)
    assert (later.computed, later.loaded) == (0, 1)
    _same(served, computed)
    _same(served, exact_knn(x, 12, metric="cosine"))


def test_an_approximate_graph_is_served_for_its_own_width_and_seed_only(tmp_path):
    x = _data()
    store = DiskGraphStore(tmp_path)
    # A stand-in approximate graph (pynndescent compiles for seconds; the store does not care).
    exact = exact_knn(x, 10)
    graph = KnnGraph(exact.indices, exact.distances, "euclidean", exact=False, seed=3)
    store.save(GraphKey(fingerprint(x), len(x), "euclidean", False, 10, 3), graph)
    cache = KnnCache(x, store=store)
    _same(cache.get("euclidean", 10, exact=False, seed=3, width=10), graph)
    assert (cache.computed, cache.loaded) == (0, 1)
    for width, seed in ((12, 3), (10, 4)):
        assert store.load(GraphKey(fingerprint(x), len(x), "euclidean", False, width, seed)) is None
    assert store.load(GraphKey(fingerprint(x), len(x), "euclidean", True, 10)) is None  # not an exact one


def test_another_array_never_gets_the_graph(tmp_path):
    x = _data()
    KnnCache(x, store=DiskGraphStore(tmp_path)).get("euclidean", 10)
    changed = x.copy()
    changed[137, 5] += 1e-3  # one value of one row
    for other in (changed, x[:-1], x.astype(np.float64), np.ascontiguousarray(x[:, :7])):
        cache = KnnCache(other, store=DiskGraphStore(tmp_path))
        _same(cache.get("euclidean", 10), exact_knn(other, 10))
        assert (cache.computed, cache.loaded) == (1, 0)
    # the same bytes under another scope (another extraction run or layer) miss too
    assert DiskGraphStore(tmp_path, scope="run/1").load(GraphKey(fingerprint(x), len(x), "euclidean", True, 10)) is None
    assert DiskGraphStore(tmp_path).load(GraphKey(fingerprint(x), len(x), "euclidean", True, 10)) is not None


def test_a_wider_exact_graph_serves_narrower_widths_exactly_and_replaces_them(tmp_path):
    x = _data()
    KnnCache(x, store=DiskGraphStore(tmp_path)).get("euclidean", 8)
    KnnCache(x, store=DiskGraphStore(tmp_path), hint_k=25).get("euclidean", 8)  # misses: wants 25
    assert [p.name.rsplit("-", 1)[1] for p in tmp_path.glob("*.npy")] == ["k25.npy"]  # the 8 is subsumed
    cache = KnnCache(x, store=DiskGraphStore(tmp_path))
    served = cache.get("euclidean", 8)
    assert served.k == 25 and cache.loaded == 1
    _same(served.truncate(8), exact_knn(x, 8))
    assert DiskGraphStore(tmp_path).load(GraphKey(fingerprint(x), len(x), "euclidean", True, 26)) is None


def test_a_torn_or_half_written_file_is_never_read(tmp_path):
    x = _data()
    store = DiskGraphStore(tmp_path)
    key = GraphKey(fingerprint(x), len(x), "euclidean", True, 10)
    KnnCache(x, store=store).get("euclidean", 10)
    [whole] = tmp_path.glob("*.npy")
    data = whole.read_bytes()
    whole.unlink()
    # a writer that died mid-way leaves its temporary file: never a graph
    (tmp_path / f".{whole.name}.abc123.tmp").write_bytes(data[: len(data) // 2])
    assert store.load(key) is None
    # a file cut short under the final name (a disk that failed) is a miss, not an error
    whole.write_bytes(data[: len(data) // 2])
    assert store.load(key) is None
    cache = KnnCache(x, store=store)
    _same(cache.get("euclidean", 10), exact_knn(x, 10))
    assert cache.computed == 1 and store.load(key) is not None  # written again, whole


def test_the_size_cap_evicts_the_least_recently_used(tmp_path):
    arrays = [_data(seed=seed) for seed in range(4)]
    one_graph = 2 * 300 * 10 * 4 + 128  # (2, n, k) int32 and the .npy header
    store = DiskGraphStore(tmp_path, max_bytes=3 * one_graph)
    keys = []
    for age, x in enumerate(arrays[:3]):
        KnnCache(x, store=store).get("euclidean", 10)
        keys.append(GraphKey(fingerprint(x), len(x), "euclidean", True, 10))
        for path in tmp_path.glob("*.npy"):  # written in this order, a minute apart
            os.utime(path, (path.stat().st_mtime - 60, path.stat().st_mtime - 60))
    assert store.load(keys[0]) is not None  # used again: now the most recent
    KnnCache(arrays[3], store=store).get("euclidean", 10)  # one too many
    assert len(list(tmp_path.glob("*.npy"))) == 3
    assert store.load(keys[1]) is None  # the least recently used went
    assert all(store.load(key) is not None for key in (keys[0], keys[2]))


class _Observed(DiskGraphStore):
    """The disk store, telling when a cache starts waiting for the right to compute."""

    waiting = threading.Event()

    def computing(self, key):
        self.waiting.set()
        return super().computing(key)


def test_a_process_wanting_a_graph_another_is_computing_waits_and_loads_it(tmp_path):
    x = _data()
    key = GraphKey(fingerprint(x), len(x), "euclidean", True, 10)
    holder = DiskGraphStore(tmp_path)  # "the other process": its own lock file handle
    found = {}

    def other_process():
        cache = KnnCache(x, store=_Observed(tmp_path))
        found["graph"], found["counts"] = cache.get("euclidean", 10), (cache.computed, cache.loaded)

    with holder.computing(key):
        waiter = threading.Thread(target=other_process)
        waiter.start()
        assert _Observed.waiting.wait(timeout=60)  # it missed and now waits on the lock
        exact = exact_knn(x, 10)
        holder.save(key, exact)
    waiter.join(timeout=60)
    assert found["counts"] == (0, 1)  # loaded what the holder saved, computed nothing
    _same(found["graph"], exact)
