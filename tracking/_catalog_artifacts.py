"""The catalog's local copies of run artifacts: read in place from a local artifact
store, else downloaded once into ``cache_dir/<run_id>/`` (again while the run is
unfinished), atomically, and only for paths that stay inside the run."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from latentscape.tracking._catalog_reader import RUN_ID, UNFINISHED

__all__ = ["ArtifactCache", "safe_relative"]


class ArtifactCache:
    """Artifacts of the runs of one tracking location, cached in ``cache_dir``."""

    def __init__(self, tracking_uri: str, cache_dir: Path):
        self.tracking_uri = tracking_uri
        self.cache_dir = cache_dir
        self._absent: set[tuple[str, str]] = set()  # artifacts known missing from finished runs

    def local_copy(self, run_id: str, relative: PurePosixPath, artifact_uri: str | None, status: str) -> Path | None:
        """The artifact ``relative`` of run ``run_id`` (whose root is ``artifact_uri``) as a
        local path, or None when it does not exist."""
        local_root = _local_root(artifact_uri)
        if local_root is not None:
            local = local_root.joinpath(*relative.parts)
            return local if local.exists() else None
        target = self.cache_dir / run_id / Path(*relative.parts)
        finished = status not in UNFINISHED
        if finished and target.exists():
            return target
        if finished and (run_id, str(relative)) in self._absent:
            return None
        fetched = self._download(run_id, str(relative), target)
        if fetched is None and finished:
            self._absent.add((run_id, str(relative)))
        return fetched

    def _download(self, run_id: str, artifact_path: str, target: Path) -> Path | None:
        import mlflow.artifacts

        scratch_root = self.cache_dir / ".incoming"
        scratch_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(os.path.realpath(scratch_root / uuid.uuid4().hex))
        try:
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=artifact_path, dst_path=str(scratch), tracking_uri=self.tracking_uri)
            except Exception:  # MLflow raises its own errors for a missing artifact
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            os.replace(local, target)  # atomic: a concurrent reader sees all or nothing
            return target
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def forget(self, run_ids: Iterable[str]) -> None:
        """Drop the cached artifacts of runs that left the catalog."""
        for run_id in run_ids:
            if RUN_ID.match(run_id):
                shutil.rmtree(self.cache_dir / run_id, ignore_errors=True)


def safe_relative(artifact_path: str) -> PurePosixPath | None:
    """``artifact_path`` as a relative path inside the run, or None (absolute, ``..``,
    backslashes, control characters)."""
    if not isinstance(artifact_path, str) or not artifact_path or len(artifact_path) > 1000:
        return None
    if "\\" in artifact_path or any(ord(ch) < 32 for ch in artifact_path):
        return None
    relative = PurePosixPath(artifact_path)
    if relative.is_absolute() or any(part in ("..", "") for part in relative.parts) or relative == PurePosixPath("."):
        return None
    return relative


def _local_root(artifact_uri: str | None) -> Path | None:
    """The folder of a local artifact root (``file://`` or a plain path), else None."""
    if not artifact_uri:
        return None
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(artifact_uri)
    return None
