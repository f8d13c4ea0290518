"""Summary geometry of one layer's embeddings (numpy only)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["mean_norm", "mean_norm_of_chunks", "anisotropy", "unit_rows"]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero. ``x: (n, d)``."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def mean_norm(x: np.ndarray) -> float:
    """Mean L2 norm of the rows of ``x: (n, d)``."""
    return float(np.linalg.norm(x, axis=1).mean())


def mean_norm_of_chunks(chunks: Iterable[np.ndarray]) -> float:
    """:func:`mean_norm` of the rows of several ``(n_i, d)`` chunks taken together, never
    holding more than one (a layer streamed from disk). NaN when there are no rows."""
    total, count = 0.0, 0
    for chunk in chunks:
        total += float(np.linalg.norm(chunk.astype(np.float32, copy=False), axis=1).sum(dtype=np.float64))
        count += len(chunk)
    return total / count if count else float("nan")


def anisotropy(x: np.ndarray, *, pairs: int = 2000, seed: int = 0) -> float:
    """Mean cosine similarity of random distinct pairs of rows of ``x: (n, d)``.

    Near 0 for isotropic data; near 1 when every vector points the same way (a
    known trait of transformer layers). Needs n >= 2.
    """
    n = len(x)
    if n < 2:
        raise ValueError("anisotropy needs at least two samples")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, size=pairs)
    b = (a + rng.integers(1, n, size=pairs)) % n  # never the same row
    # Only the sampled rows are read: ``x`` may be a memory-mapped layer of any size.
    unit_a, unit_b = unit_rows(np.asarray(x[a], dtype=np.float64)), unit_rows(np.asarray(x[b], dtype=np.float64))
    return float(np.einsum("ij,ij->i", unit_a, unit_b).mean())
