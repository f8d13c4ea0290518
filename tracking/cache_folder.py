"""The one local cache folder of this machine: ``$LATENTSCAPE_CACHE``, else
``$XDG_CACHE_HOME/latentscape``, else ``~/.cache/latentscape``.

Everything latentscape keeps only to save time (and may lose without harm) lives under it,
one sub-folder each: the catalog of a store that has no folder of its own, MLflow's empty
migrated database (the template of new local stores), the ONNX graphs (``onnx/``), extract's
staging for stores without a local folder (``extract/``), the k-NN graphs of maps (``knn/``).
A sub-folder's own variable, where it has one, still wins.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_root"]

CACHE_ENV = "LATENTSCAPE_CACHE"


def cache_root() -> Path:
    """The cache folder (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "latentscape"
