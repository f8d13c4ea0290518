"""The onnx backend of extract: the same embeddings as torch, a cached export, and a job
that checks itself against fp32 torch (per-layer CKA) and fails below 0.99."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from latentscape.tracking.contract import Metric, Param, Tag

pytest.importorskip("onnxruntime")

TEXTS = ["a", "the quick brown fox jumps over the lazy dog", "hello there", "one two three four five six seven",
         "x y", "a much longer sentence about soup, football matches and the weather on a rainy day"]


@pytest.fixture
def onnx_cache(tmp_path, monkeypatch):
    folder = tmp_path / "onnx-cache"
    monkeypatch.setenv("LATENTSCAPE_ONNX_CACHE", str(folder))
    return folder


@pytest.fixture
def texts_csv(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    words = "soup football rain goal recipe oven match weather cloud score pan striker".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(40)]
    path = tmp_path / "texts.csv"
    pd.DataFrame({"id": range(40), "text": texts, "label": ["a", "b"] * 20}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("model_fixture", "pooling"), [("tiny_bert", "mean"), ("tiny_bert", "cls"),
                                                       ("tiny_bert", "max"), ("tiny_gpt2", "last")])
def test_onnx_backend_equals_torch_for_every_batch_shape(request, onnx_cache, model_fixture, pooling):
    from latentscape.jobs._embedding import Encoder

    encoder = Encoder.load(str(request.getfixturevalue(model_fixture)), device="cpu")
    for batch_size, threads in ((1, 1), (4, None), (2, 3)):  # one batch at a time, one per core, three at once
        expected, tokens = encoder.encode(TEXTS, pooling=pooling, batch_size=batch_size)
        got, onnx_tokens = encoder.encode(TEXTS, pooling=pooling, batch_size=batch_size, backend="onnx",
                                          threads=threads)
        assert onnx_tokens == tokens and sorted(got) == sorted(expected)
        for layer in expected:
            np.testing.assert_allclose(got[layer], expected[layer], atol=1e-5, rtol=1e-4)


def test_extract_with_onnx_logs_its_check_and_reuses_the_cached_graph(store, onnx_cache, tiny_bert, texts_csv):
    from latentscape.jobs._embedding import Encoder
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import BACKEND_MIN_CKA, ExtractConfig, extract

    config = ExtractConfig(data=str(texts_csv), model=str(tiny_bert), batch_size=8, backend="onnx")
    first = extract(config, store=store)
    run = store.client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params[Param.BACKEND] == "onnx" and run.data.params[Param.BACKEND_CHECK_SAMPLES] == "40"
    history = store.client.get_metric_history(first.run_id, Metric.BACKEND_CKA)
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert all(m.value >= BACKEND_MIN_CKA for m in history)
    assert run.data.metrics[Metric.BACKEND_CKA_MIN] == min(m.value for m in history)
    assert run.data.metrics[Metric.BACKEND_MAX_ABS_DIFF] < 1e-4
    assert run.data.metrics[Metric.ONNX_EXPORT_SECONDS] > 0
    assert first.scores[Metric.BACKEND_CKA_MIN] == run.data.metrics[Metric.BACKEND_CKA_MIN]

    # The logged embeddings are the torch ones.
    extraction = load_extraction(store, first.run_id)
    expected, _ = Encoder.load(str(tiny_bert), device="cpu").encode(list(extraction.texts), batch_size=8)
    for layer in extraction.layers:
        np.testing.assert_allclose(extraction.embedding(layer), expected[layer], atol=1e-5, rtol=1e-4)

    # A second run reads the cached graph: no export, the file untouched.
    graph = onnx_cache / os.path.basename(run.data.params[Param.ONNX_FILE])
    assert [p.name for p in onnx_cache.iterdir()] == [graph.name]
    written = graph.stat().st_mtime_ns
    again = extract(ExtractConfig(data=str(texts_csv), model=str(tiny_bert), batch_size=8, backend="onnx",
                                  force=True), store=store)
    rerun = store.client.get_run(again.run_id)
    assert rerun.info.status == "FINISHED" and Metric.ONNX_EXPORT_SECONDS not in rerun.data.metrics
    assert rerun.data.params[Param.ONNX_FILE] == run.data.params[Param.ONNX_FILE]
    assert graph.stat().st_mtime_ns == written and len(list(onnx_cache.iterdir())) == 1

    # The backend is part of an extraction's identity: torch is not answered with an onnx run.
    torch_run = extract(ExtractConfig(data=str(texts_csv), model=str(tiny_bert), batch_size=8), store=store)
    assert not torch_run.reused
    assert store.client.get_run(torch_run.run_id).data.params[Param.BACKEND] == "torch"
    assert extract(config, store=store).reused


def test_backend_agreement_names_the_layer_that_moved():
    from latentscape.jobs.extract import backend_agreement
    from latentscape.tracking.errors import UsageError

    rng = np.random.default_rng(0)
    reference = {layer: rng.normal(size=(200, 16)).astype(np.float32) for layer in range(3)}
    close = {layer: values + rng.normal(scale=1e-4, size=values.shape) for layer, values in reference.items()}
    agreement = backend_agreement(reference, close)
    assert agreement.min_cka > 0.9999 and max(agreement.max_abs_diff.values()) < 1e-3
    agreement.require("onnx")  # passes

    # Layer 2 moved as much as an int8 model moves MiniLM (cosine ~0.94 to fp32).
    moved = dict(close)
    moved[2] = reference[2] + rng.normal(scale=0.4, size=reference[2].shape)
    agreement = backend_agreement(reference, moved)
    assert agreement.cka[2] < 0.99 and agreement.cka[0] > 0.9999
    with pytest.raises(UsageError) as error:
        agreement.require("onnx")
    message = str(error.value)
    assert "\n" not in message and "layer 2" in message and f"{agreement.cka[2]:.4f}" in message
    assert "--backend torch" in message


def test_a_graph_that_disagrees_with_torch_fails_the_run_in_one_line(store, onnx_cache, tiny_bert, texts_csv,
                                                                      tmp_path):
    """A stale cached graph (here: another model's, under this model's key, as when weights
    are replaced in place with the same size and time) is caught by the job's own check."""
    import torch
    from transformers import BertConfig, BertModel

    from latentscape.jobs._embedding import Encoder

    torch.manual_seed(1)
    other = tmp_path / "other-bert"
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(other)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_bert / name, other / name)
    stale = Encoder.load(str(other), device="cpu").onnx("mean").path
    target = Encoder.load(str(tiny_bert), device="cpu").onnx_path("mean")
    shutil.copy(stale, target)

    done = subprocess.run(
        [sys.executable, "-m", "latentscape.jobs.cli", "extract", "--data", str(texts_csv), "--model", str(tiny_bert),
         "--backend", "onnx", "--tracking-uri", store.uri],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "LATENTSCAPE_PROGRESS": "0"},
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latentscape extract: error: the onnx backend changes layer 0")
    assert "--backend torch" in lines[0]
    runs = store.client.search_runs([store.experiment_id(None)])
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert "layer 0" in runs[0].data.tags[Tag.ERROR]
    assert runs[0].data.metrics[Metric.BACKEND_CKA_MIN] < 0.99


def test_onnx_backend_refuses_what_it_cannot_run(store, texts_csv):
    from latentscape.jobs.extract import ExtractConfig, extract
    from latentscape.tracking.errors import UsageError

    with pytest.raises(UsageError, match="tabular"):
        extract(ExtractConfig(data="digits", backend="onnx"), store=store)
    with pytest.raises(UsageError, match="runs on the CPU"):
        extract(ExtractConfig(data=str(texts_csv), device="cuda", backend="onnx"), store=store)
    with pytest.raises(UsageError, match="unknown --backend"):
        ExtractConfig(backend="tensorrt")
    assert not store.client.search_runs([store.experiment_id(None)])


def test_bundled_minilm_through_onnx_keeps_every_layer(store, onnx_cache):
    from latentscape.jobs.extract import ExtractConfig, extract

    result = extract(ExtractConfig(data="demo", limit=64, backend="onnx"), store=store)
    run = store.client.get_run(result.run_id)
    assert run.data.params[Param.BATCH_SIZE] == "16"  # the onnx backend's default
    history = store.client.get_metric_history(result.run_id, Metric.BACKEND_CKA)
    assert sorted(m.step for m in history) == list(range(7))
    assert min(m.value for m in history) > 0.9999
    assert run.data.metrics[Metric.BACKEND_MAX_ABS_DIFF] < 1e-4
