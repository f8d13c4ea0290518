"""Benchmark: a new ``latentscape map`` process against plain UMAP + HDBSCAN in a new process.

Both sides are timed as whole subprocesses, python start to exit, on the same planted
5,000 x 384 data (``bench/_synthetic.py``):
- plain: ``python -c`` loading the array from ``.npy``, ``umap.UMAP().fit_transform``
  (umap-learn's defaults, unseeded, so it may use every core), ``hdbscan.HDBSCAN`` with the
  same min_cluster_size / min_samples latentscape picks, AMI against the labels.
- latentscape: ``latentscape map --run EXTRACT --layer 0 --json`` on an extract run logged
  beforehand in a fresh local store: reading the run, the map, every score, logging it.

Two rounds, each a new process of each side:
- "empty numba cache": ``NUMBA_CACHE_DIR`` set to a new folder, nothing compiled yet;
- "after make": numba's own cache, which ``make`` filled after installing (``python -m
  latentscape.jobs.precompile``): what a user's first ``latentscape map`` meets, and every later one.
Plain pays pynndescent's compilation (33-40 s on a quiet machine) in every process: umap-learn
does not cache it, so one plain process (timed once, to keep `make bench` short) stands
against both rounds; latentscape's exact k-NN graph skips that compilation.

    python bench/cold_start.py            # 5,000 x 384 (about 2 minutes on 2 cores, more when busy)
    python bench/cold_start.py --quick    # 4,200 x 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import Row, print_rows  # noqa: E402
from _synthetic import log_extraction, planted  # noqa: E402

SEED = 0
AMI_TOLERANCE = 0.02
WORKLOAD = "cold-start map {n}x{dim}, {round}"
ROUNDS = {"empty": "empty numba cache", "installed": "after make (numba cache warmed)"}

_PLAIN = """
import sys, warnings
warnings.filterwarnings("ignore")
import numpy as np, umap, hdbscan
from sklearn.metrics import adjusted_mutual_info_score
x = np.load(sys.argv[1]); labels = np.load(sys.argv[2])
embedding = umap.UMAP().fit_transform(x)
clusters = hdbscan.HDBSCAN(min_cluster_size=int(sys.argv[3]), min_samples=int(sys.argv[4])).fit_predict(embedding)
print(adjusted_mutual_info_score(labels, clusters))
"""


def _latentscape_bin() -> str:
    candidate = Path(sys.executable).with_name("latentscape")
    return str(candidate) if candidate.exists() else "latentscape"


def _timed_process(command: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, done.stdout.strip().splitlines()[-1]


def _clustering(x, labels) -> tuple[int, int]:
    from latentscape.jobs.core.mapping import data_shape, resolve_config

    params = resolve_config(shape=data_shape(x, labels), seed=SEED).clusterer_params
    return int(params["min_cluster_size"]), int(params["min_samples"])


def main(quick: bool = False) -> list[dict]:
    import numpy as np

    from latentscape.tracking.runs import open_store

    # quick: above 4,095 rows, where umap-learn switches to pynndescent (below it, plain pays no compilation)
    n, dim = (4200, 64) if quick else (5000, 384)
    x, labels = planted(n, dim, seed=SEED)
    min_cluster_size, min_samples = _clustering(x, labels)
    rows = []
    with tempfile.TemporaryDirectory(prefix="latentscape-cold-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "x.npy", x)
        np.save(tmp / "labels.npy", labels)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        run_id = log_extraction(open_store(uri), x, labels, name="cold-start")
        base = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "MLFLOW_TRACKING_URI")}
        env_plain = {**base, "NUMBA_CACHE_DIR": str(tmp / "numba-plain")}
        env_ours = {**base, "NUMBA_CACHE_DIR": str(tmp / "numba-ours")}
        plain_cmd = [sys.executable, "-c", _PLAIN, str(tmp / "x.npy"), str(tmp / "labels.npy"),
                     str(min_cluster_size), str(min_samples)]
        ours_cmd = [_latentscape_bin(), "map", "--run", run_id, "--layer", "0", "--tracking-uri", uri, "--json"]
        plain_s, plain_out = _timed_process(plain_cmd, env_plain)
        plain_ami = float(plain_out)
        for round_name in ("empty", "installed"):
            if round_name == "installed":  # numba's default cache, as make's precompile step left it
                env_ours = base
            ours_s, ours_out = _timed_process(ours_cmd, env_ours)
            ours_ami = float(json.loads(ours_out)["scores"]["ami"])
            rows.append({
                "workload": WORKLOAD.format(n=n, dim=dim, round=ROUNDS[round_name]),
                "plain_s": plain_s, "latentscape_s": ours_s,
                "quality": f"AMI {ours_ami:.3f} vs {plain_ami:.3f}",
                "quality_held": ours_ami >= plain_ami - AMI_TOLERANCE,
            })
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = main(args.quick)
    print_rows([Row(**{k: r[k] for k in ("workload", "plain_s", "latentscape_s", "quality", "quality_held")})
                for r in rows])
    print(f"load average: {os.getloadavg()}")
