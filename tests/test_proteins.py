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
    assert run.params["input_kind"] == "spaced residues"
    assert run.metrics["unk_fraction"] < 0.1 and result.scores["unk_fraction"] < 0.1
    assert run.metrics["truncated_fraction"] == 0
    residues = sum(len(s) for s in sequences)
    assert run.metrics["tokens_per_s"] * run.metrics["extract_seconds"] == pytest.approx(
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


# -- the peptides, the real model, and what pretraining adds ----------------------------------------
def test_peptides_load_from_the_installed_modlamp(peptides):
    assert peptides.name == "AMPvsTMset" and len(peptides) == 412
    assert dict(zip(*np.unique(peptides.labels, return_counts=True))) == {"AMP": 206, "TM": 206}
    assert "modlamp" in peptides.source and peptides.texts[0] == "AAGAATVLLVIVLLAGSYLAVLA"


def test_antiberty_extracts_maps_and_measures_layers_of_real_peptides(tmp_path):
    import latentscape as ls

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extraction = ls.extract(data="peptides", model="antiberty", limit=40, pooling="cls", tracking_uri=uri)
    assert extraction.scores["unk_fraction"] == 0 and extraction.details["layers"] == 9
    view = ls.map(extraction, layer=3, reducer="pca", clusterer="kmeans", tracking_uri=uri)
    assert len(view.map) == 40 and set(view.map["label"]) == {"AMP", "TM"}
    assert view.scores["ami"] > 0.2  # antimicrobial and transmembrane peptides part at layer 3
    depth = ls.layers(extraction, map=False, tracking_uri=uri)
    assert len(depth.layers) == 9 and depth.layers["probe_accuracy"].max() > 0.8


def _probe_curve(folder, dataset) -> list[float]:
    from latentscape.jobs._embedding import Encoder
    from latentscape.jobs.core.probes import probe_accuracy

    embeddings, _ = Encoder.load(str(folder), device="cpu").encode(list(dataset.texts), batch_size=32)
    return [probe_accuracy(embeddings[layer], dataset.labels, seed=0).mean for layer in sorted(embeddings)]


@pytest.mark.slow
def test_pretrained_antiberty_beats_its_architecture_with_random_weights(tmp_path, antiberty, peptides):
    """Must hold: on AMPvsTMset the best layer's linear probe of the pretrained model beats
    the same architecture with random weights (bench/proteins.py prints both curves)."""
    import torch
    from transformers import AutoConfig, AutoModel

    from latentscape.jobs._embedding import load_tokenizer

    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(antiberty)).save_pretrained(tmp_path / "random")
    load_tokenizer(antiberty).save_pretrained(tmp_path / "random")
    pretrained, random = _probe_curve(antiberty, peptides), _probe_curve(tmp_path / "random", peptides)
    assert max(pretrained) > max(random) + 0.02, (pretrained, random)
    assert 1 <= int(np.argmax(pretrained)) <= 5  # the middle layers, not the embeddings or the last block


# -- FASTA ------------------------------------------------------------------------------------------
def _fasta(path, ids, sequences, labels=None, width=10):
    """Records with the label in the header and each sequence wrapped at ``width`` residues."""
    with open(path, "w") as out:
        for i, (sample, sequence) in enumerate(zip(ids, sequences)):
            out.write(f">{sample} some description" + (f" class={labels[i]}" if labels is not None else "") + "\n")
            out.writelines(sequence[start:start + width] + "\n" for start in range(0, len(sequence), width))
    return path


def test_fasta_with_labels_in_the_headers_is_the_same_run_as_its_csv(store, tmp_path, peptides):
    """Must hold: the FASTA file and the equivalent CSV are one data set, one run."""
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.datasets import load_dataset
    from latentscape.jobs.extract import ExtractConfig, extract

    rows = np.r_[0:5, 250:255]
    ids, sequences, labels = list(peptides.ids[rows]), list(peptides.texts[rows]), list(peptides.labels[rows])
    csv = _write_csv(tmp_path / "peptides.csv", ids, sequences, labels)
    fasta = _fasta(tmp_path / "peptides.fasta", ids, sequences, labels)
    from_csv = extract(ExtractConfig(data=str(csv), model="antiberty", layers=(0, 3)), store=store)
    config = ExtractConfig(data=str(fasta), model="antiberty", layers=(0, 3), label_from_header=r"class=(\w+)")
    again = extract(config, store=store)
    assert again.reused and again.run_id == from_csv.run_id
    forced = extract(ExtractConfig(**{**config.__dict__, "force": True}), store=store)
    a, b = load_extraction(store, from_csv.run_id), load_extraction(store, forced.run_id)
    assert a.samples.equals(b.samples)
    for layer in (0, 3):
        np.testing.assert_array_equal(a.embedding(layer), b.embedding(layer))
    run = store.get_run(forced.run_id)
    assert run.params["label_from"] == r"header:class=(\w+)"
    assert run.tags["dataset_digest"] == store.get_run(from_csv.run_id).tags["dataset_digest"]
    # logged with log_input like the other formats (MLflow's own run: the record holds no inputs)
    assert len(store.client.get_run(forced.run_id).inputs.dataset_inputs) == 1
    # A side table joined on the id gives the same data set.
    side = "".join(f"{sample}\t{label}\n" for sample, label in zip(ids[::-1], labels[::-1]))
    (tmp_path / "labels.tsv").write_text("id\tclass\n" + side)
    unlabelled = _fasta(tmp_path / "plain.fasta", ids, sequences)
    joined = load_dataset(str(unlabelled), labels=str(tmp_path / "labels.tsv"), label_col="class")
    assert joined.digest == load_dataset(str(csv)).digest


def test_fasta_mistakes_are_one_line_errors(tmp_path, peptides):
    from latentscape.jobs.datasets import load_dataset
    from latentscape.tracking.errors import UsageError

    fasta = _fasta(tmp_path / "p.fasta", ["a", "b"], ["MKTAYIAKQR", "GAVLIPFMW"], ["x", "y"])
    with pytest.raises(UsageError, match=r"finds nothing in the header of 'a'"):
        load_dataset(str(fasta), label_from_header=r"family=(\w+)")
    (tmp_path / "side.csv").write_text("id,label\na,x\n")
    with pytest.raises(UsageError, match=r"no label for 1 of the 2 sequences \(first: 'b'\)"):
        load_dataset(str(fasta), labels=str(tmp_path / "side.csv"))
    (tmp_path / "bad.fasta").write_text("MKTAYIAKQR\n>a\nMKT\n")
    with pytest.raises(UsageError, match="line 1 holds a sequence before any '>' header"):
        load_dataset(str(tmp_path / "bad.fasta"))
    with pytest.raises(UsageError, match="read FASTA files"):
        load_dataset("peptides", label_from_header="x")


# -- long sequences ---------------------------------------------------------------------------------
def test_long_sequences_are_truncated_and_counted_or_pooled_over_windows(store, tmp_path, antiberty_encoder, peptides):
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract

    sequences = [peptides.texts[0] + peptides.texts[1] + peptides.texts[2], "MKTAYIAKQR", "GAVLIPFMWSTNQ"]
    csv = _write_csv(tmp_path / "long.csv", ["long", "short", "mid"], sequences, ["a", "b", "a"])
    truncated = extract(ExtractConfig(data=str(csv), model="antiberty", max_length=16, layers=(2,)), store=store)
    assert truncated.scores["truncated_fraction"] == pytest.approx(1 / 3)
    windowed = extract(ExtractConfig(data=str(csv), model="antiberty", max_length=16, layers=(2,), long="window"),
                       store=store)
    assert windowed.run_id != truncated.run_id  # a different extraction, not the truncated one reused
    assert store.get_run(windowed.run_id).params["long"] == "window"
    got = load_extraction(store, windowed.run_id).embedding(2)
    # By hand: windows of 14 residues (16 tokens less [CLS] and [SEP]) every 7, the last ending at the end.
    long = sequences[0]
    starts = list(range(0, len(long) - 14 + 1, 7))
    starts += [len(long) - 14] if starts[-1] + 14 < len(long) else []
    windows, _ = antiberty_encoder.encode([long[s:s + 14] for s in starts], layers=[2], max_length=16)
    np.testing.assert_allclose(got[0], windows[2].mean(0), atol=1e-5)
    alone, _ = antiberty_encoder.encode(sequences[1:], layers=[2], max_length=16)
    np.testing.assert_allclose(got[1:], alone[2], atol=1e-5)
    assert not np.allclose(got[0], load_extraction(store, truncated.run_id).embedding(2)[0], atol=1e-3)


# -- the model shelf --------------------------------------------------------------------------------
def test_the_shelf_lists_packaged_models_and_the_users_folders(tmp_path, monkeypatch, capsys, tiny_esm_model):
    import shutil

    from latentscape.jobs.cli import main

    shutil.copytree(tiny_esm_model, tmp_path / "shelf" / "my-esm")
    monkeypatch.setenv("LATENTSCAPE_MODELS", str(tmp_path / "shelf"))
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["antiberty"]["layers"] == 9 and rows["antiberty"]["width"] == 512
    assert rows["antiberty"]["tokenizer"].startswith("spaced residues")
    assert rows["minilm"]["tokenizer"].startswith("text") and rows["minilm"]["layers"] == 7
    assert rows["my-esm"]["tokenizer"].startswith("residues (") and rows["my-esm"]["layers"] == 2
    from latentscape.jobs._embedding import resolve_model

    assert resolve_model("my-esm") == ("my-esm", (tmp_path / "shelf" / "my-esm").resolve())
    assert resolve_model("antiberty")[1].name == "AntiBERTy_md_smooth"
