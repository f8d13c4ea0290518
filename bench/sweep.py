"""Benchmark: a 30-trial sweep of 3,000 x 384, latentscape against a plain Optuna loop.

Plain: an Optuna study (TPE, same seed, same search space: latentscape's default one)
whose objective builds a new ``umap.UMAP`` (umap-learn's defaults, seeded) and a new
``hdbscan.HDBSCAN`` per trial, scores the seven label scores, and logs with MLflow's
fluent API, ``mlflow.log_param`` / ``mlflow.log_metric`` per value, in a nested run.
Latentscape: ``latentscape sweep`` (the job function) on the same data as an extract run:
shared exact k-NN graphs, 200 layout epochs, every score, one MLflow batch per trial,
SQLite Optuna storage, and the best trial replayed with its map, trials and importances.

Before either is timed, one small map of each kind compiles the numba code they share
(UMAP's layout): this measures sweep throughput; bench/map.py measures the first call.
Prints both times, their ratio and both best AMIs, then a summary line; ``main(quick)``
returns the row.

    python bench/sweep.py            # 30 trials, 3,000 x 384 (several minutes on 2 cores)
    python bench/sweep.py --quick    # 8 trials, 1,200 x 64
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
AMI_TOLERANCE = 0.005  # "equal or better best AMI", within rounding


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
    """Compile UMAP's numba code (both paths) on small data, untimed."""
    import umap

    from jobs.core.mapping import data_shape, fit_map, resolve_config

    x, labels = planted(300, 16, seed=2)
    umap.UMAP(random_state=0, n_epochs=20).fit_transform(x)
    fit_map(x, labels, resolve_config(shape=data_shape(x, labels), reducer_params={"n_epochs": 20}))


def _ours(store, run_id: str, *, trials: int, seed: int):
    from jobs.sweep import SweepConfig, sweep

    started = time.perf_counter()
    result = sweep(SweepConfig(run=run_id, trials=trials, seed=seed), store=store)
    seconds = time.perf_counter() - started
    metrics = store.client.get_run(result.run_id).data.metrics
    return seconds, float(metrics["best_value"]), metrics


def main(quick: bool = False) -> dict:
    import os
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("LATENTSCAPE_PROGRESS", "0")
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.ERROR)

    from jobs.core.mapping import data_shape
    from jobs.core.search_space import default_space
    from tracking.runs import open_store

    trials, n, dim = (8, 1200, 64) if quick else (30, 3000, 384)
    x, labels = planted(n, dim, seed=1)
    space = default_space("umap", "hdbscan", data_shape(x, labels))
    _warm_up()
    with tempfile.TemporaryDirectory(prefix="latentscape-bench-") as folder:
        store = open_store(f"sqlite:///{Path(folder) / 'ours.db'}")
        run_id = log_extraction(store, x, labels, name="planted")
        ours_s, ours_best, metrics = _ours(store, run_id, trials=trials, seed=0)
        plain_store = open_store(f"sqlite:///{Path(folder) / 'plain.db'}")  # same pre-migrated database
        plain_s, plain_best = _plain(x, labels, trials=trials, seed=0, space=space, tracking_uri=plain_store.uri)

    held = ours_best >= plain_best - AMI_TOLERANCE
    workload = WORKLOAD.format(trials=trials, n=n, dim=dim)
    ratio = plain_s / ours_s
    print(f"{workload}: plain loop {plain_s:.1f} s ({plain_s / trials:.2f} s/trial), latentscape {ours_s:.1f} s "
          f"({ours_s / trials:.2f} s/trial), ratio {ratio:.2f}x; best AMI plain {plain_best:.3f}, "
          f"latentscape {ours_best:.3f} (best trial {int(metrics.get('best_trial', -1))})")
    print(f"summary: {workload}: ratio {ratio:.2f}x (aim 2x), best AMI {ours_best:.3f} vs plain {plain_best:.3f}: "
          f"{'held' if held else 'NOT held'}")
    return {"workload": workload, "plain_s": plain_s, "latentscape_s": ours_s, "ratio": ratio,
            "quality": f"best AMI {ours_best:.3f} vs {plain_best:.3f}", "quality_held": held, "plain_best_ami": plain_best, "latentscape_best_ami": ours_best}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 trials on 1,200 x 64")
    main(quick=parser.parse_args().quick)
