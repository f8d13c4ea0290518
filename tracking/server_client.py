"""The MlflowClient of a tracking server: writes that survive an answer broken off mid-way.

MLflow retries a request whose connection was refused or reset before any answer
(urllib3's ``Retry``, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``), but not one whose answer broke
off while it was being read ("Connection broken: IncompleteRead"). That is what a server
killed while answering gives, and the write may or may not have happened. A loaded CI run
found it: the team server was SIGKILLed while answering a sweep trial's ``log_batch``, the
trial failed, and the whole sweep ended with it.

The writes made again here are idempotent on MLflow's server: the same params, tags and
metrics (with the same timestamps) are kept once, and ending a run twice ends it once.
``create_run`` is not, so a broken one first looks for the run it may have made (same
experiment, start time and name) before it makes another; and a slow one, which MLflow's
own retries may have sent twice when the first answer was lost, ends the twin it finds as
FAILED (a loaded CI run found such a twin left RUNNING after a server crash). With
``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` (give up at once) nothing is tried again.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["server_client", "broken_answer", "AGAIN_AFTER_S"]

# Words of the errors (as MLflow wraps them) of an answer broken off mid-way.
_BROKEN = ("Connection broken", "IncompleteRead", "Connection aborted", "RemoteDisconnected")
# Pause before each new try: the next request then meets a server restarting, which
# MLflow's own retries wait for.
AGAIN_AFTER_S = (1.0, 3.0)
# A run creation slower than this may have been sent twice by MLflow's own retries (a
# lost answer, then a server restarting): its twins are looked for (one search).
SLOW_CREATE_S = 0.5

T = TypeVar("T")


def broken_answer(error: BaseException) -> bool:
    """Whether ``error`` is a request whose answer broke off (the server went away mid-way)."""
    return any(words in str(error) for words in _BROKEN)


def _tries() -> int:
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES

    return 1 + len(AGAIN_AFTER_S) if MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() > 0 else 1


def _again(call: Callable[[], T], *, before_again: Callable[[], T | None] | None = None) -> T:
    """``call()``, made again after a broken answer (``before_again`` may find its result)."""
    tries = _tries()
    for attempt in range(tries):
        try:
            return call()
        except Exception as error:
            if attempt == tries - 1 or not broken_answer(error):
                raise
            time.sleep(AGAIN_AFTER_S[attempt])
            if before_again is not None:
                found = before_again()
                if found is not None:
                    return found
    raise AssertionError("unreachable")


@functools.cache
def _client_class() -> type:
    from mlflow.tracking import MlflowClient

    class ServerClient(MlflowClient):
        """``MlflowClient`` whose writes are made again after a broken answer."""

        def log_batch(self, run_id: str, *args: Any, **kwargs: Any):
            return _again(lambda: super(ServerClient, self).log_batch(run_id, *args, **kwargs))

        def set_tag(self, run_id: str, *args: Any, **kwargs: Any):
            return _again(lambda: super(ServerClient, self).set_tag(run_id, *args, **kwargs))

        def set_terminated(self, run_id: str, *args: Any, **kwargs: Any):
            return _again(lambda: super(ServerClient, self).set_terminated(run_id, *args, **kwargs))

        def update_run(self, run_id: str, *args: Any, **kwargs: Any):
            return _again(lambda: super(ServerClient, self).update_run(run_id, *args, **kwargs))

        def create_run(self, experiment_id: str, start_time: int | None = None, tags: dict | None = None,
                       run_name: str | None = None):
            start_time = int(time.time() * 1000) if start_time is None else start_time

            def made():
                return super(ServerClient, self).create_run(experiment_id, start_time=start_time, tags=tags,
                                                            run_name=run_name)

            def made_before_the_break():
                found = self.search_runs([experiment_id], filter_string=f"attributes.start_time = {start_time}")
                same = [run for run in found if run_name is None or run.info.run_name == run_name]
                return same[0] if len(same) == 1 else None

            asked = time.monotonic()
            run = _again(made, before_again=made_before_the_break)
            if time.monotonic() - asked > SLOW_CREATE_S:
                self._end_duplicates(run, experiment_id, start_time)
            return run

        def _end_duplicates(self, run, experiment_id: str, start_time: int) -> None:
            """End as FAILED, with a note, every other RUNNING run of the same experiment,
            start time and name: the twins MLflow's own retries make of a create_run whose
            answer was lost (urllib3 sends the request again; the first had landed)."""
            from latentscape.tracking.contract import Tag

            twins = self.search_runs([experiment_id], filter_string=f"attributes.start_time = {start_time} "
                                     "and attributes.status = 'RUNNING'")
            for twin in twins:
                if twin.info.run_id != run.info.run_id and twin.info.run_name == run.info.run_name:
                    self.set_tag(twin.info.run_id, Tag.NOTE, f"a twin of run {run.info.run_id}: the tracking "
                                 "server's answer to its creation was lost and the request made again")
                    self.set_terminated(twin.info.run_id, status="FAILED")

    return ServerClient


def server_client(url: str) -> Any:
    """An ``MlflowClient`` on the tracking server at ``url`` (see the module docstring)."""
    return _client_class()(tracking_uri=url)
