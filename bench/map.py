"""Benchmark: one map (UMAP + HDBSCAN + scores) of 5,000 x 384, latentscape against plain.

Plain: ``umap.UMAP(random_state=seed).fit_transform(x)`` (umap-learn's defaults, seeded as
ours is) then ``hdbscan.HDBSCAN`` with the same min_cluster_size / min_samples, then AMI.
Latentscape: ``latentscape.jobs.core.mapping.fit_map`` with its default config: an exact k-NN graph
(no pynndescent compilation), numba's compiled code kept on disk, 200 layout epochs,
and every score (MI ... k-NN preservation), not just AMI.

Timed: the map alone (imports excluded), both in this process after a small warm-up map
of each (nothing left to compile). The first map of a new process, compilation included,
is bench/cold_start.py's (as whole ``latentscape map`` processes); ``--first-process``
adds that round here, the map alone in a new process of each side (slow: plain compiles
pynndescent there, ~40-60 s).

Prints one line per round and a final summary line; ``main(quick)`` returns the rows
for ``bench/run_all.py``.

    python bench/map.py            # 5,000 x 384 (one to two minutes on 2 cores)
    python bench/map.py --quick    # 4,200 x 64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic import planted  # noqa: E402

WORKLOAD = "map {n}x{dim} (UMAP+HDBSCAN, first in a new process)"
AMI_TOLERANCE = 0.02  # "equal AMI": within this of plain
SEED = 0


def _config(x, labels):
    from latentscape.jobs.core.mapping import data_shape, resolve_config

    return resolve_config(shape=data_shape(x, labels), seed=SEED)


def _plain(x, labels, *, min_cluster_size: int, min_samples: int, seeded: bool = True,
           n_epochs: int | None = None) -> tuple[float, float]:
    import hdbscan
    import umap
    from sklearn.metrics import adjusted_mutual_info_score

    started = time.perf_counter()
    embedding = umap.UMAP(random_state=SEED if seeded else None, n_epochs=n_epochs).fit_transform(x)
    clusters = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples).fit_predict(embedding)
    ami = adjusted_mutual_info_score(labels, clusters)
    return time.perf_counter() - started, float(ami)


def _ours(x, labels, config) -> tuple[float, float]:
    from latentscape.jobs.core.mapping import fit_map

    started = time.perf_counter()
    result = fit_map(x, labels, config)
    return time.perf_counter() - started, float(result.scores["ami"])


def _child(side: str, n: int, dim: int) -> None:
    """One first map in this new process; prints {"seconds":, "ami":} as JSON."""
    import warnings

    warnings.filterwarnings("ignore")
    x, labels = planted(n, dim, seed=SEED)
    if side == "plain":
        import hdbscan  # noqa: F401  (imports first: only the map is timed)
        import umap  # noqa: F401

        params = json.loads(sys.argv[sys.argv.index("--clustering") + 1])
        seconds, ami = _plain(x, labels, **params)
    else:
        import hdbscan  # noqa: F401  (the same imports as plain, untimed)
        import umap  # noqa: F401

        import latentscape.jobs.core.mapping  # noqa: F401

        seconds, ami = _ours(x, labels, _config(x, labels))
    print(json.dumps({"seconds": seconds, "ami": ami}))


def _in_new_process(side: str, n: int, dim: int, clustering: dict) -> tuple[float, float, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", side, "--n", str(n), "--dim", str(dim),
                           "--clustering", json.dumps(clustering)], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    payload = json.loads(done.stdout.strip().splitlines()[-1])
    return payload["seconds"], payload["ami"], wall


def main(quick: bool = False, first_process: bool = False) -> list[dict]:
    import warnings

    warnings.filterwarnings("ignore")
    n, dim = (4200, 64) if quick else (5000, 384)
    x, labels = planted(n, dim, seed=SEED)
    config = _config(x, labels)
    clustering = dict(min_cluster_size=config.clusterer_params["min_cluster_size"],
                      min_samples=config.clusterer_params["min_samples"])

    rows = []
    if first_process:  # first map of a new process, each side alone
        plain_first, plain_ami, plain_wall = _in_new_process("plain", n, dim, clustering)
        ours_first, ours_ami, ours_wall = _in_new_process("ours", n, dim, clustering)
        held = ours_ami >= plain_ami - AMI_TOLERANCE
        workload = WORKLOAD.format(n=n, dim=dim)
        print(f"{workload}: plain {plain_first:.2f} s, latentscape {ours_first:.2f} s, ratio "
              f"{plain_first / ours_first:.2f}x (whole processes {plain_wall:.1f} s vs {ours_wall:.1f} s); "
              f"AMI {plain_ami:.3f} plain vs {ours_ami:.3f}")
        rows.append({"workload": workload, "plain_s": plain_first, "latentscape_s": ours_first,
                     "ratio": plain_first / ours_first, "quality": f"AMI {ours_ami:.3f} vs {plain_ami:.3f}",
                     "quality_held": held})

    # Warm: both compiled in this process first (plain first, on 4,200 rows so that its
    # pynndescent path compiles, and before latentscape turns numba's disk cache on).
    small_x, small_labels = planted(4200, 16, seed=SEED + 1)
    _plain(small_x, small_labels, min_cluster_size=10, min_samples=5, n_epochs=5)
    small_x, small_labels = planted(300, 16, seed=SEED + 1)
    _ours(small_x, small_labels, _config(small_x, small_labels))
    plain_warm, plain_ami = _plain(x, labels, **clustering)
    ours_warm, ours_ami = _ours(x, labels, config)
    unseeded_warm, unseeded_ami = _plain(x, labels, seeded=False, **clustering)

    held = ours_ami >= plain_ami - AMI_TOLERANCE
    warm_ratio = plain_warm / ours_warm
    print(f"map {n}x{dim} warm: plain {plain_warm:.2f} s, latentscape {ours_warm:.2f} s, ratio {warm_ratio:.2f}x "
          f"(plain without a seed, multi-threaded: {unseeded_warm:.2f} s, AMI {unseeded_ami:.3f}); "
          f"AMI {ours_ami:.3f} vs plain {plain_ami:.3f}: {'held' if held else 'NOT held'}")
    rows.append({"workload": f"map {n}x{dim} (UMAP+HDBSCAN, warm)", "plain_s": plain_warm, "latentscape_s": ours_warm,
                 "ratio": warm_ratio, "quality": f"AMI {ours_ami:.3f} vs {plain_ami:.3f}", "quality_held": held,
                 "plain_unseeded_s": unseeded_warm})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data (4,200 x 64)")
    parser.add_argument("--first-process", action="store_true", help="also time the first map of a new process")
    parser.add_argument("--child", choices=("plain", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dim", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--clustering", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.n, args.dim)
    else:
        main(quick=args.quick, first_process=args.first_process)
