"""Fine-tuning throughput: latentscape's loop against a plain ``transformers`` training loop.

Workload: the bundled MiniLM on ``demo`` (600 sentences, 10 classes), batches of 16, the
same batches in the same order for both, on the CPU (or the GPU when present).

- Plain: what a ``transformers`` tutorial writes: ``AutoModelForSequenceClassification``
  (a head on BERT's pooler), ``torch.optim.AdamW`` with its defaults, each batch tokenized
  and padded with ``tokenizer(..., padding=True)``, ``get_linear_schedule_with_warmup``.
- latentscape: ``latentscape.jobs._finetune.FineTuner`` (head on the mean-pooled last layer, texts
  tokenized once, fused AdamW).

Reported: samples/s of the training steps (forward, backward, optimiser) of each, after
one warm-up step. Quality: the training loss falls in both over the steps.

    .venv/bin/python bench/finetune.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import Row, print_rows  # noqa: E402


def _batches(n: int, steps: int, size: int, seed: int = 0) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[(i * size) % n:(i * size) % n + size] for i in range(steps)]


def plain(texts, labels, batches, n_classes: int) -> tuple[float, list[float]]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    from latentscape.jobs._embedding import default_model_path

    torch.manual_seed(0)
    path = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=n_classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, len(batches) // 10), len(batches))
    losses, seconds = [], 0.0
    for index, rows in enumerate(batches):
        started = time.perf_counter()
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=128,
                          return_tensors="pt")
        out = model(**batch, labels=torch.as_tensor(labels[rows]))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        schedule.step()
        if index:  # the first step warms up
            seconds += time.perf_counter() - started
        losses.append(float(out.loss))
    return seconds, losses


def ours(texts, labels, batches, n_classes: int) -> tuple[float, list[float]]:
    import torch

    from latentscape.jobs._embedding import Encoder
    from latentscape.jobs._finetune import FineTuner, TrainSettings, learning_rate_at

    encoder = Encoder.load(None)
    settings = TrainSettings(epochs=1, batch_size=16, learning_rate=1e-4, weight_decay=0.01, warmup=0.1,
                             max_length=128, pooling="mean", seed=0, freeze_below=0, eval_every=10**9,
                             checkpoint_steps=())
    tuner = FineTuner(encoder, n_classes, settings)
    encoded = tuner.tokenize(texts)
    losses, seconds = [], 0.0
    for index, rows in enumerate(batches):
        started = time.perf_counter()
        for group in tuner.optimizer.param_groups:
            group["lr"] = learning_rate_at(index + 1, base=1e-4, total_steps=len(batches), warmup=0.1)
        encoder.model.train()
        logits = tuner.logits(tuner._batch(encoded, rows))
        loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels[rows], device=tuner.device))
        tuner.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        tuner.optimizer.step()
        if index:
            seconds += time.perf_counter() - started
        losses.append(float(loss))
    return seconds, losses


def main(quick: bool = False) -> Row:
    from latentscape.jobs.datasets import load_dataset

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = load_dataset("demo")
    classes = sorted(set(data.labels))
    labels = np.searchsorted(classes, data.labels)
    steps = 8 if quick else 24
    batches = _batches(len(labels), steps, 16)
    plain_s, plain_losses = plain(list(data.texts), labels, batches, len(classes))
    ours_s, our_losses = ours(list(data.texts), labels, batches, len(classes))
    samples = 16 * (steps - 1)

    def falls(losses):
        return np.mean(losses[-3:]) < np.mean(losses[:3])

    quality = (f"{samples / plain_s:.1f} vs {samples / ours_s:.1f} samples/s; loss {plain_losses[0]:.2f}->"
               f"{plain_losses[-1]:.2f} vs {our_losses[0]:.2f}->{our_losses[-1]:.2f}")
    return Row(workload=f"finetune MiniLM, {steps} steps of 16 (demo)", plain_s=plain_s, latentscape_s=ours_s,
               quality=quality, quality_held=bool(falls(plain_losses) and falls(our_losses)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print_rows([main(parser.parse_args().quick)])
