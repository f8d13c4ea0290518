"""The extract job: pooled embeddings equal a direct transformers forward; bad input fails cleanly."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from latentscape.jobs.core.pooling import POOLINGS
from latentscape.tracking.contract import Artifact, Kind, Metric, Tag

TEXTS = ["a", "the quick brown fox jumps over the lazy dog", "hello there", "one two three four five six seven"]


def _direct(model_dir, texts, pooling):
    """Each text alone through transformers, pooled by hand (no padding at all)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, output_hidden_states=True).eval()
    out = []
    with torch.inference_mode():
        for text in texts:
            batch = tokenizer(text, return_tensors="pt")
            states = torch.stack(model(**batch).hidden_states)[:, 0]  # (layers, tokens, dim)
            pooled = {"mean": states.mean(1), "cls": states[:, 0], "max": states.max(1).values,
                      "last": states[:, -1]}[pooling]
            out.append(pooled.numpy())
    return np.stack(out, axis=1)  # (layers, texts, dim)


@pytest.mark.parametrize("pooling", sorted(POOLINGS))
@pytest.mark.parametrize("model_fixture", ["tiny_bert", "tiny_gpt2"])
def test_pooled_embeddings_equal_a_direct_forward(request, model_fixture, pooling):
    from latentscape.jobs._embedding import Encoder

    model_dir = request.getfixturevalue(model_fixture)
    encoder = Encoder.load(str(model_dir), device="cpu")
    got, tokens = encoder.encode(TEXTS, pooling=pooling, batch_size=3)
    expected = _direct(model_dir, TEXTS, pooling)
    assert sorted(got) == list(range(expected.shape[0]))
    for layer, values in got.items():
        np.testing.assert_allclose(values, expected[layer], atol=1e-5, rtol=1e-5)
    assert tokens > len(TEXTS)


def test_batches_on_parallel_cores_equal_one_batch_at_a_time(tiny_bert):
    """One batch per core (the CPU default) gives the same rows in the same order as
    batches run one by one, reports every batch, and leaves torch's thread count as it was."""
    import torch

    from latentscape.jobs._embedding import Encoder

    texts = [f"text number {i} " + "word " * (i % 7) for i in range(23)]
    encoder = Encoder.load(str(tiny_bert), device="cpu")
    threads = torch.get_num_threads()
    seen = []
    parallel, tokens = encoder.encode(texts, batch_size=4, threads=3, on_batch=seen.append)
    assert torch.get_num_threads() == threads
    assert sorted(seen) == [3] + [4] * 5
    serial, serial_tokens = encoder.encode(texts, batch_size=4, threads=1)
    assert tokens == serial_tokens
    for layer in serial:
        np.testing.assert_allclose(parallel[layer], serial[layer], atol=1e-5, rtol=1e-5)
    alone, _ = encoder.encode(texts[5:6], threads=1)
    np.testing.assert_allclose(parallel[2][5], alone[2][0], atol=1e-5, rtol=1e-5)


def test_bundled_minilm_matches_a_direct_forward(store):
    from latentscape.jobs._embedding import default_model_path
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract

    result = extract(ExtractConfig(data="demo", limit=20, batch_size=8), store=store)
    extraction = load_extraction(store, result.run_id)
    assert extraction.layers == list(range(7))
    texts = list(extraction.texts[:4])
    expected = _direct(default_model_path(), texts, "mean")
    for layer in (0, 3, 6):
        np.testing.assert_allclose(extraction.embedding(layer)[:4], expected[layer], atol=1e-5, rtol=1e-4)


def test_extract_logs_the_run_contract(store):
    from latentscape.jobs.extract import ExtractConfig, extract

    result = extract(ExtractConfig(data="demo", limit=30), store=store, experiment="contract")
    run = store.client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[Tag.KIND] == Kind.EXTRACT
    assert len(run.data.tags[Tag.DATASET_DIGEST]) == 16
    history = store.client.get_metric_history(result.run_id, Metric.ANISOTROPY)
    assert sorted(m.step for m in history) == list(range(7))
    assert all(-1 <= m.value <= 1 for m in history)
    paths = {a.path for a in store.client.list_artifacts(result.run_id, "embeddings")}
    assert Artifact.embedding(6) in paths
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == run.data.tags[Tag.DATASET_DIGEST]
    assert run.data.metrics[Metric.SAMPLES_PER_S] > 0

    again = extract(ExtractConfig(data="demo", limit=30), store=store, experiment="contract")
    assert again.reused and again.run_id == result.run_id
    forced = extract(ExtractConfig(data="demo", limit=30, force=True), store=store, experiment="contract")
    assert not forced.reused and forced.run_id != result.run_id


def test_digits_features_are_layer_zero(digits_extraction):
    from sklearn.datasets import load_digits

    assert digits_extraction.layers == [0]
    np.testing.assert_array_equal(digits_extraction.embedding(0), load_digits().data.astype(np.float32))
    assert len(set(digits_extraction.labels)) == 10


def test_wordnet_all_is_every_gloss_with_its_long_tail_of_lexicographer_classes():
    from latentscape.jobs.datasets import load_dataset

    dataset = load_dataset("wordnet-all")
    sizes = dict(zip(*np.unique(dataset.labels, return_counts=True)))
    assert len(dataset) > 100_000 and len(set(dataset.ids)) == len(dataset)  # offsets repeat across parts
    assert len(sizes) == 45 and {"noun.artifact", "verb.motion", "adj.all", "adv.all"} <= set(sizes)
    assert max(sizes.values()) > 100 * min(sizes.values())  # a long tail, as natural labels have
    # A limit keeps every class (round-robin), so a small run still covers the tail.
    assert load_dataset("wordnet-all", limit=450).n_classes == 45


def test_loaders_keep_metadata_and_accept_jsonl_and_parquet(tmp_path):
    import pandas as pd

    from latentscape.jobs.datasets import load_dataset

    frame = pd.DataFrame({"key": ["a", "b", "c"], "body": ["x y", "z", "w v"], "topic": ["p", "q", "p"],
                          "source": ["s1", "s2", "s3"]})
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.parquet"):
        dataset = load_dataset(str(tmp_path / name), text_col="body", label_col="topic", id_col="key")
        assert list(dataset.ids) == ["a", "b", "c"]
        assert list(dataset.metadata.columns) == ["source"]
        assert "meta.source" in dataset.samples_frame().columns
    unlabelled = load_dataset(str(tmp_path / "d.parquet"), text_col="body", label_col=None, id_col="key")
    assert unlabelled.labels is None


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "latentscape.jobs.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


BAD_INPUTS = {
    "missing file": (["extract", "--data", "nope.csv"], "neither a file"),
    "missing column": (["extract", "--data", "ok.csv", "--text-col", "body"], "no text column 'body'"),
    "empty file": (["extract", "--data", "empty.csv"], "is empty"),
    "non-utf8": (["extract", "--data", "latin1.csv"], "not valid UTF-8"),
    "nan features": (["extract", "--data", "nan.csv", "--model", "none"], "text"),
    "unknown model": (["extract", "--data", "ok.csv", "--model", "no/such/model"], "not a local Hugging Face model folder"),
    "one class": (["extract", "--data", "oneclass.csv"], "single class"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_run(tmp_path, case):
    (tmp_path / "ok.csv").write_text("id,text,label\n1,hello,a\n2,world,b\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "latin1.csv").write_bytes("id,text,label\n1,caf\xe9,a\n2,ol\xe9,b\n".encode("latin-1"))
    (tmp_path / "nan.csv").write_text("id,text,label\n1,,a\n2,x,b\n")
    (tmp_path / "oneclass.csv").write_text("id,text,label\n1,hello,a\n2,world,a\n")
    args, needle = BAD_INPUTS[case]
    done = _cli(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("latentscape extract: error:"), done.stderr
    assert done.stdout == ""


def test_nan_features_in_tabular_data_are_refused():
    from latentscape.jobs.datasets import Dataset, _validate
    from latentscape.tracking.errors import UsageError
    import pandas as pd

    features = np.ones((3, 2), dtype=np.float32)
    features[1, 1] = np.nan
    dataset = Dataset(name="t", source="t", ids=np.array(["a", "b", "c"]), texts=None, features=features,
                      labels=None, metadata=pd.DataFrame(index=range(3)))
    with pytest.raises(UsageError, match="NaN"):
        _validate(dataset)


def test_json_output_is_one_line(tmp_path):
    import json

    done = _cli("extract", "--data", "digits", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert payload["kind"] == "extract" and len(payload["run_id"]) == 32
    assert (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("pooling", sorted(POOLINGS))
def test_device_pooling_equals_the_numpy_reference(pooling):
    """The accelerator path pools in torch; it must agree with latentscape.jobs.core.pooling,
    padding on either side included."""
    import torch

    from latentscape.jobs._embedding import _pool_on_device
    from latentscape.jobs.core.pooling import pool

    rng = np.random.default_rng(0)
    states = rng.normal(size=(3, 4, 6, 5)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]])
    pooled = _pool_on_device(pooling, torch.tensor(states), torch.tensor(mask)).numpy()
    for layer in range(3):
        np.testing.assert_allclose(pooled[layer], pool(pooling, states[layer], mask), atol=1e-6)


ESM_VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO", ".", "-", "<null_1>", "<mask>"]


@pytest.fixture(scope="module")
def tiny_esm(tmp_path_factory):
    """A 2-block ESM-2-style protein model with random weights and its real tokenizer class."""
    import torch
    from transformers import EsmConfig, EsmModel, EsmTokenizer

    folder = tmp_path_factory.mktemp("tiny-esm")
    (folder / "vocab.txt").write_text("\n".join(ESM_VOCAB) + "\n")
    EsmTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = EsmConfig(vocab_size=len(ESM_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, pad_token_id=1, mask_token_id=len(ESM_VOCAB) - 1,
                       max_position_embeddings=130, position_embedding_type="rotary", token_dropout=False)
    EsmModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def test_a_protein_language_model_extracts_sequences(store, tmp_path, tiny_esm):
    import pandas as pd

    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract

    sequences = ["MKTAYIAKQR", "GAVLIPFMW", "MKTAYIAKQRQISFVKSHFSRQ", "STNQCYDE", "MALWMRLLPLLALLALWG", "KRHDE"]
    pd.DataFrame({"id": [f"p{i}" for i in range(6)], "text": sequences,
                  "label": ["a", "b", "a", "b", "a", "b"]}).to_csv(tmp_path / "proteins.csv", index=False)
    result = extract(ExtractConfig(data=str(tmp_path / "proteins.csv"), model=str(tiny_esm), batch_size=4),
                     store=store)
    extraction = load_extraction(store, result.run_id)
    assert extraction.layers == [0, 1, 2]
    expected = _direct(tiny_esm, sequences, "mean")
    for layer in extraction.layers:
        np.testing.assert_allclose(extraction.embedding(layer), expected[layer], atol=1e-5, rtol=1e-4)


# -- streaming: staged shards, resume, float16, memory-mapped reads ---------------------
def test_staged_layers_resume_from_the_last_whole_shard(tmp_path):
    from latentscape.jobs._shards import StagedLayers

    rng = np.random.default_rng(0)
    full = {layer: rng.normal(size=(10, 3)).astype(np.float32) for layer in (0, 2)}
    staged = StagedLayers.create(tmp_path / "s", n_rows=10, dim=3, layers=(0, 2), dtype="float32", shard_rows=4,
                                 identity={"model": "m"})
    staged.write(0, {layer: values[:4] for layer, values in full.items()})
    staged.write(4, {0: full[0][4:8], 2: full[2][4:6]})  # killed in the middle of layer 2's shard
    reopened = StagedLayers.existing(tmp_path / "s")
    assert reopened.complete_rows == 4 and reopened.identity == {"model": "m"}
    reopened.cut_to(reopened.complete_rows)
    reopened.write(4, {layer: values[4:8] for layer, values in full.items()})
    reopened.write(8, {layer: values[8:] for layer, values in full.items()})
    assert reopened.complete_rows == 10
    for layer, values in full.items():
        assert np.array_equal(np.load(reopened.path(layer)), values)  # a plain .npy of the final shape
        assert np.array_equal(np.concatenate(list(reopened.chunks(layer, rows=3))), values)
    assert StagedLayers.existing(tmp_path / "nothing") is None


def test_float16_storage_is_read_back_as_float32_close_to_the_float32_run(store):
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract
    from latentscape.tracking.contract import Param
    from latentscape.tracking.runs import download

    config = dict(data="demo", limit=40, batch_size=8, layers=(0, 6), shard_rows=16)
    full = load_extraction(store, extract(ExtractConfig(**config), store=store).run_id)
    half = load_extraction(store, extract(ExtractConfig(**config, dtype="float16"), store=store).run_id)
    assert half.run_id != full.run_id and half.params[Param.DTYPE] == "float16"
    assert np.load(download(store, half.run_id, Artifact.embedding(6))).dtype == np.float16
    for layer in (0, 6):
        expected, got = full.embedding(layer), half.embedding(layer)
        assert got.dtype == np.float32 and got.shape == expected.shape == (40, 384)
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
        assert not np.array_equal(got, expected)  # stored at half precision, not the float32 file
    # a layer is memory-mapped from the artifact (copy-on-write: the file never changes), nothing else is loaded
    mapped = full.embedding(0)
    assert isinstance(mapped, np.memmap) and mapped.mode == "c" and list(full._cache) == [0, 6]
    before = mapped[0, 0]
    mapped[0, 0] += 1.0
    assert np.load(download(store, full.run_id, Artifact.embedding(0)))[0, 0] == before
    # the streamed summaries equal those of the whole layer
    from latentscape.jobs.core.geometry import mean_norm

    history = store.client.get_metric_history(full.run_id, Metric.MEAN_NORM)
    assert {m.step: m.value for m in history}[6] == pytest.approx(mean_norm(full.embedding(6)), rel=1e-5)


def _staged_rows(folder):
    """Rows each layer file holds now: ``{layer_file: rows}`` of every staging folder under ``folder``."""
    from latentscape.jobs._shards import StagedLayers

    rows = {}
    for manifest in folder.glob("*/manifest.json"):
        staged = StagedLayers.existing(manifest.parent)
        for layer in staged.layers:
            rows[staged.path(layer)] = (staged.path(layer).stat().st_size - staged._offset(layer)) // staged.row_bytes
    return rows


def test_an_extraction_killed_mid_way_resumes_to_the_uninterrupted_result(store, tmp_path, wait_for_progress):
    """A real `latentscape extract` is SIGKILLed about half-way; a plain rerun offers --resume
    in one line; --resume repeats at most one shard and ends equal to an uninterrupted run."""
    import os
    import signal

    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract
    from latentscape.tracking.contract import Param
    from latentscape.tracking.errors import UsageError

    n, shard = 240, 16
    settings = dict(data="demo", limit=n, batch_size=8, shard_rows=shard)
    staging = tmp_path / "extract-staging"
    env = {**os.environ, "LATENTSCAPE_PROGRESS": "0"}
    child = subprocess.Popen(
        [sys.executable, "-m", "latentscape.jobs.cli", "extract", "--data", "demo", "--limit", str(n), "--batch-size",
         "8", "--shard-rows", str(shard), "--tracking-uri", store.uri], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def half_done():
            rows = _staged_rows(staging)
            return bool(rows) and min(rows.values()) >= n // 2

        wait_for_progress(half_done, progress=lambda: sum(_staged_rows(staging).values()), stall_s=120,
                          what="the extraction's staged rows", poll_s=0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    written = max(_staged_rows(staging).values())
    assert written < n, "the extraction finished before it was killed: kill it earlier"
    killed = store.find_runs(store.experiment_id(), kind=Kind.EXTRACT)
    assert [run.status for run in killed] == ["RUNNING"]  # SIGKILL leaves it so

    with pytest.raises(UsageError, match="rerun with --resume to continue, or --fresh to start over"):
        extract(ExtractConfig(**settings), store=store)
    resumed = extract(ExtractConfig(**settings, resume=True), store=store)
    run = store.get_run(resumed.run_id)
    resumed_at = int(run.params[Param.RESUMED_AT])
    assert n // 2 <= resumed_at <= written and written - resumed_at <= shard  # at most one shard again
    assert run.tags[Tag.RESUME_OF] == killed[0].id
    assert store.get_run(killed[0].id).status == "KILLED"
    assert not any(staging.glob("*/manifest.json"))  # logged, then removed

    uninterrupted = extract(ExtractConfig(**settings, force=True), store=store)
    again, once = load_extraction(store, resumed.run_id), load_extraction(store, uninterrupted.run_id)
    assert again.layers == once.layers == list(range(7))
    for layer in again.layers:
        np.testing.assert_array_equal(again.embedding(layer), once.embedding(layer))
