"""A TopK sparse autoencoder (Gao et al. 2024, "Scaling and evaluating sparse
autoencoders") trained on a plain activation matrix; the only torch in the ``sae`` job.

Why our own module and not sae-lens: sae-lens (6.x) is built around transformer-lens
hooked models (its training runner pulls activations from a HookedTransformer and
logs to Weights & Biases) and brings a large dependency stack; what this job needs is
the model below trained on an ``(n, d)`` array we already have, which is a few dozen
lines of torch. The pieces, as the paper describes them:

- a tied pre-bias ``b_pre`` subtracted before encoding and added back after decoding;
- the encoder ``relu(topk((x - b_pre) W_enc + b_enc))``: exactly ``k`` latents may be
  nonzero per row, so L0 <= k by construction (no L1 penalty to tune);
- decoder rows (the features' directions) kept at unit norm after every step, the
  encoder initialised as the decoder's transpose;
- the AuxK loss: latents that have not fired for ``dead_after`` rows reconstruct the
  main model's residual with their own top ``aux_k``, weighted ``aux_coef``, which
  revives dead latents.

Inputs are centred on the training mean and scaled so a row has unit mean squared norm
(a buffer of the model, so reloaded weights take raw inputs). Weights travel as
safetensors (tensors and a string header, never pickle) with ``k`` in its metadata.
Training uses the GPU when ``torch.cuda.is_available()``; on the CPU it is
deterministic for a seed (the same bytes twice in one environment).
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field

import numpy as np

from latentscape.jobs._options import check_options, option
from latentscape.tracking.errors import UsageError

__all__ = ["SaeSettings", "TrainedSae", "train_sae", "load_sae", "split_rows", "DEFAULT_EXPANSION"]

DEFAULT_EXPANSION = 8  # features = 8 x the layer's width unless told otherwise


@dataclass(frozen=True)
class SaeSettings:
    """Training settings, declared once as options of ``latentscape sae`` (its config,
    :class:`latentscape.jobs.sae.SaeConfig`, derives from them and adds what to train on).

    features: dictionary size (the config's None, 8 x the width, is resolved before
    training); k: active latents per row; aux_k: dead latents of the AuxK loss (None: 2 x
    k); dead_after: rows a latent may go without firing before AuxK uses it (None: one
    epoch of training rows); holdout: fraction of rows (or of groups) kept out of
    training for the held-out scores."""

    features: int
    k: int = option(32, low=1, help="active features per row")
    epochs: int = option(30, low=1, help="passes over the training rows")
    learning_rate: float = option(1e-3, above=0, below=1, help="Adam's learning rate")
    batch_size: int = option(128, low=1, help="rows per training step")
    aux_k: int | None = option(None, low=1, help="dead latents the AuxK loss uses per row (default 2 x k)")
    aux_coef: float = option(1 / 32, low=0, help="weight of the AuxK loss (default 1/32; 0 turns dead-latent "
                             "revival off)")
    dead_after: int | None = option(None, low=1, help="rows a latent may go without firing before it counts as "
                                    "dead (default: one epoch)")
    holdout: float = option(0.2, above=0, below=1,
                            help="fraction of rows held out of training and scored (default 0.2); with "
                            "--tokens whole samples are held out")
    seed: int = option(0, low=0, help="seed of the split, initialisation and batches")
    device: str = option("auto", help="auto (GPU when present), cpu or cuda")

    def __post_init__(self):
        check_options(self)
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"--device {self.device!r} is not auto, cpu or cuda", "pass --device auto")


@dataclass
class TrainedSae:
    """A trained (or reloaded) sparse autoencoder.

    model: the torch module; k: active latents per row; losses: training loss (normalised
    MSE + aux_coef x AuxK) per optimiser step; train_rows / test_rows: row indices of the
    split; mean: (d,) the training mean in the input's units; seconds: training time."""

    model: object
    k: int
    losses: list[float] = field(default_factory=list)
    train_rows: np.ndarray | None = None
    test_rows: np.ndarray | None = None
    seconds: float = 0.0
    device: str = "cpu"

    @property
    def mean(self) -> np.ndarray:
        return self.model.mean.detach().cpu().double().numpy()

    @property
    def decoder(self) -> np.ndarray:
        """``(features, d)`` unit feature directions, in the scaled input space (the scale
        is one scalar, so the directions are those of the input's units)."""
        return self.model.w_dec.detach().cpu().double().numpy()

    def encode(self, x: np.ndarray, *, batch: int = 4096) -> np.ndarray:
        """``x: (n, d)`` raw inputs -> ``(n, features)`` float32 codes, at most k nonzero per row."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(x), batch):
                rows = torch.as_tensor(np.asarray(x[start:start + batch], dtype=np.float32), device=self._device())
                out.append(self.model.encode(self.model.scale(rows), self.k).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.w_dec.shape[0]), np.float32)

    def reconstruct(self, x: np.ndarray, *, batch: int = 4096) -> np.ndarray:
        """``x: (n, d)`` -> ``(n, d)`` float64 reconstructions in the input's units."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(x), batch):
                rows = torch.as_tensor(np.asarray(x[start:start + batch], dtype=np.float32), device=self._device())
                scaled = self.model.scale(rows)
                out.append(self.model.unscale(self.model.decode(self.model.encode(scaled, self.k))).cpu().double()
                           .numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.w_dec.shape[1]))

    def _device(self):
        return next(self.model.parameters()).device

    def to_bytes(self) -> bytes:
        """The weights and input scaling as safetensors bytes (``k`` in the metadata)."""
        from safetensors.torch import save

        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.model.state_dict().items()}
        # One metadata key: safetensors writes its metadata map in hash order, so with two
        # keys the same weights gave different bytes from one process to the next.
        return save(state, metadata={"k": str(self.k)})


def _module(dim: int, features: int, generator):
    import torch
    from torch import nn

    class TopKSae(nn.Module):
        def __init__(self):
            super().__init__()
            decoder = torch.randn(features, dim, generator=generator)
            decoder /= decoder.norm(dim=1, keepdim=True)
            self.w_dec = nn.Parameter(decoder)  # (features, d), unit rows
            self.w_enc = nn.Parameter(decoder.T.clone())  # (d, features)
            self.b_enc = nn.Parameter(torch.zeros(features))
            self.b_pre = nn.Parameter(torch.zeros(dim))
            self.register_buffer("mean", torch.zeros(dim))
            self.register_buffer("scale_factor", torch.ones(()))

        def scale(self, x):
            return (x - self.mean) / self.scale_factor

        def unscale(self, y):
            return y * self.scale_factor + self.mean

        def pre_activations(self, xs):
            return (xs - self.b_pre) @ self.w_enc + self.b_enc

        def encode(self, xs, k):
            return _topk(self.pre_activations(xs), k)

        def decode(self, codes):
            return codes @ self.w_dec + self.b_pre

    return TopKSae()


def _topk(pre, k: int):
    """Keep each row's ``k`` largest pre-activations (relu'd), zero the rest."""
    import torch

    values, index = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, index, torch.relu(values))


def split_rows(n: int, holdout: float, seed: int, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` row indices: a seeded ``holdout`` share of the rows held out, or of
    the ``groups: (n,)`` when given (every row of a held-out group is held out: the tokens
    of one sentence never straddle the split). At least one row on each side when n >= 2."""
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n)
        n_test = min(max(1, int(round(n * holdout))), n - 1) if n >= 2 and holdout > 0 else 0
        return np.sort(order[n_test:]), np.sort(order[:n_test])
    groups = np.asarray(groups)
    unique = np.unique(groups)
    held = rng.permutation(unique)[:min(max(1, int(round(len(unique) * holdout))), len(unique) - 1)] \
        if len(unique) >= 2 and holdout > 0 else unique[:0]
    mask = np.isin(groups, held)
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def train_sae(x: np.ndarray, settings: SaeSettings, *, groups: np.ndarray | None = None,
              on_epoch=None) -> TrainedSae:
    """Train on ``x: (n, d)`` (float32) minus a held-out share (see :func:`split_rows`).

    ``on_epoch()`` is called after each epoch (progress bars). Returns the model, its
    per-step losses and the split. Needs ``settings.k <= settings.features``."""
    import torch

    x = np.asarray(x, dtype=np.float32)
    n, dim = x.shape
    train_rows, test_rows = split_rows(n, settings.holdout, settings.seed, groups)
    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator().manual_seed(settings.seed)
    model = _module(dim, settings.features, generator)
    train = x[train_rows]
    mean = train.mean(axis=0)
    # One scalar so a centred training row has unit mean squared norm: the loss then reads
    # as normalised MSE, and learning rates carry over between layers and models.
    scale = float(np.sqrt(np.mean(np.sum((train - mean) ** 2, axis=1)))) or 1.0
    with torch.no_grad():
        model.mean.copy_(torch.as_tensor(mean))
        model.scale_factor.fill_(scale)
    model.to(device)
    inputs = model.scale(torch.as_tensor(train, device=device))
    denominator = float(inputs.pow(2).sum(-1).mean().clamp(min=1e-12))
    aux_k = min(settings.aux_k or 2 * settings.k, settings.features)
    dead_after = settings.dead_after or len(train)
    losses: list[float] = []
    started = time.perf_counter()
    threads = torch.get_num_threads()
    if device == "cpu":
        # One thread: the result then does not depend on the machine's core count (a
        # replay is bit-exact), and measured on 2 busy cores one thread was 2.4x faster
        # (2,000 x 384, 3,072 features: 110 ms a step against 260 ms on two).
        torch.set_num_threads(1)
    try:
        _epochs(model, inputs, settings, generator, device, denominator, aux_k, dead_after, losses, on_epoch)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return TrainedSae(model=model, k=settings.k, losses=losses, train_rows=train_rows, test_rows=test_rows,
                      seconds=time.perf_counter() - started, device=device)


def _epochs(model, inputs, settings: SaeSettings, generator, device, denominator: float, aux_k: int,
            dead_after: int, losses: list[float], on_epoch) -> None:
    """The training loop (see :func:`train_sae`); appends each step's loss to ``losses``."""
    import torch

    since_fired = torch.zeros(settings.features, device=device)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(inputs), generator=generator).to(device)
        for batch in order.split(settings.batch_size):
            rows = inputs[batch]
            pre = model.pre_activations(rows)
            values, index = pre.topk(settings.k, dim=-1)
            values = torch.relu(values)
            # Decode from the k active latents only: (batch, k) x (batch, k, d), ~features/k
            # times fewer multiply-adds than the dense (batch, features) x (features, d).
            recon = torch.einsum("bk,bkd->bd", values, model.w_dec[index]) + model.b_pre
            loss = (recon - rows).pow(2).sum(-1).mean() / denominator
            dead = since_fired >= dead_after
            if settings.aux_coef > 0 and bool(dead.any()):
                # AuxK: the dead latents' own top-k reconstructs what the live ones missed.
                residual = (rows - recon).detach()
                aux_values, aux_index = pre.masked_fill(~dead, float("-inf")).topk(min(aux_k, int(dead.sum())), dim=-1)
                aux_recon = torch.einsum("bk,bkd->bd", torch.relu(aux_values), model.w_dec[aux_index])
                aux = (aux_recon - residual).pow(2).sum(-1).mean()
                loss = loss + settings.aux_coef * aux / residual.pow(2).sum(-1).mean().clamp(min=1e-12)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                model.w_dec /= model.w_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)
                fired = torch.zeros(settings.features, dtype=torch.bool, device=device)
                fired[index[values > 0]] = True
                since_fired += len(batch)
                since_fired[fired] = 0
            losses.append(float(loss.detach()))
        if on_epoch is not None:
            on_epoch()


def _metadata(content: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (8-byte little-endian length, JSON)."""
    (length,) = struct.unpack("<Q", content[:8])
    return json.loads(content[8:8 + length]).get("__metadata__", {}) or {}


def load_sae(content: bytes, *, device: str = "cpu") -> TrainedSae:
    """A model from :meth:`TrainedSae.to_bytes` (safetensors: tensors only, no code runs)."""
    import torch
    from safetensors.torch import load

    state = load(content)
    features, dim = state["w_dec"].shape
    model = _module(int(dim), int(features), torch.Generator().manual_seed(0))
    model.load_state_dict(state)
    model.to(device).eval()
    return TrainedSae(model=model, k=int(_metadata(content)["k"]), device=device)
