"""The run contract: every name that writers (jobs) and readers (catalog, UI) share.

No tag, param, metric, artifact path or table column is spelled anywhere else. A test
(tests/test_contract.py) checks that every key defined here is documented in README.md.

Conventions
-----------
- Every run carries the tags ``kind``, ``source_run`` (the run it derives from, empty
  for an extraction) and ``dataset_digest``; child runs use MLflow's own
  ``mlflow.parentRunId`` so the MLflow UI shows the same tree.
- Per-layer curves are metrics logged with ``step=layer``.
- Tables are Parquet artifacts, arrays are float32 ``.npy`` (read with
  ``allow_pickle=False``). Nothing is pickled.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "Kind",
    "Tag",
    "Param",
    "Metric",
    "Artifact",
    "Column",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_TRACKING_URI",
    "MLFLOW_PARENT_RUN_ID",
    "MLFLOW_RUN_NAME",
    "MLFLOW_USER",
    "all_keys",
]

DEFAULT_EXPERIMENT = "latentscape"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

# MLflow's own system tags, named once here.
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
MLFLOW_RUN_NAME = "mlflow.runName"
MLFLOW_USER = "mlflow.user"


class Kind(StrEnum):
    """The ``kind`` tag: which job wrote the run."""

    EXTRACT = "extract"
    MAP = "map"
    SWEEP = "sweep"
    TRIAL = "trial"
    LAYERS = "layers"
    INTERPOLATE = "interpolate"
    ANALOGIES = "analogies"
    DIRECTIONS = "directions"
    AUTOENCODER = "autoencoder"


class Tag:
    """Run tags (strings, mutable, searchable)."""

    KIND = "kind"
    SOURCE_RUN = "source_run"
    DATASET_DIGEST = "dataset_digest"
    DATASET_NAME = "dataset_name"
    MODEL = "model"
    POOLING = "pooling"
    ERROR = "error"
    STUDY = "optuna_study"
    TRIAL_NUMBER = "optuna_trial_number"
    TRIAL_STATE = "optuna_trial_state"
    LAYER = "layer"


class Param:
    """Run params (immutable once logged)."""

    # extract
    MODEL = "model"
    MODEL_PATH = "model_path"
    POOLING = "pooling"
    MAX_LENGTH = "max_length"
    BATCH_SIZE = "batch_size"
    DEVICE = "device"
    LAYERS = "layers"
    N_LAYERS = "n_layers"
    N_SAMPLES = "n_samples"
    DIM = "dim"
    DATASET = "dataset"
    TEXT_COL = "text_col"
    LABEL_COL = "label_col"
    ID_COL = "id_col"
    N_CLASSES = "n_classes"
    # map (reducer and clusterer settings are logged as "reducer.<name>" and
    # "clusterer.<name>", see reducer_param / clusterer_param)
    LAYER = "layer"
    REDUCER = "reducer"
    CLUSTERER = "clusterer"
    SEED = "seed"
    NOISE_POLICY = "noise_policy"
    # sweep
    TRIALS = "trials"
    OBJECTIVE = "objective"
    DIRECTION = "direction"
    SAMPLER = "sampler"
    STORAGE = "storage"
    STUDY_NAME = "study_name"
    SEARCH_SPACE = "search_space"
    BEST_PREFIX = "best."
    # layers
    STABLE_CKA = "stable_cka"
    LAYER_OF_LARGEST_CHANGE = "layer_of_largest_change"
    FIRST_STABLE_LAYER = "first_stable_layer"
    # interpolate / analogies / directions
    FROM = "from"
    TO = "to"
    METHOD = "method"
    STEPS = "steps"
    K = "k"
    QUESTIONS = "questions"

    @staticmethod
    def reducer_param(name: str) -> str:
        return f"reducer.{name}"

    @staticmethod
    def clusterer_param(name: str) -> str:
        return f"clusterer.{name}"


class Metric:
    """Run metrics. Per-layer values use ``step=layer``."""

    # extract, per layer
    MEAN_NORM = "mean_norm"
    ANISOTROPY = "anisotropy"
    SAMPLES_PER_S = "samples_per_s"
    TOKENS_PER_S = "tokens_per_s"
    EXTRACT_SECONDS = "extract_seconds"
    # map scores
    MUTUAL_INFO = "mutual_info"
    NMI = "nmi"
    AMI = "ami"
    ARI = "ari"
    HOMOGENEITY = "homogeneity"
    COMPLETENESS = "completeness"
    V_MEASURE = "v_measure"
    N_CLUSTERS = "n_clusters"
    NOISE_FRACTION = "noise_fraction"
    SILHOUETTE = "silhouette"
    TRUSTWORTHINESS = "trustworthiness"
    KNN_PRESERVATION = "knn_preservation"
    CLUSTERED_SUFFIX = "_clustered"  # the same score over clustered (non-noise) points only
    REDUCE_SECONDS = "reduce_seconds"
    CLUSTER_SECONDS = "cluster_seconds"
    SCORE_SECONDS = "score_seconds"
    KNN_SECONDS = "knn_seconds"
    # sweep
    BEST_VALUE = "best_value"
    TRIAL_SECONDS = "trial_seconds"
    N_TRIALS_COMPLETE = "n_trials_complete"
    # layers (step=layer)
    CKA_PREVIOUS = "cka_previous"
    COSINE_PREVIOUS = "cosine_previous"
    PROBE_ACCURACY = "probe_accuracy"
    KNN_AGREEMENT = "knn_agreement"
    INTRINSIC_DIM = "intrinsic_dim"
    # interpolate / analogies / directions
    ACCURACY_AT_1 = "accuracy_at_1"
    ACCURACY_AT_5 = "accuracy_at_5"
    RECONSTRUCTION_MSE = "reconstruction_mse"
    BASELINE_MSE = "baseline_mse"
    LOSS = "loss"


class Artifact:
    """Artifact paths inside a run."""

    SAMPLES = "samples.parquet"
    LAYER_SUMMARY = "layers.parquet"
    MAP = "map.parquet"
    CLUSTERS = "clusters.parquet"
    TRIALS = "trials.parquet"
    IMPORTANCES = "importances.parquet"
    CONFIG = "config.json"
    CKA = "cka.parquet"
    PATH = "path.parquet"
    NEIGHBOURS = "neighbours.parquet"
    MISSES = "misses.parquet"
    PROJECTIONS = "projections.parquet"
    DIRECTION_COSINES = "direction_cosines.parquet"
    IMAGES_DIR = "images"
    EMBEDDINGS_DIR = "embeddings"

    @staticmethod
    def embedding(layer: int) -> str:
        """Path of one layer's ``(n_samples, dim)`` float32 array."""
        return f"embeddings/layer_{int(layer):03d}.npy"


class Column:
    """Columns of the Parquet tables."""

    SAMPLE_ID = "sample_id"
    TEXT = "text"
    LABEL = "label"
    X = "x"
    Y = "y"
    CLUSTER = "cluster"
    LAYER = "layer"
    LAYER_A = "layer_a"
    LAYER_B = "layer_b"
    CKA = "cka"
    STEP = "step"
    METHOD = "method"
    RANK = "rank"
    DISTANCE = "distance"
    TRIAL = "trial"
    STATE = "state"
    VALUE = "value"
    PARAM = "param"
    IMPORTANCE = "importance"
    META_PREFIX = "meta."


def all_keys() -> dict[str, list[str]]:
    """Every key of the contract by group, for documentation checks."""
    groups: dict[str, list[str]] = {"kind": [k.value for k in Kind]}
    for cls in (Tag, Param, Metric, Artifact, Column):
        groups[cls.__name__.lower()] = [
            value
            for name, value in vars(cls).items()
            if name.isupper() and isinstance(value, str)
        ]
    return groups
