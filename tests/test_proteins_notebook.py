"""docs/proteins.ipynb, executed in a real Jupyter kernel, reproduces its CLI session
(extract AntiBERTy on the peptides with cls pooling, the tutorial's map, a sweep over
UMAP's n_neighbors, min_dist and metric, layers) score for score, on fewer peptides and
trials than the notebook's defaults."""

from __future__ import annotations

import json
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


def _cli_session(folder: Path, cli) -> dict[str, dict]:
    """The README's protein session on the command line: each step's ``--json`` answer."""
    (folder / "space.yaml").write_text(SPACE)
    extraction = cli(folder, "extract", "--data", "peptides", "--model", "antiberty", "--pooling", "cls",
                      "--limit", str(LIMIT))
    run = extraction["run_id"]
    return {
        "extract": extraction,
        "map": cli(folder, "map", "--run", run, "--layer", str(LAYER), "--preset", "tutorial", "--seed", "0"),
        "sweep": cli(folder, "sweep", "--run", run, "--layer", str(LAYER), "--trials", str(TRIALS),
                      "--space", "space.yaml", "--seed", "0"),
        "layers": cli(folder, "layers", "--run", run, "--seed", "0"),
    }


@pytest.mark.slow
def test_the_protein_notebook_reproduces_its_cli_session(tmp_path, notebook_session):
    from concurrent.futures import ThreadPoolExecutor

    (ours := tmp_path / "notebook").mkdir()
    (theirs := tmp_path / "cli").mkdir()
    with ThreadPoolExecutor(1) as pool:  # two processes on two stores, side by side
        cli = pool.submit(_cli_session, theirs, notebook_session.cli)
        notebook = notebook_session.run_notebook(NOTEBOOK, ours, f"LIMIT = {LIMIT}\nTRIALS = {TRIALS}\nLAYER = {LAYER}")
        session = cli.result()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    printed = json.loads("".join(o.get("text", "") for o in code[-1].outputs if o.output_type == "stream"))
    assert set(printed) == set(session)
    for kind, answer in session.items():
        differences = notebook_session.differences(printed[kind], answer["scores"])
        assert printed[kind] and not differences, (kind, differences)
    assert printed["extract"]["unk_fraction"] == 0
    # The notebook's space is the test's: the CLI session runs the same search.
    assert SPACE in "".join(cell.source for cell in code).replace('\\\\\n', "")
    for cell in code:
        if cell.source.strip().endswith(".chart()"):
            assert any("vega" in mime or mime == "text/html" for o in cell.outputs if o.output_type in
                       ("display_data", "execute_result") for mime in o.data), cell.source
