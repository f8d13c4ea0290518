"""Pooling token states into one vector per sample (numpy only).

Every pooling takes ``hidden: (batch, tokens, dim)`` and ``mask: (batch, tokens)``
(1 for real tokens, 0 for padding, padding on either side) and returns ``(batch, dim)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["POOLINGS", "pool"]


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over real tokens (padding excluded)."""
    weights = mask.astype(hidden.dtype)[..., None]
    counts = np.maximum(weights.sum(axis=1), 1.0)
    return (hidden * weights).sum(axis=1) / counts


def cls_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The first real token (``[CLS]`` for BERT-like encoders)."""
    first = np.argmax(mask > 0, axis=1)
    return hidden[np.arange(len(hidden)), first]


def max_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Element-wise max over real tokens."""
    masked = np.where(mask[..., None] > 0, hidden, -np.inf)
    return masked.max(axis=1)


def last_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The last real token: what a decoder-only model has read everything up to."""
    positions = np.arange(mask.shape[1])
    last = np.where(mask > 0, positions, -1).max(axis=1)
    return hidden[np.arange(len(hidden)), last]


POOLINGS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "mean": mean_pool,
    "cls": cls_pool,
    "max": max_pool,
    "last": last_pool,
}


def pool(name: str, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    try:
        return POOLINGS[name](hidden, mask)
    except KeyError:
        raise ValueError(f"unknown pooling {name!r}; choose one of {', '.join(POOLINGS)}") from None
