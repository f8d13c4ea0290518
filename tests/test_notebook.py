"""The notebook API: docs/tutorial.ipynb, executed in a real Jupyter kernel, reproduces the
README's CLI session (extract, map, sweep, layers) score for score; and the API's
functions are the CLI's jobs (same validation, same runs, tables and charts)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "docs" / "tutorial.ipynb"
LIMIT, TRIALS = 120, 3  # small: the same flow as the tutorial's 600 sentences and 30 trials


def _outputs(cell) -> tuple[str, set[str]]:
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
    kinds = {mime for o in cell.outputs if o.output_type in ("display_data", "execute_result") for mime in o.data}
    return text, kinds


def _cli_session(folder: Path, cli) -> dict[str, dict]:
    """The README's session on the command line: each step's ``--json`` answer."""
    extraction = cli(folder, "extract", "--data", "demo", "--limit", str(LIMIT))
    run = extraction["run_id"]
    return {
        "extract": extraction,
        "map": cli(folder, "map", "--run", run, "--layer", "6", "--seed", "0"),
        "sweep": cli(folder, "sweep", "--run", run, "--layer", "6", "--trials", str(TRIALS), "--seed", "0"),
        "layers": cli(folder, "layers", "--run", run),
    }


@pytest.mark.slow
def test_the_tutorial_notebook_reproduces_the_cli_session(tmp_path, notebook_session):
    from concurrent.futures import ThreadPoolExecutor

    (ours := tmp_path / "notebook").mkdir()
    (theirs := tmp_path / "cli").mkdir()
    # The two sessions are separate processes on separate stores: run side by side (2 cores).
    with ThreadPoolExecutor(1) as pool:
        cli = pool.submit(_cli_session, theirs, notebook_session.cli)
        # the suite turns bars off; the notebook shows them
        notebook = notebook_session.run_notebook(NOTEBOOK, ours, f"LIMIT = {LIMIT}\nTRIALS = {TRIALS}", progress=True)
        session = cli.result()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    printed = json.loads(_outputs(code[-1])[0])

    assert set(printed) == set(session)
    for kind, answer in session.items():
        differences = notebook_session.differences(printed[kind], answer["scores"])
        assert printed[kind] and not differences, (kind, differences)

    # Every chart cell shows a chart; the mistake is the CLI's one line; runs() compares in pandas.
    sources = [cell.source for cell in code]
    for index, source in enumerate(sources):
        if source.strip().endswith(".chart()"):
            assert any("vega" in kind or kind == "text/html" for kind in _outputs(code[index])[1]), source
    mistake = _outputs(code[next(i for i, s in enumerate(sources) if "UsageError" in s)])[0].strip()
    assert len(mistake.splitlines()) == 1 and "--layer" in mistake and "99" in mistake
    # Long steps draw tqdm.auto's widget bars in a notebook, not text on stderr.
    extract_cell = next(cell for cell in code if "ls.extract(" in cell.source)
    assert "application/vnd.jupyter.widget-view+json" in _outputs(extract_cell)[1]
    table = next(cell for cell in code if "ls.runs(" in cell.source)
    shown = "".join(o.data.get("text/plain", "") for o in table.outputs if o.output_type == "execute_result")
    assert "map" in shown and "sweep" in shown


# -- the functions are the CLI's jobs ---------------------------------------------------------------
def test_each_function_takes_its_commands_options():
    import latentscape as ls
    from latentscape.jobs.cli import JOB_MODULES

    jobs = [command for command in JOB_MODULES if command not in ("ui", "server", "demo", "models")]  # apps, a listing
    assert sorted(name.replace("-", "_") for name in jobs) == \
        sorted(set(ls.__all__) - {"runs", "result", "models", "Result", "UsageError"})
    for name in (command.replace("-", "_") for command in jobs):
        job = getattr(ls, name)
        signature = inspect.signature(job)
        assert "tracking_uri" in signature.parameters and "json" not in signature.parameters, name
        assert f"latentscape {name.replace('_', '-')}" in job.__doc__
    assert {"n_neighbors", "min_cluster_size", "reducer_param"} <= set(inspect.signature(ls.map).parameters)


def test_bad_settings_raise_the_clis_usage_error(tmp_path, monkeypatch):
    import latentscape as ls

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ls.UsageError, match="has no setting 'n_neighbour'.*n_neighbors"):
        ls.map("some-run", n_neighbour=30)
    with pytest.raises(ls.UsageError, match="--layer 'abc' is not an integer"):
        ls.map("some-run", layer="abc")
    with pytest.raises(ls.UsageError, match=r"ls\.map\(\): argument --knn|invalid choice|knn"):
        ls.map("some-run", knn="sometimes")
    with pytest.raises(ls.UsageError, match="takes no run"):
        ls.extract("some-run")
    missing = tmp_path / "nope.csv"
    with pytest.raises(ls.UsageError, match="nope.csv"):
        ls.extract(data=str(missing))


@pytest.mark.slow
def test_results_load_tables_and_charts_of_their_runs(tmp_path):
    import altair as alt

    import latentscape as ls

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    digits = ls.extract(data="digits", limit=200, tracking_uri=uri)
    assert digits.kind == "extract" and len(digits.run_id) == 32
    view = ls.map(digits, layer=0, reducer="pca", clusterer="kmeans", tracking_uri=uri)
    assert view.scores["ami"] > 0.3
    points = view.map
    assert len(points) == 200 and {"x", "y", "cluster", "label"} <= set(points.columns)
    assert view.clusters["size"].sum() == 200
    assert isinstance(view.chart(), (alt.Chart, alt.LayerChart))
    assert view.run_id in view._repr_html_() and "ami" in repr(view)
    with pytest.raises(ls.UsageError, match="has no layers.parquet"):
        view.layers
    compared = ls.runs(kinds="map", tracking_uri=uri)
    assert list(compared["run_id"]) == [view.run_id]
    assert compared.loc[0, "metric.ami"] == pytest.approx(view.scores["ami"])
    assert compared.loc[0, "param.reducer"] == "pca"
    assert ls.runs(parent=digits, tracking_uri=uri)["run_id"].tolist() == [view.run_id]
    # A run made earlier loads as the same Result: its kind, scores, tables and chart.
    again = ls.result(view.run_id, tracking_uri=uri)
    assert again.kind == "map" and again.scores["ami"] == pytest.approx(view.scores["ami"])
    assert again.map.equals(points)
    with pytest.raises(ls.UsageError, match="no run 'nope'"):
        ls.result("nope", tracking_uri=uri)
