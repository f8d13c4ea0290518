"""The app end to end in headless Chromium (Debian's ``chromium``, driven by Playwright;
no browser download): ``streamlit run`` as ``latentscape ui`` starts it, on the runs of
tests/test_ui_app.py. Every page renders its charts with no exception shown; a box
dragged on a map becomes part of the URL, and opening that URL in a new browser shows
the same runs, colouring and selection; a map of 100,000 points is drawn by deck.gl
and answers the pointer (hover tooltip, zoom) without an error. A screenshot of each
page goes to ``test-artifacts/``.
"""

from __future__ import annotations

import importlib.util
import math
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# A chart is drawn when vega-embed has put its SVG (or canvas) into the chart element.
DRAWN = "[data-testid='stVegaLiteChart'].vega-embed > :is(svg, canvas)"
PAGES = {
    # url path: (title, query builder, minimum charts)
    "": ("Overview", lambda runs: {}, 2),
    "layers": ("Layers", lambda runs: {"run": runs.text}, 2),
    "maps": ("Maps", lambda runs: {"run": runs.maps}, 2),
    "sweeps": ("Sweeps", lambda runs: {"run": runs.sweep}, 4),
    "interpolation": ("Interpolation", lambda runs: {"run": [*runs.interpolations[:1], runs.digits_interpolation],
                                                     "analogy": runs.analogies}, 5),
    "directions": ("Directions", lambda runs: {"run": runs.directions}, 2),
    "compare": ("Compare", lambda runs: {"run": runs.maps or [runs.text, runs.digits]}, 1),
}

if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (`apt-get install -y chromium`, or `make browser`)",
                allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")


def _app_tests():
    """tests/test_ui_app.py, for the runs it builds (once per session and store)."""
    spec = importlib.util.spec_from_file_location("_ui_app_tests", Path(__file__).with_name("test_ui_app.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ui_runs(text_extraction, digits_extraction):
    return _app_tests().build_ui_runs(text_extraction, digits_extraction)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}: {process.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url}/_stcore/health did not answer ok within {timeout} s")


BIG_MAP_POINTS = 100_000


def big_map_frame(n: int, *, seed: int = 0):
    """``n`` points: 30% in a dense blob at the middle of the map (so the middle of the
    chart always holds points to hover), the rest in eight blobs around it."""
    import numpy as np
    import pandas as pd

    from latentscape.tracking.contract import Column

    rng = np.random.default_rng(seed)
    blob = np.where(rng.random(n) < 0.3, 0, rng.integers(1, 9, size=n))
    angle = blob * np.pi / 4
    centre = np.where(blob[:, None] == 0, 0.0, np.column_stack([np.cos(angle), np.sin(angle)]) * 10)
    xy = centre + rng.normal(scale=np.where(blob == 0, 0.3, 1.0)[:, None], size=(n, 2))
    topics = np.array(["soup simmered with onions", "rain and wind tomorrow", "interest rates rose",
                       "the band played an encore", "a rocket reached orbit", "seedlings in warm soil",
                       "a cheap flight to Lyon", "the compiler got faster", "a goal in the last minute"])
    return pd.DataFrame({
        Column.SAMPLE_ID: [f"big-{i:06d}" for i in range(n)], Column.X: xy[:, 0].astype(np.float32),
        Column.Y: xy[:, 1].astype(np.float32), Column.CLUSTER: blob.astype(np.int64),
        Column.LABEL: [f"topic {b}" for b in blob], Column.TEXT: [f"sentence {i}: {topics[b]}" for i, b in
                                                                  enumerate(blob)],
    })


@pytest.fixture(scope="module")
def big_map(ui_runs) -> str:
    """A finished map run of BIG_MAP_POINTS points (and its clusters table), logged
    beside the UI runs before the server starts (so its first catalog sync sees it)."""
    from latentscape.tracking.contract import Artifact, Column, Kind, Param, Tag
    from latentscape.tracking.run_log import tracked_run
    from latentscape.tracking.runs import open_store

    store = open_store(ui_runs.tracking_uri)
    frame = big_map_frame(BIG_MAP_POINTS)
    centres = frame.groupby(Column.CLUSTER)[[Column.X, Column.Y]].median().reset_index()
    clusters = centres.assign(**{Column.NOISE: False, Column.KEYWORDS: [[f"topic {c}"] for c in centres[Column.CLUSTER]]})
    with tracked_run(store, store.experiment_id("ui-browser-big"), Kind.MAP, run_name="map of 100k points",
                     source_run_id=ui_runs.text, tags={Tag.LAYER: 6}) as log:
        log.params({Param.LAYER: 6, Param.REDUCER: "umap", Param.CLUSTERER: "hdbscan"})
        log.table(Artifact.MAP, frame)
        log.table(Artifact.CLUSTERS, clusters)
        return log.run_id


@pytest.fixture(scope="module")
def fine_tuning(ui_runs, tiny_bert) -> str:
    """A fine-tuning of the tiny BERT on demo (two checkpoints, extracted and compared),
    logged beside the UI runs before the server starts: the Training page and the
    checkpoints' names have something to show."""
    from latentscape.jobs.finetune import FinetuneConfig, finetune
    from latentscape.tracking.runs import open_store

    config = FinetuneConfig(model=str(tiny_bert), data="demo", limit=200, holdout=0.3, epochs=1, checkpoints=2,
                            batch_size=16, max_length=32, learning_rate=1e-3)
    return finetune(config, store=open_store(ui_runs.tracking_uri), experiment="ui-browser-finetune").run_id


def _served(tracking_uri: str, catalog: Path):
    """``streamlit run ui/app.py --server.headless true`` on a free port, as `latentscape ui` runs it."""
    from latentscape.jobs.serve import ui_command, ui_environment

    port = _free_port()
    process = subprocess.Popen(ui_command(port=port, address="127.0.0.1"), cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=ui_environment(tracking_uri=tracking_uri, catalog=catalog))
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(ui_runs, big_map, fine_tuning, tmp_path_factory):
    yield from _served(ui_runs.tracking_uri, tmp_path_factory.mktemp("ui-browser") / "catalog.duckdb")


PAIR_POINTS = 25_000


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory) -> tuple[str, str, str]:
    """(store URI, map A, map B): two maps of the same PAIR_POINTS samples (B is A turned a
    quarter and mirrored), both above the deck.gl threshold, on a store of their own."""
    from latentscape.tracking.contract import Artifact, Column, Kind, Param, Tag
    from latentscape.tracking.run_log import tracked_run
    from latentscape.tracking.runs import open_store

    uri = f"sqlite:///{tmp_path_factory.mktemp('ui-browser-pair') / 'mlflow.db'}"
    store = open_store(uri)
    frame = big_map_frame(PAIR_POINTS, seed=1)
    turned = frame.assign(**{Column.X: frame[Column.Y], Column.Y: frame[Column.X]})
    ids = []
    for name, points in (("big map A", frame), ("big map B", turned)):
        with tracked_run(store, store.experiment_id("ui-browser-pair"), Kind.MAP, run_name=name,
                         tags={Tag.LAYER: 6}) as log:
            log.params({Param.LAYER: 6, Param.REDUCER: "umap", Param.CLUSTERER: "hdbscan"})
            log.table(Artifact.MAP, points)
            ids.append(log.run_id)
    return uri, ids[0], ids[1]


@pytest.fixture(scope="module")
def pair_server(big_pair, tmp_path_factory):
    yield from _served(big_pair[0], tmp_path_factory.mktemp("ui-browser-pair-app") / "catalog.duckdb")


@pytest.fixture(scope="module")
def chromium_browser():
    # Our own names (not pytest-playwright's `browser`/`page`): launched from Debian's chromium.
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def tab(chromium_browser):
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    yield opened
    context.close()


def _query(params: dict) -> str:
    from urllib.parse import urlencode

    clean = {k: v for k, v in params.items() if v}
    return ("?" + urlencode(clean, doseq=True)) if clean else ""


def open_app(page, url: str, title: str, *, charts: int = 0, timeout_ms: int = 90_000) -> None:
    """Open ``url`` and wait for the app, the page's title and ``charts`` drawn charts."""
    page.goto(url)
    page.get_by_test_id("stAppViewContainer").wait_for(timeout=timeout_ms)
    page.get_by_test_id("stMain").get_by_role("heading", name=title, exact=True).wait_for(timeout=timeout_ms)
    # Waited for as long as the page moves on (the catalog's sync progress, charts being
    # drawn): a busy machine makes this slower, never red; it fails once the page stood
    # still for timeout_ms.
    seen, still_since = None, time.monotonic()
    while time.monotonic() - still_since < timeout_ms / 1000:
        running = page.get_by_test_id("stStatusWidget").count() > 0
        skeletons = page.get_by_test_id("stSkeleton").count()
        drawn = page.locator(DRAWN).count()
        if not running and not skeletons and drawn >= charts:
            return
        now = (drawn, page.get_by_test_id("stMain").inner_text())
        if now != seen:
            seen, still_since = now, time.monotonic()
        page.wait_for_timeout(250)
    raise AssertionError(f"{url}: {page.locator(DRAWN).count()} charts drawn, expected {charts}, "
                         f"and the page stood still for {timeout_ms / 1000:.0f} s")


def follow_link(page, link, title: str, *, timeout_s: float = 120) -> None:
    """Click ``link`` and wait for the page ``title``. On a loaded CI run one click on a page
    link was lost: the URL stayed on the old page for 60 s. So while the URL has not moved
    the link is clicked again every 10 s, never once the new page is loading (following a
    link twice opens the same page, unlike a second click on a map region)."""
    before = page.url
    heading = page.get_by_test_id("stMain").get_by_role("heading", name=title, exact=True)
    deadline = time.monotonic() + timeout_s
    link.click()
    while time.monotonic() < deadline:
        try:
            heading.wait_for(timeout=10_000)
            return
        except playwright_api.TimeoutError:
            if page.url == before and link.count():
                link.click()
    heading.wait_for(timeout=1_000)  # fails with Playwright's own message


def screenshot(page, name: str) -> Path:
    """The whole page (the app scrolls inside its main block, so grow the viewport to it)."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": max(800, min(int(height) + 40, 8000))})
    page.wait_for_timeout(600)  # charts re-layout to the new size
    target = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(target))
    return target


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_renders_its_charts_without_an_exception(server, tab, ui_runs, path):
    title, query, minimum = PAGES[path]
    open_app(tab, f"{server}/{path}{_query(query(ui_runs))}", title, charts=minimum)
    assert tab.get_by_test_id("stException").count() == 0
    assert tab.locator(DRAWN).count() >= minimum
    shot = screenshot(tab, path or "overview")
    assert shot.stat().st_size > 10_000


def test_the_sidebar_reaches_every_page(server, tab):
    open_app(tab, server, "Overview", charts=1)
    for title, *_ in list(PAGES.values())[1:]:
        follow_link(tab, tab.get_by_test_id("stSidebarNav").get_by_role("link", name=title), title)
        assert tab.get_by_test_id("stException").count() == 0


def _drag_box(page, chart, fraction=(0.2, 0.2, 0.8, 0.8)) -> None:
    """Drag a box over the middle of the chart's plotting area (Vega's view background)."""
    box = chart.locator("svg g.role-frame.root > g > path.background").first.bounding_box()
    x0, y0 = box["x"] + box["width"] * fraction[0], box["y"] + box["height"] * fraction[1]
    x1, y1 = box["x"] + box["width"] * fraction[2], box["y"] + box["height"] * fraction[3]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()


def _selected_count(page) -> int:
    caption = page.get_by_text(re.compile(r"^[\d,]+ samples in the box on "))
    caption.wait_for(timeout=60_000)
    return int(caption.inner_text().split()[0].replace(",", ""))


def test_a_box_selection_is_a_shareable_link(server, chromium_browser, tab, ui_runs):
    url = f"{server}/maps{_query({'run': ui_runs.maps, 'color': 'cluster'})}"
    open_app(tab, url, "Maps", charts=2)
    charts = tab.get_by_test_id("stVegaLiteChart")
    _drag_box(tab, charts.nth(0))
    tab.wait_for_url(re.compile(r"[?&]box="), timeout=60_000)
    count = _selected_count(tab)
    assert 0 < count <= ui_runs.n_text
    shared = tab.url
    assert f"sel={ui_runs.maps[0]}" in shared and "color=cluster" in shared
    assert all(f"run={run_id}" in shared for run_id in ui_runs.maps)
    screenshot(tab, "maps-selection")

    # Someone else opens the link: same maps, same colouring, same samples listed.
    other = chromium_browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    try:
        open_app(other, shared, "Maps", charts=2)
        assert _selected_count(other) == count
        assert other.get_by_test_id("stRadio").get_by_role("radio", name="cluster").is_checked()
        chips = other.get_by_test_id("stMultiSelect").first.inner_text()
        assert all(run_id[:8] in chips for run_id in ui_runs.maps)
        assert other.get_by_test_id("stException").count() == 0
    finally:
        other.context.close()


def test_the_best_trials_map_is_one_click_from_the_sweep(server, tab, ui_runs):
    open_app(tab, f"{server}/sweeps{_query({'run': ui_runs.sweep})}", "Sweeps", charts=4)
    follow_link(tab, tab.get_by_role("link", name="Best trial's map"), "Maps")
    tab.wait_for_url(re.compile(rf"/maps\?.*run={ui_runs.sweep}"), timeout=60_000)
    deadline = time.monotonic() + 60
    while tab.locator(DRAWN).count() < 1 and time.monotonic() < deadline:
        tab.wait_for_timeout(250)
    assert tab.locator(DRAWN).count() >= 1
    assert tab.get_by_test_id("stException").count() == 0


def test_a_100k_point_map_is_drawn_by_deck_gl_and_hovers_without_an_error(server, tab, big_map):
    open_app(tab, f"{server}/maps{_query({'run': big_map})}", "Maps")
    deck = tab.get_by_test_id("stDeckGlJsonChart")
    deck.wait_for(timeout=90_000)
    canvas = deck.locator("canvas").first
    canvas.wait_for(timeout=60_000)
    assert tab.locator(DRAWN).count() == 0, "no Vega-Lite chart for a map this large"
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2  # the dense blob is in the middle
    tooltip = tab.locator(".deck-tooltip")
    shown = ""
    deadline = time.monotonic() + 60
    step = 0
    while time.monotonic() < deadline and not shown:  # deck.gl draws a moment after the element mounts
        dx, dy = ((step % 5) - 2) * 3, ((step // 5 % 5) - 2) * 3
        tab.mouse.move(cx + dx, cy + dy)
        tab.wait_for_timeout(250)
        if tooltip.count() and tooltip.first.is_visible():
            shown = tooltip.first.inner_text()
        step += 1
    assert shown.startswith("sentence "), f"no tooltip with a sample's text: {shown!r}"
    # The tooltip is the hovered sample's own: its text, label and id agree with the data.
    # (Which sample lies under the pointer depends on how far deck.gl has fitted its view
    # when the pointer arrives: on a loaded machine it was once a sample of another blob.)
    from latentscape.tracking.contract import Column

    hovered = re.search(r"big-(\d{6})", shown)
    assert hovered, f"no sample id in the tooltip: {shown!r}"
    row = big_map_frame(BIG_MAP_POINTS).iloc[int(hovered.group(1))]
    assert shown.startswith(row[Column.TEXT]) and row[Column.LABEL] in shown, (shown, dict(row))
    screenshot(tab, "maps-100k")
    # Zoom in (one wheel turn): still no error. (Each redraw of 100,000 points takes seconds
    # in software WebGL, so the test stops at one.)
    tab.mouse.move(cx, cy)
    tab.mouse.wheel(0, -400)
    tab.wait_for_timeout(500)
    assert tab.get_by_test_id("stException").count() == 0
    caption = tab.get_by_text(re.compile(r"100,000 points drawn by deck.gl"))
    assert caption.count() == 1


def _idle(page, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while page.get_by_test_id("stStatusWidget").count() and time.monotonic() < deadline:
        page.wait_for_timeout(250)


def _listed_after_clicking(page, listed, x: float, y: float, timeout_s: float = 240) -> int:
    """Click a region and return the sample count the page lists for the selection.

    On a busy machine software WebGL can pick so slowly that deck.gl drops a click, or
    delivers it many seconds late. A second click on the same region deselects it
    (multi-object mode), so click again only after 30 s with the app idle and nothing
    listed, and read the count only while the app is idle (a late click's rerun can
    replace the listed text while it is being read)."""
    deadline, clicked_at = time.monotonic() + timeout_s, -math.inf
    while time.monotonic() < deadline:
        _idle(page)
        if listed.count() and listed.first.is_visible():
            try:
                return int(listed.first.inner_text(timeout=2000).split()[0].replace(",", ""))
            except playwright_api.TimeoutError:
                continue  # replaced by a rerun between the check and the read
        if time.monotonic() - clicked_at > 30:
            page.mouse.click(x, y)
            clicked_at = time.monotonic()
        page.wait_for_timeout(500)
    raise AssertionError(f"no selection listed {timeout_s:.0f} s after clicking a region")


def test_regions_selected_on_a_large_map_are_listed_and_ringed_in_a_second_one(pair_server, tab, big_pair):
    # Streamlit's deck.gl chart selects objects by clicking them (no box or lasso): in
    # "Select regions" mode a map's regions are those objects.
    _, first, second = big_pair
    open_app(tab, f"{pair_server}/maps{_query({'run': [first, second]})}", "Maps")
    decks = tab.get_by_test_id("stDeckGlJsonChart")
    decks.nth(1).locator("canvas").first.wait_for(timeout=90_000)
    _idle(tab)
    tab.wait_for_timeout(1500)  # deck.gl draws its points a moment after the canvas mounts
    assert tab.locator(DRAWN).count() == 0, "both maps drawn by deck.gl"
    other_before = decks.nth(1).locator("canvas").first.screenshot()

    tab.get_by_text("Select regions", exact=True).click()
    _idle(tab)
    tab.wait_for_timeout(1000)
    canvas = decks.nth(0).locator("canvas").first
    box = canvas.bounding_box()
    # The dense blob is in the middle, on a region's edge: aim half a region (~16 px) inside one.
    tx, ty = box["x"] + box["width"] / 2 - 6, box["y"] + box["height"] / 2 - 8
    tooltip, shown = tab.locator(".deck-tooltip"), ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not shown.startswith("a region of"):
        tab.mouse.move(tx + 3, ty)
        tab.mouse.move(tx, ty)
        tab.wait_for_timeout(500)
        shown = tooltip.first.inner_text() if tooltip.count() and tooltip.first.is_visible() else ""
    region = re.match(r"a region of ([\d,]+) points?", shown)
    assert region, f"no region under the pointer in selection mode: {shown!r}"
    expected = int(region.group(1).replace(",", ""))
    assert 0 < expected < PAIR_POINTS
    listed = tab.get_by_text(re.compile(r"^[\d,]+ samples in the chosen regions and points on "))
    assert _listed_after_clicking(tab, listed, tx, ty) == expected
    ringed = tab.get_by_text(re.compile(rf"{expected:,} selected samples ringed"))
    ringed.wait_for(timeout=90_000)  # the second map's caption: the same samples drawn ringed there
    _idle(tab)
    tab.wait_for_timeout(1500)
    assert decks.nth(1).locator("canvas").first.screenshot() != other_before, "the second map shows the rings"
    assert tab.get_by_test_id("stDataFrame").count() >= 1 and tab.get_by_test_id("stException").count() == 0
    screenshot(tab, "maps-regions")


# Every page in the sidebar, and how many charts it draws at least on these runs.
SIDEBAR_PAGES = {"Overview": 2, "Layers": 2, "Maps": 1, "Sweeps": 4, "Interpolation": 1, "Directions": 2,
                 "Features": 1, "Training": 2, "Compare": 0}


def _settled(page, minimum: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline and quiet < 3:  # ~0.75 s with nothing running or loading
        busy = page.get_by_test_id("stStatusWidget").count() + page.get_by_test_id("stSkeleton").count()
        quiet = 0 if busy or page.locator(DRAWN).count() < minimum else quiet + 1
        page.wait_for_timeout(250)


def test_every_page_has_no_console_error_and_no_request_off_this_host(server, chromium_browser, ui_runs):
    """One browser session walks the sidebar through every page (opened at the app's root,
    as a user does) on the UI runs plus a sparse autoencoder and a fine-tuning: no console
    error, no failed request, and no request to any host but the app's (icons, fonts and
    favicon are shipped with the app: it works offline)."""
    from urllib.parse import urlparse

    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors, failed, external = [], [], []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.on("response", lambda response: response.status >= 400 and failed.append(f"{response.status} {response.url}"))
    page.on("request", lambda request: urlparse(request.url).hostname not in ("127.0.0.1", None)
            and not request.url.startswith("data:") and external.append(request.url))
    try:
        open_app(page, server, "Overview", charts=2)
        for title, minimum in SIDEBAR_PAGES.items():
            if title != "Overview":
                follow_link(page, page.get_by_test_id("stSidebarNav").get_by_role("link", name=title), title)
            _settled(page, minimum)
            assert page.get_by_test_id("stException").count() == 0, title
            assert page.locator(DRAWN).count() >= minimum, title
            assert not errors and not failed and not external, (title, errors, failed, external)
    finally:
        context.close()
