"""The colours of categories on every map (Altair and deck.gl alike). Pure (no Streamlit).

The scheme is Vega's ``tableau20`` reordered: its ten strong hues first, then their ten
light twins, with the grey pair removed. Why:

- tableau20 is a well-kept categorical scheme (Tableau's, shipped with Vega), but in its
  own order each colour sits next to its light twin (blue, light blue, orange, light
  orange, ...): the look-alike pairs are neighbours, so clusters 0 and 1 read as one.
  Strong hues first puts nine different hues on the first nine categories (most maps),
  and a colour's twin nine places later, never beside it.
- Its grey pair is dropped so that grey means one thing on every map: noise (HDBSCAN's
  -1), missing values and the deck.gl maps' "other" bucket.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["CATEGORY_COLOURS", "KIND_COLOURS", "NOISE_GREY", "NOISE", "OTHER", "category_colours"]

NOISE = "noise"
OTHER = "other"
NOISE_GREY = "#b4b4b4"
# tableau20 (vega/vega-scale), strong hues then light twins, greys (#79706e, #bab0ac) removed.
CATEGORY_COLOURS: tuple[str, ...] = (
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#b6992d", "#499894", "#d37295", "#9d7660",
    "#a0cbe8", "#ffbe7d", "#8cd17d", "#ff9d9a", "#d4a6c8", "#f1ce63", "#86bcb6", "#fabfd2", "#d7b5a6",
)
# Run kinds (12) side by side on the Overview: the nine strong hues, then three that are
# not a light twin of one of them (cyan, lime, indigo), so no two kinds read alike.
KIND_COLOURS: tuple[str, ...] = (*CATEGORY_COLOURS[:9], "#17becf", "#bcbd22", "#393b79")
_GREY_CATEGORIES = (NOISE, OTHER, "")


def category_colours(categories: Sequence[str]) -> list[str]:
    """One ``#rrggbb`` per category, in the order given: noise, "other" and "" in
    :data:`NOISE_GREY`, the others through :data:`CATEGORY_COLOURS` in turn (repeating
    after 18 categories: the legend and tooltip still name them)."""
    colours, i = [], 0
    for category in categories:
        if category in _GREY_CATEGORIES:
            colours.append(NOISE_GREY)
        else:
            colours.append(CATEGORY_COLOURS[i % len(CATEGORY_COLOURS)])
            i += 1
    return colours
