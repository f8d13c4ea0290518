"""Embeddings staged on disk as an extraction makes them, so that memory follows the batch,
not the data set, and a killed extraction can be resumed.

Each layer is one ``.npy`` file in a staging folder: its header states the final shape
``(n_samples, dim)`` and dtype, and the rows follow in sample order, written shard by shard
(``shard_rows`` samples at a time) with plain file writes: a writable memmap would keep
its dirty pages in the process's RSS. The rows complete in every layer's file say where
to resume (a shard cut short by a kill is written again, never more). The folder is
named by a digest of everything that determines the result (:func:`staging_key`), kept
beside a local MLflow store (else under ``~/.cache/latentscape/extract``) and removed once
the run has logged the files.

Files only: no MLflow, no torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latentscape.tracking.errors import UsageError

__all__ = ["DTYPES", "SHARD_BYTES", "StagedLayers", "shard_rows_for", "staging_key", "staging_lock", "staging_root"]

DTYPES = ("float32", "float16")  # storage only: the model computes in float32
# Bytes of one shard across all layers. Measured on MiniLM (7 x 384): 64 MiB is ~6k samples,
# ~7 s of work on 2 cores, the most a resume repeats.
SHARD_BYTES = 64 * 2**20
STAGING_ENV = "LATENTSCAPE_EXTRACT_STAGING"  # overrides where staging folders are kept
_READ_BYTES = 8 * 2**20  # a summary's read chunk: a fixed size, so memory never follows the samples
_MANIFEST = "manifest.json"
_RUN = "run_id"


def staging_root(store_folder: Path | None) -> Path:
    """Where staging folders live: ``$LATENTSCAPE_EXTRACT_STAGING``, else beside a local
    SQLite store's database (``store_folder``), else the cache folder's ``extract/``
    (:func:`latentscape.tracking.cache_folder.cache_root`)."""
    if os.environ.get(STAGING_ENV):
        return Path(os.environ[STAGING_ENV])
    if store_folder is not None:
        return store_folder.resolve() / "extract-staging"
    from latentscape.tracking.cache_folder import cache_root

    return cache_root() / "extract"


def staging_key(identity: Mapping[str, object]) -> str:
    """A short digest of everything that determines an extraction's arrays."""
    text = json.dumps({key: str(value) for key, value in identity.items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@contextlib.contextmanager
def staging_lock(folder: Path, what: str) -> Iterator[None]:
    """Held while one process decides about and writes to ``folder`` (the lock file sits beside
    it, so removing the folder keeps the lock); a second process stops with a one-line error.
    The kernel drops the lock when its holder dies, SIGKILL included."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    handle = open(folder.with_name(folder.name + ".lock"), "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another process is extracting {what} now (staged in {folder})",
                             "wait for it to finish, or stop it first") from None
        yield
    finally:
        handle.close()


def shard_rows_for(n_layers: int, dim: int, itemsize: int, batch: int, budget: int = SHARD_BYTES) -> int:
    """Samples per shard: about ``budget`` bytes over all layers, a whole number of batches
    (at least one)."""
    rows = budget // max(1, n_layers * dim * itemsize)
    return max(batch, rows // batch * batch)


@dataclass
class StagedLayers:
    """One extraction's staging folder: ``layer_XXX.npy`` files of ``(n_rows, dim)`` and a
    manifest (identity, shard size, the run writing it). Hold :func:`staging_lock` while writing."""

    folder: Path
    n_rows: int
    dim: int
    layers: tuple[int, ...]
    dtype: str
    shard_rows: int
    _header_bytes: int | None = field(default=None, repr=False, compare=False)

    # -- opening ----------------------------------------------------------------------
    @classmethod
    def existing(cls, folder: Path) -> StagedLayers | None:
        """The staging folder's extraction, or None when there is none (or it is unreadable)."""
        try:
            manifest = json.loads((folder / _MANIFEST).read_text())
            return cls(folder=folder, n_rows=int(manifest["n_rows"]), dim=int(manifest["dim"]),
                       layers=tuple(int(layer) for layer in manifest["layers"]), dtype=str(manifest["dtype"]),
                       shard_rows=int(manifest["shard_rows"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def create(cls, folder: Path, *, n_rows: int, dim: int, layers: Sequence[int], dtype: str, shard_rows: int,
               identity: Mapping[str, object]) -> StagedLayers:
        """A new, empty staging folder (an old one in its place is removed)."""
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        staged = cls(folder=folder, n_rows=n_rows, dim=dim, layers=tuple(layers), dtype=dtype, shard_rows=shard_rows)
        for layer in staged.layers:
            with open(staged.path(layer), "wb") as file:
                np.lib.format.write_array_header_1_0(file, {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                    "shape": (n_rows, dim)})
        # The manifest last: a folder without one is no extraction and is started over.
        manifest = {"n_rows": n_rows, "dim": dim, "layers": list(staged.layers), "dtype": dtype,
                    "shard_rows": shard_rows, "identity": {key: str(value) for key, value in identity.items()}}
        (folder / _MANIFEST).write_text(json.dumps(manifest, indent=2))
        return staged

    def path(self, layer: int) -> Path:
        from latentscape.tracking.contract import Artifact

        return self.folder / Path(Artifact.embedding(layer)).name

    # -- progress -----------------------------------------------------------------------
    @property
    def row_bytes(self) -> int:
        return self.dim * np.dtype(self.dtype).itemsize

    def _offset(self, layer: int) -> int:
        """Bytes of the layer's ``.npy`` header (the same for every layer: one shape, one dtype)."""
        if self._header_bytes is None:
            with open(self.path(layer), "rb") as file:
                np.lib.format.read_magic(file)
                np.lib.format.read_array_header_1_0(file)
                self._header_bytes = file.tell()
        return self._header_bytes

    @property
    def complete_rows(self) -> int:
        """Rows written in every layer, rounded down to whole shards (a cut shard is redone)."""
        rows = min((self.path(layer).stat().st_size - self._offset(layer)) // self.row_bytes
                   for layer in self.layers)
        return self.n_rows if rows >= self.n_rows else rows // self.shard_rows * self.shard_rows

    @property
    def identity(self) -> dict[str, str]:
        return json.loads((self.folder / _MANIFEST).read_text())["identity"]

    @property
    def run_id(self) -> str | None:
        """The run that wrote here last (None before any run claimed the folder)."""
        with contextlib.suppress(OSError):
            return (self.folder / _RUN).read_text().strip() or None
        return None

    def claim(self, run_id: str) -> None:
        """Record ``run_id`` as the run writing here now."""
        (self.folder / _RUN).write_text(run_id)

    # -- writing --------------------------------------------------------------------------
    def cut_to(self, rows: int) -> None:
        """Drop whatever follows the first ``rows`` rows of every layer (a shard cut short)."""
        for layer in self.layers:
            os.truncate(self.path(layer), self._offset(layer) + rows * self.row_bytes)

    def write(self, start: int, shard: Mapping[int, np.ndarray]) -> None:
        """Rows ``start .. start + len`` of every layer: ``{layer: (rows, dim)}`` in sample
        order, cast to the storage dtype. Shards come in order, each after the last."""
        for layer in self.layers:
            values = np.ascontiguousarray(shard[layer], dtype=self.dtype)
            if values.shape[1:] != (self.dim,):
                raise ValueError(f"layer {layer}: rows of {values.shape[1:]}, expected ({self.dim},)")
            with open(self.path(layer), "r+b") as file:
                file.seek(self._offset(layer) + start * self.row_bytes)
                file.write(values.tobytes())

    # -- reading --------------------------------------------------------------------------
    def chunks(self, layer: int, rows: int | None = None) -> Iterator[np.ndarray]:
        """The layer's rows in order, ``rows`` at a time (default: 8 MiB of them), by plain
        reads (nothing of the file stays mapped, so it never counts in the process's RSS)."""
        rows = rows or max(1, _READ_BYTES // self.row_bytes)
        offset = self._offset(layer)
        for start in range(0, self.n_rows, rows):
            count = min(rows, self.n_rows - start)
            yield np.fromfile(self.path(layer), dtype=self.dtype, count=count * self.dim,
                              offset=offset + start * self.row_bytes).reshape(count, self.dim)

    def mapped(self, layer: int) -> np.ndarray:
        """The layer's complete file, memory-mapped read-only: ``(n_rows, dim)``."""
        return np.load(self.path(layer), mmap_mode="r", allow_pickle=False)

    @contextlib.contextmanager
    def dropped_if_empty(self) -> Iterator[None]:
        """Remove the folder when the block fails before a whole shard is staged: there is
        nothing to resume, and a rerun (of fixed input, say) should not be asked to choose."""
        try:
            yield
        except BaseException:
            if self.complete_rows == 0:
                self.remove()
            raise

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.folder.with_name(self.folder.name + ".lock").unlink()


def return_freed_memory() -> None:
    """Hand the C heap's freed pages back to the OS (glibc's ``malloc_trim``; nothing elsewhere).

    A shard's forward passes allocate and free hundreds of MB of varying sizes (padded batches,
    hidden states); glibc keeps the freed pages, so RSS crept up shard after shard and peak
    memory followed the number of samples: measured on WordNet glosses, 938 -> 1,183 MB over
    seven shards of 6,240 without this, 617-661 MB with it."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim`` among the process's own symbols, looked up once (None elsewhere)."""
    import ctypes

    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None
