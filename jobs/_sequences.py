"""Protein data sets: FASTA files (labels from the headers or a side table) and the
labelled peptide sets that the ``modlamp`` package ships (``--data peptides``).

Each reader returns plain columns (ids, sequences, labels); latentscape.jobs.datasets
makes the :class:`~latentscape.jobs.datasets.Dataset`, so a FASTA file and the CSV of the
same sequences give the same data set, digest included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentscape.tracking.errors import UsageError

__all__ = ["FASTA_SUFFIXES", "PEPTIDE_SETS", "Sequences", "read_fasta", "read_peptides", "is_peptides"]

FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas", ".fna")
# modlamp's labelled peptide CSVs (BSD-3; read from the installed package, not copied here):
# ``--data peptides`` is the first, ``--data peptides:<name>`` any of them.
PEPTIDE_SETS = ("AMPvsTMset", "ACP_CancPPD_vs_TM", "ACP_CancPPD_vs_Random", "AMPvsUniProt")
PEPTIDES = "peptides"


@dataclass(frozen=True)
class Sequences:
    """``n`` sequences: ids (n,) str unique, sequences (n,) str, labels (n,) str or None;
    ``label_from`` says where the labels came from (logged with the run)."""

    name: str
    source: str
    ids: np.ndarray
    sequences: np.ndarray
    labels: np.ndarray | None
    label_from: str | None = None


def is_peptides(spec: str) -> bool:
    return spec == PEPTIDES or spec.startswith(PEPTIDES + ":")


def _modlamp_data() -> Path:
    """modlamp's data folder, found without importing modlamp (its import pulls scipy)."""
    import importlib.util

    spec = importlib.util.find_spec("modlamp")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("--data peptides reads the peptide sets of the modlamp package, which is not installed",
                         "pip install modlamp==4.3.3")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def read_peptides(spec: str) -> Sequences:
    """One of modlamp's labelled peptide sets: ``peptides`` (AMPvsTMset: 412 peptides,
    antimicrobial ``AMP`` vs transmembrane ``TM``) or ``peptides:<name>`` (:data:`PEPTIDE_SETS`).

    modlamp's format: a header ``n_samples,n_features,<name of class 0>,<name of class 1>...``,
    then ``sequence,class`` rows."""
    name = spec.split(":", 1)[1] if ":" in spec else PEPTIDE_SETS[0]
    if name not in PEPTIDE_SETS:
        raise UsageError(f"unknown peptide set {name!r}", f"choose one of {', '.join(PEPTIDE_SETS)}")
    path = _modlamp_data() / f"{name}.csv"
    if not path.is_file():
        raise UsageError(f"modlamp has no {path.name} in {path.parent}", "pip install modlamp==4.3.3")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    header = lines[0].split(",")
    classes = header[2:]
    rows = [line.rsplit(",", 1) for line in lines[1:]]
    sequences = np.array([sequence for sequence, _ in rows])
    labels = np.array([classes[int(label)] if classes else label for _, label in rows])
    ids = np.array([f"{name}-{i:04d}" for i in range(len(rows))])
    return Sequences(name=name, source=str(path), ids=ids, sequences=sequences, labels=labels)


def _records(path: Path) -> list[tuple[str, str]]:
    """``(header, sequence)`` of every FASTA record: the header without ``>``, the
    sequence's lines joined, whitespace and a closing stop ``*`` dropped."""
    records, header, parts = [], None, []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"{path} is not valid UTF-8 (byte {error.start})",
                         "re-encode the file as UTF-8, e.g. `iconv -t utf-8`") from error
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            if header is not None:
                records.append((header, "".join(parts).rstrip("*")))
            header, parts = line[1:].strip(), []
        elif header is None:
            raise UsageError(f"{path} line {number} holds a sequence before any '>' header",
                             "check that the file is FASTA: each record starts with a '>id' line")
        else:
            parts.append("".join(line.split()))
    if header is not None:
        records.append((header, "".join(parts).rstrip("*")))
    if not records:
        raise UsageError(f"{path} holds no FASTA record", "pass a file of '>id' lines, each followed by its sequence")
    return records


def read_fasta(path: Path, *, label_from_header: str | None = None, labels: str | None = None,
               label_col: str | None = "label", id_col: str | None = "id") -> Sequences:
    """A FASTA file: ids are each header's first word; labels from ``label_from_header`` (a
    regular expression searched in the header: its group ``label``, else its first group,
    else the whole match) or from ``labels``, a CSV/TSV table with columns ``id_col`` and
    ``label_col`` joined on the id; unlabelled otherwise."""
    if label_from_header and labels:
        raise UsageError("--label-from-header and --labels both give labels", "pass one of them")
    records = _records(path)
    ids = np.array([header.split()[0] if header else "" for header, _ in records])
    empty = [i for i, (header, sequence) in enumerate(records) if not header or not sequence]
    if empty:
        record = records[empty[0]]
        raise UsageError(f"{path}: record {empty[0] + 1} ({record[0] or 'no id'!r}) has no "
                         f"{'id' if not record[0] else 'sequence'}", "fill or drop that record")
    from collections import Counter

    duplicated = sorted(sample for sample, count in Counter(ids.tolist()).items() if count > 1)
    if duplicated:
        raise UsageError(f"{path}: id {duplicated[0]!r} is the first word of several headers",
                         "make each header's first word unique")
    found, label_from = None, None
    if label_from_header:
        found, label_from = _labels_from_headers(path, records, ids, label_from_header), f"header:{label_from_header}"
    elif labels:
        found = _labels_from_table(Path(labels), ids, label_col or "label", id_col or "id")
        label_from = str(Path(labels).resolve())
    return Sequences(name=path.stem, source=str(path.resolve()), ids=ids,
                     sequences=np.array([sequence for _, sequence in records]), labels=found, label_from=label_from)


def _labels_from_headers(path: Path, records, ids: np.ndarray, pattern: str) -> np.ndarray:
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise UsageError(f"--label-from-header '{pattern}' is not a regular expression ({error})",
                         "fix the pattern, e.g. 'class=(\\w+)'") from error
    found = []
    for (header, _), sample in zip(records, ids):
        match = regex.search(header)
        if match is None:
            raise UsageError(f"{path}: --label-from-header '{pattern}' finds nothing in the header of {str(sample)!r} "
                             f"({header[:80]!r})", "fix the pattern or that header")
        if "label" in regex.groupindex:
            value = match.group("label")
        else:
            value = match.group(1) if regex.groups else match.group(0)
        if not value:
            raise UsageError(f"{path}: --label-from-header '{pattern}' finds an empty label for {str(sample)!r}",
                             "fix the pattern or that header")
        found.append(value)
    return np.array(found)


def _labels_from_table(table: Path, ids: np.ndarray, label_col: str, id_col: str) -> np.ndarray:
    import pandas as pd

    if not table.is_file():
        raise UsageError(f"--labels {table} is not a file", "pass a CSV or TSV table with id and label columns")
    separator = "\t" if table.suffix.lower() in (".tsv", ".tab") else ","
    try:
        frame = pd.read_csv(table, sep=separator, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"cannot parse --labels {table}: {first}", "pass a CSV (or .tsv) with a header row") from error
    missing = [column for column in (id_col, label_col) if column not in frame]
    if missing:
        raise UsageError(f"--labels {table} has no column {missing[0]!r} (columns: {', '.join(frame.columns)})",
                         "name its columns with --id-col and --label-col")
    if frame[id_col].duplicated().any():
        raise UsageError(f"--labels {table}: id {frame[id_col][frame[id_col].duplicated()].iloc[0]!r} is listed twice",
                         "keep one label per id")
    by_id = dict(zip(frame[id_col], frame[label_col]))
    absent = [sample for sample in ids if sample not in by_id]
    if absent:
        raise UsageError(f"--labels {table} has no label for {len(absent)} of the {len(ids)} sequences "
                         f"(first: {str(absent[0])!r})", "add them to the table, or drop those records")
    return np.array([by_id[sample] for sample in ids])
