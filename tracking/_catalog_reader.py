"""What a catalog refresh reads from MLflow: its few API calls, paged
(:class:`MlflowReader`), and one run flattened into the catalog's rows (:func:`flatten`),
passwords masked and a fingerprint to tell a changed run from an unchanged one."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from latentscape.tracking.contract import MLFLOW_PARENT_RUN_ID, MLFLOW_USER, Tag
from latentscape.tracking.privacy import masked

__all__ = ["RUN_ID", "UNFINISHED", "RunRows", "flatten", "MlflowReader", "id_list", "window_filter"]

# MLflow's run statuses of a run that may still change (its own vocabulary, not ours).
UNFINISHED = ("RUNNING", "SCHEDULED")
RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PAGE = 1000  # runs per search_runs page (progress moves once a page)
_IN_CHUNK = 500  # ids in one IN filter
# Text search (queries.runs(text=)) looks in these, lower-cased once when written;
# joined by a separator no typed text contains.
_SEARCHED = ("name", "run_id", "kind", "model", "dataset_name", "dataset_digest", "user", "pooling", "status")
_SEPARATOR = "\x1f"


@dataclass
class RunRows:
    """One MLflow run flattened into catalog rows."""

    run: dict[str, Any]
    params: list[tuple[str, str]]
    tags: list[tuple[str, str]]
    latest: list[tuple[str, float, int, int]]  # key, value, step, timestamp

    @property
    def run_id(self) -> str:
        return self.run["run_id"]

    def stepped_keys(self) -> list[str]:
        """Metrics logged at a step other than 0: their history is worth fetching
        (MLflow's latest value is the one at the highest step)."""
        return [key for key, _, step, _ in self.latest if step != 0]


def _metric_objects(data) -> list:
    # RunData keeps the Metric entities (value, step, timestamp) it was built from;
    # the public ``metrics`` dict has the values only.
    objects = getattr(data, "_metric_objs", None)
    if objects is not None:
        return list(objects)
    return list(data.to_proto().metrics)


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def flatten(run) -> RunRows:
    info, data = run.info, run.data
    # Masked again here: runs logged before masking covered every URL may hold a password.
    tags = {key: masked(value) for key, value in data.tags.items()}
    params = sorted((key, masked(value)) for key, value in data.params.items())
    latest = sorted((m.key, float(m.value), int(m.step or 0), int(m.timestamp or 0)) for m in _metric_objects(data))
    row = {
        "run_id": info.run_id,
        "experiment_id": str(info.experiment_id),
        "name": info.run_name or "",
        "status": info.status,
        "user": info.user_id or tags.get(MLFLOW_USER) or "",
        "start_ms": info.start_time,
        "end_ms": info.end_time,
        "parent_run_id": tags.get(MLFLOW_PARENT_RUN_ID) or None,
        "source_run": tags.get(Tag.SOURCE_RUN) or None,
        "kind": tags.get(Tag.KIND),
        "model": tags.get(Tag.MODEL),
        "dataset_name": tags.get(Tag.DATASET_NAME),
        "dataset_digest": tags.get(Tag.DATASET_DIGEST),
        "pooling": tags.get(Tag.POOLING),
        "layer": _int_or_none(tags.get(Tag.LAYER)),
        "error": tags.get(Tag.ERROR),
        "artifact_uri": info.artifact_uri,
    }
    digest = hashlib.blake2b(repr((
        row["status"], row["start_ms"], row["end_ms"], row["name"], row["user"], row["artifact_uri"],
        row["experiment_id"], params, sorted(tags.items()), latest,
    )).encode(), digest_size=16).hexdigest()
    row["fingerprint"] = digest
    row["search_text"] = _SEPARATOR.join(str(row[key] or "") for key in _SEARCHED).lower()
    return RunRows(run=row, params=params, tags=sorted(tags.items()), latest=latest)


class MlflowReader:
    """The few MLflow calls a refresh makes, paged."""

    def __init__(self, client):
        from mlflow.entities import ViewType

        self.client = client
        self.view = ViewType

    def experiments(self) -> list:
        found, token = [], None
        while True:
            page = self.client.search_experiments(view_type=self.view.ALL, max_results=1000, page_token=token)
            found += list(page)
            token = page.token
            if not token:
                return found

    def search(self, experiment_ids: Sequence[str], filter_string: str = "", *, view=None,
               advance: Callable[[int], None] | None = None) -> list:
        """Every run matching ``filter_string``, oldest first. ViewType.ALL by default so
        that a run deleted while we page does not shift the pages under us."""
        runs, token = [], None
        view = self.view.ALL if view is None else view
        while True:
            page = self.client.search_runs(
                list(experiment_ids), filter_string=filter_string, run_view_type=view, max_results=_PAGE,
                order_by=["attributes.start_time ASC"], page_token=token,
            )
            runs += list(page)
            if advance is not None:
                advance(len(page))
            token = page.token
            if not token:
                return runs

    def by_ids(self, experiment_ids: Sequence[str], run_ids: Sequence[str], *, view=None) -> list:
        runs = []
        for start in range(0, len(run_ids), _IN_CHUNK):
            chunk = run_ids[start:start + _IN_CHUNK]
            runs += self.search(experiment_ids, f"attributes.run_id IN ({id_list(chunk)})", view=view)
        return runs

    def history(self, run_id: str, key: str) -> list[tuple[str, str, float, int, int]]:
        return [(run_id, key, float(m.value), int(m.step or 0), int(m.timestamp or 0))
                for m in self.client.get_metric_history(run_id, key)]


def id_list(run_ids: Iterable[str]) -> str:
    # Run ids come from MLflow or from our own catalog; still, only plain ids pass.
    return ", ".join(f"'{run_id}'" for run_id in run_ids if RUN_ID.match(run_id))


def window_filter(attribute: str, since_ms: int, exclude: Sequence[str]) -> str:
    text = f"attributes.{attribute} >= {int(since_ms)}"
    if exclude:
        text += f" AND attributes.run_id NOT IN ({id_list(exclude)})"
    return text
