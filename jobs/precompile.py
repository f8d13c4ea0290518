"""Compile umap-learn's numba code once, into numba's disk cache, at install time.

A new process otherwise compiles UMAP's graph and layout functions before its first map
(measured: ~12 s of a cold ``latentscape map`` at 5,000 x 384 on 2 cores). ``make`` runs
this after installing the dependencies, so the first ``latentscape`` process on a machine
starts from the cache, as every later one does (see ``latentscape.jobs.core._numba_cache``). The data
is random: only the compiled code is kept.

    python -m latentscape.jobs.precompile
"""

from __future__ import annotations

import sys
import time


def main() -> int:
    import warnings

    import numpy as np

    from latentscape.jobs.core.mapping import data_shape, fit_map, resolve_config

    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    labels = np.array([f"class-{i % 5}" for i in range(600)])
    x = (rng.normal(size=(5, 32))[np.arange(600) % 5] + rng.normal(scale=0.5, size=(600, 32))).astype(np.float32)
    # float32 like every logged layer: numba caches one compiled version per argument types.
    fit_map(x, labels, resolve_config(shape=data_shape(x, labels), seed=0))
    print(f"latentscape: UMAP's numba code compiled and cached ({time.perf_counter() - started:.0f} s)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
