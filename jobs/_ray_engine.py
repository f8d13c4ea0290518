"""``latentscape extract --engine ray``: the batches run on Ray Data actors, one per GPU (or
per CPU worker), each holding the model; this process writes the same staged shards, in
order, as the local engine does.

Ray Data schedules, retries and streams the work: the data set is one block per model
batch (a shard's texts sorted by length and cut into batches, exactly as
``Encoder.encode`` cuts them), ``map_batches`` hands each block to an actor of a fixed pool,
and the results are read back in order (``preserve_order``), so a shard is complete as soon
as its last batch comes back. The cluster is the one at ``RAY_ADDRESS``, else a local Ray
started for the job (and stopped after). The workers must see the model folder and this
package (a local Ray shares this machine's).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np

from latentscape.tracking.errors import UsageError

__all__ = ["encode_shards", "require_ray"]

_ROW, _TEXT = "row", "text"  # the Ray data set's columns (internal: nothing here is logged)


def require_ray() -> None:
    """A one-line error when Ray Data is not installed."""
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.data") is None:
        raise UsageError("--engine ray needs Ray Data, which is not installed",
                         "pip install 'latentscape[ray]', or run with --engine local")


def _layer_column(layer: int) -> str:
    return f"layer_{layer}"


class _PooledBatches:
    """A Ray actor: one model, loaded once, pooling one block (one batch of texts) a call."""

    def __init__(self, *, model_path: str, device: str, pooling: str, layers: list[int], max_length: int,
                 long: str, backend: str):
        from latentscape.jobs._embedding import Encoder

        # One thread: the actor holds one CPU of the pool (or drives one GPU).
        self.encoder = Encoder.load(model_path, device=device, threads=1)
        self.settings = dict(pooling=pooling, layers=layers, max_length=max_length, long=long, backend=backend)

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(text) for text in block[_TEXT]]
        pooled, _ = self.encoder.encode(texts, batch_size=len(texts), threads=1, **self.settings)
        return {_ROW: block[_ROW], **{_layer_column(layer): values for layer, values in pooled.items()}}


def _batches(text_tokens: np.ndarray, start: int, stop: int, batch: int) -> list[np.ndarray]:
    """Row indices of shard ``start .. stop`` in the model batches the local engine makes:
    sorted by tokens (``text_tokens``: (n_texts,)), longest first (stable), cut every
    ``batch`` texts."""
    order = start + np.argsort(-text_tokens[start:stop], kind="stable")
    return [order[first:first + batch] for first in range(0, len(order), batch)]


def _connect(workers: int) -> bool:
    """Join the cluster at RAY_ADDRESS, else start a local one with ``workers`` CPUs; True
    when this call started Ray (and must stop it)."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its plan and timing lines on every run
    quiet = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)
    else:
        ray.init(num_cpus=workers, **quiet)
    return True


def encode_shards(encoder, texts, tokenized, shards, config, layers: list[int],
                  on_batch: Callable[[int], None]) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
    """``(start, {layer: (rows, dim) float32})`` of each shard ``(start, stop)``, in order,
    pooled by Ray Data actors (see the module's docstring)."""
    require_ray()
    import pandas as pd
    import ray
    import ray.data

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    started = _connect(int(config.threads or cores))
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0)) if config.device != "cpu" else 0
        if gpus:
            pool, resources, device = gpus, {"num_gpus": 1}, "cuda"
        else:
            pool = int(config.threads or ray.cluster_resources().get("CPU", 1))
            resources, device = {"num_cpus": 1}, "cpu"
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # shards complete in order
        context.enable_progress_bars = False  # the job draws its own
        text_array = np.asarray(texts, dtype=object)
        text_tokens = np.bincount(tokenized.owner, weights=tokenized.lengths, minlength=len(texts))
        blocks = [pd.DataFrame({_ROW: rows, _TEXT: text_array[rows]})
                  for start, stop in shards for rows in _batches(text_tokens, start, stop, config.batch)]
        pooled = ray.data.from_pandas(blocks).map_batches(
            _PooledBatches, batch_size=None, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=pool),
            fn_constructor_kwargs=dict(model_path=str(encoder.path), device=device, pooling=config.pooling,
                                       layers=layers, max_length=config.max_length, long=config.long,
                                       backend=config.backend),
            **resources,
        )
        yield from _gather(pooled.iter_batches(batch_size=None, batch_format="numpy"), shards, layers,
                           int(encoder.model.config.hidden_size), on_batch)
    finally:
        if started:
            ray.shutdown()


def _gather(blocks, shards, layers: list[int], dim: int, on_batch) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
    """Fill one shard's rows from the pooled blocks as they come (in order), yielding it when
    its last row has come; holds one shard at a time."""
    shards = iter(shards)
    start, stop = next(shards, (0, 0))
    shard = {layer: np.empty((stop - start, dim), dtype=np.float32) for layer in layers}
    filled = 0
    for block in blocks:
        rows = np.asarray(block[_ROW]) - start
        if rows.min() < 0 or rows.max() >= stop - start:
            raise RuntimeError(f"Ray returned rows {rows.min() + start}..{rows.max() + start} while shard "
                               f"{start}..{stop} was open: its order was not preserved")
        for layer in layers:
            shard[layer][rows] = block[_layer_column(layer)]
        filled += len(rows)
        on_batch(len(rows))
        if filled == stop - start:
            yield start, shard
            start, stop = next(shards, (stop, stop))
            shard = {layer: np.empty((stop - start, dim), dtype=np.float32) for layer in layers}
            filled = 0
