"""One spec per job: the table from which the command line, the notebook functions
(``ls.*``), the app's page of each run kind and ``Result.chart()`` all derive.

A :class:`JobSpec` names its parts as strings, never imports them, so that every layer can
read the table: ``jobs/cli.py`` imports ``module`` for its sub-command, ``api/__init__.py``
makes ``ls.<command>`` of each spec with ``notebook``, ``ui/routes.py`` finds the page of
a run kind by its URL path (the UI still imports no job), and ``api/_result.py`` draws a
run with the function ``chart`` names (``"module:function"``, taking a ``Result``).

Adding a job: its module (``add_parser``), one spec line here, its page's ``Route`` and its
chart function (see docs/DEVELOPING.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from latentscape.tracking.contract import Kind

__all__ = ["Shown", "JobSpec", "JOBS", "BY_COMMAND", "SHOWN", "resolve"]


@dataclass(frozen=True)
class Shown:
    """How the app shows a run of one ``kind``: on the page whose URL path is ``page``
    (None: the Compare page), drawn by ``chart`` (``"module:function"``; None: no single
    chart, ``Result.chart()`` says so)."""

    kind: str
    page: str | None = None
    chart: str | None = None


@dataclass(frozen=True)
class JobSpec:
    """One job: ``command`` (the sub-command, ``-`` becoming ``_`` in Python), ``module``
    (its dotted path, with ``add_parser``), ``kinds`` (the runs it logs and how each is
    shown), ``notebook`` (also a Python function ``ls.<command>``)."""

    command: str
    module: str
    kinds: tuple[Shown, ...] = ()
    notebook: bool = True

    @property
    def function(self) -> str:
        return self.command.replace("-", "_")


_JOBS = "latentscape.jobs."
_CHARTS = "latentscape._result:"

# In the order of ``latentscape --help``.
JOBS: tuple[JobSpec, ...] = (
    JobSpec("extract", _JOBS + "extract", (Shown(Kind.EXTRACT, "layers", _CHARTS + "layer_chart"),)),
    JobSpec("map", _JOBS + "map", (Shown(Kind.MAP, "maps", _CHARTS + "map_chart"),)),
    JobSpec("sweep", _JOBS + "sweep", (Shown(Kind.SWEEP, "sweeps", _CHARTS + "sweep_chart"),
                                       Shown(Kind.TRIAL, "maps", _CHARTS + "map_chart"))),
    JobSpec("layers", _JOBS + "layers", (Shown(Kind.LAYERS, "layers", _CHARTS + "layer_chart"),)),
    JobSpec("interpolate", _JOBS + "interpolate", (Shown(Kind.INTERPOLATE, "interpolation", _CHARTS + "walk_chart"),
                                                   Shown(Kind.AUTOENCODER))),
    JobSpec("analogies", _JOBS + "analogies", (Shown(Kind.ANALOGIES, "interpolation", _CHARTS + "analogy_chart"),)),
    JobSpec("directions", _JOBS + "directions", (Shown(Kind.DIRECTIONS, "directions", _CHARTS + "directions_chart"),)),
    JobSpec("sae", _JOBS + "sae", (Shown(Kind.SAE, "features", _CHARTS + "features_chart"),)),
    JobSpec("finetune", _JOBS + "finetune", (Shown(Kind.FINETUNE, "training", _CHARTS + "training_chart"),)),
    JobSpec("compare-models", _JOBS + "compare_models", (Shown(Kind.COMPARE_MODELS, "training"),)),
    JobSpec("search", _JOBS + "search"),
    JobSpec("models", _JOBS + "models", notebook=False),  # ls.models() is a table, not a run
    JobSpec("ui", _JOBS + "serve", notebook=False),
    JobSpec("server", _JOBS + "serve", notebook=False),
    JobSpec("demo", _JOBS + "demo", notebook=False),
)

BY_COMMAND: dict[str, JobSpec] = {spec.command: spec for spec in JOBS}
# Run kind -> how the app shows it.
SHOWN: dict[str, Shown] = {shown.kind: shown for spec in JOBS for shown in spec.kinds}


def resolve(path: str):
    """The object a ``"module:attribute"`` path names (imported on first use)."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)
