"""``python -m latentscape.ui run ui/app.py [streamlit options]``: ``streamlit run`` with the
libraries every page needs imported before the server listens.

Streamlit imports a page's libraries on the first script run, after a browser opened the
URL: about 2 s of pandas, altair, duckdb and pyarrow (measured in the app's first open,
bench/app_open.py). Imported here they are paid while the server starts, once per process.
"""

from __future__ import annotations

import importlib
import sys

# What the app and its pages import on their first run. Not the modules with st.cache_*
# (latentscape.ui.data): decorated before Streamlit's runtime exists, their caches would
# fall back to a storage of their own.
WARM = ("pandas", "pyarrow", "duckdb", "altair", "latentscape.tracking.catalog", "latentscape.tracking.queries",
        "latentscape.ui.charts.maps", "latentscape.ui.charts.layers", "latentscape.ui.charts.overview")


def main() -> None:
    for name in WARM:
        importlib.import_module(name)
    from streamlit.web.cli import main as streamlit_main

    sys.argv[0] = "streamlit"
    streamlit_main()


if __name__ == "__main__":
    main()
