"""Device check for extraction on CUDA (run where a GPU is lent; skipped elsewhere).

Builds a MiniLM-shaped BERT (6 blocks, 384 wide) with random weights from the bundled
config and tokenizer (folder given by --model-files), then checks that
``Encoder.encode`` on CUDA gives the CPU result for every pooling and layer, and
measures sentences/s on each device.

    python bench/extract_gpu.py --model-files DIR [--n 20000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from latentscape.jobs._embedding import Encoder
    from latentscape.jobs.core.pooling import POOLINGS

    parser = argparse.ArgumentParser()
    parser.add_argument("--model-files", required=True)
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    folder = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    config = BertConfig.from_pretrained(args.model_files)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(args.model_files).save_pretrained(folder)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from extract import sentences

    texts = sentences(args.n)
    cpu = Encoder.load(str(folder), device="cpu")
    gpu = Encoder.load(str(folder), device="auto")
    print(f"device auto -> {gpu.device} ({torch.cuda.get_device_name(0)})")
    worst = 0.0
    for pooling in POOLINGS:
        a, _ = cpu.encode(texts[:256], pooling=pooling, batch_size=64)
        b, _ = gpu.encode(texts[:256], pooling=pooling, batch_size=64)
        for layer in a:
            scale = max(1.0, float(np.abs(a[layer]).max()))
            worst = max(worst, float(np.abs(a[layer] - b[layer]).max()) / scale)
    print(f"max relative |cpu - cuda| over poolings and layers: {worst:.2e} ({'ok' if worst < 1e-3 else 'TOO LARGE'})")
    for batch_size in (64, 256, 1024):
        gpu.encode(texts[:2048], batch_size=batch_size)
        torch.cuda.synchronize()
        start = time.perf_counter()
        _, tokens = gpu.encode(texts, batch_size=batch_size)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        print(f"cuda batch {batch_size:>4}: {len(texts) / seconds:,.0f} sentences/s, {tokens / seconds:,.0f} tokens/s")
    start = time.perf_counter()
    cpu.encode(texts[:1000], batch_size=64)
    print(f"cpu  batch   64: {1000 / (time.perf_counter() - start):,.0f} sentences/s (16 cores)")
    shutil.rmtree(folder, ignore_errors=True)
    return 0 if worst < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
