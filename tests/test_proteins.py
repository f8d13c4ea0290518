"""Proteins on a real protein language model: AntiBERTy (PyPI ``antiberty==0.1.3``, real
weights) on real labelled peptides (modlamp's AMPvsTMset, ``--data peptides``).

Residue-level tokenizers are fed as they expect (spaced residues for a WordPiece vocabulary
of residues, raw sequences for ESM's), unknown tokens stop a run before its extraction,
FASTA input is the same data set as its CSV, long sequences are truncated (counted) or
pooled over windows, and the model shelf finds AntiBERTy by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

ESM_VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO", ".", "-", "<null_1>", "<mask>"]


@pytest.fixture(scope="module")
def antiberty():
    from latentscape.jobs._embedding import resolve_model

    return resolve_model("antiberty")[1]


@pytest.fixture(scope="module")
def antiberty_encoder(antiberty):
    from latentscape.jobs._embedding import Encoder

    return Encoder.load(str(antiberty), device="cpu")


@pytest.fixture(scope="module")
def peptides():
    from latentscape.jobs.datasets import load_dataset

    return load_dataset("peptides")


@pytest.fixture(scope="module")
def tiny_esm_model(tmp_path_factory):
    """A 1-block ESM-style model with random weights and ESM's real tokenizer class."""
    import torch
    from transformers import EsmConfig, EsmModel, EsmTokenizer

    folder = tmp_path_factory.mktemp("tiny-esm")
    (folder / "vocab.txt").write_text("\n".join(ESM_VOCAB) + "\n")
    EsmTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = EsmConfig(vocab_size=len(ESM_VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, pad_token_id=1, mask_token_id=len(ESM_VOCAB) - 1,
                       max_position_embeddings=66, position_embedding_type="rotary", token_dropout=False)
    EsmModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def _write_csv(path, ids, sequences, labels):
    import pandas as pd

    pd.DataFrame({"id": ids, "text": sequences, "label": labels}).to_csv(path, index=False)
    return path


def _direct_mean(folder, sequences, layer):
    """Mean-pooled ``layer`` of AntiBERTy computed by hand, as its package's runner feeds it:
    residues separated by spaces, case kept."""
    import torch
    from transformers import AutoModel

    from latentscape.jobs._embedding import load_tokenizer

    tokenizer, model = load_tokenizer(folder), AutoModel.from_pretrained(folder).eval()
    batch = tokenizer([" ".join(s) for s in sequences], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states[layer]
    mask = batch["attention_mask"][..., None].float()
    return ((hidden * mask).sum(1) / mask.sum(1)).numpy()


# -- tokenization ---------------------------------------------------------------------------
def test_each_tokenizer_is_fed_residues_as_it_expects(antiberty_encoder, tiny_esm_model):
    from latentscape.jobs._embedding import Encoder

    # AntiBERTy's WordPiece vocabulary of 20 residues needs them spaced; raw, a protein is one [UNK].
    assert antiberty_encoder.input_kind == "spaced residues"
    assert antiberty_encoder.max_input == 512
    tokenized = antiberty_encoder.tokenize(["MKTAYIAKQR", "gavlipfmw"], max_length=64)
    tokens = [antiberty_encoder.tokenizer.convert_ids_to_tokens(ids) for ids in tokenized.pieces["input_ids"]]
    assert tokens == [["[CLS]", *"MKTAYIAKQR", "[SEP]"], ["[CLS]", *"GAVLIPFMW", "[SEP]"]]
    assert tokenized.unk_fraction == 0 and tokenized.n_tokens == 19
    raw = antiberty_encoder.tokenizer(["MKTAYIAKQR"])["input_ids"][0]
    assert raw == [2, antiberty_encoder.tokenizer.unk_token_id, 3]  # what the issue saw: the case it fixes
    # ESM's tokenizer splits a raw sequence itself.
    esm = Encoder.load(str(tiny_esm_model), device="cpu")
    assert esm.input_kind == "residues"
    ids = esm.tokenize(["MKTAYIAKQR"], max_length=64).pieces["input_ids"][0]
    assert esm.tokenizer.convert_ids_to_tokens(ids) == ["<cls>", *"MKTAYIAKQR", "<eos>"]
    # A natural-language vocabulary is left alone.
    assert Encoder.load(None, device="cpu").input_kind == "text"


def test_a_raw_protein_csv_extracts_known_residues_with_antiberty(store, tmp_path, peptides, antiberty):
    """Must hold: unspaced sequences through AntiBERTy become residue tokens (> 90% known)."""
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract

    rows = np.r_[0:6, 300:306]
    sequences = list(peptides.texts[rows])
    csv = _write_csv(tmp_path / "raw.csv", list(peptides.ids[rows]), sequences, list(peptides.labels[rows]))
    result = extract(ExtractConfig(data=str(csv), model="antiberty", batch_size=5), store=store)
    run = store.get_run(result.run_id)
    assert run.data.params["input_kind"] == "spaced residues"
    assert run.data.metrics["unk_fraction"] < 0.1 and result.scores["unk_fraction"] < 0.1
    assert run.data.metrics["truncated_fraction"] == 0
    residues = sum(len(s) for s in sequences)
    assert run.data.metrics["tokens_per_s"] * run.data.metrics["extract_seconds"] == pytest.approx(
        residues + 2 * len(sequences), rel=1e-6)
    extraction = load_extraction(store, result.run_id)
    assert extraction.layers == list(range(9))
    np.testing.assert_allclose(extraction.embedding(4), _direct_mean(antiberty, sequences, 4), atol=2e-5, rtol=1e-4)


def test_unknown_tokens_stop_the_job_in_one_line_before_a_run_exists(store, tmp_path, capsys):
    from latentscape.jobs.cli import main

    sentences = ["The cat sat on the mat.", "Proteins fold quickly.", "An antibody binds its antigen."] * 2
    csv = _write_csv(tmp_path / "words.csv", [f"s{i}" for i in range(6)], sentences, ["a", "b"] * 3)
    code = main(["extract", "--data", str(csv), "--model", "antiberty", "--tracking-uri", store.uri])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1, error
    assert "unknown to the tokenizer of model antiberty" in error and "the first 6 texts" in error
    assert "replace or drop the characters" in error
    experiments = store.experiment_ids()
    assert not experiments or not store.client.search_runs(experiments)  # no run was opened


def test_unknown_tokens_past_the_first_batch_fail_the_run_before_its_forward_passes(store, tmp_path, monkeypatch):
    from latentscape.jobs import _tokens
    from latentscape.jobs.extract import ExtractConfig, extract
    from latentscape.tracking.errors import UsageError

    monkeypatch.setattr(_tokens, "UNK_CHECK_TEXTS", 2)
    sequences = ["MKTAYIAKQR", "GAVLIPFMW"] + ["XXBZJXXOUX"] * 6
    csv = _write_csv(tmp_path / "dirty.csv", [f"p{i}" for i in range(8)], sequences, ["a", "b"] * 4)
    with pytest.raises(UsageError, match=r"of the 8 texts are unknown.*'X' x"):
        extract(ExtractConfig(data=str(csv), model="antiberty"), store=store)
    (run,) = store.client.search_runs([store.experiment_id(None)])
    assert run.info.status == "FAILED" and run.data.metrics["unk_fraction"] > 0.5
    assert "unknown to the tokenizer" in run.data.tags["error"]
