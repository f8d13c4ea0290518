"""The interpolate job: paths between samples or new texts, their neighbours, and the
digits autoencoder that renders them as images."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from latentscape.jobs.interpolate import ARITHMETIC_METHOD, InterpolateConfig, interpolate
from latentscape.tracking.contract import MLFLOW_PARENT_RUN_ID, Artifact, Column, Kind, Metric, Param, Tag
from latentscape.tracking.errors import UsageError
from latentscape.tracking.runs import download, load_table


def _read_png(content: bytes) -> np.ndarray:
    """Decode the 8-bit grayscale PNGs that latentscape.jobs._images writes (filter 0 only)."""
    assert content[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour = struct.unpack(">IIBB", content[16:26])
    assert (depth, colour) == (8, 0)
    data, offset = b"", 8
    while offset < len(content):
        (length,) = struct.unpack(">I", content[offset:offset + 4])
        kind = content[offset + 4:offset + 8]
        if kind == b"IDAT":
            data += content[offset + 8:offset + 8 + length]
        offset += 12 + length
    rows = np.frombuffer(zlib.decompress(data), dtype=np.uint8).reshape(height, width + 1)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:]


def test_png_encoder_round_trips():
    from latentscape.jobs._images import png_bytes, strip, vector_image

    image = vector_image(np.arange(64.0), lo=0, hi=63)
    assert image.shape == (64, 64) and image[0, 0] == 255 and image[-1, -1] == 0  # ink is dark
    np.testing.assert_array_equal(_read_png(png_bytes(image)), image)
    assert strip([image, image], gap=4).shape == (64, 132)


def _endpoint_checks(neighbours, path, start: str, end: str, methods) -> None:
    for method in methods:
        steps = neighbours[neighbours[Column.METHOD] == method]
        last = steps[Column.STEP].max()
        first_hit = steps[(steps[Column.STEP] == 0) & (steps[Column.RANK] == 1)].iloc[0]
        last_hit = steps[(steps[Column.STEP] == last) & (steps[Column.RANK] == 1)].iloc[0]
        assert first_hit[Column.SAMPLE_ID] == start and first_hit[Column.DISTANCE] < 1e-6
        assert last_hit[Column.SAMPLE_ID] == end and last_hit[Column.DISTANCE] < 1e-6
        rows = path[path[Column.METHOD] == method].sort_values(Column.STEP)
        assert rows[Column.T].iloc[0] == 0.0 and rows[Column.T].iloc[-1] == 1.0
        assert rows[Column.COSINE_FROM].iloc[0] == pytest.approx(1.0) and rows[Column.COSINE_TO].iloc[-1] == pytest.approx(1.0)


def test_digits_path_starts_and_ends_at_its_samples(digits_extraction):
    store = digits_extraction.store
    config = InterpolateConfig(run=digits_extraction.run_id, layer=0, start="digit-0000", end="digit-0001",
                               steps=6, k=3)
    result = interpolate(config, store=store)
    run = store.get_run(result.run_id)
    assert run.tags[Tag.KIND] == Kind.INTERPOLATE.value
    assert run.tags[MLFLOW_PARENT_RUN_ID] == digits_extraction.run_id == run.tags[Tag.SOURCE_RUN]
    assert run.params[Param.METHODS] == "lerp,slerp" and run.params[Param.STEPS] == "6"

    path = load_table(store, result.run_id, Artifact.PATH)
    neighbours = load_table(store, result.run_id, Artifact.NEIGHBOURS)
    assert len(path) == 12 and len(neighbours[neighbours[Column.METHOD] != ARITHMETIC_METHOD]) == 2 * 6 * 3
    _endpoint_checks(neighbours, path, "digit-0000", "digit-0001", ("lerp", "slerp"))
    x = digits_extraction.embedding(0)
    low, high = sorted(np.linalg.norm(x[:2].astype(np.float64), axis=1))
    slerp_norms = path.loc[path[Column.METHOD] == "slerp", Column.NORM]
    assert slerp_norms.between(low - 1e-6, high + 1e-6).all()
    labels = dict(zip(digits_extraction.ids, digits_extraction.labels))
    assert all(labels[s] == label for s, label in zip(neighbours[Column.SAMPLE_ID], neighbours[Column.LABEL]))

    # Default arithmetic: mean(label of B) - mean(label of A) + A, i.e. mean(1) - mean(0) + a zero.
    assert run.params[Param.ADD] == "1" and run.params[Param.SUBTRACT] == "0"
    assert (neighbours[Column.METHOD] == ARITHMETIC_METHOD).sum() == 3
    assert run.metrics[Metric.ARITHMETIC_HIT_RATE] >= 2 / 3


def test_digits_autoencoder_beats_the_mean_and_renders_the_path(digits_extraction):
    import torch

    store = digits_extraction.store
    config = InterpolateConfig(run=digits_extraction.run_id, layer=0, start="digit-0010", end="digit-0020",
                               steps=5, k=2, decoder="autoencoder", add="7", subtract="1", epochs=15, seed=3)
    first = interpolate(config, store=store)
    autoencoder_run = first.details["autoencoder_run"]
    trained = store.get_run(autoencoder_run)
    assert trained.tags[Tag.KIND] == Kind.AUTOENCODER.value
    assert trained.tags[MLFLOW_PARENT_RUN_ID] == digits_extraction.run_id
    assert trained.metrics[Metric.RECONSTRUCTION_MSE] < 0.5 * trained.metrics[Metric.BASELINE_MSE]
    losses = [m.value for m in sorted(store.client.get_metric_history(autoencoder_run, Metric.LOSS),
                                      key=lambda m: m.step)]
    assert len(losses) == 15 and losses[-1] < losses[0]
    state = torch.load(download(store, autoencoder_run, Artifact.AUTOENCODER_WEIGHTS), weights_only=True)
    assert state["encoder.2.weight"].shape[0] == config.latent_dim
    assert _read_png(download(store, autoencoder_run, Artifact.RECONSTRUCTIONS_IMAGE).read_bytes()).shape[0] > 64

    # Every step decoded as an image, one strip per path, the arithmetic as a strip.
    path = load_table(store, first.run_id, Artifact.PATH)
    neighbours = load_table(store, first.run_id, Artifact.NEIGHBOURS)
    _endpoint_checks(neighbours, path, "digit-0010", "digit-0020", ("lerp", "slerp"))
    assert list(path[Column.IMAGE]) == [Artifact.step_image(m, s) for m in ("lerp", "slerp") for s in range(5)]
    for image in path[Column.IMAGE]:
        assert _read_png(download(store, first.run_id, image).read_bytes()).shape == (64, 64)
    strip = _read_png(download(store, first.run_id, Artifact.strip_image("slerp")).read_bytes())
    assert strip.shape == (64, 5 * 64 + 4 * 4)
    assert _read_png(download(store, first.run_id, Artifact.ARITHMETIC_IMAGE).read_bytes()).shape[1] == 4 * 64 + 3 * 4

    # The same settings reuse the logged weights (read back with weights_only=True).
    again = interpolate(config, store=store)
    assert again.details["autoencoder_run"] == autoencoder_run
    assert download(store, again.run_id, Artifact.strip_image("slerp")).read_bytes() == \
        download(store, first.run_id, Artifact.strip_image("slerp")).read_bytes()


def test_a_new_text_is_embedded_as_the_extraction_embedded_its_samples(text_extraction):
    store = text_extraction.store
    ids, texts = text_extraction.ids, text_extraction.texts
    config = InterpolateConfig(run=text_extraction.run_id, layer=6, start=str(texts[5]), end=str(ids[9]),
                               methods=("slerp",), steps=3, k=2)
    result = interpolate(config, store=store)
    neighbours = load_table(store, result.run_id, Artifact.NEIGHBOURS)
    path = load_table(store, result.run_id, Artifact.PATH)
    # The text of sample 5, embedded anew, lands on sample 5 itself.
    _endpoint_checks(neighbours, path, str(ids[5]), str(ids[9]), ("slerp",))
    assert set(neighbours[Column.METHOD]) == {"slerp"}  # a new text has no label: no default arithmetic
    assert Column.TEXT in neighbours and neighbours[Column.TEXT].str.len().min() > 0


def test_bad_requests_fail_before_a_run_exists(digits_extraction, text_extraction):
    store = digits_extraction.store
    before = len(store.client.search_runs([digits_extraction.experiment_id]))
    cases = [
        dict(run=digits_extraction.run_id, layer=0, start="digit-0000", end="digit-0001", add="3"),
        dict(run=digits_extraction.run_id, layer=0, start="digit-0000", end="digit-0001", add="3", subtract="x"),
        dict(run=digits_extraction.run_id, layer=4, start="digit-0000", end="digit-0001"),
        dict(run=digits_extraction.run_id, layer=0, start="digit-0000", end="digit-0000"),
        dict(run=digits_extraction.run_id, layer=0, start="digit-0000", end="digit-0001", steps=1),
        dict(run=text_extraction.run_id, layer=0, start=str(text_extraction.ids[0]), end=str(text_extraction.ids[1]),
             decoder="autoencoder"),
    ]
    for case in cases:
        with pytest.raises(UsageError):
            interpolate(InterpolateConfig(**case), store=store)
    assert len(store.client.search_runs([digits_extraction.experiment_id])) == before


def test_cli_says_in_one_line_that_tabular_data_cannot_embed_text(digits_extraction):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LATENTSCAPE_PROGRESS": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "latentscape.jobs.cli", "interpolate", "--tracking-uri", digits_extraction.store.uri,
         "--run", digits_extraction.run_id, "--layer", "0", "--from", "digit-0000", "--to", "a seven"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latentscape interpolate: error: 'a seven' is not a sample id")
    assert done.stdout == ""
