"""The layers hold: jobs/ and ui/ reach MLflow only through tracking/ (latentscape.tracking.runs'
Store, tracked_run, attach, find_runs), never a client of their own or a filter string."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What reaching around tracking/ looks like in source: MLflow's client, the Store's own
# client attribute, or a search filter written by hand (its keyword or its clauses:
# a backquoted tag, param or metric key, an attribute).
_AROUND_THE_DOOR = re.compile(r"MlflowClient|\.client\b|filter_string|\b(tags|params|metrics)\.`|\battributes\.\w")


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", ["jobs", "ui"])
def test_jobs_and_ui_reach_mlflow_only_through_tracking(package):
    offences = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                for path in _modules(package)
                for number, line in enumerate(path.read_text().splitlines(), start=1)
                if _AROUND_THE_DOOR.search(line)]
    assert _modules(package) and not offences, "\n".join(offences)


def test_the_rule_sees_what_it_forbids():
    for line in ("runs = store.client.search_runs([e])", "self.store.client.set_tag(run, k, v)",
                 "from mlflow.tracking import MlflowClient", "store.client.search_runs([e], filter_string=q)",
                 "query = f\"tags.`{Tag.KIND}` = '{kind}'\"", "clauses.append(\"attributes.status = 'RUNNING'\")"):
        assert _AROUND_THE_DOOR.search(line), line
    assert not _AROUND_THE_DOOR.search('"client.showErrorDetails": "none",')
