"""The analogies job: the question format, per-layer accuracies, misses, clean errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from latentscape.jobs.analogies import AnalogiesConfig, analogies, default_questions, parse_questions
from latentscape.tracking.contract import MLFLOW_PARENT_RUN_ID, Artifact, Column, Kind, Metric, Param, Tag
from latentscape.tracking.errors import UsageError
from latentscape.tracking.runs import load_table


def test_the_question_format_is_parsed_with_sections_comments_and_a_default_section():
    questions = parse_questions("a b c d\n\n# a comment\n: capitals\nparis france rome italy\n"
                                ":  gender \nking queen man woman\n")
    assert list(questions.sections) == ["default", "capitals", "gender"]
    assert questions.words.shape == (3, 4) and questions.words[1, 3] == "italy"
    vocabulary = questions.vocabulary
    assert vocabulary[:5] == ["a", "b", "c", "d", "paris"] and len(vocabulary) == 12
    np.testing.assert_array_equal(np.array(vocabulary)[questions.indices(vocabulary)], questions.words)


@pytest.mark.parametrize("text, needle", [
    (": s\na b c\n", "line 2: expected 4 words"),
    (": s\n: \n", "line 2: a ':' line needs a section name"),
    (": only a section\n", "has no questions"),
    ("a b a b\n", "distinct words"),
])
def test_bad_question_files_name_the_line(text, needle):
    with pytest.raises(UsageError, match=needle):
        parse_questions(text)


def test_the_shipped_file_parses():
    questions = parse_questions(default_questions().read_text(encoding="utf-8"))
    assert len(questions.words) >= 40 and len(set(questions.sections)) >= 3


def test_every_layer_is_scored_overall_and_per_section(text_extraction):
    store = text_extraction.store
    result = analogies(AnalogiesConfig(run=text_extraction.run_id), store=store)
    run = store.get_run(result.run_id)
    assert run.tags[Tag.KIND] == Kind.ANALOGIES.value
    assert run.tags[MLFLOW_PARENT_RUN_ID] == text_extraction.run_id == run.tags[Tag.SOURCE_RUN]
    questions = parse_questions(default_questions().read_text(encoding="utf-8"))
    assert run.params[Param.N_QUESTIONS] == str(len(questions.words))

    def history(name):
        return {m.step: m.value for m in store.client.get_metric_history(result.run_id, name)}

    top1, top5 = history(Metric.ACCURACY_AT_1), history(Metric.ACCURACY_AT_5)
    assert sorted(top1) == sorted(top5) == text_extraction.layers
    assert all(0 <= top1[layer] <= top5[layer] <= 1 for layer in top1)
    assert max(top1.values()) > 0.3  # far above chance (1 in ~220 words)
    sections = list(dict.fromkeys(questions.sections))
    for section in sections:
        assert sorted(history(Metric.qualified(Metric.ACCURACY_AT_1, section))) == text_extraction.layers
    # Overall accuracy is the question-weighted mean of the sections'.
    counts = pd.Series(questions.sections).value_counts()
    for layer in text_extraction.layers:
        weighted = sum(history(Metric.qualified(Metric.ACCURACY_AT_1, s))[layer] * counts[s] for s in sections)
        assert weighted / counts.sum() == pytest.approx(top1[layer])

    misses = load_table(store, result.run_id, Artifact.MISSES)
    for layer in text_extraction.layers:
        missed = misses[misses[Column.LAYER] == layer]
        assert len(missed) == round((1 - top1[layer]) * len(questions.words))
    assert (misses[Column.PREDICTED] != misses[Column.EXPECTED]).all()
    assert (misses[Column.EXPECTED_RANK] != 1).all()
    for row in misses.itertuples(index=False):
        answers = getattr(row, Column.TOP_K).split()
        assert answers[0] == getattr(row, Column.PREDICTED) and len(answers) == 5
        assert not {getattr(row, Column.WORD_A), getattr(row, Column.WORD_B), getattr(row, Column.WORD_C)} & set(answers)
    assert Artifact.QUESTIONS_FILE in [a.path for a in store.client.list_artifacts(result.run_id)]
    assert result.scores[Metric.ACCURACY_AT_1] == max(top1.values())


def _ghost_extraction(store) -> str:
    """A text extract run whose model folder is not on this machine."""
    from latentscape.tracking.run_log import tracked_run

    with tracked_run(store, store.experiment_id("ghost"), Kind.EXTRACT, tags={Tag.MODEL: "ghost"}) as log:
        log.params({Param.MODEL: "ghost", Param.MODEL_PATH: "/nonexistent/ghost-model", Param.POOLING: "mean",
                    Param.MAX_LENGTH: 32})
        log.table(Artifact.SAMPLES, pd.DataFrame({Column.SAMPLE_ID: ["s0", "s1"], Column.TEXT: ["a", "b"],
                                                 Column.LABEL: [None, None]}))
        log.array(Artifact.embedding(0), np.eye(2, 4, dtype=np.float32))
        return log.run_id


def _cli(store, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LATENTSCAPE_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "latentscape.jobs.cli", "analogies", "--tracking-uri", store.uri, *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_errors_are_one_line_and_exit_2(store, tmp_path, digits_extraction):
    from latentscape.jobs.cli import main

    ghost = _ghost_extraction(store)
    done = _cli(store, "--run", ghost)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not available at /nonexistent/ghost-model" in lines[0]
    assert lines[0].startswith("latentscape analogies: error:")

    # The same one-line errors, in process (cheaper than a subprocess each).
    bad = tmp_path / "bad.txt"
    bad.write_text(": s\nparis france rome\n", encoding="utf-8")
    assert main(["analogies", "--tracking-uri", store.uri, "--run", ghost, "--questions", str(bad)]) == 2
    assert main(["analogies", "--tracking-uri", store.uri, "--run", ghost, "--questions", str(tmp_path / "no")]) == 2
    assert main(["analogies", "--tracking-uri", digits_extraction.store.uri, "--run", digits_extraction.run_id]) == 2
    assert len(store.client.search_runs([store.experiment_id("ghost")])) == 1  # no analogies run was opened
