"""The app's pages: file, title, URL path, and which page shows which kind of run.

Paths are relative to ``ui/app.py`` (what ``st.Page`` and ``st.page_link`` expect).
"""

from __future__ import annotations

from dataclasses import dataclass

from latentscape.tracking.contract import Kind
from latentscape.tracking.job_specs import SHOWN

__all__ = ["Route", "ROUTES", "OVERVIEW", "LAYERS", "MAPS", "SWEEPS", "INTERPOLATION", "DIRECTIONS", "FEATURES",
           "TRAINING",
           "COMPARE", "route_for_kind"]


@dataclass(frozen=True)
class Route:
    path: str  # the page file, relative to ui/app.py
    title: str
    url_path: str
    icon: str
    question: str  # the user's question the page answers


OVERVIEW = Route("views/overview.py", "Overview", "overview", ":material/dashboard:",
                 "what has been run, by whom, and when?")
LAYERS = Route("views/layers.py", "Layers", "layers", ":material/stacked_line_chart:",
               "what does each layer hold, and where does the representation stop changing?")
MAPS = Route("views/maps.py", "Maps", "maps", ":material/scatter_plot:", "how does a layer look in 2D?")
SWEEPS = Route("views/sweeps.py", "Sweeps", "sweeps", ":material/tune:",
               "which settings make the structure clearest?")
INTERPOLATION = Route("views/interpolation.py", "Interpolation", "interpolation", ":material/timeline:",
                      "what lies between two inputs?")
DIRECTIONS = Route("views/directions.py", "Directions", "directions", ":material/explore:",
                   "is there a direction for this concept?")
FEATURES = Route("views/features.py", "Features", "features", ":material/category:",
                  "what else does this layer encode?")
TRAINING = Route("views/training.py", "Training", "training", ":material/model_training:",
                  "how does a representation move during fine-tuning, and between models?")
COMPARE = Route("views/compare.py", "Compare", "compare", ":material/compare_arrows:",
                "how do these runs differ?")

ROUTES: tuple[Route, ...] = (OVERVIEW, LAYERS, MAPS, SWEEPS, INTERPOLATION, DIRECTIONS, FEATURES, TRAINING,
                             COMPARE)

# Run kind -> the page that shows it, from the job specs (pages named by URL path).
_BY_PATH = {route.url_path: route for route in ROUTES}
_BY_KIND = {kind: _BY_PATH[shown.page] for kind, shown in SHOWN.items() if shown.page}


def route_for_kind(kind: str) -> Route:
    """The page that shows a run of ``kind`` (Compare for kinds without their own page)."""
    try:
        return _BY_KIND.get(Kind(kind), COMPARE)
    except ValueError:
        return COMPARE


def link_params(kind: str, run_id: str, source_run: str | None = None) -> dict[str, str]:
    """Query parameters that open ``run_id`` on its page (a layers run opens its extraction;
    an analogies run is the Interpolation page's ``analogy`` selection)."""
    if kind in (Kind.LAYERS, Kind.COMPARE_MODELS) and source_run:
        return {"run": source_run}  # a comparison opens its fine-tuning (or its reference extraction)
    if kind == Kind.ANALOGIES:
        return {"analogy": run_id}
    return {"run": run_id}
