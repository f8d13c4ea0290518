"""Small Streamlit pieces shared by the pages: empty states and links between pages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import streamlit as st

from ui.routes import Route

__all__ = ["empty_state", "page_header", "link"]


def page_header(route: Route) -> None:
    st.title(route.title)
    st.caption(route.question[0].upper() + route.question[1:])


def empty_state(problem: str, commands: Sequence[str], *,
                after: str = "then press **Refresh** in the sidebar.") -> None:
    """What is missing and the command(s) that make it, ready to copy."""
    st.info(f"{problem} Run:", icon=":material/info:")
    st.code("\n".join(commands), language="bash")
    st.caption(after[0].upper() + after[1:])


def link(route: Route, label: str, params: Mapping[str, str | Sequence[str]] | None = None, *,
         icon: str | None = None, container=st) -> None:
    """A link to another page that opens it with ``params`` in its URL."""
    query = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in (params or {}).items()}
    container.page_link(route.path, label=label, icon=icon or route.icon, query_params=query or None)
