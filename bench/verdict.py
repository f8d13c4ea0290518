"""The layers job with its verdict against the layers job without it, on real data.

2,000 WordNet definitions in 10 classes (``--data wordnet``) through MiniLM, 7 layers of
384. Plain: the per-layer measurements the layers job made before cluster scores at a
matched granularity and the verdict (CKA matrix; per layer anisotropy, cosine to the
layer before, one exact k-NN graph, TwoNN, the probe, k-NN agreement, and one UMAP +
HDBSCAN map's AMI), rebuilt here from the same core functions, without MLflow.
latentscape: ``latentscape layers`` as it is now, end to end, logging included (it adds
k-means at k = classes on every layer, HDBSCAN at the classes' granularity on the map,
bootstrap intervals of every measure, and the verdict). The job now measures layers on one
BLAS thread, which alone made it several times faster on a busy 2-core machine, so a
second row times the old work on one thread too: that row is the verdict's own cost
(measured about 2x: k-means with 10 restarts on every raw layer is most of it).
Target: the job within 1.5x of the old job's time (a ratio of at least 0.67).
Quality: the verdict's cluster-score best layer within one layer of the probe's, and the
collapsed layers it flags.

``--quick``: 600 definitions.

    .venv/bin/python bench/verdict.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, print_rows  # noqa: E402

TARGET = 1.5


def _before(extraction) -> float:
    """Seconds of the per-layer work the layers job did before the verdict."""
    from latentscape.jobs.core.geometry import anisotropy
    from latentscape.jobs.core.intrinsic import two_nn_dimension
    from latentscape.jobs.core.knn import exact_knn
    from latentscape.jobs.core.mapping import data_shape, fit_map, resolve_config
    from latentscape.jobs.core.probes import knn_agreement, probe_accuracy
    from latentscape.jobs.core.similarity import cka_matrix, mean_cosine

    labels = extraction.labels
    started = time.perf_counter()
    layers = [extraction.embedding(layer) for layer in extraction.layers]
    cka_matrix(layers)
    config = resolve_config(shape=data_shape(layers[0], labels), reducer="umap", clusterer="hdbscan", seed=0)
    for index, x in enumerate(layers):
        anisotropy(x, seed=0)
        if index:
            mean_cosine(layers[index - 1], x)
        graph = exact_knn(x, max(11, config.knn_width))
        two_nn_dimension(neighbour_distances=graph.distances[:, 1:3])
        probe_accuracy(x, labels, folds=5, seed=0)
        knn_agreement(labels, graph.indices[:, 1:11])
        fit_map(x, labels, config, knn=graph, with_view=False)
    return time.perf_counter() - started


def main(quick: bool = False) -> list[dict]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LATENTSCAPE_PROGRESS", "0")
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.core.mapping import data_shape, fit_map, resolve_config
    from latentscape.jobs.extract import ExtractConfig, extract
    from latentscape.jobs.layers import LayersConfig, layers
    from latentscape.tracking.contract import Metric, Param, Tag
    from latentscape.tracking.runs import open_store

    n = 600 if quick else 2000
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(f"sqlite:///{folder}/mlflow.db")
        extraction = load_extraction(store, extract(ExtractConfig(data="wordnet", limit=n), store=store).run_id)
        # Warm UMAP's compiled code, so neither side pays it.
        x = extraction.embedding(extraction.layers[0])[:200]
        fit_map(x, None, resolve_config(shape=data_shape(x, None), reducer="umap", clusterer="hdbscan", seed=0))

        plain_s = _before(extraction)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            single_s = _before(extraction)
        started = time.perf_counter()
        result = layers(LayersConfig(run=extraction.run_id), store=store)
        ours_s = time.perf_counter() - started
        run = store.client.get_run(result.run_id)
    params, tags = run.data.params, run.data.tags
    probe = int(params[Param.verdict(Metric.PROBE_ACCURACY)])
    cluster = int(params[Param.verdict(Metric.AMI_KMEANS)])
    over = ours_s / plain_s
    flagged = "collapsed: " + tags[Tag.WARNING].split(":", 1)[1].split(". The default")[0].strip() \
        if Tag.WARNING in tags else "nothing collapsed"
    rows = [
        Row(workload=f"layers + verdict, {n:,} x 384 x 7 (WordNet)", plain_s=plain_s, latentscape_s=ours_s,
            quality=f"{over:.2f}x the old job (target <= {TARGET}x); cluster best layer {cluster}, probe {probe}; "
                    f"{flagged}", quality_held=over <= TARGET and abs(cluster - probe) <= 1),
        Row(workload="  same, old work on one BLAS thread too", plain_s=single_s, latentscape_s=ours_s,
            quality=f"the verdict's own cost: {ours_s / single_s:.2f}x", quality_held=True),
    ]
    return [row.as_dict() for row in rows]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="600 definitions")
    results = main(parser.parse_args().quick)
    print_rows([Row(**{k: v for k, v in r.items() if k != "ratio"}) for r in results])
