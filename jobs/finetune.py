"""``latentscape finetune``: fine-tune a model on labelled text, checkpoint it, and look
inside every checkpoint.

One ``finetune`` run: a classification head on the pooled last hidden state (see
:mod:`latentscape.jobs._finetune`), full fine-tuning or ``--freeze-below L``. It logs the training
loss and accuracy and the learning rate of every step, the held-out loss and accuracy
every ``--eval-every`` steps and at each checkpoint (``step`` = training step), the seed
and the data digest, and each checkpoint as an artifact folder (``checkpoints/step_NNNNNN``,
a Hugging Face folder in safetensors that ``--model`` loads again) the moment it is saved,
so Ctrl-C (the run ends KILLED) keeps every checkpoint written so far. The optimiser and
RNG state of the latest checkpoint (``training_state/``, twice the model's size for AdamW)
is replaced at each checkpoint rather than kept for all.

After training, the base model and each checkpoint are extracted on the held-out samples
by the ``extract`` job, as child runs of the training, and compared by the
``compare-models`` job (also a child): CKA of every layer to the base, probe accuracy
and k-means AMI per layer per checkpoint. ``--resume`` continues the newest interrupted
run with the same settings from its last checkpoint, as a new child run of it.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from latentscape.jobs._finetune import TrainSettings
from latentscape.jobs._options import add_options, from_args, option
from latentscape.jobs._result import JobResult
from latentscape.tracking.contract import DEFAULT_EXPERIMENT, Artifact, Column, Kind, Metric, Param, Tag
from latentscape.tracking.errors import UsageError

__all__ = ["FinetuneConfig", "finetune", "add_parser", "checkpoint_name", "HELDOUT_SPLIT", "TRAIN_SPLIT"]

TRAIN_SPLIT, HELDOUT_SPLIT = "train", "heldout"
_STEP_ROWS_PER_WRITE = 50  # step metrics are written in batches of this many steps


def _frame(*args, **kwargs):
    """A pandas DataFrame; pandas is imported here, not with the module, so argument and
    data-file errors come before it (~0.5-1 s)."""
    import pandas as pd

    return pd.DataFrame(*args, **kwargs)


@dataclass(frozen=True)
class FinetuneConfig(TrainSettings):
    """What ``latentscape finetune`` does, validated before any run exists: the training
    settings (:class:`TrainSettings`, the options of its ``training`` group), the data,
    the checkpoints and what follows the training. Of the loop's fields ``checkpoint_steps``
    and ``eval_batch_size`` are no options: the job sets the first from ``checkpoints``."""

    data: str = option("demo", help="'demo' or a labelled CSV/JSONL/Parquet file")
    text_col: str = option("text", help="column holding the text")
    label_col: str = option("label", help="column holding the class to learn")
    id_col: str | None = option("id", cli=lambda column: column or None,
                                help="column holding a unique sample id (default id, else row number)")
    limit: int | None = option(None, help="keep this many samples, balanced across labels")
    model: str | None = option(None, help="local Hugging Face model folder, e.g. a checkpoint of an earlier run "
                               "(default: bundled all-MiniLM-L6-v2)")
    checkpoints: int = option(2, low=1, help="checkpoints to save, evenly spaced over the steps, the last at the end "
                              "(default 2)")
    holdout: float = option(0.3, above=0, below=1, help="fraction of samples held out (stratified, seeded): evaluated during "
                            "training and extracted at every checkpoint (default 0.3)")
    device: str = option("auto", help="auto (CUDA when present), cpu or cuda")
    threads: int | None = option(None, help="torch CPU threads (default: torch's own)")
    resume: bool = option(False, help="continue the newest interrupted finetune run with the same settings from "
                          "its last checkpoint")
    extract: bool = option(True, flag="--no-extract", help="do not extract the base and checkpoints after "
                           "training (implies --no-compare)")  # on the held-out samples
    compare: bool = option(True, flag="--no-compare",
                           help="extract, but do not run compare-models on the extractions")  # needs extract

    def __post_init__(self):
        super().__post_init__()  # every option's bounds, the learning rate, warm-up and pooling
        if self.compare and not self.extract:
            raise UsageError("--no-extract leaves nothing to compare", "pass --no-compare too, or drop --no-extract")
        if not self.label_col:
            raise UsageError("fine-tuning trains a classifier and needs labels", "pass --label-col")


_TRAINING = tuple(field.name for field in fields(TrainSettings))  # the options of the `training` group


def add_parser(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "finetune", parents=parents, help="fine-tune a model on labelled text, checkpoint it, compare checkpoints",
        description="Fine-tune a model with a classification head on its pooled output (a plain torch loop; "
        "GPU when present), log train / held-out loss and accuracy per step, save checkpoints as artifacts "
        "(Hugging Face folders, safetensors) that --model loads again, then extract the base and every "
        "checkpoint on the held-out samples and compare them layer by layer (CKA to the base, probe accuracy, "
        "k-means AMI), all as child runs of the training.",
        epilog="examples:\n  latentscape finetune --data demo --epochs 1 --checkpoints 3\n"
        "  latentscape finetune --data reviews.csv --label-col stars --model ./my-model --freeze-below 3\n"
        "  latentscape finetune --data demo --epochs 1 --checkpoints 3 --resume   # after Ctrl-C",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser, FinetuneConfig, skip=_TRAINING)
    add_options(parser.add_argument_group("training"), TrainSettings)
    parser.set_defaults(handler=_run_cli)


def _run_cli(args) -> JobResult:
    config = from_args(FinetuneConfig, args, compare=args.compare and args.extract)
    from latentscape.jobs.datasets import check_source
    from latentscape.tracking.runs import open_store

    check_source(config.data)  # a mistyped path before MLflow and torch load

    return finetune(config, store=open_store(args.tracking_uri), experiment=args.experiment)


def _identity_params(config: FinetuneConfig, model_name: str, dataset) -> dict:
    """The params two runs must share for one to resume the other."""
    return {
        Param.MODEL: model_name, Param.DATASET: dataset.name, Param.EPOCHS: config.epochs,
        Param.CHECKPOINTS: config.checkpoints, Param.FREEZE_BELOW: config.freeze_below,
        Param.LEARNING_RATE: config.learning_rate, Param.WEIGHT_DECAY: config.weight_decay,
        Param.WARMUP: config.warmup, Param.BATCH_SIZE: config.batch_size, Param.MAX_LENGTH: config.max_length,
        Param.POOLING: config.pooling, Param.HOLDOUT: config.holdout, Param.SEED: config.seed,
    }


def finetune(config: FinetuneConfig, *, store, experiment: str | None = None) -> JobResult:
    """Fine-tune, checkpoint, extract and compare; one ``finetune`` run and its children."""
    from latentscape.tracking.run_log import tracked_run

    # Load and validate everything (data, split, model, the run to resume) before a run exists.
    plan = _prepare(config, store, experiment)
    resumed = plan.resumed
    with tracked_run(store, plan.experiment_id, Kind.FINETUNE,
                     run_name=f"finetune · {plan.model_name.split('/')[-1]} · {plan.dataset.name}",
                     parent_run_id=resumed.run_id if resumed else None,
                     source_run_id=resumed.run_id if resumed else None, tags=plan.lineage_tags()) as log:
        plan.log_inputs(log)

        # Train: step metrics in batches, every checkpoint uploaded as soon as it is saved.
        scratch = Path(tempfile.mkdtemp(prefix="latentscape-finetune-"))
        try:
            training = _TrainingLog(log, plan, scratch)
            training.train()
            device = plan.tuner.device
            plan.release_model()  # free the training copy before extracting

            # Extract the base and every checkpoint on the held-out samples, as children.
            extractions: dict[int, str] = {}
            if config.extract:
                extractions = _extract_checkpoints(plan, training.checkpoints, store, log.run_id, scratch)
                frame = _frame(training.checkpoints)
                frame[Column.EXTRACT_RUN] = [extractions[int(step)] for step in frame[Column.STEP]]
                log.table(Artifact.CHECKPOINTS, frame)
                log.params({Param.RUNS: ",".join(extractions[step] for step in sorted(extractions))})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

        # Compare them layer by layer: CKA to the base, probes, clusters.
        compared = None
        if config.compare:
            from latentscape.jobs.compare_models import CompareModelsConfig, compare_models

            compared = compare_models(CompareModelsConfig(runs=tuple(extractions[s] for s in sorted(extractions)),
                                                          seed=config.seed),
                                      store=store, experiment=plan.experiment_name, parent_run_id=log.run_id,
                                      source_run_id=log.run_id)
        run_id = log.run_id

    last = training.held_scores.get(plan.total)
    scores = {Metric.HELDOUT_ACCURACY: last[1] if last else float("nan"), **training.timing}
    details = {"checkpoints": [int(row[Column.STEP]) for row in training.checkpoints], "steps": plan.total,
               "device": device}
    if resumed:
        details["resumed"] = f"{resumed.run_id} from step {training.first_step}"
    if compared is not None:
        scores.update(compared.scores)
        details["compare_models_run"] = compared.run_id
    return JobResult(kind=Kind.FINETUNE.value, run_id=run_id, experiment=plan.experiment_name, scores=scores,
                     details=details)


@dataclass
class _Plan:
    """Everything validated before the run: the data and its split, the model to train,
    the loop, and the interrupted run it resumes (if any)."""

    config: FinetuneConfig
    dataset: object  # latentscape.jobs.datasets.Dataset
    train_rows: np.ndarray
    held_rows: np.ndarray
    classes: list[str]
    codes: np.ndarray  # (n,) class index of every sample
    model_name: str
    base_path: str
    experiment_name: str
    experiment_id: str
    identity: dict
    resumed: _Resumable | None
    tuner: object  # latentscape.jobs._finetune.FineTuner
    per_epoch: int
    total: int

    def lineage_tags(self) -> dict:
        return {Tag.DATASET_DIGEST: self.dataset.digest, Tag.DATASET_NAME: self.dataset.name,
                Tag.MODEL: self.model_name, Tag.POOLING: self.config.pooling,
                Tag.RESUME_OF: self.resumed.run_id if self.resumed else None}

    def log_inputs(self, log) -> None:
        """The data set (with each sample's split) and every setting."""
        dataset = self.dataset
        samples = dataset.samples_frame()
        samples[Column.SPLIT] = np.where(np.isin(np.arange(len(dataset)), self.held_rows), HELDOUT_SPLIT,
                                         TRAIN_SPLIT)
        log.dataset(samples, name=dataset.name, source=dataset.source, digest=dataset.digest, targets=Column.LABEL)
        log.params({**self.identity, Param.MODEL_PATH: self.base_path, Param.N_CLASSES: len(self.classes),
                    Param.N_TRAIN: len(self.train_rows), Param.N_HELDOUT: len(self.held_rows),
                    Param.TOTAL_STEPS: self.total, Param.STEPS_PER_EPOCH: self.per_epoch,
                    Param.EVAL_EVERY: self.tuner.settings.eval_every, Param.DEVICE: self.tuner.device,
                    Param.TEXT_COL: dataset.text_col, Param.LABEL_COL: dataset.label_col, Param.ID_COL: dataset.id_col})
        log.table(Artifact.SAMPLES, samples)

    def release_model(self) -> None:
        self.tuner = None


def _prepare(config: FinetuneConfig, store, experiment: str | None) -> _Plan:
    from latentscape.jobs._embedding import Encoder, resolve_model
    from latentscape.jobs._finetune import FineTuner, checkpoint_steps
    from latentscape.jobs._trust import split_for
    from latentscape.jobs.datasets import load_dataset

    dataset = load_dataset(config.data, text_col=config.text_col, label_col=config.label_col,
                           id_col=config.id_col, limit=config.limit)
    if dataset.texts is None:
        raise UsageError(f"data set {dataset.name!r} has no text to fine-tune on", "pass a text data set such as demo")
    if dataset.labels is None or dataset.n_classes < 2:
        raise UsageError(f"data set {dataset.name!r} needs at least two labels to fine-tune a classifier",
                         "pass --label-col naming a column with two or more classes")
    train_rows, held_rows = split_for(dataset.labels, config.holdout, config.seed)
    classes = sorted(np.unique(dataset.labels).tolist())
    model_name, base = resolve_model(config.model)
    experiment_name = experiment or DEFAULT_EXPERIMENT
    experiment_id = store.experiment_id(experiment_name)
    identity = _identity_params(config, model_name, dataset)
    resumed = _find_resumable(store, experiment_id, dataset.digest, identity) if config.resume else None
    base_path = resumed.base_path if resumed else str(base)
    encoder = Encoder.load(str(resumed.folder) if resumed else base_path, device=config.device,
                           threads=config.threads)
    if not 0 <= config.freeze_below < encoder.n_layers:
        raise UsageError(f"--freeze-below {config.freeze_below} is outside the model's layers 0..{encoder.n_layers - 1}",
                         f"pass 0..{encoder.n_layers - 1}")
    per_epoch = int(np.ceil(len(train_rows) / config.batch_size))
    total = per_epoch * config.epochs
    settings = TrainSettings(**{**{name: getattr(config, name) for name in _TRAINING},
                                "eval_every": config.eval_every or max(1, total // 5),
                                "checkpoint_steps": checkpoint_steps(total, config.checkpoints)})
    tuner = FineTuner(encoder, len(classes), settings)
    if resumed:
        info = tuner.restore(resumed.folder, resumed.state)
        if info.get("classes") != classes:
            raise UsageError(f"run {resumed.run_id} was trained on other classes", "resume with the same --data")
    return _Plan(config=config, dataset=dataset, train_rows=train_rows, held_rows=held_rows, classes=classes,
                 codes=np.searchsorted(classes, dataset.labels), model_name=model_name, base_path=base_path,
                 experiment_name=experiment_name, experiment_id=experiment_id, identity=identity, resumed=resumed,
                 tuner=tuner, per_epoch=per_epoch, total=total)


class _TrainingLog:
    """Runs the loop of a plan and logs it into ``log``: step metrics in batches, held-out
    scores, and each checkpoint (with the training state and ``checkpoints.parquet``)
    uploaded as soon as it is saved."""

    def __init__(self, log, plan: _Plan, scratch: Path):
        self.log, self.plan, self.scratch = log, plan, scratch
        self.checkpoints: list[dict] = list(plan.resumed.checkpoints) if plan.resumed else []
        self.held_scores: dict[int, tuple[float, float]] = {}
        self.pending: list[tuple[str, float, int]] = []
        self.timing: dict[str, float] = {}
        self.first_step = plan.tuner.step

    def train(self) -> None:
        from latentscape.jobs._progress import progress

        plan, tuner = self.plan, self.plan.tuner
        train_tokens = tuner.tokenize(plan.dataset.texts[plan.train_rows])
        held_tokens = tuner.tokenize(plan.dataset.texts[plan.held_rows])
        with progress(plan.total, "finetune", unit="step") as bar:
            bar.update(self.first_step)

            def on_step(record) -> None:
                self._step(record)
                bar.update(1)

            seconds = tuner.train(train_tokens, plan.codes[plan.train_rows], held_tokens, plan.codes[plan.held_rows],
                                  on_step=on_step, on_eval=self._eval, on_checkpoint=self._checkpoint)
        n_train, size = len(plan.train_rows), plan.config.batch_size
        trained = sum(min(size, n_train - (step % plan.per_epoch) * size) for step in range(self.first_step, plan.total))
        self.timing = {Metric.TRAIN_SECONDS: seconds, Metric.TRAIN_SAMPLES_PER_S: trained / max(seconds, 1e-9)}
        self._write([(name, value, 0) for name, value in self.timing.items()])

    def _write(self, extra=()) -> None:
        self.log.metric_rows(self.pending + list(extra))
        self.pending.clear()

    def _step(self, record) -> None:
        self.pending.extend([(Metric.TRAIN_LOSS, record.loss, record.step),
                             (Metric.TRAIN_ACCURACY, record.accuracy, record.step),
                             (Metric.LR, record.lr, record.step)])
        if len(self.pending) >= 3 * _STEP_ROWS_PER_WRITE:
            self._write()

    def _eval(self, record) -> None:
        self.held_scores[record.step] = (record.loss, record.accuracy)
        self.pending.extend([(Metric.HELDOUT_LOSS, record.loss, record.step),
                             (Metric.HELDOUT_ACCURACY, record.accuracy, record.step)])

    def _checkpoint(self, step: int, epoch: int) -> None:
        tuner, log = self.plan.tuner, self.log
        folder = tuner.save(self.scratch / f"step_{step:06d}")
        log.folder(Artifact.checkpoint(step), folder)
        state = tuner.save_state(self.scratch / Artifact.TRAINING_STATE_DIR, epoch=epoch, classes=self.plan.classes)
        log.folder(Artifact.TRAINING_STATE_DIR, state)  # replaces the previous checkpoint's
        loss, accuracy = self.held_scores[step]
        self.checkpoints.append({Column.STEP: step, Column.EPOCH: epoch, Column.RUN_ID: log.run_id,
                                 Column.PATH: Artifact.checkpoint(step), Metric.HELDOUT_LOSS: loss,
                                 Metric.HELDOUT_ACCURACY: accuracy})
        log.table(Artifact.CHECKPOINTS, _frame(self.checkpoints))
        self._write()
        log.flush()  # uploaded now: an interrupted run keeps it
        shutil.rmtree(folder, ignore_errors=True)


def _extract_checkpoints(plan: _Plan, checkpoints: list[dict], store, run_id: str, scratch: Path) -> dict[int, str]:
    """Extract runs (children of ``run_id``) of the base (step 0) and every checkpoint, all
    on the held-out samples: ``{step: extract run id}``."""
    from latentscape.tracking.runs import download

    dataset, rows = plan.dataset, plan.held_rows
    held_file = scratch / f"{dataset.name}-heldout.parquet"
    _frame({Column.SAMPLE_ID: dataset.ids[rows], Column.TEXT: dataset.texts[rows],
                  Column.LABEL: dataset.labels[rows]}).to_parquet(held_file, index=False)
    models = [(0, plan.base_path)] + [
        (int(row[Column.STEP]), str(download(store, row[Column.RUN_ID], row[Column.PATH]))) for row in checkpoints]
    return {step: _extract_child(held_file, path, plan.config, store, plan.experiment_name, run_id, step,
                                 name=None if step == 0 else checkpoint_name(plan.model_name, run_id, step))
            for step, path in models}


def checkpoint_name(model_name: str, run_id: str, step: int) -> str:
    """The model name of a checkpoint's extraction: the base model, the training run and
    the step (``all-MiniLM-L6-v2-ft-1a2b3c4d-step27``), unique across trainings."""
    return f"{model_name.split('/')[-1]}-ft-{run_id[:8]}-step{int(step)}"


def _extract_child(held_file: Path, model_path: str, config: FinetuneConfig, store, experiment: str,
                   run_id: str, step: int, name: str | None) -> str:
    from latentscape.jobs.extract import ExtractConfig, extract

    extract_config = ExtractConfig(data=str(held_file), text_col=Column.TEXT, label_col=Column.LABEL,
                                   id_col=Column.SAMPLE_ID, model=model_path, pooling=config.pooling,
                                   max_length=config.max_length, device=config.device, threads=config.threads,
                                   force=True)
    result = extract(extract_config, store=store, experiment=experiment, parent_run_id=run_id,
                     source_run_id=run_id, tags={Tag.CHECKPOINT_STEP: step}, model_name=name)
    return result.run_id


@dataclass(frozen=True)
class _Resumable:
    run_id: str
    base_path: str
    folder: Path  # the last checkpoint, local
    state: Path  # the optimiser / RNG state saved with it, local
    checkpoints: tuple[dict, ...]  # rows of its checkpoints.parquet


def _find_resumable(store, experiment_id: str, digest: str, identity: dict) -> _Resumable:
    """The newest interrupted (KILLED or FAILED) finetune run of the same data and settings
    that saved at least one checkpoint; a one-line error naming why there is none."""
    from latentscape.tracking.run_log import param_text
    from latentscape.tracking.runs import download, load_table

    runs = store.find_runs(experiment_id, kind=Kind.FINETUNE, tags={Tag.DATASET_DIGEST: digest},
                           newest_first=True, max_results=50)
    wanted = {key: param_text(value) for key, value in identity.items()}
    same = [run for run in runs if all(run.params.get(k) == v for k, v in wanted.items())]
    if not same:
        raise UsageError("--resume found no finetune run of this data with the same settings",
                         "drop --resume, or pass the settings of the interrupted run")
    newest = same[0]
    if newest.status not in ("KILLED", "FAILED"):
        raise UsageError(f"--resume: the newest finetune run with these settings ({newest.id}) is "
                         f"{newest.status}, not interrupted", "drop --resume to train again")
    names = store.artifact_paths(newest.id)
    if Artifact.CHECKPOINTS not in names:
        raise UsageError(f"--resume: run {newest.id} was interrupted before its first checkpoint",
                         "drop --resume to train from the start")
    rows = load_table(store, newest.id, Artifact.CHECKPOINTS).to_dict("records")
    rows = [{k: v for k, v in row.items() if k != Column.EXTRACT_RUN} for row in rows]
    last = rows[-1]
    folder = download(store, last[Column.RUN_ID], last[Column.PATH])
    state = download(store, newest.id, Artifact.TRAINING_STATE_DIR)
    return _Resumable(run_id=newest.id, base_path=newest.params.get(Param.MODEL_PATH, ""),
                      folder=Path(folder), state=Path(state), checkpoints=tuple(rows))
