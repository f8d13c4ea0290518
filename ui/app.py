"""latentscape's Streamlit app: ``streamlit run ui/app.py`` (``latentscape ui`` does it).

The entry point is a frame around the pages: page config, navigation, and the sidebar
with the catalog's refresh button. Pages live in ``ui/views/``, one per question.
The tracking store is ``$MLFLOW_TRACKING_URI`` (default ``./mlflow.db``); the DuckDB
catalog ``$LATENTSCAPE_CATALOG`` (default beside the store).
"""

from __future__ import annotations

import time

import streamlit as st

from latentscape.tracking.errors import UsageError
from latentscape.ui import data
from latentscape.ui.routes import ROUTES

st.set_page_config(page_title="latentscape", page_icon=":material/layers:", layout="wide")

pages = [st.Page(route.path, title=route.title, icon=route.icon, url_path=route.url_path, default=(i == 0))
         for i, route in enumerate(ROUTES)]
page = st.navigation(pages)
try:
    data.begin_rerun()  # one catalog cursor for everything this rerun reads
except UsageError as error:  # e.g. the catalog's folder does not exist
    st.error(f"Cannot open the run catalog: {error}", icon=":material/error:")
    st.stop()

with st.sidebar:
    # A new browser session sees runs logged since the catalog was last synced.
    if not st.session_state.get("_synced_this_session"):
        data.ensure_fresh()
        st.session_state["_synced_this_session"] = True
    if st.button("Refresh", icon=":material/refresh:", help="sync the catalog with MLflow: new, changed and "
                 "deleted runs", key="refresh", width="stretch"):
        stats = data.refresh()
        st.toast(f"catalog synced: {stats.new} new, {stats.changed} changed, {stats.deleted} deleted runs "
                 f"in {stats.seconds:.2f} s")
    status = data.last_refresh()
    st.caption(f"store `{status.tracking_uri}`  \nsynced {time.strftime('%H:%M:%S', time.localtime(status.synced_at))}")

page.run()
