"""Benchmark: a 50-trial sweep of 5,000 x 384, latentscape against a plain Optuna loop.

Plain: an Optuna study (TPE, same seed, same search space: latentscape's default one)
whose objective builds a new ``umap.UMAP`` (umap-learn's defaults, seeded so that a trial
can be replayed: measured here, unseeded multi-threaded trials were no faster, 13.9 s
against 12.2 s a trial) and a new ``hdbscan.HDBSCAN`` per trial, scores the seven label scores, and logs with MLflow's
fluent API, ``mlflow.log_param`` / ``mlflow.log_metric`` per value, in a nested run.
latentscape: ``latentscape sweep --workers 2`` (the job function) on the same data as an
extract run: two processes on one study (one core each), trials laid out with 100 epochs
and the best re-fitted at 200, shared exact k-NN graphs, every score, each trial's run
written by a background thread in one batch, the best trial replayed (its scores must
agree: every trial is replayable from its logged settings, seed included).

Before either is timed, small maps compile what each side's first trial would (UMAP's
layouts, pynndescent's search): this measures sweep throughput; bench/cold_start.py
measures the first call.
Prints both times, their ratio, both best AMIs (latentscape's is the re-fitted best map's),
the replay check and MLflow's time per trial; ``main(quick)`` returns the row.

    python bench/sweep.py            # 50 trials, 5,000 x 384 (8-13 minutes on 2 cores)
    python bench/sweep.py --quick    # 10 trials, 1,500 x 64
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic import log_extraction, planted  # noqa: E402

WORKLOAD = "sweep {trials} trials {n}x{dim}"
BEST_TOLERANCE = 0.02  # the best AMI within 2% of the plain loop's


def _plain(x, labels, *, trials: int, seed: int, space, tracking_uri: str):
    import hdbscan
    import mlflow
    import optuna
    import umap
    from sklearn import metrics

    scorers = {"mutual_info": metrics.mutual_info_score, "nmi": metrics.normalized_mutual_info_score,
               "ami": metrics.adjusted_mutual_info_score, "ari": metrics.adjusted_rand_score,
               "homogeneity": metrics.homogeneity_score, "completeness": metrics.completeness_score,
               "v_measure": metrics.v_measure_score}
    started = time.perf_counter()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("plain-sweep")

    def objective(trial):
        reducer, clusterer = space.suggest(trial)
        with mlflow.start_run(nested=True, run_name=f"trial {trial.number}"):
            for name, value in {**reducer, **clusterer}.items():
                mlflow.log_param(name, value)
            embedding = umap.UMAP(**reducer, random_state=seed).fit_transform(x)
            clusters = hdbscan.HDBSCAN(**clusterer).fit_predict(embedding)
            scores = {name: float(score(labels, clusters)) for name, score in scorers.items()}
            for name, value in scores.items():
                mlflow.log_metric(name, value)
        return scores["ami"]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    with mlflow.start_run(run_name="plain sweep"):
        study.optimize(objective, n_trials=trials)
    return time.perf_counter() - started, float(study.best_value)


def _warm_up() -> None:
    """Compile, untimed, what either side would otherwise compile in its first trial:
    UMAP's seeded layout and, for plain above 4,095 rows, pynndescent's k-NN search for
    each metric of the space."""
    import umap

    from latentscape.jobs.core.mapping import data_shape, fit_map, resolve_config

    x, labels = planted(300, 16, seed=2)
    fit_map(x, labels, resolve_config(shape=data_shape(x, labels), reducer_params={"n_epochs": 20}))
    x, _ = planted(4200, 16, seed=2)
    for metric in ("euclidean", "cosine"):
        umap.UMAP(metric=metric, n_epochs=5, random_state=0).fit_transform(x)


def _ours(store, run_id: str, *, trials: int, seed: int, workers: int):
    from latentscape.jobs.sweep import SweepConfig, sweep

    started = time.perf_counter()
    result = sweep(SweepConfig(run=run_id, trials=trials, seed=seed, workers=workers, progress=False), store=store)
    seconds = time.perf_counter() - started
    return seconds, store.client.get_run(result.run_id).data.metrics


def main(quick: bool = False) -> dict:
    import os
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("LATENTSCAPE_PROGRESS", "0")
    import logging

    import optuna

    from latentscape.tracking.contract import Metric

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.ERROR)

    from latentscape.jobs.core.mapping import data_shape
    from latentscape.jobs.core.search_space import default_space
    from latentscape.tracking.runs import open_store

    trials, n, dim = (10, 1500, 64) if quick else (50, 5000, 384)
    workers = min(2, os.cpu_count() or 1)
    x, labels = planted(n, dim, seed=1)
    space = default_space("umap", "hdbscan", data_shape(x, labels))
    _warm_up()
    with tempfile.TemporaryDirectory(prefix="latentscape-bench-") as folder:
        store = open_store(f"sqlite:///{Path(folder) / 'ours.db'}")
        run_id = log_extraction(store, x, labels, name="planted")
        ours_s, metrics = _ours(store, run_id, trials=trials, seed=0, workers=workers)
        plain_store = open_store(f"sqlite:///{Path(folder) / 'plain.db'}")  # same pre-migrated database
        plain_s, plain_best = _plain(x, labels, trials=trials, seed=0, space=space, tracking_uri=plain_store.uri)

    ours_best = float(metrics[Metric.AMI])  # the re-fitted best map's
    replay_diff = float(metrics[Metric.REPLAY_MAX_ABS_DIFF])
    path_ms, writer_ms = metrics[Metric.MLFLOW_MS_PER_TRIAL], metrics[Metric.MLFLOW_WRITER_MS_PER_TRIAL]
    held = ours_best >= plain_best * (1 - BEST_TOLERANCE) and replay_diff == 0
    workload = WORKLOAD.format(trials=trials, n=n, dim=dim)
    ratio = plain_s / ours_s
    print(f"{workload}: plain loop {plain_s:.1f} s ({plain_s / trials:.2f} s/trial), latentscape ({workers} workers) "
          f"{ours_s:.1f} s ({ours_s / trials:.2f} s/trial), ratio {ratio:.2f}x (aim 2.5x); best AMI plain "
          f"{plain_best:.3f}, latentscape {ours_best:.3f} (the sweep's map: trial {int(metrics[Metric.BEST_TRIAL])}, "
          f"search value {metrics[Metric.BEST_VALUE]:.3f}); replay max |diff| {replay_diff:.1e}; MLflow per "
          f"trial: {path_ms:.2f} ms on the trial's path, {writer_ms:.1f} ms on the writer thread")
    return {"workload": workload, "plain_s": plain_s, "latentscape_s": ours_s, "ratio": ratio,
            "quality": f"best AMI {ours_best:.3f} vs {plain_best:.3f}, "
                       f"{'replay exact' if replay_diff == 0 else f'replay differs by {replay_diff:.1e}'}, "
                       f"MLflow {path_ms:.2f} ms/trial",
            "quality_held": held, "plain_best_ami": plain_best, "latentscape_best_ami": ours_best}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 trials on 1,500 x 64")
    main(quick=parser.parse_args().quick)
