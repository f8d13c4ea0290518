"""``latentscape models``: the model shelf, what ``--model NAME`` finds offline.

Lists the bundled MiniLM, the installed packages that ship a protein language model
(``antiberty``) and every model folder under ``$LATENTSCAPE_MODELS``, each with its
layers (hidden states: embeddings + blocks), width and how its tokenizer reads inputs
(text, residues, or spaced residues: see latentscape.jobs._tokens).
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser", "describe"]


def add_parser(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "models", parents=parents, help="list the models --model finds by name (offline)",
        description="List the model folders latentscape knows how to find offline: the bundled "
        "all-MiniLM-L6-v2 (minilm), installed protein language model packages (antiberty: pip install "
        "antiberty==0.1.3) and every folder with a config.json under $LATENTSCAPE_MODELS. Any of their "
        "names works as `extract --model NAME`.",
        epilog="example:\n  latentscape models\n  latentscape extract --data peptides --model antiberty",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=_run)


def describe() -> list[dict]:
    """One row per model on the shelf: name, layers, width, tokenizer, origin, path."""
    from latentscape.jobs._models import shelf

    rows = []
    for model in shelf():
        config = model.config()
        blocks = config.get("num_hidden_layers") or config.get("n_layer")
        rows.append({
            "name": model.name, "layers": int(blocks) + 1 if blocks else None,
            "width": config.get("hidden_size") or config.get("n_embd"), "tokenizer": _tokenizer_kind(model.path),
            "origin": model.origin, "path": str(model.path),
        })
    return rows


def _tokenizer_kind(path) -> str:
    """``<input kind> (<tokenizer class>, <vocabulary size>)``, or why it cannot load."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers

        from latentscape.jobs._embedding import load_tokenizer
        from latentscape.jobs._tokens import residue_input

        transformers.logging.set_verbosity_error()
        tokenizer = load_tokenizer(path)
        return f"{residue_input(tokenizer)} ({type(tokenizer).__name__}, {len(tokenizer)})"
    except Exception as error:  # a folder without a usable tokenizer is listed, and says so
        return f"no tokenizer ({type(error).__name__})"


def _run(args) -> None:
    rows = describe()
    if getattr(args, "json", False):
        print(json.dumps(rows))
        return None
    if not rows:
        print("no models found: install one (pip install antiberty==0.1.3) or set $LATENTSCAPE_MODELS")
        return None
    widths = {key: max(len(key), *(len(str(row[key])) for row in rows)) for key in rows[0]}
    print("  ".join(key.ljust(widths[key]) for key in rows[0]).rstrip())
    for row in rows:
        print("  ".join(str(row[key]).ljust(widths[key]) for key in row).rstrip())
    return None
