"""Numba's disk cache for umap-learn's and pynndescent's compiled functions.

Its own module because both :mod:`latentscape.jobs.core.reduce` (UMAP) and :mod:`latentscape.jobs.core.knn`
(pynndescent) need it, and reduce already imports knn.
"""

from __future__ import annotations

import threading

__all__ = ["enable_numba_cache"]

_NUMBA_CACHE_LOCK = threading.Lock()
_numba_cache_on = False


def enable_numba_cache() -> int:
    """Let numba cache umap-learn's and pynndescent's compiled functions on disk.

    umap-learn 0.5.12 compiles its functions without ``cache=True``, so every new process
    paid the compilation again: measured on digits, the first map of a process took 9.1 s
    and later ones 1.2 s; with the cache kept, the first map of a new process took 1.0 s.
    The cache lives where numba puts it (``__pycache__`` beside the library, or its
    user-wide folder when that is read-only); ``LATENTSCAPE_NUMBA_CACHE=0`` turns this off.
    Functions numba cannot cache (dynamic globals) are compiled as before. Returns the
    number of functions switched to caching (0 after the first call).

    pynndescent 0.7.0's ``nn_descent`` and ``nn_descent_internal`` are among those: they
    take the metric as a compiled-function argument (``dist=pynnd_dist.euclidean``), which
    numba refuses to cache ("Cannot cache compiled function ... uses dynamic globals"), so
    they compile again in every process. Measured (``approx_knn`` of 40,000 x 50 random
    float32, k=15, 2-core machine): 31.4 s in a first process (empty cache), 11.5 s in the
    next (the rest cached), 1.2 s for a second graph in the same process; about 10 s a
    process is that compilation. No clean way around it (patching pynndescent's source);
    :mod:`latentscape.jobs._knn_store` keeps the graphs themselves on disk instead, so a
    process that finds its graph there never calls pynndescent."""
    global _numba_cache_on
    import os
    import sys

    if os.environ.get("LATENTSCAPE_NUMBA_CACHE", "1") == "0":
        return 0
    with _NUMBA_CACHE_LOCK:
        if _numba_cache_on:
            return 0
        _numba_cache_on = True
        import umap  # noqa: F401  (imports pynndescent too)
        from numba.core.caching import FunctionCache
        from numba.core.registry import CPUDispatcher

        switched = 0
        for name, module in list(sys.modules.items()):
            if module is None or not name.startswith(("umap.", "pynndescent.")):
                continue
            for value in list(vars(module).values()):
                if isinstance(value, CPUDispatcher) and not isinstance(value._cache, FunctionCache):
                    try:
                        value.enable_caching()
                        switched += 1
                    except Exception:  # a function numba cannot cache: compile as before
                        pass
        return switched
