"""Aligned maps of consecutive layers (latentscape.jobs.core.aligned)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import procrustes

from latentscape.jobs.core.aligned import aligned_maps


def _drifting_layers(n: int = 150, count: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Six clusters in 16-D whose points drift a little from one layer to the next."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, n)
    x = rng.normal(size=(n, 16)) + 3 * rng.normal(size=(6, 16))[labels]
    layers = []
    for _ in range(count):
        x = x + 0.3 * rng.normal(size=x.shape)
        layers.append(x.astype(np.float32))
    return layers


def test_consecutive_aligned_maps_are_closer_than_independent_ones():
    from latentscape.jobs.core.mapping import DataShape, resolve_config
    from latentscape.jobs.core.reduce import REDUCERS

    layers = _drifting_layers()
    maps = aligned_maps(layers, n_epochs=100, seed=0)
    assert [m.shape for m in maps] == [(150, 2)] * 3
    assert all(np.isfinite(m).all() for m in maps)

    # Independent UMAP maps of the same layers (the map job's reducer), one seed each.
    params = dict(resolve_config(shape=DataShape(150, 16, 6), reducer="umap", clusterer="kmeans").reducer_params)
    params["n_epochs"] = 100
    independent = [REDUCERS["umap"].run(x, params, seed=index, knn=None) for index, x in enumerate(layers)]

    for index in range(len(layers) - 1):
        aligned = procrustes(maps[index], maps[index + 1])[2]
        apart = procrustes(independent[index], independent[index + 1])[2]
        # Procrustes removes rotation, reflection, scale and shift: what remains is the
        # picture moving. Aligned maps barely move (measured ~0.003 against ~0.4).
        assert aligned < 0.05 and aligned < apart / 5, (index, aligned, apart)
    # Alignment does not hide structure: each map still separates the six clusters.
    again = aligned_maps(layers, n_epochs=100, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(maps, again))  # seeded


def test_the_epoch_is_umap_learns_step_for_step(monkeypatch):
    """The stacked-array epoch gives exactly the coordinates of umap-learn's own epoch."""
    import numba
    from umap.layouts import _optimize_layout_aligned_euclidean_single_epoch

    from latentscape.jobs.core import aligned

    # umap-learn's epoch as optimize_layout_aligned_euclidean compiles it.
    reference = numba.njit(_optimize_layout_aligned_euclidean_single_epoch, fastmath=True)
    fast = aligned._epoch_function()
    state: dict = {}

    def both(pos, heads, tails, n_edges, per_sample, per_negative, next_negative, next_sample, weights, relations,
             a, b, gamma, lambda_, alpha, epoch, rng_state):
        if not state:  # umap-learn's typed lists of the same inputs, taken at the first epoch
            def typed(arrays, kind):
                out = numba.typed.List.empty_list(kind)
                for array in arrays:
                    out.append(np.array(array, copy=True, order="C"))  # never a view of ours
                return out

            def rows(array, kind):
                return typed([array[m, :n_edges[m]] for m in range(len(pos))], kind)

            state.update(
                pos=typed(list(pos), numba.types.float32[:, ::1]),
                heads=rows(heads, numba.types.int32[::1]), tails=rows(tails, numba.types.int32[::1]),
                per_sample=rows(per_sample, numba.types.float64[::1]),
                per_negative=rows(per_negative, numba.types.float32[::1]),
                next_negative=rows(next_negative, numba.types.float32[::1]),
                next_sample=rows(next_sample, numba.types.float32[::1]), rng=rng_state.copy())
        reference(state["pos"], state["pos"], state["heads"], state["tails"], state["per_sample"], a, b, weights,
                  relations, state["rng"], gamma, lambda_, 2, True, alpha, state["per_negative"],
                  state["next_negative"], state["next_sample"], epoch)
        fast(pos, heads, tails, n_edges, per_sample, per_negative, next_negative, next_sample, weights, relations,
             a, b, gamma, lambda_, alpha, epoch, rng_state)

    monkeypatch.setattr(aligned, "_epoch_function", lambda: both)
    maps = aligned_maps(_drifting_layers(n=60, count=3, seed=1), n_neighbors=8, n_epochs=10, seed=3)
    np.testing.assert_array_equal(np.stack(maps), np.stack(list(state["pos"])))


def test_bad_inputs_and_a_single_layer():
    layers = _drifting_layers(n=40, count=1)
    single = aligned_maps(layers, n_neighbors=5, n_epochs=20)
    assert len(single) == 1 and single[0].shape == (40, 2)
    with pytest.raises(ValueError, match="n_neighbors"):
        aligned_maps(layers, n_neighbors=40)
    with pytest.raises(ValueError, match="every layer"):
        aligned_maps([layers[0], layers[0][:30]])
    with pytest.raises(ValueError, match="at least one layer"):
        aligned_maps([])
