"""Fine-tuning with a classification head: the torch side of ``latentscape finetune``.

A plain torch loop, not transformers' ``Trainer`` (which pulls ``accelerate``; see the
shared NOTES): the model comes from :class:`latentscape.jobs._embedding.Encoder` (the one loader),
the head is a linear layer on the pooled last hidden state, pooled by the same function
the extraction pools with on a device (``_pool_on_device``), so a checkpoint's last layer
as extracted is exactly what the head was trained on.

- Optimiser: AdamW; learning rate rising linearly over the first ``warmup`` fraction of
  the steps, then falling linearly to 0 (computed here per step and logged).
- ``freeze_below = L``: hidden states ``0 .. L - 1`` keep the base's weights (the
  embeddings when L >= 1, and blocks ``1 .. L - 1``), so their extraction does not move.
- Batches: epoch ``e`` visits the training samples in the order of a permutation seeded
  by ``(seed, e)``, so a resumed run sees the batches the interrupted one would have.
- Checkpoints: a Hugging Face folder (``save_pretrained``: safetensors) that ``--model``
  loads again, with the head as safetensors; beside it the optimiser / RNG state as
  safetensors and the step in JSON (what ``--resume`` needs). Nothing is pickled.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from latentscape.jobs._options import check_options, option
from latentscape.tracking.contract import Artifact
from latentscape.tracking.errors import UsageError

__all__ = ["TrainSettings", "StepRecord", "EvalRecord", "FineTuner", "learning_rate_at", "checkpoint_steps"]


@dataclass(frozen=True)
class TrainSettings:
    """What the loop needs, declared once as the training options of ``latentscape
    finetune`` (its config, :class:`latentscape.jobs.finetune.FinetuneConfig`, derives from
    them and adds the data, checkpoints and extractions). The job passes ``eval_every``
    resolved (its None: about five evaluations over the training) and ``checkpoint_steps``
    (from ``--checkpoints``)."""

    epochs: int = option(1, low=1, help="passes over the training samples")
    freeze_below: int = option(0, low=0, metavar="L",
                               help="keep hidden states 0..L-1 as the base has them (default 0: train everything)")
    learning_rate: float = option(1e-4, above=0, help="peak AdamW learning rate (default 1e-4)")
    weight_decay: float = option(0.01, low=0, help="AdamW weight decay")
    warmup: float = option(0.1, low=0, below=1, help="fraction of steps of linear warm-up, then linear decay to 0 (default 0.1)")
    batch_size: int = option(16, low=1, help="training samples per step")
    max_length: int = option(128, low=2, help="truncate texts to this many tokens")
    pooling: str = option("mean", help="pooling the head reads and extractions use")
    seed: int = option(0, low=0, help="seed of the split, head, dropout and batch order")
    eval_every: int | None = option(None, low=1, help="held-out evaluation every N steps (default: ~5 per run, "
                                    "and at each checkpoint)")
    checkpoint_steps: tuple[int, ...] = ()  # steps after which a checkpoint is saved (1-based)
    eval_batch_size: int = 64

    def __post_init__(self):
        from latentscape.jobs.core.pooling import POOLINGS

        check_options(self)
        if self.pooling not in POOLINGS:
            raise UsageError(f"unknown pooling {self.pooling!r}", f"choose one of {', '.join(POOLINGS)}")


@dataclass(frozen=True)
class StepRecord:
    """One optimisation step: mean loss and accuracy over its batch, the learning rate used."""

    step: int
    epoch: int
    loss: float
    accuracy: float
    lr: float
    samples: int


@dataclass(frozen=True)
class EvalRecord:
    """Mean loss and accuracy over the held-out samples after ``step`` (0: before training)."""

    step: int
    loss: float
    accuracy: float


def checkpoint_steps(total_steps: int, count: int) -> tuple[int, ...]:
    """``count`` steps spread evenly over ``1 .. total_steps``, the last one last:
    ``checkpoint_steps(27, 3) == (9, 18, 27)``; fewer when there are fewer steps."""
    steps = {max(1, int(round(total_steps * k / count))) for k in range(1, count + 1)}
    return tuple(sorted(steps))


def learning_rate_at(step: int, *, base: float, total_steps: int, warmup: float) -> float:
    """The rate of 1-based ``step``: linear warm-up over ``ceil(warmup * total)`` steps to
    ``base``, then linear decay to 0 at ``total_steps``."""
    warm = int(math.ceil(warmup * total_steps))
    if warm and step <= warm:
        return base * step / warm
    return base * max(0.0, (total_steps - step + 1) / max(1, total_steps - warm))


class FineTuner:
    """An encoder with a linear head, its optimiser and the loop.

    ``encoder``: a loaded :class:`latentscape.jobs._embedding.Encoder` (its model is trained in place);
    ``n_classes``: width of the head."""

    def __init__(self, encoder, n_classes: int, settings: TrainSettings):
        import torch

        self.torch = torch
        self.encoder = encoder
        self.settings = settings
        self.device = encoder.device
        torch.manual_seed(settings.seed)
        hidden = int(encoder.model.config.hidden_size)
        self.head = torch.nn.Linear(hidden, n_classes).to(self.device)
        self.frozen = freeze_below(encoder.model, settings.freeze_below, encoder.n_layers)
        trainable = [p for p in encoder.model.parameters() if p.requires_grad] + list(self.head.parameters())
        self.parameters = trainable
        self.optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate,
                                           weight_decay=settings.weight_decay, **_fast_adamw(self.device))
        self.step = 0

    # -- batches ------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict:
        """Token ids of every text, unpadded (padded per batch), fed as the encoder's extraction
        feeds them (protein residues spaced where its tokenizer needs it)."""
        return self.encoder.tokenize(list(texts), max_length=self.settings.max_length).pieces

    def _batch(self, encoded: dict, rows: np.ndarray):
        padded = self.encoder.tokenizer.pad({key: [encoded[key][i] for i in rows] for key in encoded.keys()},
                                            return_tensors="pt")
        return {key: value.to(self.device) for key, value in padded.items()}

    def logits(self, batch: dict):
        """``(batch, n_classes)``: the head on the pooled last hidden state."""
        from latentscape.jobs._embedding import _pool_on_device

        states = self.encoder.model(**batch).hidden_states[-1]
        pooled = _pool_on_device(self.settings.pooling, states[None].float(), batch["attention_mask"])[0]
        return self.head(pooled)

    # -- the loop -----------------------------------------------------------------------
    def evaluate(self, encoded: dict, labels: np.ndarray) -> tuple[float, float]:
        """Mean cross-entropy and accuracy over ``labels: (n,)`` int class indices."""
        torch = self.torch
        self.encoder.model.eval()
        self.head.eval()
        total_loss, correct = 0.0, 0
        size = self.settings.eval_batch_size
        with torch.inference_mode():
            for start in range(0, len(labels), size):
                rows = np.arange(start, min(start + size, len(labels)))
                target = torch.as_tensor(labels[rows], device=self.device)
                logits = self.logits(self._batch(encoded, rows))
                total_loss += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
                correct += int((logits.argmax(1) == target).sum())
        return total_loss / max(len(labels), 1), correct / max(len(labels), 1)

    def steps_per_epoch(self, n_train: int) -> int:
        return int(math.ceil(n_train / self.settings.batch_size))

    def train(
        self,
        train: dict,
        train_labels: np.ndarray,
        held: dict,
        held_labels: np.ndarray,
        *,
        on_step: Callable[[StepRecord], None],
        on_eval: Callable[[EvalRecord], None],
        on_checkpoint: Callable[[int, int], None],
    ) -> float:
        """Train from ``self.step`` to the last step; returns the seconds spent in steps.
        ``on_checkpoint(step, epoch)`` is called after each checkpoint step (the job saves)."""
        torch = self.torch
        s = self.settings
        per_epoch = self.steps_per_epoch(len(train_labels))
        total = per_epoch * s.epochs
        if self.step == 0:
            on_eval(EvalRecord(0, *self.evaluate(held, held_labels)))
        seconds = 0.0
        while self.step < total:
            step = self.step + 1
            epoch, index = divmod(step - 1, per_epoch)
            order = np.random.default_rng([s.seed, epoch]).permutation(len(train_labels))
            rows = order[index * s.batch_size:(index + 1) * s.batch_size]
            lr = learning_rate_at(step, base=s.learning_rate, total_steps=total, warmup=s.warmup)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            started = time.perf_counter()
            self.encoder.model.train()
            self.head.train()
            target = torch.as_tensor(train_labels[rows], device=self.device)
            logits = self.logits(self._batch(train, rows))
            loss = torch.nn.functional.cross_entropy(logits, target)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            accuracy = float((logits.detach().argmax(1) == target).float().mean())
            seconds += time.perf_counter() - started
            self.step = step
            on_step(StepRecord(step, epoch + 1, float(loss.detach()), accuracy, lr, len(rows)))
            if step % s.eval_every == 0 or step in s.checkpoint_steps:
                on_eval(EvalRecord(step, *self.evaluate(held, held_labels)))
            if step in s.checkpoint_steps:
                on_checkpoint(step, epoch + 1)
        return seconds

    # -- checkpoints --------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        """A Hugging Face folder of the encoder (safetensors) and its tokenizer, with the
        head (safetensors): what ``--model`` loads again."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.model.save_pretrained(folder)
        self.encoder.tokenizer.save_pretrained(folder)
        save_file({name: value.detach().cpu().contiguous() for name, value in self.head.state_dict().items()},
                  str(folder / Artifact.HEAD_WEIGHTS))
        return folder

    def save_state(self, folder: Path, *, epoch: int, classes: Sequence[str]) -> Path:
        """The optimiser moments and RNG state (safetensors) and the step, epoch and class
        order (JSON) that :meth:`restore` needs: twice the model's size for AdamW, so the job
        keeps only the latest."""
        from safetensors.torch import save_file

        torch = self.torch
        folder.mkdir(parents=True, exist_ok=True)
        state = {"torch_rng": torch.get_rng_state()}
        for index, values in self.optimizer.state_dict()["state"].items():
            for key, value in values.items():
                state[f"{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        save_file(state, str(folder / Artifact.TRAINING_STATE))
        info = {"step": self.step, "epoch": epoch, "classes": list(classes), "settings": asdict(self.settings)}
        (folder / Artifact.TRAINING_INFO).write_text(json.dumps(info, indent=2))
        return folder

    def restore(self, checkpoint: Path, state: Path) -> dict:
        """Load the head saved by :meth:`save` in ``checkpoint`` (the encoder's weights are
        the folder's: load the encoder from it) and the optimiser and RNG state saved by
        :meth:`save_state` in ``state``. Returns the state's info (step, epoch, classes)."""
        from safetensors.torch import load_file

        torch = self.torch
        info = json.loads((state / Artifact.TRAINING_INFO).read_text())
        head = load_file(str(checkpoint / Artifact.HEAD_WEIGHTS))
        self.head.load_state_dict({k: v.to(self.device) for k, v in head.items()})
        saved = load_file(str(state / Artifact.TRAINING_STATE))
        torch.set_rng_state(saved.pop("torch_rng"))
        optimizer_state = self.optimizer.state_dict()
        restored: dict[int, dict] = {}
        for name, value in saved.items():
            index, key = name.split(".", 1)
            restored.setdefault(int(index), {})[key] = value.to(self.device) if key != "step" else value
        optimizer_state["state"] = restored
        self.optimizer.load_state_dict(optimizer_state)
        self.step = int(info["step"])
        return info


def freeze_below(model, layer: int, n_layers: int) -> int:
    """Stop gradients to every parameter that produces hidden states ``0 .. layer - 1``:
    the parameters registered before the first block (the embeddings) when ``layer >= 1``,
    and blocks ``0 .. layer - 2``. The blocks are the model's first ``ModuleList`` with
    one module per block. Returns the number of parameters frozen."""
    import torch

    if layer <= 0:
        return 0
    blocks = next((module for module in model.modules()
                   if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers - 1), None)
    if blocks is None:
        raise ValueError("cannot find the model's blocks to freeze")
    in_blocks = {id(p): index for index, block in enumerate(blocks) for p in block.parameters()}
    frozen, before_blocks = 0, True
    for parameter in model.parameters():
        index = in_blocks.get(id(parameter))
        if index is not None:
            before_blocks = False
        freeze = (before_blocks and index is None) or (index is not None and index < layer - 1)
        if freeze:
            parameter.requires_grad_(False)
            frozen += 1
    return frozen


def _fast_adamw(device: str) -> dict:
    """AdamW's fused kernel (one pass over all parameters, CPU and CUDA in torch >= 2.4):
    measured on MiniLM on 2 busy cores, the optimiser step took 0.37 s a step unfused."""
    return {"fused": True} if str(device).split(":")[0] in ("cpu", "cuda") else {}
