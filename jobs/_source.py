"""What downstream jobs build on: a finished extraction, read back from MLflow."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from latentscape.jobs.core.labels import LabelSelection, select_classes
from latentscape.tracking.contract import Artifact, Column, Kind, Param, Tag
from latentscape.tracking.errors import UsageError
from latentscape.tracking.runs import Store, download, load_table

__all__ = ["Extraction", "label_selection_params", "load_extraction"]


@dataclass
class Extraction:
    """An ``extract`` run: its samples table and lazily loaded layer embeddings."""

    store: Store
    run_id: str
    experiment_id: str
    experiment_name: str
    params: dict[str, str]
    tags: dict[str, str]
    samples: pd.DataFrame
    layers: list[int]
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def labels(self) -> np.ndarray | None:
        """(n,) str labels, or None when the data set is unlabelled."""
        labels = self.samples[Column.LABEL]
        return None if labels.isna().all() else labels.astype(str).to_numpy()

    def label_selection(self, min_class_size: int) -> LabelSelection:
        """The samples label scores can use: labelled, of a class with at least
        ``min_class_size`` samples (every sample is False when the data is unlabelled)."""
        return select_classes(self.samples[Column.LABEL].to_numpy(dtype=object), min_class_size)

    @property
    def ids(self) -> np.ndarray:
        return self.samples[Column.SAMPLE_ID].astype(str).to_numpy()

    @property
    def texts(self) -> np.ndarray:
        return self.samples[Column.TEXT].astype(str).to_numpy()

    @property
    def dataset_digest(self) -> str:
        return self.tags.get(Tag.DATASET_DIGEST, "")

    @property
    def model(self) -> str:
        return self.params.get(Param.MODEL, "")

    @property
    def model_path(self) -> str:
        return self.params.get(Param.MODEL_PATH, "")

    @property
    def pooling(self) -> str:
        return self.params.get(Param.POOLING, "")

    @property
    def max_length(self) -> int:
        return int(self.params.get(Param.MAX_LENGTH, 0) or 0)

    def check_layer(self, layer: int) -> int:
        if layer not in self.layers:
            raise UsageError(f"extract run {self.run_id} has no layer {layer} (it has {self.layers})",
                             f"pass --layer within {min(self.layers)}..{max(self.layers)}")
        return layer

    def embedding(self, layer: int) -> np.ndarray:
        """``(n_samples, dim)`` float32 embeddings of ``layer``: memory-mapped from the artifact
        file (the other layers are never read; pages are read as they are touched), or cast
        to float32 from the float16 an extraction may store."""
        self.check_layer(layer)
        if layer not in self._cache:
            # Copy-on-write: a reader that writes into the array (or hands it to torch, which
            # warns on read-only arrays) changes its own copy of those pages, never the file.
            values = np.load(download(self.store, self.run_id, Artifact.embedding(layer)), mmap_mode="c",
                             allow_pickle=False)
            self._cache[layer] = values if values.dtype == np.float32 else values.astype(np.float32)
        return self._cache[layer]

    def lineage_tags(self) -> dict[str, str]:
        """Tags a derived run copies so it can be found by model and data."""
        keep = (Tag.DATASET_DIGEST, Tag.DATASET_NAME, Tag.MODEL, Tag.POOLING)
        return {key: self.tags[key] for key in keep if key in self.tags}


def label_selection_params(selection: LabelSelection) -> dict:
    """What a job's label scores left out, as params of its run."""
    return {Param.MIN_CLASS_SIZE: selection.min_class_size, Param.CLASSES_KEPT: len(selection.classes_kept),
            Param.SAMPLES_LEFT_OUT: selection.samples_left_out}


def load_extraction(store: Store, run_id: str) -> Extraction:
    """The finished ``extract`` run ``run_id``; a clear error for any other run."""
    run = store.get_run(run_id)
    kind = run.kind
    if kind != Kind.EXTRACT.value:
        raise UsageError(f"run {run_id} is a {kind or 'non-latentscape'} run, not an extraction",
                         "pass the id of an `latentscape extract` run")
    if run.status != "FINISHED":
        raise UsageError(f"extract run {run_id} is {run.status}", "extract again, or pass a finished run")
    artifacts = store.artifact_paths(run_id, Artifact.EMBEDDINGS_DIR)
    layers = sorted(int(path.rsplit("_", 1)[1].split(".")[0]) for path in artifacts if path.endswith(".npy"))
    return Extraction(
        store=store, run_id=run_id, experiment_id=run.experiment_id,
        experiment_name=store.experiment_name(run.experiment_id),
        params=dict(run.params), tags=dict(run.tags),
        samples=load_table(store, run_id, Artifact.SAMPLES), layers=layers,
    )
