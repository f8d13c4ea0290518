"""The app's warm search workers: ``latentscape search --serve`` processes, at most one per
model and at most ``capacity`` in all (least recently used closed first), each keeping its
model loaded so that a new text is embedded in well under a second instead of paying a
new process's imports and model load (5-10 s). Torch stays in the workers: this module
imports neither Streamlit nor the jobs, and the app holds one :class:`SearchWorkers`.

A worker reads one JSON request a line on its stdin and writes one reply a line
(``latentscape.tracking.contract.Reply``). It exits when its stdin closes, so a worker
never outlives the app even when the app is killed; :meth:`SearchWorkers.close` (at the
app's exit, and on eviction) closes it at once.
"""

from __future__ import annotations

import json
import queue
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

__all__ = ["SearchWorker", "SearchWorkers", "WorkerFailed", "serve_command"]

_CLOSE_WAIT_S = 5.0


class WorkerFailed(RuntimeError):
    """A worker died, timed out or answered something that is not a reply: one line."""


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


class SearchWorker:
    """One ``latentscape search --serve`` process; ``ask`` is one request and its reply.

    Its stderr goes to a temporary file (a pipe nobody reads would fill and stall it),
    whose last line explains a death. Not thread-safe by itself: :class:`SearchWorkers`
    holds a lock per worker."""

    def __init__(self, command: Sequence[str], env: dict[str, str]):
        self._log = Path(tempfile.mkstemp(prefix="latentscape-search-", suffix=".log")[1])
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=log, env=env, text=True, encoding="utf-8", bufsize=1)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.requests = 0  # requests sent (tests check that a cached answer sent none)
        threading.Thread(target=self._read, name=f"search-worker-{self.pid}", daemon=True).start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def _read(self) -> None:
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of output: the process is gone

    def ask(self, request: dict, timeout: float) -> dict:
        """The reply to ``request`` (a dict of ``Reply`` keys); :class:`WorkerFailed` when
        the worker is gone, stays silent ``timeout`` seconds (it is then killed) or answers
        with something else than a JSON object."""
        if not self.alive():
            raise WorkerFailed(self._death())
        self.requests += 1
        try:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerFailed(self._death()) from None
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.close(wait=0)
            raise WorkerFailed(f"the search worker did not answer within {timeout:.0f} s") from None
        if line is None:
            self._process.wait(timeout=_CLOSE_WAIT_S)
            raise WorkerFailed(self._death())
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            reply = None
        if not isinstance(reply, dict):
            raise WorkerFailed(f"the search worker answered something else than a reply: {line.strip()[:120]}")
        return reply

    def _death(self) -> str:
        code = self._process.poll()
        why = _last_line(self._log)
        return why or f"the search worker exited with {code}"

    def close(self, wait: float = _CLOSE_WAIT_S) -> None:
        """End the process: close its stdin (it exits by itself), then terminate or kill it."""
        try:
            self._process.stdin.close()
        except OSError:
            pass
        try:
            self._process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.unlink(missing_ok=True)


class SearchWorkers:
    """At most ``capacity`` warm workers, one per model key, least recently used evicted.

    command: the worker's command line; env: its environment (the store's URI goes there,
    never on a command line). Thread-safe: several browser sessions may search at once;
    requests to one worker wait for each other, other models' workers answer meanwhile."""

    def __init__(self, command: Sequence[str], env: dict[str, str], *, capacity: int = 2):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._command, self._env, self.capacity = list(command), dict(env), capacity
        self._lock = threading.Lock()
        self._workers: OrderedDict[str, tuple[SearchWorker, threading.Lock]] = OrderedDict()

    def worker(self, model: str) -> SearchWorker | None:
        """The live worker of ``model``, if one is warm."""
        with self._lock:
            held = self._workers.get(model)
        return held[0] if held is not None and held[0].alive() else None

    def live(self) -> dict[str, SearchWorker]:
        """model -> its live worker, least recently used first."""
        with self._lock:
            held = list(self._workers.items())
        return {model: worker for model, (worker, _) in held if worker.alive()}

    def _checkout(self, model: str) -> tuple[SearchWorker, threading.Lock]:
        evicted: list[SearchWorker] = []
        with self._lock:
            held = self._workers.get(model)
            if held is not None and not held[0].alive():
                del self._workers[model]
                held[0].close(wait=0)
                held = None
            if held is None:
                held = self._workers[model] = (SearchWorker(self._command, self._env), threading.Lock())
                while len(self._workers) > self.capacity:
                    evicted.append(self._workers.popitem(last=False)[1][0])
            self._workers.move_to_end(model)
        for worker in evicted:  # outside the lock: closing waits for the process
            worker.close()
        return held

    def ask(self, model: str, request: dict, *, timeout: float) -> tuple[dict, int, float]:
        """(reply, the answering worker's pid, seconds) for ``request``, by the worker of
        ``model`` (started when none is warm; a dead one is replaced on the next ask)."""
        worker, lock = self._checkout(model)
        with lock:
            started = time.perf_counter()
            reply = worker.ask(request, timeout)
            return reply, worker.pid, time.perf_counter() - started

    def close(self) -> None:
        """Close every worker (at the app's exit)."""
        with self._lock:
            workers = [held[0] for held in self._workers.values()]
            self._workers.clear()
        for worker in workers:
            worker.close()


def serve_command(python: str) -> list[str]:
    """The worker's command line with interpreter ``python``."""
    return [python, "-m", "latentscape.jobs.cli", "search", "--serve"]
