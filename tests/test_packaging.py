"""The install claims one top-level name, `latentscape`, and the CLI is wired up."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _wheel_top_level(tmp_path) -> set[str]:
    """The top-level names a regular (non-editable) install of this project writes."""
    # Built from a copy: setuptools leaves build/ and *.egg-info beside the sources.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for folder in ("api", "jobs", "tracking", "ui"):
        shutil.copytree(REPO / folder, source / folder, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("latentscape-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    # The package data travels with its package.
    assert {"latentscape/jobs/data/demo.csv", "latentscape/ui/.streamlit/config.toml"} <= set(names)
    return {name.split("/")[0] for name in names}


def test_the_install_claims_one_top_level_name(tmp_path):
    top = _wheel_top_level(tmp_path / "wheel")
    dist_info = {name for name in top if name.endswith(".dist-info")}
    assert top - dist_info == {"latentscape"}, sorted(top)
    # Import every installed top-level module the distribution declares, from a folder where
    # the repository's own folders cannot shadow the install: only `latentscape` is there,
    # and its parts are the repository's folders.
    code = ("import importlib, importlib.metadata as md, json\n"
            "names = md.distribution('latentscape').read_text('top_level.txt').split()\n"
            "found = {n: importlib.import_module(n).__name__ for n in names}\n"
            "parts = {p: importlib.import_module(f'latentscape.{p}').__file__ for p in ('jobs', 'tracking', 'ui')}\n"
            "generic = []\n"
            "for name in ('jobs', 'tracking', 'ui', 'api'):\n"
            "    try:\n        importlib.import_module(name); generic.append(name)\n"
            "    except ModuleNotFoundError:\n        pass\n"
            "print(json.dumps({'found': found, 'parts': parts, 'generic': generic}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["found"] == {"latentscape": "latentscape"}
    assert answer["generic"] == []
    for part, origin in answer["parts"].items():
        assert Path(origin).resolve() == REPO / part / "__init__.py"


def test_tests_and_docker_are_not_installed_packages():
    import importlib.util

    for name in ("tests", "bench"):
        spec = importlib.util.find_spec(name)
        assert spec is None or REPO not in Path(spec.origin or "/").parents


def test_every_sub_command_has_help():
    from latentscape.jobs.cli import build_parser

    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert "extract" in choices
    for name, sub in choices.items():
        text = sub.format_help()
        assert "--experiment" in text or name in ("ui", "server", "demo"), name
        assert len(text.splitlines()) > 3


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, latentscape.jobs.cli; latentscape.jobs.cli.build_parser(); "
            "heavy = [m for m in ('torch', 'umap', 'numba', 'transformers', 'optuna', 'streamlit') if m in sys.modules]; "
            "print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
