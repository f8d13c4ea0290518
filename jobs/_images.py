"""Small grayscale images as PNG bytes, with numpy and zlib only (no Pillow needed).

Used to render decoded latent vectors (8x8 digits) as artifacts.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

__all__ = ["png_bytes", "square_side", "vector_image", "strip"]


def png_bytes(gray: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of ``gray: (h, w)`` uint8 (values 0 = black .. 255 = white)."""
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"an image must be a non-empty (h, w) array, not {gray.shape}")
    height, width = gray.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    # Each scanline starts with filter type 0 (none).
    raw = np.hstack([np.zeros((height, 1), dtype=np.uint8), gray]).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def square_side(dim: int) -> int | None:
    """The side of a square image with ``dim`` pixels, or None when ``dim`` is not a square."""
    side = math.isqrt(int(dim))
    return side if side * side == dim and side > 1 else None


def vector_image(vector: np.ndarray, *, lo: float, hi: float, scale: int = 8, invert: bool = True) -> np.ndarray:
    """A ``(d,)`` vector of a square image as ``(side*scale, side*scale)`` uint8, values
    mapped from ``[lo, hi]`` to 0..255 (clipped), each pixel a ``scale x scale`` block.
    ``invert`` draws high values dark (ink on paper, as digits are usually shown)."""
    side = square_side(len(vector))
    if side is None:
        raise ValueError(f"a vector of length {len(vector)} is not a square image")
    span = hi - lo if hi > lo else 1.0
    values = np.clip((np.asarray(vector, dtype=np.float64) - lo) / span, 0.0, 1.0)
    if invert:
        values = 1.0 - values
    pixels = np.rint(values * 255).astype(np.uint8).reshape(side, side)
    return np.kron(pixels, np.ones((scale, scale), dtype=np.uint8))


def strip(images: list[np.ndarray], *, gap: int = 4, background: int = 255) -> np.ndarray:
    """Same-sized ``(h, w)`` uint8 images side by side, ``gap`` pixels apart."""
    if not images:
        raise ValueError("a strip needs at least one image")
    height, width = images[0].shape
    out = np.full((height, len(images) * width + (len(images) - 1) * gap), background, dtype=np.uint8)
    for i, image in enumerate(images):
        out[:, i * (width + gap): i * (width + gap) + width] = image
    return out
