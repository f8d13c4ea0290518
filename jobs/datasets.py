"""Labelled data sets: built-ins (``demo`` text, ``wordnet`` definitions and ``wordnet-all``
glosses, ``digits`` images, ``peptides`` protein sequences) and CSV/JSONL/Parquet/FASTA files.

A :class:`Dataset` holds either texts (to run through a model) or features (tabular
data tracked with no model: the features become layer 0). Labels are optional.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from latentscape.jobs._sequences import FASTA_SUFFIXES, is_peptides, read_fasta, read_peptides
from latentscape.tracking.contract import Column
from latentscape.tracking.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Dataset", "load_dataset", "check_source", "BUILTIN_DATASETS"]

BUILTIN_DATASETS = ("demo", "wordnet", "wordnet-all", "digits", "peptides")
_READERS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class Dataset:
    """``n`` samples with ids, texts or features, optional labels and metadata.

    ids: (n,) str, unique. texts: (n,) str or None. features: (n, d) float32 or None.
    labels: (n,) str or None. metadata: (n, m) extra columns, kept as-is.
    """

    name: str
    source: str
    ids: np.ndarray
    texts: np.ndarray | None
    features: np.ndarray | None
    labels: np.ndarray | None
    metadata: pd.DataFrame
    text_col: str | None = None
    label_col: str | None = None
    id_col: str | None = None
    label_from: str | None = None  # a FASTA file's labels: header:REGEX or the side table

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_classes(self) -> int:
        return 0 if self.labels is None else len(np.unique(self.labels))

    @property
    def digest(self) -> str:
        """A content hash of ids, inputs and labels (16 hex digits)."""
        h = hashlib.sha256()
        for part in (self.ids, self.texts, self.labels):
            if part is not None:
                h.update("\x1f".join(map(str, part)).encode())
            h.update(b"\x1e")
        if self.features is not None:
            h.update(np.ascontiguousarray(self.features, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]

    def samples_frame(self) -> pd.DataFrame:
        """The samples table logged as ``samples.parquet``: id, text, label, metadata."""
        import pandas as pd

        frame = pd.DataFrame({Column.SAMPLE_ID: self.ids})
        frame[Column.TEXT] = self.texts if self.texts is not None else [f"{self.name} #{i}" for i in self.ids]
        frame[Column.LABEL] = self.labels if self.labels is not None else None
        for column in self.metadata.columns:
            frame[Column.META_PREFIX + str(column)] = self.metadata[column].to_numpy()
        return frame


def load_dataset(
    spec: str,
    *,
    text_col: str = "text",
    label_col: str | None = "label",
    id_col: str | None = "id",
    limit: int | None = None,
    label_from_header: str | None = None,
    labels: str | None = None,
) -> Dataset:
    """Load a built-in (``demo``, ``digits``, ``wordnet``, ``peptides``) or a
    CSV/JSONL/Parquet/FASTA file.

    ``label_col`` and ``id_col`` are used when present; naming one that is missing
    is an error. ``limit`` keeps the first rows, stratified by label when labelled.
    A FASTA file takes its labels from its headers (``label_from_header``, a regular
    expression) or a side table (``labels``), and is the same data set as the CSV of the
    same ids, sequences and labels.
    """
    check_source(spec)
    fasta = not is_peptides(spec) and spec not in BUILTIN_DATASETS and Path(spec).suffix.lower() in FASTA_SUFFIXES
    if (label_from_header or labels) and not fasta:
        raise UsageError(f"--label-from-header and --labels read FASTA files, not {spec!r}",
                         "use --label-col for a table's labels")
    if is_peptides(spec) or fasta:
        dataset = _sequences(read_peptides(spec) if is_peptides(spec) else
                             read_fasta(Path(spec), label_from_header=label_from_header, labels=labels,
                                        label_col=label_col, id_col=id_col))
    elif spec == "digits":
        dataset = _digits()
    elif spec == "wordnet":
        dataset = _wordnet()
    elif spec == "wordnet-all":
        dataset = _wordnet_all()
    elif spec == "demo":
        path = resources.files("latentscape.jobs") / "data" / "demo.csv"
        dataset = _from_frame(_read_table(Path(str(path))), "demo", str(path), "text", "label", "id", explicit=set())
    else:
        path = Path(spec)
        frame = _read_table(path)
        dataset = _from_frame(frame, path.stem, str(path.resolve()), text_col, label_col, id_col,
                              explicit={text_col})
    if limit is not None:
        dataset = _head(dataset, limit)
    _validate(dataset)
    return dataset


def check_source(spec: str) -> None:
    """The checks of a data set that need no parsing (no pandas): a built-in's name, or a
    file that exists, is readable, has a known type and is not empty. UsageError else.

    The CLI runs them before importing MLflow or opening a store, so a mistyped path is
    reported at once (measured: 5.2 s to this error when the store was opened first)."""
    if spec in BUILTIN_DATASETS or is_peptides(spec):
        return
    path = Path(spec)
    if not path.exists():
        raise UsageError(
            f"data set {spec!r} is neither a file nor a built-in",
            f"pass a CSV/JSONL/Parquet/FASTA path or one of {', '.join(BUILTIN_DATASETS)}",
        )
    if not path.is_file():
        raise UsageError(f"data set {spec!r} is a folder, not a file", "pass a CSV/JSONL/Parquet file inside it")
    if _READERS.get(path.suffix.lower()) is None and path.suffix.lower() not in FASTA_SUFFIXES:
        raise UsageError(f"cannot read {path.name}: unknown file type {path.suffix!r}",
                         "use a .csv, .jsonl, .parquet or .fasta file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{path} is not readable", "check the file's permissions")
    if path.stat().st_size == 0:
        raise UsageError(f"{path} is empty", "pass a file with a header and at least two rows")


def _read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    kind = _READERS[path.suffix.lower()]
    try:
        if kind == "csv":
            frame = pd.read_csv(path, encoding="utf-8", dtype=str, keep_default_na=False)
        elif kind == "jsonl":
            frame = pd.read_json(path, lines=True, encoding="utf-8", dtype=False)
        else:
            frame = pd.read_parquet(path)
    except UnicodeDecodeError as error:
        raise UsageError(f"{path} is not valid UTF-8 (byte {error.start})",
                         "re-encode the file as UTF-8, e.g. `iconv -t utf-8`") from error
    except (ValueError, pd.errors.ParserError, OSError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"cannot parse {path}: {first}", "check the file's format") from error
    if frame.empty:
        raise UsageError(f"{path} has no rows", "pass a file with at least two rows")
    return frame


def _from_frame(frame: pd.DataFrame, name: str, source: str, text_col: str, label_col: str | None,
                id_col: str | None, explicit: set[str]) -> Dataset:
    columns = list(frame.columns)
    if text_col not in frame:
        raise UsageError(f"{source} has no text column {text_col!r} (columns: {', '.join(map(str, columns))})",
                         "choose one with --text-col")
    texts = frame[text_col]
    if texts.isna().any() or (texts.astype(str).str.strip() == "").any():
        row = int(np.flatnonzero(texts.isna().to_numpy() | (texts.astype(str).str.strip() == "").to_numpy())[0])
        raise UsageError(f"{source}: text column {text_col!r} is empty in row {row + 1}",
                         "fill or drop empty rows")
    used = [text_col]
    labels = None
    if label_col:
        if label_col in frame:
            labels = frame[label_col].astype(str).to_numpy()
            if frame[label_col].isna().any():
                raise UsageError(f"{source}: label column {label_col!r} has missing values",
                                 "fill them or drop those rows")
            used.append(label_col)
        elif label_col != "label" or "label" in explicit:
            raise UsageError(f"{source} has no label column {label_col!r} (columns: {', '.join(map(str, columns))})",
                             "choose one with --label-col, or pass --label-col '' for unlabelled data")
    if id_col and id_col in frame:
        ids = frame[id_col].astype(str).to_numpy()
        if len(set(ids)) != len(ids):
            raise UsageError(f"{source}: id column {id_col!r} has duplicate values", "make ids unique or omit --id-col")
        used.append(id_col)
    elif id_col and id_col != "id":
        raise UsageError(f"{source} has no id column {id_col!r}", "choose one with --id-col")
    else:
        ids = np.array([str(i) for i in range(len(frame))])
    metadata = frame.drop(columns=used).reset_index(drop=True)
    return Dataset(name=name, source=source, ids=ids, texts=texts.astype(str).to_numpy(), features=None,
                   labels=labels, metadata=metadata, text_col=text_col,
                   label_col=label_col if labels is not None else None, id_col=id_col)


def _sequences(found) -> Dataset:
    """A :class:`Dataset` of protein sequences, with the columns a CSV of them would have
    (``id``, ``text``, ``label``), so both give the same digest."""
    import pandas as pd

    labelled = found.labels is not None
    return Dataset(name=found.name, source=found.source, ids=found.ids, texts=found.sequences, features=None,
                   labels=found.labels, metadata=pd.DataFrame(index=range(len(found.ids))), text_col="text",
                   label_col="label" if labelled else None, id_col="id", label_from=found.label_from)


def _digits() -> Dataset:
    import pandas as pd
    from sklearn.datasets import load_digits

    bunch = load_digits()
    n = len(bunch.target)
    return Dataset(
        name="digits", source="sklearn.datasets.load_digits",
        ids=np.array([f"digit-{i:04d}" for i in range(n)]), texts=None,
        features=bunch.data.astype(np.float32), labels=bunch.target.astype(str),
        metadata=pd.DataFrame(index=range(n)),
    )


# WordNet's lexicographer files (its fixed ``lexnames`` numbering, 00-44), as classes.
WORDNET_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)
# ``wordnet``'s classes: ten broad noun categories with at least 1,900 definitions each.
WORDNET_CLASSES = {
    "04": "act", "05": "animal", "06": "artifact", "08": "body", "10": "communication",
    "13": "food", "15": "location", "18": "person", "20": "plant", "27": "substance",
}
WORDNET_PER_CLASS = 200
WORDNET_PARTS = ("noun", "verb", "adj", "adv")
_WORDNET_DIRS = ("/usr/share/wordnet",)  # Debian's wordnet-base


def _wordnet_file(part: str) -> Path:
    """WordNet 3.0's ``data.<part>`` from ``$WNSEARCHDIR`` (WordNet's own variable) or
    Debian's ``wordnet-base`` package."""
    folders = [os.environ["WNSEARCHDIR"]] if os.environ.get("WNSEARCHDIR") else list(_WORDNET_DIRS)
    path = next((Path(folder) / f"data.{part}" for folder in folders if (Path(folder) / f"data.{part}").is_file()),
                None)
    if path is None:
        raise UsageError(f"WordNet's data.{part} is not in {' or '.join(folders)}",
                         "install it (apt-get install wordnet-base) or set WNSEARCHDIR to a WordNet 3.0 dict folder")
    return path


def _wordnet_glosses(path: Path):
    """``(offset, lexicographer file number, gloss)`` of every synset of a ``data.<part>`` file."""
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("  ") or " | " not in line:  # the licence header
                continue
            head, gloss = line.split(" | ", 1)
            offset, lex_file = head.split(" ", 2)[:2]
            yield offset, lex_file, gloss.strip()


def _wordnet_frame_dataset(name: str, source: str, rows: list[tuple[str, str, str]]) -> Dataset:
    import pandas as pd

    # Object arrays, as a table's columns are: a fixed-width str array pads every gloss to the
    # longest (505 characters, 4 bytes each: 227 MB at every gloss instead of about 20).
    ids, texts, labels = (np.array(column, dtype=object) for column in zip(*rows))
    return Dataset(name=name, source=source, ids=ids, texts=texts, features=None, labels=labels,
                   metadata=pd.DataFrame(index=range(len(ids))), text_col="text", label_col="label", id_col="id")


def _wordnet() -> Dataset:
    """2,000 real dictionary definitions in 10 balanced classes: the glosses of WordNet
    3.0 nouns (their definition, examples dropped), labelled by lexicographer file, 200 a
    class drawn with a fixed seed; a second real data set beside ``demo``."""
    path = _wordnet_file("noun")
    by_class: dict[str, list[tuple[str, str]]] = {name: [] for name in WORDNET_CLASSES.values()}
    for offset, lex_file, gloss in _wordnet_glosses(path):
        definition = gloss.split(";", 1)[0].strip()
        if lex_file in WORDNET_CLASSES and len(definition.split()) >= 4:
            by_class[WORDNET_CLASSES[lex_file]].append((f"wn-{offset}", definition))
    rng = np.random.default_rng(0)
    rows = []
    for label, entries in by_class.items():
        if len(entries) < WORDNET_PER_CLASS:
            raise UsageError(f"{path} has {len(entries)} {label} definitions, fewer than {WORDNET_PER_CLASS}",
                             "point WNSEARCHDIR at a complete WordNet 3.0 dict folder")
        chosen = np.sort(rng.choice(len(entries), WORDNET_PER_CLASS, replace=False))
        rows += [(*entries[i], label) for i in chosen]
    return _wordnet_frame_dataset("wordnet", str(path), rows)


def _wordnet_all() -> Dataset:
    """Every synset gloss of WordNet 3.0 (117,659: nouns, verbs, adjectives, adverbs; the
    whole gloss, definition and examples), labelled by lexicographer file: 45 classes from
    14,435 glosses (adj.all) down to 42 (noun.motive), the long tail natural data has. Ids
    are ``<part>-<offset>`` (offsets are unique within a part only). The corpus of the
    scale benchmarks; too large for tests."""
    rows = []
    for part in WORDNET_PARTS:
        rows += [(f"{part}-{offset}", gloss, WORDNET_LEXNAMES[int(lex_file)])
                 for offset, lex_file, gloss in _wordnet_glosses(_wordnet_file(part))]
    return _wordnet_frame_dataset("wordnet-all", str(_wordnet_file("noun").parent), rows)


def _head(dataset: Dataset, limit: int) -> Dataset:
    if limit < 2:
        raise UsageError(f"--limit {limit} keeps fewer than two samples", "pass --limit 2 or more")
    if limit >= len(dataset):
        return dataset
    if dataset.labels is None:
        keep = np.arange(limit)
    else:
        import pandas as pd

        # Round-robin over classes, so a small limit still covers every label.
        order = np.argsort(
            pd.Series(dataset.labels).groupby(dataset.labels).cumcount().to_numpy(), kind="stable"
        )
        keep = np.sort(order[:limit])
    return Dataset(
        name=dataset.name, source=dataset.source, ids=dataset.ids[keep],
        texts=None if dataset.texts is None else dataset.texts[keep],
        features=None if dataset.features is None else dataset.features[keep],
        labels=None if dataset.labels is None else dataset.labels[keep],
        metadata=dataset.metadata.iloc[keep].reset_index(drop=True),
        text_col=dataset.text_col, label_col=dataset.label_col, id_col=dataset.id_col, label_from=dataset.label_from,
    )


def _validate(dataset: Dataset) -> None:
    if len(dataset) < 2:
        raise UsageError(f"data set {dataset.name!r} has {len(dataset)} sample", "pass at least two samples")
    if dataset.features is not None and not np.isfinite(dataset.features).all():
        row = int(np.flatnonzero(~np.isfinite(dataset.features).all(axis=1))[0])
        raise UsageError(f"data set {dataset.name!r} has NaN or infinite features (row {row + 1})",
                         "impute or drop those rows before tracking")
    if dataset.labels is not None and dataset.n_classes < 2:
        raise UsageError(
            f"label column {dataset.label_col or 'label'!r} has a single class ({dataset.labels[0]!r})",
            "label scores need two or more classes: pick another --label-col or pass --label-col '' to go unlabelled",
        )
