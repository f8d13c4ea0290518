"""Progress bars for long work: counts and rate on stderr, so ``--json`` stdout stays clean."""

from __future__ import annotations

import os
import sys

__all__ = ["progress"]


def progress(total: int | None, desc: str, unit: str = "it"):
    """A tqdm bar on stderr (``LATENTSCAPE_PROGRESS=0`` turns bars off)."""
    from tqdm.auto import tqdm

    disable = os.environ.get("LATENTSCAPE_PROGRESS", "1") == "0"
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable,
                mininterval=0.5, dynamic_ncols=True, leave=False)
