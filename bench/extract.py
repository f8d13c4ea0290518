"""Extraction throughput: latentscape's encoder against a plain transformers loop.

Plain: batches of 32 in the data's order, each padded to its longest text.
latentscape: tokenized once, sorted by length, each batch padded to its own longest, one
batch per core at once (batches of its default size, 32).
Both pool every hidden layer (mean) of the bundled all-MiniLM-L6-v2 on 2,000 sentences
of ~40 tokens (demo sentences joined in threes), and must agree to 1e-4.

Second row: the same plain loop against ``--backend onnx`` (the exported graph, pooling
inside, sorted batches of its default size, 16; the one-off export is cached and not
timed); its quality is the smallest per-layer linear CKA against latentscape's fp32
torch result, which must be at least 0.99 (what the extract job itself requires).

    .venv/bin/python bench/extract.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, print_rows, timed  # noqa: E402


def sentences(n: int, seed: int = 0) -> list[str]:
    from latentscape.jobs.datasets import load_dataset

    texts = load_dataset("demo").texts
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(texts, size=int(rng.integers(2, 5)), replace=False)) for _ in range(n)]


def plain_loop(model_dir, texts, batch_size=32):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, output_hidden_states=True).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=256,
                              return_tensors="pt")
            states = torch.stack(model(**batch).hidden_states)  # (layers, batch, tokens, dim)
            mask = batch["attention_mask"][None, :, :, None].float()
            out.append(((states * mask).sum(2) / mask.sum(2)).numpy())
    return np.concatenate(out, axis=1)


def main(quick: bool = False) -> list[Row]:
    from latentscape.jobs._embedding import Encoder, default_model_path
    from latentscape.jobs.extract import DEFAULT_BATCH_SIZE

    texts = sentences(400 if quick else 2000)
    model_dir = default_model_path()
    encoder = Encoder.load(None, device="cpu")
    encoder.encode(texts[:32])  # warm both paths alike
    plain_loop(model_dir, texts[:32])
    with timed() as plain_time:
        plain = plain_loop(model_dir, texts)
    with timed() as ours_time:
        ours, tokens = encoder.encode(texts, batch_size=DEFAULT_BATCH_SIZE["torch"])
    worst = max(float(np.abs(ours[layer] - plain[layer]).max()) for layer in ours)
    n = len(texts)
    row = Row(
        workload=f"extract {n} sentences x 7 layers (~{tokens / n:.0f} tokens)",
        plain_s=plain_time(), latentscape_s=ours_time(),
        quality=f"max |diff| {worst:.1e}; {n / plain_time():.0f} vs {n / ours_time():.0f} sentences/s",
        quality_held=worst < 1e-4,
    )
    return [row, onnx_row(encoder, texts, ours, plain_time())]


def onnx_row(encoder, texts, reference, plain_s: float) -> Row:
    """The onnx backend on the same texts against the same plain loop."""
    from latentscape.jobs.extract import BACKEND_MIN_CKA, DEFAULT_BATCH_SIZE, backend_agreement

    n = len(texts)
    try:
        encoder.encode(texts[:32], backend="onnx")  # export once (cached) and warm up
    except Exception as error:  # onnxruntime not installed, or the export failed
        return Row(workload=f"extract {n} sentences, --backend onnx", plain_s=plain_s, latentscape_s=float("nan"),
                   quality=f"not run: {error}", quality_held=False)
    with timed() as onnx_time:
        got, _ = encoder.encode(texts, batch_size=DEFAULT_BATCH_SIZE["onnx"], backend="onnx")
    agreement = backend_agreement(reference, got)
    return Row(
        workload=f"extract {n} sentences x 7 layers, --backend onnx",
        plain_s=plain_s, latentscape_s=onnx_time(),
        quality=f"min layer CKA vs fp32 torch {agreement.min_cka:.6f}, max |diff| "
        f"{max(agreement.max_abs_diff.values()):.1e}; {n / plain_s:.0f} vs {n / onnx_time():.0f} sentences/s",
        quality_held=agreement.min_cka >= BACKEND_MIN_CKA,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="400 sentences instead of 2,000")
    print_rows(main(parser.parse_args().quick))
