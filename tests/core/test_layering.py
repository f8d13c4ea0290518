"""The layers hold: jobs/ and ui/ reach MLflow only through tracking/ (latentscape.tracking.runs'
Store, tracked_run, attach, find_runs), never a client of their own or a filter string; and
api/, jobs/ and ui/ read runs as tracking's RunRecord, never in MLflow's Run shape."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What reaching around tracking/ looks like in source: MLflow's client, the Store's own
# client attribute, or a search filter written by hand (its keyword or its clauses:
# a backquoted tag, param or metric key, an attribute).
_AROUND_THE_DOOR = re.compile(r"MlflowClient|\.client\b|filter_string|\b(tags|params|metrics)\.`|\battributes\.\w")

# MLflow's Run shape: ``run.info.<attribute>`` and ``run.data.<tags|params|metrics>``
# (attributes listed, so that e.g. a scikit-learn Bunch's ``.data.astype`` is not one).
_MLFLOW_RUN_SHAPE = re.compile(
    r"\.info\.(run_id|run_uuid|run_name|status|experiment_id|artifact_uri|start_time|end_time|"
    r"lifecycle_stage|user_id)\b|\.data\.(tags|params|metrics)\b")


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


@pytest.mark.parametrize("package", ["api", "jobs", "ui"])
def test_runs_are_read_as_run_records_outside_tracking(package):
    offences = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                for path in _modules(package)
                for number, line in enumerate(path.read_text().splitlines(), start=1)
                if _MLFLOW_RUN_SHAPE.search(line)]
    assert _modules(package) and not offences, "\n".join(offences)


def test_the_run_shape_rule_sees_what_it_forbids():
    for line in ("run_id = found[0].info.run_id", "if run.info.status != 'FINISHED':",
                 "kind = store.get_run(source).data.tags.get(Tag.KIND)", "metrics = run.data.metrics",
                 "params=dict(run.data.params)", "root = run.info.artifact_uri"):
        assert _MLFLOW_RUN_SHAPE.search(line), line
    for line in ("features=bunch.data.astype(np.float32)", "run_id = found[0].id", "kind = run.kind",
                 "metrics = run.metrics"):
        assert not _MLFLOW_RUN_SHAPE.search(line), line


def test_one_module_builds_mlflow_clients_and_reads_url_schemes():
    """tracking/backends.py builds every MlflowClient and reads every store URL's scheme;
    elsewhere a URL is asked about through its Backend (an artifact root's ``file://`` is
    not a store URL)."""
    built_here = ROOT / "tracking" / "backends.py"
    sniffing = re.compile(r"MlflowClient\(|startswith\(\(?[\"'](sqlite|postgres|http)")
    offences = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                for package in ("api", "jobs", "tracking", "ui") for path in _modules(package) if path != built_here
                for number, line in enumerate(path.read_text().splitlines(), start=1)
                if sniffing.search(line)]
    assert not offences, "\n".join(offences)
    assert sniffing.search('if url.startswith("sqlite"):') and sniffing.search("uri.startswith((\"http://\", \"https://\"))")
