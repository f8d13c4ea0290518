"""Shared bits of the benchmarks: timing and the one summary row each prints."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

__all__ = ["Row", "timed", "print_rows"]


@dataclass
class Row:
    """One line of `make bench`'s summary: the plain approach against latentscape's."""

    workload: str
    plain_s: float
    latentscape_s: float
    quality: str  # the quality figure compared, e.g. "AMI 0.91 vs 0.90"
    quality_held: bool

    @property
    def ratio(self) -> float:
        return self.plain_s / self.latentscape_s if self.latentscape_s > 0 else float("inf")

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


@contextmanager
def timed():
    """``with timed() as t: ...`` then ``t()`` is the elapsed seconds."""
    start = time.perf_counter()
    elapsed = [None]
    yield lambda: elapsed[0] if elapsed[0] is not None else time.perf_counter() - start
    elapsed[0] = time.perf_counter() - start


def print_rows(rows: list[Row]) -> None:
    header = f"{'workload':<48} {'plain s':>9} {'latentscape s':>14} {'ratio':>7}  quality"
    print(header)
    print("-" * len(header))
    for row in rows:
        held = "held" if row.quality_held else "NOT HELD"
        print(f"{row.workload:<48} {row.plain_s:>9.3f} {row.latentscape_s:>14.3f} {row.ratio:>6.2f}x  "
              f"{row.quality} ({held})")
