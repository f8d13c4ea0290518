"""Summary geometry of one layer's embeddings (numpy only)."""

from __future__ import annotations

import numpy as np

__all__ = ["mean_norm", "anisotropy", "unit_rows"]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero. ``x: (n, d)``."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def mean_norm(x: np.ndarray) -> float:
    """Mean L2 norm of the rows of ``x: (n, d)``."""
    return float(np.linalg.norm(x, axis=1).mean())


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
    unit = unit_rows(x.astype(np.float64))
    return float(np.einsum("ij,ij->i", unit[a], unit[b]).mean())
