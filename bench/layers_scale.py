"""`latentscape layers` at scale: a 7-layer, 384-wide extraction of 117,000 samples with
45 long-tailed classes (a few of one or two samples), as the WordNet corpus has.

Plain: `layers --max-samples 0 --no-map`, every measure on every sample and no per-layer
map (the cheapest full-data verdict: probe, k-NN agreement and k-means on all of it),
stopped at ``--plain-limit`` seconds. latentscape: `layers` as a user runs it, defaults
(label scores, k-NN and TwoNN on a stratified 20,000-sample subsample, the per-layer
UMAP + HDBSCAN map included). Both in a new process; peak RSS from the OS.

Quality: the subsample's verdict (best layer by probe and by k-NN agreement) within one
layer of the full-data verdict, no error from the rare classes, and the targets of
issue 26: at most 10 min and 4 GB. The data is planted, not a real model's layers (the
real WordNet corpus needs the streaming extraction first): class separation grows over
layers 0-4 and levels off, on top of noise and an anisotropic offset.

    .venv/bin/python bench/layers_scale.py [--quick] [--plain-limit SECONDS]

``--quick``: 30,000 samples (plain and latentscape both finish in minutes). ``--run ID
--tracking-uri URI``: an extraction already logged instead, e.g. the real WordNet corpus::

    latentscape extract --data wordnet-all --tracking-uri sqlite:///wn.db --json
    .venv/bin/python bench/layers_scale.py --run RUN_ID --tracking-uri sqlite:///wn.db --plain-limit 1800
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, print_rows  # noqa: E402

LAYERS, WIDTH, CLASSES = 7, 384, 45
TARGET_S, TARGET_GB = 600.0, 4.0


def long_tailed_layers(n: int, *, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """``LAYERS`` float32 ``(n, WIDTH)`` layers and ``(n,)`` labels: class sizes fall as
    1 / rank (the last three classes have 1, 1 and 2 samples); the class signal grows over
    the first five layers, then levels off."""
    rng = np.random.default_rng(seed)
    sizes = 1.0 / np.arange(1, CLASSES - 2)
    counts = np.floor(sizes / sizes.sum() * (n - 4)).astype(int)
    counts[0] += n - 4 - counts.sum()
    counts = np.concatenate([counts, [1, 1, 2]])
    labels = np.repeat(np.arange(CLASSES), counts)
    rng.shuffle(labels)
    latent = 24
    centers = rng.normal(size=(CLASSES, latent))
    mixing = rng.normal(size=(latent, WIDTH)).astype(np.float32) / np.sqrt(latent)
    base = rng.normal(size=(n, latent)).astype(np.float32)
    layers = []
    for layer, signal in enumerate((0.15, 0.35, 0.6, 0.8, 1.0, 1.0, 0.95)):
        z = base + signal * centers[labels].astype(np.float32)
        x = z @ mixing + rng.normal(scale=0.5, size=(n, WIDTH)).astype(np.float32)
        layers.append(x + rng.normal(scale=0.3 * layer, size=WIDTH).astype(np.float32))
    return layers, np.array([f"class-{value:02d}" for value in labels])


def log_extraction(store, layers: list[np.ndarray], labels: np.ndarray) -> str:
    import pandas as pd

    from latentscape.tracking.contract import Artifact, Column, Kind, Param, Tag
    from latentscape.tracking.run_log import tracked_run

    n = len(labels)
    samples = pd.DataFrame({Column.SAMPLE_ID: [f"s{i:06d}" for i in range(n)],
                            Column.TEXT: [f"sample {i}" for i in range(n)], Column.LABEL: labels})
    tags = {Tag.DATASET_DIGEST: f"long-tail-{n}", Tag.DATASET_NAME: "long-tail", Tag.MODEL: "planted",
            Tag.POOLING: "mean"}
    with tracked_run(store, store.experiment_id("layers-scale"), Kind.EXTRACT, run_name="long-tail",
                     tags=tags) as log:
        log.params({Param.DATASET: "long-tail", Param.MODEL: "planted", Param.N_SAMPLES: n, Param.DIM: WIDTH,
                    Param.N_CLASSES: CLASSES, Param.N_LAYERS: LAYERS, Param.LAYERS: "all"})
        log.table(Artifact.SAMPLES, samples)
        for layer, x in enumerate(layers):
            log.array(Artifact.embedding(layer), x)
        return log.run_id


def run_layers(uri: str, run_id: str, *extra: str, limit: float) -> dict:
    """``latentscape layers`` in a new process: seconds, peak RSS (GB), its JSON reply
    (None when it failed or ran past ``limit``)."""
    command = [sys.executable, "-m", "latentscape.jobs.cli", "layers", "--run", run_id, "--tracking-uri", uri,
               "--json", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit,
                              env={**os.environ, "LATENTSCAPE_PROGRESS": "0"})
    except subprocess.TimeoutExpired:
        return {"seconds": time.perf_counter() - started, "rss_gb": float("nan"), "reply": None}
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest child so far
    reply = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    if reply is None:
        print(done.stderr[-2000:], file=sys.stderr)
    return {"seconds": seconds, "rss_gb": max(peak, before) / 2**20, "reply": reply}


def best_layers(store, run_id: str) -> dict[str, int]:
    from latentscape.tracking.contract import Metric, Param

    params = store.get_run(run_id).params
    return {name: int(params[Param.verdict(name)]) for name in (Metric.PROBE_ACCURACY, Metric.KNN_AGREEMENT)
            if params.get(Param.verdict(name), "none").isdigit()}


def main(quick: bool = False, plain_limit: float = 3600.0, run: str | None = None,
         tracking_uri: str | None = None) -> list[Row]:
    from latentscape.tracking.contract import Param
    from latentscape.tracking.runs import open_store

    with tempfile.TemporaryDirectory() as folder:
        if run:  # an extraction already logged, e.g. of --data wordnet-all
            store = open_store(tracking_uri)
            run_id = run
            params = store.get_run(run_id).params
            n, layers_n, width = (int(params[name]) for name in (Param.N_SAMPLES, Param.N_LAYERS, Param.DIM))
            what = f"{params[Param.DATASET]} ({params[Param.N_CLASSES]} classes)"
        else:
            n = 30_000 if quick else 117_000
            store = open_store(f"sqlite:///{Path(folder) / 'mlflow.db'}")
            layers, labels = long_tailed_layers(n)
            run_id = log_extraction(store, layers, labels)
            del layers
            layers_n, width, what = LAYERS, WIDTH, f"{CLASSES} long-tailed classes"
        ours = run_layers(store.uri, run_id, limit=2 * TARGET_S)
        plain = run_layers(store.uri, run_id, "--max-samples", "0", "--no-map", limit=plain_limit)
        verdicts = {name: best_layers(store, result["reply"]["run_id"]) if result["reply"] else {}
                    for name, result in (("ours", ours), ("plain", plain))}
    agree = bool(verdicts["ours"]) and bool(verdicts["plain"]) and all(
        abs(verdicts["ours"][k] - verdicts["plain"][k]) <= 1 for k in verdicts["plain"] if k in verdicts["ours"])
    held = (ours["reply"] is not None and ours["seconds"] <= TARGET_S and ours["rss_gb"] <= TARGET_GB
            and (agree or plain["reply"] is None))
    quality = (f"best layers {verdicts['ours']} vs full data {verdicts['plain'] or 'not finished'}; "
               f"{ours['seconds']:.0f} s, peak {ours['rss_gb']:.2f} GB (targets {TARGET_S:.0f} s, {TARGET_GB:.0f} GB)")
    return [Row(workload=f"layers {n:,} x {layers_n} x {width}, {what}",
                plain_s=plain["seconds"], latentscape_s=ours["seconds"], quality=quality, quality_held=held)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--plain-limit", type=float, default=3600.0,
                        help="seconds the every-sample run may take before it is stopped (default 3600)")
    parser.add_argument("--run", help="an extraction already logged (e.g. `extract --data wordnet-all`) instead of "
                        "the planted one")
    parser.add_argument("--tracking-uri", help="the store of --run")
    args = parser.parse_args()
    print_rows(main(args.quick, args.plain_limit, args.run, args.tracking_uri))
