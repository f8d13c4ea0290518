"""One spec per job (tracking/job_specs.py): every spec names parts that exist, and the
command line, the notebook functions, the app's page of each run kind and Result.chart()
are derived from the table, with the same entries they were written with by hand."""

from __future__ import annotations

import importlib.util

import pytest

from latentscape.tracking import job_specs
from latentscape.tracking.contract import Kind


def test_every_spec_names_a_module_a_page_and_a_chart_that_exist():
    from latentscape.ui.routes import ROUTES

    pages = {route.url_path for route in ROUTES}
    for spec in job_specs.JOBS:
        assert importlib.util.find_spec(spec.module) is not None, spec.module  # found, not imported
        for shown in spec.kinds:
            assert shown.kind in set(Kind), shown.kind
            assert shown.page is None or shown.page in pages, shown
            assert shown.chart is None or callable(job_specs.resolve(shown.chart)), shown.chart
    commands = [spec.command for spec in job_specs.JOBS]
    assert len(set(commands)) == len(commands)
    kinds = [shown.kind for spec in job_specs.JOBS for shown in spec.kinds]
    assert len(set(kinds)) == len(kinds), "a run kind is logged by one job"
    assert set(kinds) == set(Kind), "every run kind is some job's"


def test_a_bad_path_fails_on_resolving():
    with pytest.raises(AttributeError):
        job_specs.resolve("latentscape._result:no_such_chart")


def test_the_cli_the_notebook_the_routes_and_the_charts_derive_from_the_specs():
    import latentscape as ls
    from latentscape import _result
    from latentscape.jobs.cli import JOB_MODULES
    from latentscape.ui import routes

    assert JOB_MODULES == {
        "extract": "latentscape.jobs.extract", "map": "latentscape.jobs.map", "sweep": "latentscape.jobs.sweep",
        "layers": "latentscape.jobs.layers", "interpolate": "latentscape.jobs.interpolate",
        "analogies": "latentscape.jobs.analogies", "directions": "latentscape.jobs.directions",
        "sae": "latentscape.jobs.sae", "finetune": "latentscape.jobs.finetune",
        "compare-models": "latentscape.jobs.compare_models", "search": "latentscape.jobs.search",
        "models": "latentscape.jobs.models", "ui": "latentscape.jobs.serve", "server": "latentscape.jobs.serve",
        "demo": "latentscape.jobs.demo"}
    assert list(JOB_MODULES) == [spec.command for spec in job_specs.JOBS]
    functions = {"extract", "map", "sweep", "layers", "interpolate", "analogies", "directions", "sae", "finetune",
                 "compare_models", "search"}
    assert set(ls.__all__) == functions | {"runs", "result", "models", "Result", "UsageError"}
    assert all(getattr(ls, name).__doc__ for name in functions)
    assert {kind: routes.route_for_kind(kind) for kind in Kind} == {
        Kind.EXTRACT: routes.LAYERS, Kind.LAYERS: routes.LAYERS, Kind.MAP: routes.MAPS, Kind.TRIAL: routes.MAPS,
        Kind.SWEEP: routes.SWEEPS, Kind.INTERPOLATE: routes.INTERPOLATION, Kind.ANALOGIES: routes.INTERPOLATION,
        Kind.DIRECTIONS: routes.DIRECTIONS, Kind.SAE: routes.FEATURES, Kind.FINETUNE: routes.TRAINING,
        Kind.COMPARE_MODELS: routes.TRAINING, Kind.AUTOENCODER: routes.COMPARE}
    charts = {kind: job_specs.resolve(shown.chart) for kind, shown in job_specs.SHOWN.items() if shown.chart}
    assert charts == {
        Kind.MAP: _result.map_chart, Kind.TRIAL: _result.map_chart, Kind.SWEEP: _result.sweep_chart,
        Kind.LAYERS: _result.layer_chart, Kind.EXTRACT: _result.layer_chart, Kind.INTERPOLATE: _result.walk_chart,
        Kind.ANALOGIES: _result.analogy_chart, Kind.DIRECTIONS: _result.directions_chart,
        Kind.SAE: _result.features_chart, Kind.FINETUNE: _result.training_chart}
