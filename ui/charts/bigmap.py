"""Large maps (above ``LARGE_MAP_POINTS``) drawn by deck.gl through ``st.pydeck_chart``.

Vega-Lite draws one SVG/canvas mark per point and slows down past about 20,000 points;
deck.gl draws points on the GPU and pans, zooms and picks a million of them. What has to
be fast is the payload: Streamlit sends a deck as one JSON document, and pydeck's own
serialiser (``json.dumps(indent=2)`` over a list of dicts, the pure-Python encoder)
needs seconds per 100,000 rows. So:

- :func:`deck_info` (pure, unit-tested) builds each layer's data as compact JSON text
  straight from numpy: positions rounded onto an integer grid of ``GRID`` steps over the
  map's extent (sub-pixel error at any zoom a screen can show), one layer per colour so
  that no per-point colour is sent;
- hover needs each point's text, which is most of the bytes: up to ``HOVER_POINTS``
  points (all of a map up to that size, else a seeded sample, said in the caption) carry
  their text, label, cluster and id, truncated to ``TEXT_CHARS``; the others are drawn
  as bare positions that the pointer does not pick;
- :func:`deck` (the render step) wraps those strings in a :class:`pydeck.Deck` whose
  ``to_json`` splices them into pydeck's small JSON instead of serialising rows; or,
  given ``serve``, hands each layer's JSON to the app to serve as a file and puts its
  URL in the deck (Streamlit's frontend parses a deck's JSON with JSON5, ~1 MB/s: the
  points go beside it, and deck.gl fetches them and parses them with ``JSON.parse``).

Measured (bench/bigmap.py, busy 2-core machine): 1,000,000 points from query to payload
in 1.5 s (1.0 s CPU), 22 MB; 100,000 points in 0.3-0.5 s, 12.7 MB.

The view is an ``OrthographicView`` (no basemap, so no map tiles are fetched: it works
offline), y pointing up as in the Altair maps.

Selection: Streamlit's ``st.pydeck_chart`` selects objects by clicking them
(``selection_mode="multi-object"``: a click adds an object, a second click removes it, a
click on nothing clears); it has no box or lasso. So a large map is cut into regions,
``CELLS`` squares along its larger side; in selection mode (``regions=True``) they are
drawn over the points as a faint layer, the only one the pointer picks, and clicking
regions selects them (:func:`in_regions` tells which samples lie in them). Otherwise the pointer hovers the
points and a click selects the point (hover points carry their id).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from json.encoder import encode_basestring

import numpy as np
import pandas as pd

from latentscape.tracking.contract import Column
from latentscape.ui.charts.palette import CATEGORY_COLOURS, NOISE, OTHER, category_colours

__all__ = [
    "LARGE_MAP_POINTS",
    "HOVER_POINTS",
    "TEXT_CHARS",
    "GRID",
    "LegendEntry",
    "DeckInfo",
    "deck_info",
    "deck",
    "deck_json",
    "categories",
    "columns_for",
    "CELLS",
    "REGIONS_LAYER",
    "region_keys",
    "in_regions",
    "picked",
]

# Above this many points a map is drawn by deck.gl (the Altair map shows a sample above it).
LARGE_MAP_POINTS = 20_000
# Points whose text travels with the map for the hover tooltip (~150 bytes each).
HOVER_POINTS = 100_000
TEXT_CHARS = 80
# Positions are integers 0..GRID over the map's larger extent: 1/10,000 of the map.
GRID = 10_000
# Selectable regions: squares of 1/CELLS of the map's larger side.
CELLS = 24
REGIONS_LAYER = "regions"  # the suffix of the regions layer's id
# The most frequent 18 categories get a colour of their own, the rest share "other".
MAX_COLOURS = len(CATEGORY_COLOURS) + 1

_TOKEN = re.compile(r'"(__ls_data_[0-9a-f]{32}_\d+__)"')


@dataclass(frozen=True)
class LegendEntry:
    category: str
    colour: str  # "#rrggbb"
    n_points: int


@dataclass(frozen=True)
class DeckInfo:
    """A large map ready to draw.

    color_by: the column the colours show (label falls back to cluster when unlabelled);
    legend: one entry per colour, in drawing order; layers: (category, colour, pickable,
    JSON array text) per deck layer: bare ``[x, y]`` pairs when not pickable, else
    objects ``{"p": [x, y], "t": text, "l": label, "k": cluster, "i": sample id}``;
    digests: a SHA-1 of each layer's JSON (names it when it is served as a file);
    origin / scale: grid position = (map position - origin) * scale; n_points / n_hover:
    points drawn / points that show their text on hover; n_clusters: clusters, noise
    excluded; payload_bytes: size of the layers' JSON."""

    color_by: str
    legend: tuple[LegendEntry, ...]
    layers: tuple[tuple[str, str, bool, str], ...]
    origin: tuple[float, float]
    scale: float
    n_points: int
    n_hover: int
    n_clusters: int
    has_labels: bool
    has_ids: bool = True
    centre: tuple[float, float] = (GRID / 2, GRID / 2)  # the middle of the points' box, on the grid
    digests: tuple[str, ...] = ()
    payload_bytes: int = field(default=0)
    regions: str = "[]"  # JSON objects {"c": region key, "g": its square on the grid, "t": tooltip text, ...}

    def to_grid(self, x: float, y: float) -> tuple[float, float]:
        """A map position (as in map.parquet) on this deck's grid."""
        return ((float(x) - self.origin[0]) * self.scale, (float(y) - self.origin[1]) * self.scale)


def _cell_size() -> int:
    return -(-GRID // CELLS)


def region_keys(grid: np.ndarray) -> np.ndarray:
    """``"column,row"`` of the region of each (m, 2) grid position (positions past the
    grid's edge belong to the last region)."""
    cells = np.clip(np.asarray(grid, dtype=np.float64) // _cell_size(), 0, CELLS - 1).astype(np.int64)
    return np.char.add(np.char.add(cells[:, 0].astype(str), ","), cells[:, 1].astype(str)) if len(cells) else (
        np.array([], dtype=str))


def in_regions(info: DeckInfo, x, y, keys) -> np.ndarray:
    """(n,) bool: which map positions ``x``, ``y`` (map units, as in map.parquet) lie in
    the regions ``keys`` of ``info``'s deck."""
    grid = np.column_stack([(np.asarray(x, dtype=np.float64) - info.origin[0]) * info.scale,
                            (np.asarray(y, dtype=np.float64) - info.origin[1]) * info.scale])
    wanted = set(keys)
    if not wanted or len(grid) == 0:
        return np.zeros(len(grid), dtype=bool)
    return np.isin(region_keys(np.rint(grid)), list(wanted))


def picked(selection: Mapping | None, key: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(region keys, sample ids) a deck's selection holds (``st.pydeck_chart``'s state:
    ``{"selection": {"objects": {layer id: [object, ...]}}}``), each sorted, for the deck
    drawn with ``key``."""
    objects = ((selection or {}).get("selection") or {}).get("objects") or {}
    regions, ids = set(), set()
    for layer, chosen in objects.items():
        if not str(layer).startswith(f"{key}-"):
            continue
        for obj in chosen or []:
            if not isinstance(obj, Mapping):
                continue
            if str(layer) == f"{key}-{REGIONS_LAYER}" and obj.get("c"):
                regions.add(str(obj["c"]))
            elif obj.get("i"):
                ids.add(str(obj["i"]))
    return tuple(sorted(regions)), tuple(sorted(ids))


def _json_regions(grid: np.ndarray) -> str:
    """The regions holding points, as the regions layer's JSON."""
    if len(grid) == 0:
        return "[]"
    keys, counts = np.unique(region_keys(grid), return_counts=True)
    size = _cell_size()
    rows = []
    for key, count in zip(keys.tolist(), counts.tolist()):
        cx, cy = (int(v) for v in key.split(","))
        x0, y0 = cx * size, cy * size
        rows.append({"c": key, "g": [[x0, y0], [x0 + size, y0], [x0 + size, y0 + size], [x0, y0 + size]],
                     "t": f"a region of {count:,} point{'' if count == 1 else 's'}: click to select it, again to unselect",
                     "l": "", "k": "", "i": ""})
    return json.dumps(rows, separators=(",", ":"))


def columns_for(n_points: int, present: Sequence[str]) -> list[str]:
    """The map.parquet columns a deck of ``n_points`` reads (of those ``present``): x, y,
    label, cluster, text, and sample_id only when every point is a hover point (above
    that only the hover sample could show ids, and 1M ids cost a quarter second to read)."""
    wanted = [Column.X, Column.Y, Column.LABEL, Column.CLUSTER, Column.TEXT]
    if n_points <= HOVER_POINTS:
        wanted.insert(0, Column.SAMPLE_ID)
    return [column for column in wanted if column in set(present)]


def categories(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(codes, names) of a label or cluster column: integer cluster ids as text with -1 as
    ``noise``, missing values as ``""``. Vectorised: only the distinct values are
    formatted (1M rows in tens of milliseconds)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    names = []
    for value in uniques:
        if isinstance(value, (int, np.integer)) or (isinstance(value, float) and float(value).is_integer()):
            names.append(NOISE if int(value) == -1 else str(int(value)))
        else:
            names.append(str(value))
    codes = np.asarray(codes)
    if (codes < 0).any():  # missing values
        names.append("")
        codes = np.where(codes < 0, len(names) - 1, codes)
    return codes, names


def _palette(order: Sequence[str]) -> dict[str, str]:
    return dict(zip(order, category_colours(order)))


def _json_pairs(grid: np.ndarray) -> str:
    """``[[x,y],...]`` of an (m, 2) int array. One C-level %-format over a flat tuple:
    measured 0.32 s for 900,000 pairs against 1.5 s for ``json.dumps(grid.tolist())``."""
    if len(grid) == 0:
        return "[]"
    return "[" + ("[%d,%d]," * len(grid) % tuple(grid.ravel().tolist()))[:-1] + "]"


def _encoded(values: Sequence[str]) -> list[str]:
    """JSON string literals of ``values`` (distinct values encoded once)."""
    cache: dict[str, str] = {}
    return [cache.get(v) or cache.setdefault(v, encode_basestring(v)) for v in values]


def _json_hover(grid: np.ndarray, texts: list[str], labels: list[str], clusters: list[str],
                ids: list[str] | None) -> str:
    """``[{"p":[x,y],"t":text,"l":label,"k":cluster[,"i":id]},...]`` (one %-format, as above)."""
    if len(grid) == 0:
        return "[]"
    columns = [grid[:, 0].tolist(), grid[:, 1].tolist(), [encode_basestring(t) for t in texts], _encoded(labels),
               _encoded(clusters)]
    template = '{"p":[%d,%d],"t":%s,"l":%s,"k":%s'
    if ids is not None:
        columns.append([encode_basestring(i) for i in ids])
        template += ',"i":%s'
    flat = tuple(chain.from_iterable(zip(*columns)))
    return "[" + ((template + "},") * len(grid) % flat)[:-1] + "]"


def _short(texts: pd.Series, limit: int) -> list[str]:
    """At most ``limit`` characters per text, missing text as "" (pyarrow's vectorised
    kernels; the tooltip shows the text as plain text, line breaks included)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pa.array(texts.astype(object).where(texts.notna(), ""), type=pa.string())
    long = pc.greater(pc.utf8_length(values), limit)
    cut = pc.binary_join_element_wise(pc.utf8_slice_codeunits(values, 0, limit - 1), "…", "")
    return pc.if_else(long, cut, values).to_pylist()


def _names_at(codes: np.ndarray | None, names: list[str], rows: np.ndarray) -> list[str]:
    if codes is None:
        return [""] * len(rows)
    return np.asarray(names, dtype=object)[codes[rows]].tolist()


def _by_group(rows: np.ndarray, groups: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """``rows`` split by their group (``groups[rows]``), each part in row order."""
    keys = groups[rows].astype(np.int16)  # small integers: numpy's stable sort is a radix sort
    order = rows[np.argsort(keys, kind="stable")]
    bounds = np.searchsorted(groups[order], np.arange(n_groups + 1))
    return [order[bounds[g]:bounds[g + 1]] for g in range(n_groups)]


def deck_info(
    points: pd.DataFrame,
    *,
    color_by: str = Column.LABEL,
    hover_points: int = HOVER_POINTS,
    text_chars: int = TEXT_CHARS,
    seed: int = 0,
) -> DeckInfo:
    """points: a ``map.parquet`` frame with at least x and y (label, cluster, text and
    sample_id used where present: a caller can leave sample_id out of a map larger than
    ``hover_points``, the tooltip then shows no id); color_by: ``label`` or ``cluster``
    (label falls back to cluster when there are no labels); hover_points: how many points
    carry their text (all up to that many, else a seeded sample)."""
    if color_by not in (Column.LABEL, Column.CLUSTER):
        raise ValueError(f"color_by must be label or cluster, not {color_by!r}")
    n = len(points)

    # Positions on the integer grid (aspect ratio kept; non-finite positions at the origin).
    # (Column by column: numpy's min/max along axis 0 of an (n, 2) array is strided, 50 ms at 1M.)
    x = pd.to_numeric(points[Column.X]).to_numpy(np.float64) if n else np.zeros(0)
    y = pd.to_numeric(points[Column.Y]).to_numpy(np.float64) if n else np.zeros(0)
    finite = np.isfinite(x) & np.isfinite(y)
    every = bool(finite.all())
    valid_x, valid_y = (x, y) if every else (x[finite], y[finite])
    origin = np.array([valid_x.min(), valid_y.min()]) if len(valid_x) else np.zeros(2)
    top = np.array([valid_x.max(), valid_y.max()]) if len(valid_x) else np.zeros(2)
    extent = float((top - origin).max())
    scale = GRID / extent if extent > 0 else 1.0
    grid = np.empty((n, 2), dtype=np.int64)
    for k, values in enumerate((x, y)):
        scaled = (values - origin[k]) * scale
        if not every:
            scaled[~finite] = 0.0
        grid[:, k] = np.rint(scaled)
    span = (top - origin) * scale

    # Categories: what the colours show, and the other one for the tooltip.
    label_codes, label_names = categories(points[Column.LABEL]) if Column.LABEL in points else (None, [])
    cluster_codes, cluster_names = (categories(points[Column.CLUSTER]) if Column.CLUSTER in points
                                    else (None, []))
    has_labels = label_codes is not None and any(name != "" for name in label_names)
    if color_by == Column.LABEL and not has_labels:
        color_by = Column.CLUSTER
    codes, names = (label_codes, label_names) if color_by == Column.LABEL else (cluster_codes, cluster_names)
    if codes is None:
        codes, names = np.zeros(n, dtype=np.int64), [""]
    n_clusters = len([c for c in cluster_names if c not in (NOISE, "")])

    # Colours: the most frequent categories get one each; noise and missing values grey;
    # past MAX_COLOURS the rest share "other".
    counts = np.bincount(codes, minlength=len(names)) if n else np.zeros(len(names), dtype=np.int64)
    order = sorted((c for c in range(len(names)) if counts[c] > 0),
                   key=lambda c: (names[c] in (NOISE, ""), -counts[c], len(names[c]), names[c]))
    kept = [c for c in order if names[c] not in (NOISE, "")][:MAX_COLOURS - 1]
    groups: dict[str, list[int]] = {names[c]: [c] for c in kept}
    for c in order:
        if c not in kept:
            groups.setdefault(names[c] if names[c] in (NOISE, "") else OTHER, []).append(c)
    palette = _palette(list(groups))
    group_of = np.zeros(max(len(names), 1), dtype=np.int64)
    for g, members in enumerate(groups.values()):
        group_of[members] = g
    point_group = group_of[codes] if n else np.zeros(0, dtype=np.int64)
    sizes = np.bincount(point_group, minlength=len(groups)) if n else np.zeros(len(groups), dtype=np.int64)
    legend = tuple(LegendEntry(name or "(none)", palette[name], int(sizes[g])) for g, name in enumerate(groups))

    # Which points carry their text: all, or a seeded sample.
    hover = np.ones(n, dtype=bool)
    if n > hover_points:
        hover[:] = False
        hover[np.random.default_rng(seed).choice(n, size=hover_points, replace=False)] = True
    hover_rows = np.flatnonzero(hover)

    # One layer per colour: bare positions first, the hover points on top.
    layers = []
    for g, rows in enumerate(_by_group(np.flatnonzero(~hover), point_group, len(groups))):
        if rows.size:
            name = list(groups)[g]
            layers.append((name, palette[name], False, _json_pairs(grid[rows])))
    texts = (_short(points[Column.TEXT].iloc[hover_rows], text_chars) if Column.TEXT in points
             else [""] * len(hover_rows))
    position = np.full(n, -1, dtype=np.int64)
    position[hover_rows] = np.arange(len(hover_rows))
    has_ids = Column.SAMPLE_ID in points
    for g, rows in enumerate(_by_group(hover_rows, point_group, len(groups))):
        if rows.size:
            name = list(groups)[g]
            ids = points[Column.SAMPLE_ID].iloc[rows].astype(str).tolist() if has_ids else None
            layers.append((name, palette[name], True, _json_hover(
                grid[rows], [texts[i] for i in position[rows]], _names_at(label_codes, label_names, rows),
                _names_at(cluster_codes, cluster_names, rows), ids)))
    return DeckInfo(color_by=color_by, legend=legend, layers=tuple(layers),
                    origin=(float(origin[0]), float(origin[1])), scale=float(scale), n_points=n,
                    n_hover=len(hover_rows), n_clusters=n_clusters, has_labels=bool(has_labels),
                    has_ids=has_ids, centre=(float(span[0] / 2), float(span[1] / 2)),
                    digests=tuple(hashlib.sha1(layer[3].encode()).hexdigest() for layer in layers),
                    payload_bytes=sum(len(layer[3]) for layer in layers),
                    regions=_json_regions(grid[finite] if not every else grid))


def _rgb(colour: str, alpha: int = 200) -> list[int]:
    return [int(colour[i:i + 2], 16) for i in (1, 3, 5)] + [alpha]


def _radius(n: int) -> float:
    return 3.0 if n <= 50_000 else 2.0 if n <= 300_000 else 1.5


def deck(
    info: DeckInfo,
    *,
    query: Mapping[str, float | str] | None = None,
    cluster_labels: pd.DataFrame | None = None,
    height: int = 440,
    width: int = 480,
    key: str = "map",
    serve: Callable[[str, str, str], str | None] | None = None,
    regions: bool = False,
    selected_regions: Sequence[str] = (),
    highlight: np.ndarray | None = None,
):
    """The :class:`pydeck.Deck` of ``info``: one ScatterplotLayer per colour (hover
    layers pickable, tooltip with the sample's text, label, cluster and id), the query
    of a search as a ringed marker (``query``: x, y in map units and its ``text``), and
    cluster labels at ``cluster_labels``' x / y (``text`` column) as a TextLayer.
    height / width: the chart's size in pixels (width a guess: the column's), to fit the
    whole map in the first view.

    serve: ``serve(name, digest, json_text) -> url or None``: puts a layer's data where
    the browser can fetch it, so that the layer's ``data`` is that URL (deck.gl loads it
    with ``JSON.parse``) rather than part of the chart's JSON. Streamlit's frontend
    parses the chart's JSON with JSON5, a JavaScript parser measured at about 1 MB/s in
    headless Chromium here: a million points inline took a minute to appear. None (or a
    None answer) keeps the data inline.

    regions: draw the selectable regions over the points (selection mode: the pointer
    picks regions, not points); selected_regions: region keys outlined as selected;
    highlight: (m, 2) map positions of samples selected elsewhere, ringed in black."""
    import pydeck as pdk

    from latentscape.ui.charts import maps as _maps

    nonce = uuid.uuid4().hex
    payloads: dict[str, str] = {}

    class Spliced(pdk.Deck):  # kept out of the instance's __dict__, which pydeck serialises
        def to_json(self):
            return _splice(super().to_json(), payloads)

    radius = _radius(info.n_points)
    layers = []
    for i, (name, colour, pickable, data) in enumerate(info.layers):
        kind = "hover" if pickable else "bulk"
        url = serve(f"{key}-{kind}-{i}", info.digests[i] if i < len(info.digests) else "", data) if serve else None
        if url is None:
            url = f"__ls_data_{nonce}_{i}__"
            payloads[url] = data
        layers.append(pdk.Layer(
            "ScatterplotLayer", data=url, id=f"{key}-{kind}-{i}", get_position="p" if pickable else "-",
            get_fill_color=_rgb(colour), get_radius=radius, radius_units="'pixels'",
            # In selection mode only the regions are picked: a click is a tap only if picking
            # answers within 250 ms, and picking 25,000 points in software WebGL took longer.
            pickable=pickable and not regions,
            stroked=False, filled=True,
        ))
    if regions:  # over the points: in selection mode the pointer picks regions
        layers.append(pdk.Layer(
            "PolygonLayer", data=json.loads(info.regions), id=f"{key}-{REGIONS_LAYER}", get_polygon="g",
            get_fill_color=[120, 120, 120, 24], get_line_color=[255, 255, 255, 160], line_width_min_pixels=1,
            stroked=True, filled=True, pickable=True, auto_highlight=True, highlight_color=[0, 0, 0, 50],
        ))
    if selected_regions:
        chosen = set(selected_regions)
        rows = [row for row in json.loads(info.regions) if row["c"] in chosen]
        layers.append(pdk.Layer(
            "PolygonLayer", data=rows, id=f"{key}-selected-regions", get_polygon="g", get_fill_color=[0, 0, 0, 30],
            get_line_color=[0, 0, 0, 220], line_width_min_pixels=2, stroked=True, filled=True, pickable=False,
        ))
    if highlight is not None and len(highlight):
        on_grid = [[round(gx, 1), round(gy, 1)] for gx, gy in (info.to_grid(x, y) for x, y in np.asarray(highlight))]
        layers.append(pdk.Layer(
            "ScatterplotLayer", data=on_grid, id=f"{key}-highlight", get_position="-", get_fill_color=[0, 0, 0, 0],
            get_line_color=[0, 0, 0, 255], get_radius=radius + 2, radius_units="'pixels'", line_width_min_pixels=1.5,
            stroked=True, filled=False, pickable=False,
        ))
    # Fit the points' box into the chart (zoom is log2 of pixels per grid unit).
    span_x, span_y = max(2 * info.centre[0], 1.0), max(2 * info.centre[1], 1.0)
    pixels_per_unit = 0.9 * min(width / span_x, height / span_y)
    if cluster_labels is not None and not cluster_labels.empty:
        # Only the names that fit the first view without overlapping (largest cluster first);
        # the legend and the hover name every cluster.
        on_grid = pd.DataFrame([{Column.X: gx, Column.Y: gy, "text": str(t)} for x, y, t in zip(
            cluster_labels[Column.X], cluster_labels[Column.Y], cluster_labels["text"])
            if math.isfinite(float(x)) and math.isfinite(float(y)) for gx, gy in [info.to_grid(x, y)]],
            columns=[Column.X, Column.Y, "text"])
        half_w, half_h = width / 2 / pixels_per_unit, height / 2 / pixels_per_unit
        cx, cy = info.centre
        on_grid = _maps.placed_labels(on_grid, x_domain=(cx - half_w, cx + half_w), y_domain=(cy - half_h, cy + half_h),
                                      width_px=width, height_px=height, font_px=13)
        rows = [{"p": [x, y], "t": t} for x, y, t in zip(on_grid[Column.X], on_grid[Column.Y], on_grid["text"])]
        layers.append(pdk.Layer(
            "TextLayer", data=rows, id=f"{key}-cluster-labels", get_position="p", get_text="t", get_size=13,
            get_color=[30, 30, 30, 255], character_set="'auto'", font_weight=600, background=True,
            get_background_color=[255, 255, 255, 190], background_padding=[3, 1], pickable=False,
        ))
    if query is not None:
        qx, qy = info.to_grid(float(query[Column.X]), float(query[Column.Y]))
        row = {"p": [qx, qy], "t": f"query: {query.get('text', '')}", "l": "search", "k": "", "i": ""}
        layers.append(pdk.Layer(
            "ScatterplotLayer", data=[row], id=f"{key}-query", get_position="p", get_fill_color=[255, 255, 255, 255],
            get_line_color=[0, 0, 0, 255], get_radius=9, radius_units="'pixels'", line_width_min_pixels=3,
            stroked=True, filled=True, pickable=True,
        ))
    zoom = math.log2(pixels_per_unit)
    made = Spliced(
        layers=layers,
        views=[pdk.View(type="OrthographicView", controller=True, flip_y=False)],
        initial_view_state=pdk.ViewState(target=[*info.centre, 0], zoom=zoom, min_zoom=zoom - 2, max_zoom=zoom + 12),
        map_style=None, map_provider=None, height=height,
        # In selection mode only regions (and the query) are picked: their text says it all.
        tooltip={"text": "{t}" if regions else "{t}\n{l} · cluster {k}" + (" · {i}" if info.has_ids else ""),
                 "style": {"maxWidth": "420px", "whiteSpace": "normal", "fontSize": "12px"}},
    )
    return made


def _splice(base: str, payloads: Mapping[str, str]) -> str:
    """``base`` with every quoted placeholder token replaced by its JSON text (one pass)."""
    parts = _TOKEN.split(base)
    # re.split with one group: text, token, text, token, ..., text
    return "".join(payloads.get(part, json.dumps(part)) if i % 2 else part for i, part in enumerate(parts))


def deck_json(info: DeckInfo, **kwargs) -> str:
    """The JSON Streamlit sends for ``deck(info, **kwargs)`` (what the benchmark times)."""
    return deck(info, **kwargs).to_json()
