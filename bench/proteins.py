"""Does a protein language model's pretraining show in its layers? AntiBERTy (PyPI
``antiberty==0.1.3``, 8 blocks x 512) against the same architecture with random weights,
on modlamp's AMPvsTMset (412 peptides, antimicrobial vs transmembrane; ``--data peptides``).

Each model is extracted (mean pooling, every layer) and measured by ``latentscape layers
--no-map``: the per-layer linear probe (5-fold, seed 0) is the curve printed for both,
then the best layer of each. The random model is ``BertModel(config)`` initialised with
torch's seed 0 and saved beside AntiBERTy's tokenizer: the same inputs, no training.
What the README's table shows.

    .venv/bin/python bench/proteins.py [--quick] [--pooling mean]

The same by hand, for the pretrained curve (the random one needs the folder this script
writes)::

    latentscape extract --data peptides --model antiberty      # prints EXTRACT_RUN
    latentscape layers --run EXTRACT_RUN --no-map
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, timed  # noqa: E402


def random_copy(model: str, folder: Path, *, seed: int = 0) -> Path:
    """``model``'s architecture with random weights (torch seed ``seed``) and its tokenizer,
    saved as a model folder."""
    import torch
    from transformers import AutoConfig, AutoModel

    from latentscape.jobs._embedding import load_tokenizer, resolve_model

    _, path = resolve_model(model)
    torch.manual_seed(seed)
    AutoModel.from_config(AutoConfig.from_pretrained(path)).save_pretrained(folder)
    load_tokenizer(path).save_pretrained(folder)
    return folder


def probe_curves(data: str = "peptides", *, model: str = "antiberty", pooling: str = "mean", limit: int | None = None,
                 folder: Path) -> dict[str, dict]:
    """``{"pretrained" | "random": {"curve": [probe accuracy per layer], "seconds": s}}``."""
    import latentscape as ls

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    random_folder = random_copy(model, folder / "random-weights")
    found = {}
    for name, weights in (("pretrained", model), ("random", str(random_folder))):
        with timed() as seconds:
            extraction = ls.extract(data=data, model=weights, pooling=pooling, limit=limit, tracking_uri=uri)
            depth = ls.layers(extraction, map=False, tracking_uri=uri)
        table = depth.layers.sort_values("layer")
        found[name] = {"curve": [float(v) for v in table["probe_accuracy"]], "seconds": seconds(),
                       "unk_fraction": extraction.scores.get("unk_fraction")}
    return found


def main(quick: bool = False, pooling: str = "mean") -> Row:
    with tempfile.TemporaryDirectory(prefix="bench-proteins-") as folder:
        found = probe_curves(pooling=pooling, limit=120 if quick else None, folder=Path(folder))
    for name, result in found.items():
        curve = " ".join(f"{value:.3f}" for value in result["curve"])
        print(f"{name:<10} probe accuracy by layer 0..{len(result['curve']) - 1}: {curve}  "
              f"(best {max(result['curve']):.3f} at layer {result['curve'].index(max(result['curve']))}; "
              f"unk_fraction {result['unk_fraction']:.3f}; {result['seconds']:.0f} s)")
    pretrained, random = max(found["pretrained"]["curve"]), max(found["random"]["curve"])
    return Row(workload=f"AntiBERTy vs random weights, AMPvsTMset probe ({pooling})",
               plain_s=found["random"]["seconds"], latentscape_s=found["pretrained"]["seconds"],
               quality=f"best-layer probe {pretrained:.3f} vs {random:.3f}", quality_held=pretrained > random)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="120 peptides, not 412")
    parser.add_argument("--pooling", default="mean")
    arguments = parser.parse_args()
    row = main(arguments.quick, arguments.pooling)
    print(row.quality, "(held)" if row.quality_held else "(NOT HELD)")
