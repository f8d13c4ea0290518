"""Extraction at scale (issue 26): bounded memory, throughput, kill and resume, float16.

Corpus: every WordNet 3.0 gloss (``--data wordnet-all``: 117,659 glosses of nouns, verbs,
adjectives and adverbs labelled by lexicographer file, 45 classes; a ``--limit`` keeps every
class). All 7 MiniLM layers, mean pooling,
each extraction a new process whose peak RSS is read from ``wait4``. In one run:

1. in memory (the extract job before issue 26: tokenize, ``Encoder.encode`` of every text,
   every layer held, then saved) against the streaming ``latentscape extract``, both at
   SMALL samples: throughput (target: streaming within 10%) and peak RSS.
2. the streaming extract at LARGE against SMALL: peak RSS (target: within 1.3x).
3. ``latentscape extract`` SIGKILLed once the first of its two shards is staged (50%), then
   ``--resume``: it completes, re-encodes at most one shard, and its embeddings are identical
   to row 1's uninterrupted run.
4. float16 storage (the float32 result rounded as ``--dtype float16`` stores it, read back as
   float32): largest change of the 7x7 layer CKA matrix and of the 5-fold probe accuracy.

SMALL is 12,480 (two default shards of 6,240); LARGE all 117,659 (``--quick``: 25,000).

    OMP_NUM_THREADS=1 .venv/bin/python bench/extract_scale.py [--quick] [--large N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, print_rows  # noqa: E402

SMALL = 12_480


def measured(command: list[str], *, kill_when=None) -> dict:
    """Run ``command``; its wall seconds, peak RSS (MB), exit status and stdout. ``kill_when()``
    true: SIGKILL it there."""
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, env={**os.environ,
                                                                                       "LATENTSCAPE_PROGRESS": "0"})
        killed = False
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if kill_when is not None and not killed and kill_when():
                os.kill(child.pid, signal.SIGKILL)
                killed = True
            time.sleep(0.05)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return {"seconds": time.perf_counter() - started, "rss_mb": usage.ru_maxrss / 1024,
                "rc": child.returncode, "stdout": out.read(), "killed": killed}


def in_memory(data: str, limit: int) -> None:
    """The extract job's work before issue 26, in this process: prints its JSON figures."""
    from latentscape.jobs._embedding import Encoder
    from latentscape.jobs.datasets import load_dataset
    from latentscape.jobs.extract import DEFAULT_BATCH_SIZE

    dataset = load_dataset(data, limit=limit)
    encoder = Encoder.load(None)
    started = time.perf_counter()
    tokenized = encoder.tokenize(dataset.texts, max_length=256)
    embeddings, _ = encoder.encode(dataset.texts, batch_size=DEFAULT_BATCH_SIZE["torch"], tokenized=tokenized)
    seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        for layer, values in embeddings.items():
            np.save(Path(folder) / f"layer_{layer:03d}.npy", values)
    print(json.dumps({"seconds": seconds, "samples": len(dataset)}))


def _staged_rows(staging: Path) -> int:
    """Rows every staged layer file holds now (0 before any is there)."""
    from latentscape.jobs._shards import StagedLayers

    rows = []
    for manifest in staging.glob("*/manifest.json"):
        staged = StagedLayers.existing(manifest.parent)
        if staged is None:
            continue
        for layer in staged.layers:
            size = staged.path(layer).stat().st_size - staged._offset(layer)
            rows.append(size // staged.row_bytes)
    return min(rows) if rows else 0


def float16_effect(extraction, seed: int = 0) -> dict:
    """Layer CKA matrix and probe accuracy of float32 against float16-stored embeddings, on
    up to 300 samples of each of the 10 largest classes."""
    from latentscape.jobs.core.probes import probe_accuracy
    from latentscape.jobs.core.similarity import cka_matrix

    labels = extraction.labels
    names, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == name), min(300, count), replace=False)
                                   for name, count in sorted(zip(names, counts), key=lambda p: -p[1])[:10]]))
    full = [np.asarray(extraction.embedding(layer)[keep]) for layer in extraction.layers]
    half = [values.astype(np.float16).astype(np.float32) for values in full]
    cka_change = float(np.nanmax(np.abs(cka_matrix(full) - cka_matrix(half))))
    probe = {layer: (probe_accuracy(full[i], labels[keep], seed=seed).mean,
                     probe_accuracy(half[i], labels[keep], seed=seed).mean)
             for i, layer in enumerate(extraction.layers) if layer in (0, 3, 6)}
    return {"samples": len(keep), "cka_change": cka_change, "probe": probe,
            "probe_change": max(abs(a - b) for a, b in probe.values()),
            "max_abs_diff": max(float(np.abs(f - h).max()) for f, h in zip(full, half))}


def main(quick: bool = False, large: int | None = None, small: int = SMALL) -> list[Row]:
    from latentscape.jobs._source import load_extraction
    from latentscape.tracking.contract import Metric, Param
    from latentscape.tracking.runs import open_store

    large = large or (25_000 if quick else None)
    work = Path(tempfile.mkdtemp(prefix="bench-extract-scale-"))
    data = "wordnet-all"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    extract = [sys.executable, "-m", "latentscape.jobs.cli", "extract", "--data", data, "--tracking-uri", uri, "--json"]

    # Two shards at SMALL (12,480: the default shard of MiniLM's 7 x 384, 6,240 samples).
    shard_rows = ["--shard-rows", str(small // 2)]

    def streaming(limit: int | None, *extra: str, kill_when=None) -> dict:
        result = measured([*extract, *(["--limit", str(limit)] if limit else []), *shard_rows, *extra],
                          kill_when=kill_when)
        if result["rc"] == 0:
            result["run_id"] = json.loads(result["stdout"])["run_id"]
        print(f"   extract {limit or 'all'} {' '.join(extra)}: {result['seconds']:.0f} s, peak RSS "
              f"{result['rss_mb']:.0f} MB, exit {result['rc']}", file=sys.stderr, flush=True)
        return result

    # 1. in memory against streaming, small samples
    memory = measured([sys.executable, __file__, "--in-memory", data, str(small)])
    memory.update(json.loads(memory["stdout"]))
    print(f"   in memory {small}: {memory['seconds']:.0f} s encoding, peak RSS {memory['rss_mb']:.0f} MB",
          file=sys.stderr, flush=True)
    base = streaming(small)
    store = open_store(uri)
    small_run = store.get_run(base["run_id"])
    small_rate = small_run.metrics[Metric.SAMPLES_PER_S]
    memory_rate = small / memory["seconds"]
    rate_ratio = small_rate / memory_rate

    # 3. SIGKILL once the first of two shards is staged, then --resume
    staging = work / "extract-staging"
    killed = streaming(small, "--force", kill_when=lambda: _staged_rows(staging) >= small // 2)
    at_kill = _staged_rows(staging)
    offered = streaming(small, "--force")
    resumed = streaming(small, "--resume", "--force")
    resumed_run = store.get_run(resumed["run_id"])
    resumed_at = int(resumed_run.params[Param.RESUMED_AT])
    shard = int(resumed_run.params[Param.SHARD_ROWS])
    once, again = load_extraction(store, base["run_id"]), load_extraction(store, resumed["run_id"])
    identical = all(np.array_equal(once.embedding(layer), again.embedding(layer)) for layer in once.layers)
    repeated = small - resumed_at - (small - at_kill)  # rows staged at the kill and encoded again

    # 2. streaming at LARGE
    big = streaming(large)
    big_n = int(store.get_run(big["run_id"]).params[Param.N_SAMPLES])
    rss_ratio = big["rss_mb"] / base["rss_mb"]

    # 4. float16 storage
    half = float16_effect(once)

    rows = [
        Row(workload=f"extract {small:,} WordNet glosses x 7 layers: in memory vs streaming",
            plain_s=small / memory_rate, latentscape_s=small / small_rate,
            quality=f"{memory_rate:.0f} vs {small_rate:.0f} samples/s (streaming/in-memory {rate_ratio:.2f}, "
                    f"target >= 0.90); peak RSS {memory['rss_mb']:.0f} vs {base['rss_mb']:.0f} MB",
            quality_held=rate_ratio >= 0.9),
        Row(workload=f"extract streaming peak RSS, {big_n:,} vs {small:,} samples",
            plain_s=base["seconds"], latentscape_s=big["seconds"],
            quality=f"{big['rss_mb']:.0f} vs {base['rss_mb']:.0f} MB: {rss_ratio:.2f}x (target <= 1.3x); "
                    f"{store.get_run(big['run_id']).metrics[Metric.SAMPLES_PER_S]:.0f} samples/s",
            quality_held=rss_ratio <= 1.3),
        Row(workload=f"extract {small:,} SIGKILLed at {at_kill / small:.0%}, then --resume",
            plain_s=base["seconds"], latentscape_s=killed["seconds"] + resumed["seconds"],
            quality=f"killed: {killed['killed']}; plain rerun offers --resume: {offered['rc'] == 2}; resumed at "
                    f"{resumed_at:,} ({at_kill:,} staged, shard {shard:,}), {repeated:,} rows encoded again; "
                    f"identical to the uninterrupted run: {identical}",
            quality_held=killed["killed"] and offered["rc"] == 2 and resumed["rc"] == 0 and identical
            and 0 <= repeated <= shard),
        Row(workload=f"float16 storage, {half['samples']:,} samples x 7 layers",
            plain_s=float("nan"), latentscape_s=float("nan"),
            quality=f"max |diff| {half['max_abs_diff']:.1e}; layer CKA matrix changes {half['cka_change']:.1e}; "
                    f"probe accuracy (layers 0/3/6) " + ", ".join(f"{a:.3f}->{b:.3f}" for a, b in half["probe"].values())
                    + f" (max change {half['probe_change']:.3f})",
            quality_held=half["cka_change"] < 1e-3 and half["probe_change"] <= 0.01),
    ]
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="LARGE 25,000 instead of every gloss")
    parser.add_argument("--large", type=int, help="samples of the large run (default: every gloss)")
    parser.add_argument("--small", type=int, default=SMALL, help=argparse.SUPPRESS)  # a smoke run
    parser.add_argument("--in-memory", nargs=2, metavar=("DATA", "LIMIT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_memory:
        in_memory(args.in_memory[0], int(args.in_memory[1]))
    else:
        print_rows(main(args.quick, args.large, args.small))
