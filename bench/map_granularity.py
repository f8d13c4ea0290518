"""``latentscape map``'s default clustering on real text, with and without its fallback.

Every MiniLM layer (mean pooling) of the 600 demo sentences and of 2,000 WordNet
definitions (10 classes each), mapped at the job's defaults (UMAP to 2D, HDBSCAN at a
tenth of a class): the default clustering's cluster count and AMI, then what the job
logs, which is the same map clustered again at the classes' granularity where the
default collapsed (:func:`latentscape.jobs.core.verdict.granularity_fallback`), else the
default itself. Pure core functions, no MLflow beyond the extraction.

    OMP_NUM_THREADS=1 .venv/bin/python bench/map_granularity.py [--data demo wordnet]
"""

from __future__ import annotations

import argparse
import tempfile
import time

SIZES = {"demo": 600, "wordnet": 2000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()

    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.core.mapping import fit_map, recluster
    from latentscape.jobs.core.verdict import granularity_fallback
    from latentscape.jobs.extract import ExtractConfig, extract
    from latentscape.jobs.map import MapRequest, resolve_for
    from latentscape.tracking.contract import Metric
    from latentscape.tracking.runs import open_store

    with tempfile.TemporaryDirectory() as folder:
        store = open_store(f"sqlite:///{folder}/mlflow.db")
        for data in args.data:
            run = extract(ExtractConfig(data=data, limit=SIZES[data]), store=store, experiment=data)
            extraction = load_extraction(store, run.run_id)
            labels = extraction.labels
            print(f"\n{data}: {len(labels)} samples, {len(set(labels))} classes")
            print("layer | default: clusters, noise, AMI | logged: clusters, noise, AMI | re-clustered at | seconds")
            for layer in extraction.layers:
                x = extraction.embedding(layer)
                _, config = resolve_for(extraction, MapRequest(run=run.run_id, layer=layer))
                started = time.perf_counter()
                default = fit_map(x, labels, config, with_view=False)
                s = default.scores
                fallback = granularity_fallback(int(s[Metric.N_CLUSTERS]), len(set(labels)),
                                                float(s[Metric.NOISE_FRACTION]), len(x))
                logged = default if fallback is None else recluster(x, labels, default, fallback[0])
                t = logged.scores
                again = "-" if fallback is None else f"min_cluster_size={fallback[0]['min_cluster_size']}"
                print(f"{layer} | {int(s[Metric.N_CLUSTERS])}, {s[Metric.NOISE_FRACTION]:.2f}, {s[Metric.AMI]:.3f} | "
                      f"{int(t[Metric.N_CLUSTERS])}, {t[Metric.NOISE_FRACTION]:.2f}, {t[Metric.AMI]:.3f} | {again} | "
                      f"{time.perf_counter() - started:.1f}")


if __name__ == "__main__":
    main()
