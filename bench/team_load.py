"""Benchmark: team mode under load, on the local PostgreSQL (issue 25).

One ``latentscape server`` (2 workers, ``--db-pool-size`` default) on fresh databases;
20 ``latentscape sweep`` processes on one study (digits, PCA + one-start k-means: small
trials, so that the load is the database and the server, not the maps) and 5 simulated
readers: one app process as ``latentscape ui`` serves a team (one DuckDB catalog synced
through the server by one background thread, every 30 s as the app does) with five sessions, each running the
Overview's and the Compare page's queries (``queries.experiments``, ``facets``, ``runs``,
``run_table``) on its own cursor, a second apart, as people clicking. A sampler counts this bench's
connections in ``pg_stat_activity`` (its own databases only: the PostgreSQL is shared)
four times a second. Everything stops by a deadline.

Prints ONE JSON line: trials_requested, trials_complete, trials_duplicated (MLflow trial
runs beyond one per COMPLETE trial), trials_lost (COMPLETE trials without a run, or
requested but not complete), runs_left_running, best_map_logs and best_map_targets (one log per target the study
reached: 1 when the workers finish together; a worker that ran out of trials before the
others joined finishes a smaller target first),
max_connections_seen (and its split: server, study), server_budget (the formula of
``latentscape server --help``), max_connections, reader_p95_ms (the pages' queries),
reader_cpu_p95_ms (their CPU time, which a shared machine does not inflate), sync_p95_ms
(a catalog sync through the server), wall_s, the load average, and held: 0 lost, 0 duplicated,
0 left RUNNING, max_connections_seen <= 80, reader p95 < 200 ms.

    python bench/team_load.py            # 20 workers x 3 trials, 5 readers
    python bench/team_load.py --quick    # 5 workers, 2 readers
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
PG = os.environ.get("LATENTSCAPE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
EXPERIMENT = "team-load"
SERVER_WORKERS = 2
TRIALS_PER_WORKER = 3
# Sweep workers run as batch jobs (nice 19) beside the server and the readers, as a team
# would run them on one host (docker/README.md): a person's page should not wait behind
# twenty maps. The server and the readers keep the default priority. (Linux's idle class,
# `chrt --idle 0`, was tried: other work on the machine then starved the workers outright,
# so that they could not even end their runs when told to stop.)
WORKER_NICE = 19
CONNECTIONS_HELD = 80  # of PostgreSQL's 100: room for an administrator
READER_P95_MS = 200.0
# The app syncs its catalog when a page finds it older than this (ui/data.py, _STALE_AFTER_S).
SYNC_EVERY_S = 30.0
SWEEP_ARGS = ["--layer", "0", "--reducer", "pca", "--clusterer", "kmeans", "-c", "n_init=1", "--score-sample", "300",
              "--experiment", EXPERIMENT, "--heartbeat", "5", "--json"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "latentscape.jobs.cli", *args]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# -- the readers: one app process, its catalog sync and its sessions' page queries ------
def reader_main(catalog_path: str, stop_file: str, sessions: int) -> None:
    """The app as ``latentscape ui`` serves a team (its own process): one catalog, synced
    through the server by one background thread every ``SYNC_EVERY_S``, and ``sessions`` people, each a thread
    that runs the Overview's and Compare page's queries on its own DuckDB cursor every
    second, until ``stop_file`` exists; prints one JSON line of the timings (ms)."""
    from latentscape.tracking import queries
    from latentscape.tracking.catalog import Catalog

    catalog = Catalog.open(path=Path(catalog_path))
    stop = threading.Event()
    pages, cpu, syncs, errors = [], [], [], []

    def note(error: Exception) -> None:  # counted, not fatal: the bench reports them
        errors.append(" ".join(str(error).split())[:200])

    def sync() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                catalog.refresh()
                syncs.append(1000 * (time.perf_counter() - started))
            except Exception as error:
                note(error)
            stop.wait(SYNC_EVERY_S)

    def session() -> None:
        while not stop.is_set():
            started, cpu_started = time.perf_counter(), time.thread_time()
            try:
                queries.experiments(catalog)  # Overview
                queries.facets(catalog)
                recent = queries.runs(catalog, limit=200)
                ids = list(recent["run_id"][:20]) if len(recent) else []
                queries.run_table(catalog, ids)  # Compare
                pages.append(1000 * (time.perf_counter() - started))
                cpu.append(1000 * (time.thread_time() - cpu_started))
            except Exception as error:
                note(error)
            stop.wait(1.0)

    catalog.refresh()  # the app's first sync, before its sessions open pages
    threads = [threading.Thread(target=sync)] + [threading.Thread(target=session) for _ in range(sessions)]
    for thread in threads:
        thread.start()
    while not Path(stop_file).exists():
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join()
    catalog.close()
    print(json.dumps({"pages_ms": pages, "cpu_ms": cpu, "syncs_ms": syncs, "errors": errors[:5], "n_errors": len(errors)}))


# -- the bench ---------------------------------------------------------------------
class _Bench:
    def __init__(self, workers: int, readers: int, deadline_s: float):
        self.workers, self.readers, self.deadline_s = workers, readers, deadline_s
        self.tmp = Path(tempfile.mkdtemp(prefix="latentscape-team-load-"))
        self.database = f"ls_bench_{uuid.uuid4().hex[:10]}"
        self.databases = [self.database, f"{self.database}_auth", f"{self.database}_optuna"]
        self.optuna_url = f"{PG}/{self.database}_optuna"
        self.port = _free_port()
        self.password = secrets.token_urlsafe(16)
        self.study = f"team-load-{uuid.uuid4().hex[:8]}"
        self.server: subprocess.Popen | None = None
        self.processes: list[subprocess.Popen] = []
        self.samples: list[tuple[int, int]] = []  # (server databases, study database)
        self._sampling = threading.Event()

    # environment of a client: the server, as its admin
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LATENTSCAPE_"))}
        env.update(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{self.port}", MLFLOW_TRACKING_USERNAME="admin",
                   MLFLOW_TRACKING_PASSWORD=self.password, LATENTSCAPE_PROGRESS="0", HF_HUB_OFFLINE="1",
                   MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1", PYTHONUNBUFFERED="1")
        return env

    def start_server(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LATENTSCAPE_"))}
        env.update(MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16), MLFLOW_AUTH_ADMIN_PASSWORD=self.password,
                   PYTHONUNBUFFERED="1")
        log = self.tmp / "server.log"
        with open(log, "wb") as output:
            self.server = subprocess.Popen(
                _cli("server", "--backend-store-uri", f"{PG}/{self.database}", "--artifacts-destination",
                     str(self.tmp / "artifacts"), "--port", str(self.port), "--workers", str(SERVER_WORKERS),
                     "--optuna-storage", self.optuna_url),
                env=env, cwd=self.tmp, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        started = time.monotonic()
        while "MLflow answers at" not in log.read_text(errors="replace"):
            if self.server.poll() is not None or time.monotonic() - started > 180:
                raise RuntimeError(f"latentscape server did not come up:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.25)

    def count(self) -> tuple[int, int]:
        from latentscape.tracking.connections import connections_to

        server = connections_to(self.databases[:2], maintenance_url=f"{PG}/postgres")
        study = connections_to(self.databases[2:], maintenance_url=f"{PG}/postgres")
        return server, study

    def sample(self) -> None:
        while not self._sampling.is_set():
            with contextlib.suppress(Exception):
                self.samples.append(self.count())
            self._sampling.wait(0.25)

    def extract(self) -> str:
        done = subprocess.run(_cli("extract", "--data", "digits", "--experiment", EXPERIMENT, "--json"),
                              env=self.env(), cwd=self.tmp, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"extract failed: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])["run_id"]

    def sweep_worker(self, run_id: str) -> subprocess.Popen:
        command = _cli("sweep", "--run", run_id, "--storage", self.optuna_url, "--study", self.study,
                       "--trials", str(TRIALS_PER_WORKER), *SWEEP_ARGS)
        index = len(self.processes)
        process = subprocess.Popen(["nice", "-n", str(WORKER_NICE), *command], env=self.env(), cwd=self.tmp,
                                   stdout=subprocess.PIPE,
                                   stderr=open(self.tmp / f"worker-{index}.err", "wb"), text=True)
        self.processes.append(process)
        return process

    def wait_for_sweep_run(self, deadline: float) -> None:
        """The first worker has created the study and its sweep run: the others join it."""
        from latentscape.jobs.sweep._study import _ATTR_SWEEP_RUN
        from latentscape.tracking.studies import opened_storage

        with opened_storage(self.optuna_url) as storage:
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    study_id = storage.get_study_id_from_name(self.study)
                    if storage.get_study_user_attrs(study_id).get(_ATTR_SWEEP_RUN):
                        return
                if self.processes[0].poll() is not None:
                    raise RuntimeError(f"the first sweep worker failed: {(self.tmp / 'worker-0.err').read_text()[-2000:]}")
                time.sleep(0.5)
        raise RuntimeError("the first sweep worker did not start the study in time")

    def verdict(self) -> dict:
        """Optuna's trials against MLflow's trial runs, runs left RUNNING, best-map logs."""
        from mlflow.tracking import MlflowClient
        from optuna.trial import TrialState

        from latentscape.jobs.sweep._best import _ATTR_BEST_CLAIM
        from latentscape.jobs.sweep._study import _ATTR_SWEEP_RUN
        from latentscape.tracking.contract import MLFLOW_PARENT_RUN_ID, Kind, Metric, Tag
        from latentscape.tracking.studies import opened_storage, study_trials

        with opened_storage(self.optuna_url) as storage:
            complete = {t.number for t in study_trials(storage, self.study) if t.state == TrialState.COMPLETE}
            study_id = storage.get_study_id_from_name(self.study)
            sweep_run_id = storage.get_study_user_attrs(study_id).get(_ATTR_SWEEP_RUN)
            # One best-map claim per target the study reached (a worker that finished before
            # the others joined reached a smaller one): one log per claim is what must hold.
            claims = sorted(int(key.rsplit(".", 1)[1]) for key in storage.get_study_system_attrs(study_id)
                            if key.startswith(_ATTR_BEST_CLAIM))
        saved = dict(os.environ)
        os.environ.update(self.env())
        try:
            client = MlflowClient()
            experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
            children = client.search_runs([experiment_id], max_results=5000,
                                          filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{sweep_run_id}'")
            running = client.search_runs([experiment_id], max_results=5000,
                                         filter_string="attributes.status = 'RUNNING'")
            best_logs = len(client.get_metric_history(sweep_run_id, Metric.BEST_VALUE)) if sweep_run_id else 0
        finally:
            os.environ.clear()
            os.environ.update(saved)
        logged = [int(r.data.tags[Tag.TRIAL_NUMBER]) for r in children if r.info.status == "FINISHED"
                  and r.data.tags.get(Tag.TRIAL_STATE) == "COMPLETE" and r.data.tags.get(Tag.KIND) == Kind.TRIAL.value]
        requested = self.workers * TRIALS_PER_WORKER
        return {"trials_requested": requested, "trials_complete": len(complete),
                "trials_duplicated": len(logged) - len(set(logged)),
                "trials_lost": len(complete - set(logged)) + max(0, requested - len(complete)),
                "runs_left_running": len(running), "best_map_logs": best_logs, "best_map_targets": claims}

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.server is not None and self.server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()

    def drop(self) -> None:
        import psycopg2
        from psycopg2 import sql
        from sqlalchemy.engine import make_url

        url = make_url(f"{PG}/postgres")
        connection = psycopg2.connect(host=url.host, port=url.port or 5432, user=url.username, password=url.password,
                                      dbname="postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                for name in self.databases:
                    cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                cursor.execute("SHOW max_connections")
                self.max_connections = int(cursor.fetchone()[0])
        finally:
            connection.close()

    def run(self) -> dict:
        from latentscape.tracking.connections import DEFAULT_DB_POOL_SIZE, server_connections

        began = time.monotonic()
        deadline = began + self.deadline_s
        sampler = threading.Thread(target=self.sample, daemon=True)
        readers: list[subprocess.Popen] = []
        stop_file = self.tmp / "stop-readers"
        result: dict = {"workers": self.workers, "readers": self.readers, "workers_nice": WORKER_NICE}
        try:
            self.start_server()
            sampler.start()
            run_id = self.extract()
            self.sweep_worker(run_id)
            self.wait_for_sweep_run(deadline)
            for _ in range(self.workers - 1):
                self.sweep_worker(run_id)
            readers.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--reader", str(self.tmp / "catalog.duckdb"),
                 str(stop_file), str(self.readers)], env=self.env(), cwd=self.tmp, stdout=subprocess.PIPE,
                stderr=open(self.tmp / "reader.err", "wb"), text=True))
            failed = 0
            for process in self.processes:
                process.wait(max(1.0, deadline - time.monotonic()))
                failed += process.returncode != 0
            result["workers_failed"] = failed
            result["sweep_s"] = round(time.monotonic() - began, 1)
        except subprocess.TimeoutExpired:
            result["timed_out"] = True
        finally:
            stop_file.touch()
            pages, cpu, syncs, reader_errors = [], [], [], 0
            for reader in readers:
                try:
                    out, _ = reader.communicate(timeout=120)
                    line = json.loads(out.strip().splitlines()[-1])
                    pages += line["pages_ms"]
                    cpu += line["cpu_ms"]
                    syncs += line["syncs_ms"]
                    reader_errors += line["n_errors"]
                except Exception:
                    reader.kill()
                    reader_errors += 1
            with contextlib.suppress(Exception):
                result.update(self.verdict())
            self._sampling.set()
            sampler.join(5)
            self.stop()
            self.drop()
            shutil.rmtree(self.tmp, ignore_errors=True)
        server_peak = max((s for s, _ in self.samples), default=0)
        study_peak = max((o for _, o in self.samples), default=0)
        result.update({
            "max_connections_seen": max((s + o for s, o in self.samples), default=0),
            "server_connections_seen": server_peak, "study_connections_seen": study_peak,
            "server_budget": server_connections(SERVER_WORKERS, DEFAULT_DB_POOL_SIZE),
            "max_connections": self.max_connections, "reader_p95_ms": round(_percentile(pages, 0.95), 1),
            "reader_median_ms": round(statistics.median(pages), 1) if pages else None,
            # the same queries' CPU time: what they cost when the machine is not shared
            "reader_cpu_p95_ms": round(_percentile(cpu, 0.95), 1),
            "sync_p95_ms": round(_percentile(syncs, 0.95), 1), "reader_loops": len(pages),
            "reader_errors": reader_errors, "wall_s": round(time.monotonic() - began, 1),
            "load_average": [round(x, 1) for x in os.getloadavg()],
        })
        result["held"] = bool(
            not result.get("timed_out") and result.get("workers_failed", 1) == 0
            and result.get("trials_lost", 1) == 0 and result.get("trials_duplicated", 1) == 0
            and result.get("runs_left_running", 1) == 0 and result["max_connections_seen"] <= CONNECTIONS_HELD
            and result.get("best_map_logs", -1) == len(result.get("best_map_targets", ()))
            and result["reader_p95_ms"] < READER_P95_MS)
        return result


def main(quick: bool = False):
    sys.path.insert(0, str(HERE))
    from _common import Row

    workers, readers = (5, 2) if quick else (20, 5)
    result = _Bench(workers, readers, deadline_s=600 if quick else 1200).run()
    print(json.dumps(result), flush=True)
    return Row(workload=f"team load: {workers} sweep workers + {readers} readers", plain_s=result["wall_s"],
               latentscape_s=result["wall_s"],
               quality=f"{result['max_connections_seen']} connections (<= {CONNECTIONS_HELD}), reader p95 "
               f"{result['reader_p95_ms']} ms, {result.get('trials_complete')}/{result.get('trials_requested')} trials",
               quality_held=result["held"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 sweep workers and 2 readers")
    parser.add_argument("--reader", nargs=3, metavar=("CATALOG", "STOP_FILE", "SESSIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        reader_main(args.reader[0], args.reader[1], int(args.reader[2]))
    else:
        main(args.quick)
