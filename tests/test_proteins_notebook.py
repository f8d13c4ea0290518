"""docs/proteins.ipynb, executed in a real Jupyter kernel, reproduces its CLI session
(extract AntiBERTy on the peptides with cls pooling, the tutorial's map, a sweep over
UMAP's n_neighbors, min_dist and metric, layers) score for score, on fewer peptides and
trials than the notebook's defaults."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "docs" / "proteins.ipynb"
LIMIT, TRIALS, LAYER = 60, 3, 3
SPACE = """\
reducer: umap
clusterer: kmeans
params:
  reducer.n_neighbors: {low: 5, high: 50, log: true}
  reducer.min_dist: {low: 0.0, high: 0.5}
  reducer.metric: {choices: [euclidean, cosine]}
  clusterer.n_clusters: 2
"""


def _differences(ours: dict, theirs: dict) -> list[str]:
    found = []
    for key in sorted(set(ours) | set(theirs)):
        if key.endswith(("_seconds", "_per_s")):  # timings differ run to run
            continue
        a, b = ours.get(key), theirs.get(key)
        if a is None or b is None:
            found.append(f"{key}: {a} vs {b}")
        elif not (math.isnan(a) and math.isnan(b)) and not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
            found.append(f"{key}: {a!r} vs {b!r}")
    return found


def _cli(folder: Path, *argv: str) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "LATENTSCAPE_PROGRESS": "0"}
    done = subprocess.run([sys.executable, "-m", "latentscape.jobs.cli", *argv, "--json"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cli_session(folder: Path) -> dict[str, dict]:
    """The README's protein session on the command line: each step's ``--json`` answer."""
    (folder / "space.yaml").write_text(SPACE)
    extraction = _cli(folder, "extract", "--data", "peptides", "--model", "antiberty", "--pooling", "cls",
                      "--limit", str(LIMIT))
    run = extraction["run_id"]
    return {
        "extract": extraction,
        "map": _cli(folder, "map", "--run", run, "--layer", str(LAYER), "--preset", "tutorial", "--seed", "0"),
        "sweep": _cli(folder, "sweep", "--run", run, "--layer", str(LAYER), "--trials", str(TRIALS),
                      "--space", "space.yaml", "--seed", "0"),
        "layers": _cli(folder, "layers", "--run", run, "--seed", "0"),
    }


def _run_notebook(folder: Path):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    parameters.source += f"\nLIMIT = {LIMIT}\nTRIALS = {TRIALS}\nLAYER = {LAYER}"
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}})
    client.execute(env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
                        "LATENTSCAPE_PROGRESS": "0"})
    return notebook


@pytest.mark.slow
def test_the_protein_notebook_reproduces_its_cli_session(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    (ours := tmp_path / "notebook").mkdir()
    (theirs := tmp_path / "cli").mkdir()
    with ThreadPoolExecutor(1) as pool:  # two processes on two stores, side by side
        cli = pool.submit(_cli_session, theirs)
        notebook = _run_notebook(ours)
        session = cli.result()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    printed = json.loads("".join(o.get("text", "") for o in code[-1].outputs if o.output_type == "stream"))
    assert set(printed) == set(session)
    for kind, answer in session.items():
        assert printed[kind] and not _differences(printed[kind], answer["scores"]), \
            (kind, _differences(printed[kind], answer["scores"]))
    assert printed["extract"]["unk_fraction"] == 0
    # The notebook's space is the test's: the CLI session runs the same search.
    assert SPACE in "".join(cell.source for cell in code).replace('\\\\\n', "")
    for cell in code:
        if cell.source.strip().endswith(".chart()"):
            assert any("vega" in mime or mime == "text/html" for o in cell.outputs if o.output_type in
                       ("display_data", "execute_result") for mime in o.data), cell.source
