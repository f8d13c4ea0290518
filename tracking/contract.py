"""The run contract: every name that writers (jobs) and readers (catalog, UI) share.

No tag, param, metric, artifact path or table column is spelled anywhere else. A test
(tests/core/test_contract.py) checks that every key defined here is documented in README.md
(the section :mod:`latentscape.tracking.contract_readme` makes).

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
    "CatalogColumn",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_TRACKING_URI",
    "TABULAR_MODEL",
    "MLFLOW_PARENT_RUN_ID",
    "MLFLOW_RUN_NAME",
    "MLFLOW_USER",
]

DEFAULT_EXPERIMENT = "latentscape"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# The model (and pooling) of an extraction of tabular data: its features are layer 0.
TABULAR_MODEL = "none"

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
    SAE = "sae"  # a sparse autoencoder's dictionary of one layer
    FINETUNE = "finetune"  # latentscape finetune: training with checkpoints (parent of their extractions)
    COMPARE_MODELS = "compare_models"  # latentscape compare-models: CKA across models, per layer


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
    NOTE = "note"  # why a result is missing (e.g. label-based scores of an unlabelled set)
    REPLAY_OF = "replay_of"  # map --from-run: the run whose logged config.json was replayed
    # a clustering that collapsed (too few clusters for the classes, or mostly noise): what,
    # where, and the fix; map, sweep and layers set it, the Maps and Layers pages show it
    WARNING = "warning"
    VERDICT = "verdict"  # layers: the layer verdict in one plain sentence
    CHECKPOINT_STEP = "checkpoint_step"  # a finetune's child extraction: the training step (0: the base)
    RESUME_OF = "resume_of"  # finetune / extract --resume: the interrupted run it continues
    # map: where its k-NN graph came from: "computed", or "stored" (the disk cache of graphs an
    # earlier process computed on this machine, latentscape.jobs._knn_store); absent: no graph
    KNN_GRAPH = "knn_graph"


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
    BACKEND = "backend"  # extract --backend: torch (the fp32 reference) or onnx
    BACKEND_CHECK_SAMPLES = "backend_check_samples"  # samples the onnx result was checked on against torch
    ONNX_FILE = "onnx_file"  # the cached ONNX graph the onnx backend ran
    LONG = "long"  # extract --long: truncate (default) or window (mean over overlapping windows)
    DTYPE = "dtype"  # extract --dtype: how embeddings are stored, float32 (default) or float16
    ENGINE = "engine"  # extract --engine: local (this process) or ray (Ray Data actors)
    SHARD_ROWS = "shard_rows"  # extract: samples written to disk at a time (a resume repeats at most one shard)
    RESUMED_AT = "resumed_at"  # extract --resume: samples the interrupted run had written
    INPUT_KIND = "input_kind"  # how texts were fed to the tokenizer: text, residues or spaced residues
    LABEL_FROM = "label_from"  # a FASTA file's labels: header:REGEX or the side table's path
    # map (reducer and clusterer settings are logged as "reducer.<name>" and
    # "clusterer.<name>", see reducer_param / clusterer_param)
    LAYER = "layer"
    REDUCER = "reducer"
    CLUSTERER = "clusterer"
    SEED = "seed"
    NOISE_POLICY = "noise_policy"
    VIEW = "view"  # how the 2D display coordinates were made: embedding, refit or pca
    KNN = "knn"  # the reducer's k-NN graph: exact, approx or none
    SCORE_K = "score_k"  # neighbourhood size of trustworthiness / k-NN preservation
    SCORE_SAMPLE = "score_sample"  # sample size of silhouette and the neighbourhood scores
    # sweep
    TRIALS = "trials"
    OBJECTIVE = "objective"
    DIRECTION = "direction"
    SAMPLER = "sampler"
    STORAGE = "storage"
    STUDY_NAME = "study_name"
    SEARCH_SPACE = "search_space"
    BEST_PREFIX = "best."
    REFIT_PREFIX = "refit."  # sweep --search-sample: the best trial's sample counts scaled to all samples
    N_JOBS = "n_jobs"
    WORKERS = "workers"  # sweep --workers: processes working on the study (one core each)
    SEARCH_EPOCHS = "search_epochs"  # UMAP epochs of every trial (fewer than the best map's refit)
    REFIT_EPOCHS = "refit_epochs"  # UMAP epochs of the best map, re-fitted after the search
    SEARCH_SAMPLE = "search_sample"  # sweep --search-sample: rows every trial maps (the best re-fitted on all)
    # layers
    STABLE_CKA = "stable_cka"
    LAYER_OF_LARGEST_CHANGE = "layer_of_largest_change"
    FIRST_STABLE_LAYER = "first_stable_layer"
    DEBIASED = "debiased"
    PROBE_FOLDS = "probe_folds"
    KNN_K = "knn_k"
    # label scores on long-tailed labels: the smallest class kept, how many classes were kept,
    # and how many samples (rare classes and unlabelled rows) were left out of them
    MIN_CLASS_SIZE = "min_class_size"
    CLASSES_KEPT = "classes_kept"
    SAMPLES_LEFT_OUT = "samples_left_out"
    SEEDS = "seeds"  # layers / map --seeds: how many seeds (seed, seed + 1, ...) each map ran with
    PERMUTATIONS = "permutations"  # map --permutations: label shuffles of each chance baseline
    BOOTSTRAP = "bootstrap"  # map --bootstrap: resamples of each bootstrap interval
    PRESET = "preset"  # map --preset: the named recipe the settings started from
    POOLINGS = "poolings"  # layers --compare-poolings: the poolings compared, comma-separated
    POOLING_RUNS = "pooling_runs"  # ... and their extract runs, in the same order
    BEST_POOLING = "best_pooling"  # the pooling with the highest probe accuracy at any layer
    ALIGNED_MAPS = "aligned_maps"  # layers --aligned-maps: True when aligned_maps.parquet was logged
    ALIGNED_EPOCHS = "aligned_epochs"
    TUNE = "tune"  # layers --tune: Optuna trials per layer (each layer's sweep a child run)
    VERDICT_PREFIX = "verdict."  # layers: "verdict.<measure>" = the measure's best layer
    MEASURES_AGREE = "measures_agree"  # layers: whether the measures' best layers lie within one layer

    @staticmethod
    def sample_size(measure: str) -> str:
        """``n.<measure>``: how many samples a subsampled measure read."""
        return f"n.{measure}"

    @staticmethod
    def verdict(measure: str) -> str:
        """The best layer by one measure, e.g. ``verdict.probe_accuracy``."""
        return f"{Param.VERDICT_PREFIX}{measure}"
    # interpolate / analogies / directions
    FROM = "from"
    TO = "to"
    METHOD = "method"
    STEPS = "steps"
    K = "k"
    QUESTIONS = "questions"
    N_QUESTIONS = "n_questions"
    VOCABULARY_SIZE = "vocabulary_size"
    NORMALIZE = "normalize"
    ADD = "add"
    SUBTRACT = "subtract"
    DECODER = "decoder"
    AUTOENCODER_RUN = "autoencoder_run"
    METHODS = "methods"
    # autoencoder
    LATENT_DIM = "latent_dim"
    HIDDEN = "hidden"
    EPOCHS = "epochs"
    LEARNING_RATE = "learning_rate"
    # sae: dictionary size, TopK's k (Param.K), AuxK, token-level training
    FEATURES = "features"
    AUX_K = "aux_k"  # dead latents the AuxK loss reconstructs the residual with
    AUX_COEF = "aux_coef"
    DEAD_AFTER = "dead_after"  # rows seen without firing after which a latent counts as dead
    TOKENS = "tokens"  # True: trained on token activations re-extracted from the run's model
    MAX_TOKENS = "max_tokens"
    N_ROWS = "n_rows"  # rows trained and evaluated on (samples, or tokens with --tokens)
    TOP_SAMPLES = "top_samples"  # top-activating samples kept per feature
    DIRECTIONS_RUN = "directions_run"  # the directions run whose label directions features are compared with
    TARGET = "target"  # sweep --target: what each trial fits (map or sae)
    # finetune (also EPOCHS, LEARNING_RATE, SEED, HOLDOUT, BATCH_SIZE, MAX_LENGTH, POOLING, MODEL)
    CHECKPOINTS = "checkpoints"  # checkpoints saved, evenly spaced over the training steps
    FREEZE_BELOW = "freeze_below"  # hidden states below this layer keep the base's weights
    WARMUP = "warmup"  # fraction of the steps with a linearly rising learning rate (then linear decay)
    WEIGHT_DECAY = "weight_decay"
    TOTAL_STEPS = "total_steps"
    STEPS_PER_EPOCH = "steps_per_epoch"
    EVAL_EVERY = "eval_every"  # held-out evaluation every this many steps (and at each checkpoint)
    N_TRAIN = "n_train"
    N_HELDOUT = "n_heldout"
    RUNS = "runs"  # compare-models: the extract runs compared, comma-separated, the reference first
    HOLDOUT = "holdout"  # autoencoder: validation fraction; sweep --holdout (and its trials, best map,
    # replays): the fraction of samples held out, stratified by label, split with the run's seed

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
    UNK_FRACTION = "unk_fraction"  # ordinary tokens the tokenizer did not know (the job stops above 0.1)
    TRUNCATED_FRACTION = "truncated_fraction"  # texts longer than --max-length or the model's positions
    # extract --backend onnx: linear CKA of each layer against fp32 torch (step=layer), its
    # minimum (the job fails below 0.99), the largest |difference|, the check's and export's time
    BACKEND_CKA = "backend_cka"
    BACKEND_CKA_MIN = "backend_cka_min"
    BACKEND_MAX_ABS_DIFF = "backend_max_abs_diff"
    BACKEND_CHECK_SECONDS = "backend_check_seconds"
    ONNX_EXPORT_SECONDS = "onnx_export_seconds"  # logged only by the run that exported the graph
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
    N_TRIALS_FAILED = "n_trials_failed"
    BEST_TRIAL = "best_trial"
    # sweep --search-epochs: the objective of a candidate for the sweep's map re-fitted at
    # the full epochs, step = its trial number (the best trial's and the default trial's)
    REFIT_VALUE = "refit_value"
    MLFLOW_MS_PER_TRIAL = "mlflow_ms_per_trial"  # MLflow time on a trial's path (waiting for its run to be written)
    MLFLOW_WRITER_MS_PER_TRIAL = "mlflow_writer_ms_per_trial"  # the writer thread's time per trial
    # the largest |score difference| between a replayed map and the run it replays (0: exact)
    REPLAY_MAX_ABS_DIFF = "replay_max_abs_diff"
    # trust: beside a score S, S_perm_mean / S_p_value (label permutations),
    # S_ci_low / S_ci_high (bootstrap interval), S_mean / S_std (over seeds); see trust()
    PERM_MEAN_SUFFIX = "_perm_mean"
    P_VALUE_SUFFIX = "_p_value"
    CI_LOW_SUFFIX = "_ci_low"
    CI_HIGH_SUFFIX = "_ci_high"
    MEAN_SUFFIX = "_mean"
    STD_SUFFIX = "_std"
    SEED_ARI_MEAN = "seed_ari_mean"  # mean ARI between every pair of seeds' clusterings
    # layers (step=layer)
    CKA_PREVIOUS = "cka_previous"
    COSINE_PREVIOUS = "cosine_previous"
    PROBE_ACCURACY = "probe_accuracy"
    KNN_AGREEMENT = "knn_agreement"
    INTRINSIC_DIM = "intrinsic_dim"
    PROBE_ACCURACY_STD = "probe_accuracy_std"  # spread over the probe's folds
    PROBE_CHANCE = "probe_chance"  # majority-class accuracy, one value per run
    AMI_STD = "ami_std"  # layers --seeds: spread of the per-layer AMI over seeds (ami: their mean)
    ALIGNED_SECONDS = "aligned_seconds"  # layers --aligned-maps: time of the aligned layout
    CKA_SECONDS = "cka_seconds"
    # layers: one cluster score per way of clustering each layer, "ami.<scorer>", with
    # "n_clusters.<scorer>" and "noise_fraction.<scorer>" beside it (step=layer); "ami" is
    # a copy of the most robust, ami.kmeans (k-means can neither collapse nor call noise)
    AMI_KMEANS = "ami.kmeans"  # k-means at k = number of classes on the layer itself
    AMI_MAP = "ami.map"  # the per-layer map's clusterer on the map (UMAP + HDBSCAN by default)
    AMI_HDBSCAN = "ami.hdbscan"  # HDBSCAN at the classes' granularity on the same map
    AMI_TUNED = "ami.tuned"  # layers --tune: the best map of a per-layer sweep (held out with --holdout)
    # interpolate / analogies / directions
    ACCURACY_AT_1 = "accuracy_at_1"
    ACCURACY_AT_5 = "accuracy_at_5"
    RECONSTRUCTION_MSE = "reconstruction_mse"
    BASELINE_MSE = "baseline_mse"
    LOSS = "loss"  # autoencoder, step=epoch
    ARITHMETIC_HIT_RATE = "arithmetic_hit_rate"
    MEAN_ABS_COSINE = "mean_abs_cosine"
    DIRECTION_AUC = "direction_auc"
    METHOD_AGREEMENT = "method_agreement"

    # sae; variance_explained and nmse also as holdout.<name> (the held-out rows)
    NMSE = "nmse"  # squared error over the squared error of predicting the training mean
    VARIANCE_EXPLAINED = "variance_explained"  # 1 - nmse
    L0 = "l0"  # mean active latents per row
    DEAD_FRACTION = "dead_fraction"  # latents that never fire on any row
    LABELS_COVERED = "labels_covered"  # labels with a feature of AUC >= 0.9
    TRAIN_SECONDS = "train_seconds"
    # finetune, step = training step
    TRAIN_LOSS = "train_loss"
    TRAIN_ACCURACY = "train_accuracy"
    HELDOUT_LOSS = "heldout_loss"
    HELDOUT_ACCURACY = "heldout_accuracy"
    LR = "lr"
    TRAIN_SAMPLES_PER_S = "train_samples_per_s"
    # compare-models, step = layer: each compared run against the reference (``.<label>``)
    CKA_TO_BASE = "cka_to_base"

    HOLDOUT_PREFIX = "holdout."  # sweep --holdout: the best map's scores over the held-out samples

    @staticmethod
    def holdout(score: str) -> str:
        """A score over the held-out samples of a sweep, e.g. ``holdout.ami``."""
        return f"{Metric.HOLDOUT_PREFIX}{score}"

    @staticmethod
    def trust(score: str, suffix: str) -> str:
        """A trust measure of a score, e.g. ``trust("ami", Metric.P_VALUE_SUFFIX)`` ->
        ``ami_p_value``; ``ami_clustered_ci_low`` for a clustered score."""
        return f"{score}{suffix}"

    @staticmethod
    def qualified(metric: str, qualifier: str) -> str:
        """A metric for one part, e.g. ``accuracy_at_1.gender`` (analogy section) or
        ``direction_auc.probe`` (direction method). Characters MLflow refuses become ``_``."""
        import re

        clean = re.sub(r"[^A-Za-z0-9_\-. /]", "_", qualifier)
        return f"{metric}.{clean}"


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
    POOLINGS = "poolings.parquet"  # layers --compare-poolings: pooling, layer, the labelled curves
    ALIGNED_MAPS = "aligned_maps.parquet"  # layers --aligned-maps: layer, sample_id, x, y, label
    VERDICT = "verdict.parquet"  # layers: measure, layer, value, ci_low, ci_high, tied, collapsed
    PATH = "path.parquet"
    NEIGHBOURS = "neighbours.parquet"
    MISSES = "misses.parquet"
    PROJECTIONS = "projections.parquet"
    DIRECTION_COSINES = "direction_cosines.parquet"
    IMAGES_DIR = "images"
    ARITHMETIC_IMAGE = "images/arithmetic.png"
    RECONSTRUCTIONS_IMAGE = "images/reconstructions.png"
    AUTOENCODER_WEIGHTS = "autoencoder/state_dict.pt"
    SAE_WEIGHTS = "sae/weights.safetensors"  # safetensors: tensors only, never pickle
    FEATURES = "features.parquet"  # one row per SAE feature
    FEATURE_LABELS = "feature_labels.parquet"  # feature, label, auc: every feature against every label
    ACTIVATIONS = "activations.parquet"  # sample_id, feature, activation: the nonzero (top-k) activations
    QUESTIONS_FILE = "questions.txt"
    DIRECTIONS_DIR = "directions"
    EMBEDDINGS_DIR = "embeddings"
    # finetune: one Hugging Face folder (safetensors) per checkpoint, loadable with --model
    CHECKPOINTS_DIR = "checkpoints"
    CHECKPOINTS = "checkpoints.parquet"  # step, epoch, run_id (holding it), path, extract run, held-out scores
    HEAD_WEIGHTS = "head.safetensors"  # inside a checkpoint folder: the classification head
    # the optimiser / RNG state of the latest checkpoint (replaced at each), what --resume reads
    TRAINING_STATE_DIR = "training_state"
    TRAINING_STATE = "training_state.safetensors"  # inside it: optimiser moments and RNG state
    TRAINING_INFO = "training_state.json"  # ... and the step, epoch, class order and settings
    # compare-models
    CROSS_CKA = "cross_cka.parquet"  # run_a, run_b, layer_a, layer_b, cka for every pair of runs
    MODEL_LAYERS = "model_layers.parquet"  # run_id, step, checkpoint, layer, cka_to_base, probe_accuracy, ami.kmeans

    @staticmethod
    def checkpoint(step: int) -> str:
        """Folder of the checkpoint saved after training step ``step``."""
        return f"checkpoints/step_{int(step):06d}"

    @staticmethod
    def embedding(layer: int) -> str:
        """Path of one layer's ``(n_samples, dim)`` array: float32, or float16 when the run's
        ``dtype`` param says so (readers cast to float32)."""
        return f"embeddings/layer_{int(layer):03d}.npy"

    @staticmethod
    def step_image(method: str, step: int) -> str:
        """PNG of one decoded interpolation step."""
        return f"images/{method}/step_{int(step):03d}.png"

    @staticmethod
    def strip_image(method: str) -> str:
        """PNG of every decoded step of one path, side by side."""
        return f"images/{method}_strip.png"

    @staticmethod
    def direction_vectors(method: str) -> str:
        """``(n_labels, dim)`` float32 unit directions of one method (rows in label order)."""
        return f"directions/{method}.npy"


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
    POOLING = "pooling"  # poolings.parquet
    MEASURE = "measure"  # verdict.parquet: the measure (a metric name), with VALUE at its best layer
    CI_LOW = "ci_low"
    CI_HIGH = "ci_high"
    TIED = "tied"  # the layers the data cannot tell apart from the best, comma-separated
    COLLAPSED = "collapsed"  # why the best layer's clustering collapsed ("" when it did not)
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
    RUN_ID = "run_id"  # trials.parquet: the trial's MLflow child run
    DURATION = "duration_s"  # trials.parquet: seconds the trial took
    # interpolate
    T = "t"
    NORM = "norm"
    COSINE_FROM = "cosine_from"
    COSINE_TO = "cosine_to"
    IMAGE = "image"
    # analogies
    SECTION = "section"
    WORD_A = "a"
    WORD_B = "b"
    WORD_C = "c"
    EXPECTED = "expected"
    PREDICTED = "predicted"
    EXPECTED_RANK = "expected_rank"
    TOP_K = "top_k"
    # directions
    DIRECTION = "direction"
    PROJECTION = "projection"
    DIRECTION_A = "direction_a"
    DIRECTION_B = "direction_b"
    METHOD_A = "method_a"
    METHOD_B = "method_b"
    COSINE = "cosine"
    # clusters.parquet (one row per cluster of a map; x / y: the cluster's median map position)
    NOISE = "noise"  # True for the row of HDBSCAN's noise (-1)
    SIZE = "size"
    SHARE = "share"  # size / all samples
    MAJORITY_LABEL = "majority_label"
    PURITY = "purity"  # the majority label's share of the cluster
    KEYWORDS = "keywords"  # top class-based TF-IDF terms, best first
    KEYWORD_SCORES = "keyword_scores"
    CENTRAL_SAMPLES = "central_samples"  # sample ids closest to the cluster's centre, closest first
    CENTRAL_TEXTS = "central_texts"
    # features.parquet / feature_labels.parquet / activations.parquet (sae)
    FEATURE = "feature"
    DENSITY = "density"  # share of rows on which the feature fires
    MEAN_ACTIVATION = "mean_activation"  # over the rows it fires on
    TOP_ACTIVATIONS = "top_activations"  # activations of the top samples, highest first
    TOP_SAMPLES = "top_samples"  # sample ids of the highest activations, highest first
    TOP_TEXTS = "top_texts"
    TOP_TOKENS = "top_tokens"  # with --tokens: the token of each top activation
    BEST_LABEL = "best_label"  # the label the feature's activation separates best
    AUC = "auc"  # ... its ROC AUC (activation as the score of that label against the rest)
    DIRECTION_LABEL = "direction_label"  # the label direction (directions run) closest to the decoder row
    DIRECTION_COSINE = "direction_cosine"  # ... their cosine
    ACTIVATION = "activation"
    # checkpoints.parquet / model_layers.parquet / cross_cka.parquet
    EPOCH = "epoch"
    PATH = "path"
    EXTRACT_RUN = "extract_run"
    SPLIT = "split"  # finetune's samples.parquet: "train" or "heldout"
    CHECKPOINT = "checkpoint"  # display name of a compared run: "base", "step 40" or its run name
    RUN_A = "run_a"
    RUN_B = "run_b"


class CatalogColumn:
    """Columns of the frames ``latentscape.tracking.queries`` returns (docs/CATALOG_API.md).

    Times are naive UTC timestamps; ``layer`` is the run's ``layer`` tag as an integer."""

    RUN_ID = "run_id"
    EXPERIMENT_ID = "experiment_id"
    EXPERIMENT = "experiment"
    NAME = "name"
    KIND = "kind"
    STATUS = "status"
    USER = "user"
    START_TIME = "start_time"
    END_TIME = "end_time"
    PARENT_RUN_ID = "parent_run_id"
    SOURCE_RUN = "source_run"
    MODEL = "model"
    DATASET_NAME = "dataset_name"
    DATASET_DIGEST = "dataset_digest"
    POOLING = "pooling"
    LAYER = "layer"
    ERROR = "error"
    N_RUNS = "n_runs"
    LAST_START = "last_start"
    KEY = "key"
    VALUE = "value"
    STEP = "step"
    RUN_NAME = "run_name"
    BUCKET = "bucket"
    FACET = "facet"
    PARAM_PREFIX = "param."  # run_table: one column per param key
    METRIC_PREFIX = "metric."  # run_table: one column per metric key (latest value)
    # The columns of queries.runs / children, in order.
    RUNS = (RUN_ID, EXPERIMENT, NAME, KIND, STATUS, USER, START_TIME, END_TIME, PARENT_RUN_ID, SOURCE_RUN,
            MODEL, DATASET_NAME, DATASET_DIGEST, POOLING, LAYER, ERROR, EXPERIMENT_ID)


class Reply:
    """Keys of the JSON line a job prints with ``--json`` (``latentscape.jobs._result.JobResult``), and
    of what ``latentscape search`` puts in its ``details``: the protocol by which the UI asks
    the search job where a new text lands (the app itself never loads a model)."""

    KIND = "kind"
    RUN_ID = "run_id"
    EXPERIMENT = "experiment"
    SCORES = "scores"
    DETAILS = "details"
    REUSED = "reused"
    # search: details.layer, details.text, details.neighbours (rows of Column.RANK,
    # SAMPLE_ID, LABEL, TEXT, DISTANCE), details.x / details.y (the text's map position,
    # when the run has a map); scores.nearest_distance
    LAYER = "layer"
    TEXT = "text"
    NEIGHBOURS = "neighbours"
    X = "x"
    Y = "y"
    NEAREST_DISTANCE = "nearest_distance"
    SEARCH = "search"  # the reply's kind
    # search --serve: one request a stdin line (RUN_ID, TEXT, LAYER, K), one reply a stdout
    # line: the --json object with details.worker (the answering process id), or ERROR (the
    # input cannot be searched: a one-line usage error) or FAILURE (anything else, one line).
    K = "k"
    WORKER = "worker"
    ERROR = "error"
    FAILURE = "failure"


if __name__ == "__main__":  # the README's run contract section (made in tracking/contract_readme.py)
    from latentscape.tracking.contract_readme import readme_section

    print(readme_section(), end="")
