"""Benchmark: commands that answer at once (issue 21), each from a new process.

Rows (the target beside today's figure, all measured in this one run):
- time to a bad-input error, python start to exit: ``latentscape extract --data nope.csv``
  and ``latentscape map --run X --layer abc``. The "plain" column holds the target, 0.5 s,
  so the ratio is target / measured (>= 1 when the target is met);
- a digits UMAP + HDBSCAN map (``latentscape map --run EXTRACT --json``, the defaults, on
  an extraction of ``--data digits`` logged beforehand in a fresh local store) against
  ``python -c "import umap, hdbscan, mlflow"`` alone: the imports any such map pays.
  Target: the map within 1.5x the imports (ratio >= 0.67).

Measured (2 cores shared with other jobs, load 3-7, fastest of 3): the missing file took
4.6-7.0 s to report before the data was checked ahead of the store, 0.30-0.33 s after;
``--layer abc`` 0.29-0.34 s before and after. The digits map: 10.6-14.9 s against
5.3-8.0 s of imports, 1.7-2.0x both before and after. Where the rest goes (cProfile):
MLflow's SQL store, imported at the first query and not by ``import mlflow`` (~2-2.5 s:
sqlalchemy, its models, alembic), the UMAP fit (~1.1 s), the trust baselines (~0.8 s:
200 bootstrap AMIs) and scores and logging (~0.5 s).

Each process is run ``REPEATS`` times, alternating sides, and the fastest is kept: the
machine is shared, and the fastest run is the one least slowed by others.

    python bench/answers.py            # 3 repeats
    python bench/answers.py --quick    # 1 repeat
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

ERROR_TARGET_S = 0.5
MAP_TARGET_RATIO = 1.5  # map process / import-only process
REPEATS = 3
_IMPORTS = "import umap, hdbscan, mlflow"


def _latentscape_bin() -> str:
    candidate = Path(sys.executable).with_name("latentscape")
    return str(candidate) if candidate.exists() else "latentscape"


def _timed(command: list[str], *, cwd: Path, env: dict, expect: int = 0) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != expect:
        raise RuntimeError(f"{command[:3]} exited {done.returncode}, not {expect}: {done.stderr[-2000:]}")
    return seconds, done.stdout.strip()


def main(quick: bool = False) -> list[Row]:
    repeats = 1 if quick else REPEATS
    bin_ = _latentscape_bin()
    rows = []
    with tempfile.TemporaryDirectory(prefix="latentscape-answers-") as tmp:
        tmp = Path(tmp)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}

        # Bad input: the fastest of the repeats, target 0.5 s.
        for label, args in (("extract --data nope.csv", ["extract", "--data", "nope.csv"]),
                            ("map --run X --layer abc", ["map", "--run", "X", "--layer", "abc"])):
            seconds = min(_timed([bin_, *args, "--tracking-uri", uri], cwd=tmp, env=env, expect=2)[0]
                          for _ in range(repeats))
            rows.append(Row(workload=f"bad-input error, new process: {label}", plain_s=ERROR_TARGET_S,
                            latentscape_s=seconds,
                            quality=f"{seconds:.2f} s (target <= {ERROR_TARGET_S} s; plain = the target)",
                            quality_held=seconds <= ERROR_TARGET_S))

        # A digits map from a new process against the imports alone.
        _, out = _timed([bin_, "extract", "--data", "digits", "--tracking-uri", uri, "--json"], cwd=tmp, env=env)
        run_id = json.loads(out.splitlines()[-1])["run_id"]
        imports_s, map_s, ami = [], [], None
        for _ in range(repeats):
            imports_s.append(_timed([sys.executable, "-c", _IMPORTS], cwd=tmp, env=env)[0])
            seconds, out = _timed([bin_, "map", "--run", run_id, "--tracking-uri", uri, "--json"], cwd=tmp, env=env)
            map_s.append(seconds)
            ami = json.loads(out.splitlines()[-1])["scores"]["ami"]
        plain, ours = min(imports_s), min(map_s)
        rows.append(Row(workload="digits UMAP+HDBSCAN map, new process, vs imports", plain_s=plain,
                        latentscape_s=ours,
                        quality=f"map {ours / plain:.2f}x `{_IMPORTS}` (target <= {MAP_TARGET_RATIO}x), AMI {ami:.3f}",
                        quality_held=ours <= MAP_TARGET_RATIO * plain))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print_rows(main(args.quick))
    print(f"load average: {os.getloadavg()}")
