"""Planted-structure data for the map and sweep benchmarks, and an extract run holding it.

Not a real model's layer, but shaped like one: ``n`` points of ``n_classes`` labelled
Gaussian clusters in a 16-dimensional latent space, mapped into ``dim`` dimensions by a
random linear map plus isotropic noise (transformer layers are anisotropic and roughly
low-rank, which this imitates). Seeded: the same arguments give the same data.
"""

from __future__ import annotations

import numpy as np

__all__ = ["planted", "log_extraction"]


def planted(n: int, dim: int, *, n_classes: int = 10, latent: int = 16, spread: float = 1.3,
            noise: float = 0.35, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``x: (n, dim)`` float32 and ``labels: (n,)`` str, classes as balanced as n allows."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(n_classes, latent))
    labels = np.arange(n) % n_classes
    scales = rng.uniform(0.6, 1.4, size=(n_classes, 1))  # clusters of unequal width
    z = centers[labels] + rng.normal(size=(n, latent)) * scales[labels]
    mixing = rng.normal(size=(latent, dim)) / np.sqrt(latent)
    x = z @ mixing + rng.normal(scale=noise, size=(n, dim)) + rng.normal(size=dim)  # off-centre, like layers
    order = rng.permutation(n)
    return x[order].astype(np.float32), np.array([f"class-{v}" for v in labels[order]])


def log_extraction(store, x: np.ndarray, labels: np.ndarray, *, name: str = "planted") -> str:
    """An ``extract`` run holding ``x`` as layer 0 (what `latentscape map/sweep` read)."""
    import hashlib

    import pandas as pd

    from latentscape.tracking.contract import Artifact, Column, Kind, Param, Tag
    from latentscape.tracking.run_log import tracked_run

    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes() + "\x1f".join(labels).encode()).hexdigest()[:16]
    samples = pd.DataFrame({Column.SAMPLE_ID: [f"{name}-{i:05d}" for i in range(len(x))],
                            Column.TEXT: [f"{name} #{i}" for i in range(len(x))], Column.LABEL: labels})
    tags = {Tag.DATASET_DIGEST: digest, Tag.DATASET_NAME: name, Tag.MODEL: "none", Tag.POOLING: "none"}
    with tracked_run(store, store.experiment_id(name), Kind.EXTRACT, run_name=name, tags=tags) as log:
        log.params({Param.DATASET: name, Param.MODEL: "none", Param.N_SAMPLES: len(x), Param.DIM: x.shape[1],
                    Param.N_CLASSES: len(set(labels)), Param.N_LAYERS: 1, Param.LAYERS: "all"})
        log.table(Artifact.SAMPLES, samples)
        log.array(Artifact.embedding(0), x)
        return log.run_id
