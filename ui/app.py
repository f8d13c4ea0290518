"""latentscape's Streamlit app: ``streamlit run ui/app.py`` (``latentscape ui`` does it).

The entry point is a frame around the pages: page config, navigation, and the sidebar
with the catalog's sync status and refresh button. Pages live in ``ui/views/``, one per
question. The tracking store is ``$MLFLOW_TRACKING_URI`` (default ``./mlflow.db``); the
DuckDB catalog ``$LATENTSCAPE_CATALOG`` (default beside the store).

On a tracking server (``http(s)://``) the app first asks who you are
(``latentscape.ui.auth``): nothing of the store, not even the sidebar's sync status, is
drawn before a login, and every read is bound to the experiments that login may read.

Pages draw at once from what the catalog holds; the sync with MLflow runs in the
background (``latentscape.ui.data``), and the sidebar polls it while it runs and reruns
the app when it is done.
"""

from __future__ import annotations

import time

import streamlit as st

from latentscape.tracking.errors import UsageError
from latentscape.ui import auth, data
from latentscape.ui.routes import ROUTES

_POLL_S = 1.0  # how often a session looks whether a running sync has finished
_SEEN = "_sync_generation"  # the catalog syncs this session's last rerun knew of

# An emoji favicon is drawn in the page (an SVG data URL); a ":material/..." one is fetched from
# fonts.gstatic.com, which fails offline and calls out when online.
st.set_page_config(page_title="latentscape", page_icon="🗺️", layout="wide")

if auth.host_refused():  # the launcher refuses it first; this covers a plain `streamlit run`
    st.error("This address is not one the app answers on: see `latentscape ui --allowed-hosts`.")
    st.stop()

pages = [st.Page(route.path, title=route.title, icon=route.icon, url_path=route.url_path, default=(i == 0))
         for i, route in enumerate(ROUTES)]
try:
    allowed_in = auth.logged_in()
except UsageError as error:  # e.g. the catalog's folder does not exist
    st.error(f"Cannot open the run catalog: {error}", icon=":material/error:")
    st.stop()
# The pages' routes exist before the login, so that a direct link opens its page after it.
page = st.navigation(pages, position="sidebar" if allowed_in else "hidden")
auth.require_login()  # a shared store: the login form and nothing else until the visitor logs in
try:
    # Read the generation before the cursor: a sync that ends in between makes the
    # sidebar rerun the app, rather than leaving answers of the older file cached.
    generation = data.sync_status().generation
    if st.session_state.get(_SEEN, generation) != generation:
        data.clear_cache()  # a sync finished since this session's last rerun
    st.session_state[_SEEN] = generation
    data.begin_rerun()  # one catalog cursor for everything this rerun reads
except UsageError as error:  # e.g. the catalog's folder does not exist
    st.error(f"Cannot open the run catalog: {error}", icon=":material/error:")
    st.stop()


def _synced_caption(status: data.CatalogStatus) -> str:
    when = "never" if status.synced_at is None else time.strftime("%H:%M:%S", time.localtime(status.synced_at))
    text = f"store `{status.tracking_uri}`  \nsynced {when}"
    if status.last is not None and not status.syncing:
        last = status.last
        text += f" ({last.new} new, {last.changed} changed, {last.deleted} deleted runs in {last.seconds:.1f} s)"
    return text


def _sync_state() -> None:
    """The catalog's state; while a sync runs, polled until it finishes, then the app reruns."""
    status = data.sync_status()
    if status.generation != st.session_state.get(_SEEN, status.generation):
        st.rerun(scope="app")
    if status.syncing:
        st.caption(f":material/sync: syncing with MLflow… {status.progress or ''}")
    elif status.error:
        st.error(f"Catalog sync failed: {status.error}", icon=":material/error:")
    st.caption(_synced_caption(status))


def _sidebar() -> None:
    auth.logout_button()
    # A new browser session sees runs logged since the catalog was last synced.
    if not st.session_state.get("_synced_this_session"):
        data.ensure_fresh()
        st.session_state["_synced_this_session"] = True
    if st.button("Refresh", icon=":material/refresh:", help="sync the catalog with MLflow: new, changed and "
                 "deleted runs", key="refresh", width="stretch"):
        if not data.start_sync():
            st.toast("a sync is already running: the page updates when it is done")
    # Polled only while a sync runs (decided here, after this rerun may have started one).
    st.fragment(_sync_state, run_every=_POLL_S if data.sync_status().syncing else None)()


try:
    page.run()
finally:
    # After the page: a sync started here (its MLflow import and reads) does not slow
    # the page's first draw down (measured: first script run 3.0 s alone, 4.3 s beside a sync).
    with st.sidebar:
        _sidebar()
