"""A small seeded torch autoencoder for tabular embeddings (digits: 64 pixels), whose
decoder renders points of its latent space back as inputs.

The only module besides ``latentscape.jobs._embedding`` that imports torch. Weights travel as a
``torch.save(state_dict)`` file and are read back with ``weights_only=True`` only, so
loading a downloaded artifact can never run code. The input scaling is part of the
state dict (buffers), and the layer sizes are read from the weights' shapes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

__all__ = ["AutoencoderConfig", "Autoencoder", "train_autoencoder", "load_autoencoder"]


@dataclass(frozen=True)
class AutoencoderConfig:
    """Training settings. Measured on 2 CPU cores: digits (1,797 x 64), 40 epochs, ~0.7 s."""

    latent_dim: int = 8
    hidden: int = 64
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 3e-3
    holdout: float = 0.2
    seed: int = 0


def _network(dim: int, hidden: int, latent_dim: int):
    import torch
    from torch import nn

    class Network(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, latent_dim))
            self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, dim), nn.Sigmoid())
            # Inputs are scaled to [0, 1] with the training data's range; kept in the
            # state dict so a reloaded model decodes to the same units.
            self.register_buffer("lo", torch.zeros(()))
            self.register_buffer("hi", torch.ones(()))

        def scale(self, x):
            return (x - self.lo) / torch.clamp(self.hi - self.lo, min=1e-12)

        def unscale(self, y):
            return y * (self.hi - self.lo) + self.lo

        def forward(self, x):
            return self.decoder(self.encoder(x))

    return Network()


@dataclass
class Autoencoder:
    """A trained (or reloaded) autoencoder. ``losses``: training loss per epoch (scaled
    units); the MSEs are on held-out rows in the input's own units."""

    network: object
    config: AutoencoderConfig
    losses: list[float] = field(default_factory=list)
    reconstruction_mse: float = float("nan")
    baseline_mse: float = float("nan")

    def encode(self, x: np.ndarray) -> np.ndarray:
        """``x: (n, dim)`` -> ``(n, latent_dim)`` float64 codes."""
        import torch

        with torch.inference_mode():
            inputs = torch.as_tensor(np.asarray(x, dtype=np.float32))
            return self.network.encoder(self.network.scale(inputs)).double().numpy()

    def decode(self, z: np.ndarray) -> np.ndarray:
        """``z: (n, latent_dim)`` -> ``(n, dim)`` float64 in the input's units."""
        import torch

        with torch.inference_mode():
            codes = torch.as_tensor(np.atleast_2d(np.asarray(z, dtype=np.float32)))
            return self.network.unscale(self.network.decoder(codes)).double().numpy()

    def state_bytes(self) -> bytes:
        """The weights (and input scaling) as ``torch.save(state_dict)`` bytes."""
        import torch

        buffer = io.BytesIO()
        torch.save(self.network.state_dict(), buffer)
        return buffer.getvalue()


def train_autoencoder(x: np.ndarray, *, config: AutoencoderConfig = AutoencoderConfig()) -> Autoencoder:
    """Train on ``x: (n, dim)`` (a seeded ``holdout`` fraction kept aside, n >= 10).

    The baseline is the per-feature mean of the training rows predicting every held-out
    row; a useful decoder must beat it. Deterministic for a given seed on one machine.
    """
    import torch

    x = np.asarray(x, dtype=np.float32)
    n, dim = x.shape
    if n < 10:
        raise ValueError(f"an autoencoder needs at least 10 samples, not {n}")
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(n)
    n_test = max(1, int(round(n * config.holdout)))
    test, train = x[order[:n_test]], x[order[n_test:]]

    torch.manual_seed(config.seed)
    network = _network(dim, config.hidden, config.latent_dim)
    network.lo.fill_(float(train.min()))
    network.hi.fill_(float(train.max()))
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    inputs = network.scale(torch.as_tensor(train))
    generator = torch.Generator().manual_seed(config.seed)
    losses = []
    threads = torch.get_num_threads()
    # measured: digits, 40 epochs: 0.7 s on one thread, 4.0 s on two (matmuls this
    # small pay more for thread hand-offs than they gain).
    torch.set_num_threads(1)
    try:
        network.train()
        for _ in range(config.epochs):
            total = 0.0
            for batch in torch.randperm(len(inputs), generator=generator).split(config.batch_size):
                optimiser.zero_grad()
                loss = torch.nn.functional.mse_loss(network(inputs[batch]), inputs[batch])
                loss.backward()
                optimiser.step()
                total += loss.item() * len(batch)
            losses.append(total / len(inputs))
        network.eval()
    finally:
        torch.set_num_threads(threads)

    model = Autoencoder(network=network, config=config, losses=losses)
    reconstructed = model.decode(model.encode(test))
    model.reconstruction_mse = float(np.mean((reconstructed - test) ** 2))
    model.baseline_mse = float(np.mean((train.mean(axis=0) - test) ** 2))
    return model


def load_autoencoder(content: bytes, *, config: AutoencoderConfig = AutoencoderConfig()) -> Autoencoder:
    """An autoencoder from :meth:`Autoencoder.state_bytes`, read with ``weights_only=True``
    (tensors only: never unpickles code). Layer sizes come from the weights."""
    import torch

    state = torch.load(io.BytesIO(content), weights_only=True, map_location="cpu")
    hidden, dim = state["encoder.0.weight"].shape
    latent_dim = state["encoder.2.weight"].shape[0]
    network = _network(int(dim), int(hidden), int(latent_dim))
    network.load_state_dict(state)
    network.eval()
    return Autoencoder(network=network, config=config)
