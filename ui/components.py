"""Small Streamlit pieces shared by the pages: empty states and links between pages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import streamlit as st

import pandas as pd

from latentscape.tracking.contract import CatalogColumn as C
from latentscape.tracking.contract import Kind
from latentscape.ui import data, labels
from latentscape.ui.routes import Route

__all__ = ["empty_state", "syncing_state", "page_header", "link", "served_json", "run_names"]


_WITH_METHOD = (Kind.MAP.value, Kind.SWEEP.value)


def run_names(runs: pd.DataFrame, *, with_method: bool = False) -> dict[str, str]:
    """run_id -> the run's name for people (:func:`labels.run_label`), every run of the
    store at hand to name a fine-tuning's base model; ``with_method`` reads the params of
    the maps and sweeps among them (their reducer and clusterer; a sweep's many trials are
    named by their number, not read)."""
    if runs is None or runs.empty:
        return {}
    with_params = runs[runs[C.KIND].isin(_WITH_METHOD)][C.RUN_ID] if with_method else ()
    details = data.run_table(tuple(with_params)) if len(with_params) else None
    return labels.run_labels(runs, details, others=data.runs())


def page_header(route: Route) -> None:
    st.title(route.title)
    st.caption(route.question[0].upper() + route.question[1:])


def empty_state(problem: str, commands: Sequence[str], *,
                after: str = "then press **Refresh** in the sidebar.") -> None:
    """What is missing and the command(s) that make it, ready to copy; or, while the
    catalog's first sync runs, that it is syncing (the page is empty because of that)."""
    if syncing_state():
        return
    st.info(f"{problem} Run:", icon=":material/info:")
    st.code("\n".join(commands), language="bash")
    st.caption(after[0].upper() + after[1:])


def syncing_state() -> bool:
    """Say why the page is empty when the catalog was never synced: its first sync is
    running (a first open of a store), or it failed. True when it said so."""
    status = data.sync_status()
    if status.synced_at is not None:
        return False
    if status.first_sync:
        st.info(f"Syncing the runs from MLflow into the catalog for the first time"
                f"{': ' + status.progress if status.progress else ''}… This page fills in when it is done.",
                icon=":material/sync:")
        return True
    if status.error:
        st.warning("No runs to show: the catalog was never synced, and its sync failed (see the sidebar).",
                   icon=":material/sync_problem:")
        return True
    return False


def link(route: Route, label: str, params: Mapping[str, str | Sequence[str]] | None = None, *,
         icon: str | None = None, container=st) -> None:
    """A link to another page that opens it with ``params`` in its URL."""
    query = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in (params or {}).items()}
    container.page_link(route.path, label=label, icon=icon or route.icon, query_params=query or None)


def served_json(name: str, digest: str, text: str) -> str | None:
    """A URL of this app's server from which the browser fetches ``text`` as JSON, or
    None where there is no Streamlit runtime (a bare script).

    Streamlit's media file store keeps the file while the element that added it is on the
    page (dropped after a rerun that no longer adds it), as it does for ``st.image``.
    ``name`` is the element's place (one file per name and session); ``digest`` names
    the content, as the store itself identifies files over 1 MiB by a sample of their
    bytes only. Uses ``streamlit.runtime``'s media file manager (not a public API: the
    one place the app relies on Streamlit's internals)."""
    from streamlit import runtime

    if not runtime.exists():
        return None
    url = runtime.get_instance().media_file_mgr.add(
        text.encode(), "application/json", f"latentscape.{name}", file_name=f"{digest or name}.json")
    base = (st.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}{url}" if base else url
