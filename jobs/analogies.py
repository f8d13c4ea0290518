"""``latentscape analogies``: does ``b - a + c`` land on ``d``, layer by layer?

Reads analogy questions in word2vec's ``questions-words.txt`` format (``: section``
lines, then ``a b c d`` lines: a is to b as c is to d), embeds every word of the file
with the extraction's own model and pooling, and for each layer answers ``b - a + c``
by the nearest word of the file's vocabulary (cosine), excluding a, b and c.
Accuracy@1 and @5, overall and per section, are metrics with ``step=layer``
(``accuracy_at_1``, ``accuracy_at_1.<section>``, ...); the misses are a Parquet table.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from latentscape.jobs._options import add_options, from_args, option
from latentscape.jobs._result import JobResult
from latentscape.tracking.contract import Artifact, Column, Kind, Metric, Param
from latentscape.tracking.errors import UsageError

__all__ = ["AnalogiesConfig", "AnalogyQuestions", "analogies", "parse_questions", "default_questions", "add_parser"]

DEFAULT_SECTION = "default"  # questions before any ``: section`` line
_TOP_K = 5


def default_questions() -> Path:
    """The example file shipped with latentscape (capitals, gender, plurals, opposites)."""
    return Path(str(resources.files("latentscape.jobs") / "data" / "analogies.txt"))


@dataclass(frozen=True)
class AnalogyQuestions:
    """``q`` questions: ``sections: (q,)`` str and ``words: (q, 4)`` str (a, b, c, d)."""

    sections: np.ndarray
    words: np.ndarray

    @property
    def vocabulary(self) -> list[str]:
        """Every distinct word, in order of first appearance."""
        return list(dict.fromkeys(self.words.ravel().tolist()))

    def indices(self, vocabulary: list[str]) -> np.ndarray:
        """``(q, 4)`` rows of ``vocabulary``."""
        position = {word: i for i, word in enumerate(vocabulary)}
        return np.vectorize(position.__getitem__, otypes=[np.int64])(self.words)


def parse_questions(text: str, *, source: str = "questions") -> AnalogyQuestions:
    """Parse the analogy-question format. Blank lines and ``#`` comments are skipped;
    questions before any ``: section`` line belong to section ``default``. Raises a
    one-line :class:`UsageError` naming the first bad line."""
    sections, words, section = [], [], DEFAULT_SECTION
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(":"):
            section = line[1:].strip()
            if not section:
                raise UsageError(f"{source} line {number}: a ':' line needs a section name", "write ': name'")
            continue
        parts = line.split()
        if len(parts) != 4:
            raise UsageError(f"{source} line {number}: expected 4 words 'a b c d' or ': section', "
                             f"got {len(parts)} ({_short(line)!r})", "fix or remove that line")
        sections.append(section)
        words.append(parts)
    if not words:
        raise UsageError(f"{source} has no questions", "add lines 'a b c d' (a is to b as c is to d)")
    vocabulary = dict.fromkeys(w for row in words for w in row)
    if len(vocabulary) < 5:
        raise UsageError(f"{source} has only {len(vocabulary)} distinct words",
                         "answers are chosen among the file's words: add more questions")
    return AnalogyQuestions(sections=np.array(sections), words=np.array(words))


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass(frozen=True)
class AnalogiesConfig:
    run: str = option(help="id of an extract run of text", metavar="EXTRACT_RUN")
    questions: str | None = option(None, metavar="FILE",  # None: the shipped example file
                                   help="': section' and 'a b c d' lines (default: the shipped example file)")
    normalize: bool = option(False, help="scale word vectors to unit length before b - a + c (word2vec's 3CosAdd)")


def add_parser(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "analogies", parents=parents, help="score analogy questions (b - a + c = d?) at every layer",
        description="Embed every word of an analogy-question file with the extraction's model and pooling, "
        "answer each question 'a b c d' with the word nearest to b - a + c (excluding a, b, c), and log "
        "accuracy@1 and @5 per section and overall for every layer, and the misses.",
        epilog="examples:\n  latentscape analogies --run EXTRACT_RUN\n"
        "  latentscape analogies --run EXTRACT_RUN --questions questions-words.txt --normalize",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser, AnalogiesConfig)
    parser.set_defaults(handler=_run_cli)


def _run_cli(args) -> JobResult:
    from latentscape.tracking.runs import open_store

    config = from_args(AnalogiesConfig, args)
    return analogies(config, store=open_store(args.tracking_uri), experiment=args.experiment)


def _read_questions(spec: str | None) -> tuple[Path, AnalogyQuestions]:
    path = Path(spec).expanduser() if spec else default_questions()
    if not path.is_file():
        raise UsageError(f"questions file {path} does not exist", "pass a file of ': section' and 'a b c d' lines")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"{path} is not valid UTF-8 (byte {error.start})", "re-encode the file as UTF-8") from error
    return path, parse_questions(text, source=str(path))


def analogies(config: AnalogiesConfig, *, store, experiment: str | None = None) -> JobResult:
    """Score the questions at every layer of ``config.run``; log one ``analogies`` run."""
    # Load and validate everything before a run exists: the questions file first, before
    # pandas and the store's first query (MLflow).
    path, questions = _read_questions(config.questions)
    import pandas as pd

    from latentscape.jobs._reembed import embed_like, require_text_model
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.core.walk import accuracy_by_group, answer_analogies
    from latentscape.tracking.run_log import tracked_run

    extraction = load_extraction(store, config.run)
    require_text_model(extraction, job="analogies")
    vocabulary = questions.vocabulary
    index = questions.indices(vocabulary)
    experiment_name = experiment or extraction.experiment_name
    experiment_id = store.experiment_id(experiment_name)

    # Every word through the run's model, pooling and layers.
    vectors = embed_like(extraction, vocabulary, extraction.layers, job="analogies")

    with tracked_run(store, experiment_id, Kind.ANALOGIES, run_name=f"analogies · {path.name}",
                     parent_run_id=extraction.run_id, source_run_id=extraction.run_id,
                     tags=extraction.lineage_tags()) as log:
        log.params({
            Param.QUESTIONS: str(path), Param.N_QUESTIONS: len(index), Param.VOCABULARY_SIZE: len(vocabulary),
            Param.NORMALIZE: config.normalize, Param.LAYERS: ",".join(map(str, extraction.layers)),
            Param.POOLING: extraction.pooling, Param.MODEL: extraction.model,
        })
        log.file(Artifact.QUESTIONS_FILE, path)

        # Answer at every layer; accuracies overall and per section, step=layer.
        rows, misses, overall = [], [], {}
        words = np.array(vocabulary)
        for layer in extraction.layers:
            answers = answer_analogies(vectors[layer], index, k=_TOP_K, normalize=config.normalize)
            for metric, k in ((Metric.ACCURACY_AT_1, 1), (Metric.ACCURACY_AT_5, _TOP_K)):
                correct = answers.correct_at(k)
                overall[(metric, layer)] = float(correct.mean())
                rows.append((metric, float(correct.mean()), layer))
                rows += [(Metric.qualified(metric, section), value, layer)
                         for section, value in accuracy_by_group(correct, questions.sections).items()]
            missed = ~answers.correct_at(1)
            misses.append(pd.DataFrame({
                Column.LAYER: layer, Column.SECTION: questions.sections[missed],
                Column.WORD_A: questions.words[missed, 0], Column.WORD_B: questions.words[missed, 1],
                Column.WORD_C: questions.words[missed, 2], Column.EXPECTED: questions.words[missed, 3],
                Column.PREDICTED: words[answers.predictions[missed, 0]],
                Column.EXPECTED_RANK: answers.rank[missed],
                Column.TOP_K: [" ".join(words[p]) for p in answers.predictions[missed]],
            }))
        log.metric_rows(rows)
        log.table(Artifact.MISSES, pd.concat(misses, ignore_index=True))
        run_id = log.run_id

    best = max(extraction.layers, key=lambda layer: (overall[(Metric.ACCURACY_AT_1, layer)], -layer))
    return JobResult(
        kind=Kind.ANALOGIES.value, run_id=run_id, experiment=experiment_name,
        scores={Metric.ACCURACY_AT_1: overall[(Metric.ACCURACY_AT_1, best)],
                Metric.ACCURACY_AT_5: overall[(Metric.ACCURACY_AT_5, best)]},
        details={"best_layer": best,  # the scores above are this layer's "questions": len(index), "vocabulary": len(vocabulary),
                 "sections": len(set(questions.sections.tolist())),
                 "by_layer": " ".join(f"{layer}:{overall[(Metric.ACCURACY_AT_1, layer)]:.2f}"
                                      for layer in extraction.layers)},
    )
