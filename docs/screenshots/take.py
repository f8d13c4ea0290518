"""Take the README's screenshots of the app on a store (e.g. one made by ``latentscape demo``).

    python docs/screenshots/take.py sqlite:///mlflow.db [page ...]

Starts the app as ``latentscape ui`` does (on a free port, a fresh catalog), opens each
page in headless Chromium (Debian's ``chromium``, through Playwright) at 1400 px wide,
waits for its charts, and writes ``docs/screenshots/<page>.png``. Prints any console
error and any request to a host other than the app's, so a screenshot never hides one.
Pages: overview, layers, maps, compare (default: all four), each optionally with its
link's query, e.g. ``layers?run=RUN_ID``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
PAGES = {"overview": "", "layers": "layers", "maps": "maps", "compare": "compare"}
CHART = "[data-testid='stVegaLiteChart'].vega-embed > :is(svg, canvas)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the app exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.read().decode().strip() == "ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def _settle(page, *, timeout_s: float = 90) -> None:
    page.get_by_test_id("stAppViewContainer").wait_for(timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline and quiet < 4:  # a second with nothing running or loading
        busy = (page.get_by_test_id("stStatusWidget").count() + page.get_by_test_id("stSkeleton").count()
                + page.get_by_text("Syncing the runs from MLflow").count())
        quiet = 0 if busy else quiet + 1
        page.wait_for_timeout(250)


def _shrink(path: Path) -> None:
    """256 colours, no dithering: a UI screenshot stays sharp at a third of the bytes."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def main(tracking_uri: str, names: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    from latentscape.jobs.serve import ui_command, ui_environment

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as folder:
        process = subprocess.Popen(ui_command(port=port, address="127.0.0.1"), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL,
                                   env=ui_environment(tracking_uri=tracking_uri, catalog=Path(folder) / "c.duckdb"))
        problems = 0
        try:
            _wait(url, process)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), headless=True)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("console", lambda m: m.type == "error" and print(f"console error: {m.text}"))
                page.on("response", lambda r: r.status >= 400 and print(f"HTTP {r.status}: {r.url}"))
                page.on("request", lambda r: urlparse(r.url).hostname not in ("127.0.0.1", None)
                        and print(f"external request: {r.url}"))
                for asked in names:
                    name, _, query = asked.partition("?")
                    page.goto(f"{url}/{PAGES[name]}" + (f"?{query}" if query else ""))
                    _settle(page)
                    page.wait_for_timeout(1500)  # the catalog's first sync reruns the page
                    _settle(page)
                    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
                    page.set_viewport_size({"width": 1400, "height": max(800, min(int(height) + 40, 4000))})
                    page.wait_for_timeout(800)
                    target = HERE / f"{name}.png"
                    page.screenshot(path=str(target))
                    _shrink(target)
                    print(f"{target}: {target.stat().st_size // 1024} KiB, {page.locator(CHART).count()} charts")
                    page.set_viewport_size({"width": 1400, "height": 1000})
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=15)
    return problems


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:] or list(PAGES)))
