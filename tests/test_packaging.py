"""The generic top-level names resolve to this project, and the CLI is wired up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["tracking", "ui", "jobs"])
def test_top_level_packages_are_this_project(name):
    module = __import__(name)
    assert Path(module.__file__).resolve().parent == REPO / name


def test_tests_and_docker_are_not_installed_packages():
    import importlib.util

    for name in ("tests", "bench"):
        spec = importlib.util.find_spec(name)
        assert spec is None or REPO not in Path(spec.origin or "/").parents


def test_every_sub_command_has_help():
    from jobs.cli import build_parser

    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert "extract" in choices
    for name, sub in choices.items():
        text = sub.format_help()
        assert "--experiment" in text or name in ("ui", "server", "demo"), name
        assert len(text.splitlines()) > 3


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, jobs.cli; jobs.cli.build_parser(); "
            "heavy = [m for m in ('torch', 'umap', 'numba', 'transformers', 'optuna', 'streamlit') if m in sys.modules]; "
            "print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
