"""Shareable views: each page reads its settings from the URL (``st.query_params``) and
writes them back, so a copied link opens the same runs and settings.

Widgets keep their own state between reruns; the URL seeds them on the first run of a
page (a shared link, or a link from another page) and mirrors them afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import streamlit as st

__all__ = ["url_list", "url_value", "publish", "pick_runs", "pick_run", "pick_option", "widget_key"]


def widget_key(page: str, key: str) -> str:
    """Session-state key of a page's widget (its URL key is the plain ``key``)."""
    return f"{page}.{key}"


def url_list(key: str) -> list[str]:
    """Every value of ``key`` in the URL (``?run=a&run=b`` or ``?run=a,b``)."""
    values: list[str] = []
    for value in st.query_params.get_all(key):
        values.extend(part for part in str(value).split(",") if part)
    return values


def url_value(key: str, default: str | None = None) -> str | None:
    values = st.query_params.get_all(key)
    return str(values[-1]) if values and values[-1] != "" else default


def publish(**values: Any) -> None:
    """Mirror settings into the URL: lists as repeated keys, None/empty removes the key."""
    for key, value in values.items():
        if value is None or (isinstance(value, (list, tuple)) and not value) or value == "":
            if key in st.query_params:
                del st.query_params[key]
        elif isinstance(value, (list, tuple)):
            if st.query_params.get_all(key) != [str(v) for v in value]:
                st.query_params[key] = [str(v) for v in value]
        elif st.query_params.get(key) != str(value):
            st.query_params[key] = str(value)


def pick_runs(
    label: str,
    run_ids: Sequence[str],
    labels: Mapping[str, str],
    *,
    page: str,
    key: str = "run",
    default: Sequence[str] = (),
    max_selections: int | None = None,
    help: str | None = None,
    container: Any = st,
) -> list[str]:
    """A multiselect of runs seeded from ``?run=`` (else ``default``), mirrored back.

    Ids in the link that are not among ``run_ids`` are reported, not silently dropped."""
    options = list(run_ids)
    from_url = url_list(key)
    unknown = [run_id for run_id in from_url if run_id not in options]
    if unknown:
        container.warning(f"{len(unknown)} run(s) from the link are not available here: "
                          f"{', '.join(u[:8] for u in unknown)}. Press **Refresh** in the sidebar if they are new.")
    seeded = [run_id for run_id in from_url if run_id in options] or [r for r in default if r in options]
    if max_selections:
        seeded = seeded[:max_selections]
    chosen = container.multiselect(
        label, options, default=seeded, format_func=lambda run_id: labels.get(run_id, run_id),
        key=widget_key(page, key), max_selections=max_selections, help=help,
    )
    publish(**{key: list(chosen)})
    return list(chosen)


def pick_run(label: str, run_ids: Sequence[str], labels: Mapping[str, str], *, page: str, key: str = "run",
             help: str | None = None, container: Any = st) -> str | None:
    """A selectbox of one run seeded from ``?run=`` (else the first), mirrored back."""
    options = list(run_ids)
    if not options:
        return None
    wanted = url_value(key)
    if wanted is not None and wanted not in options:
        container.warning(f"run {wanted[:8]} from the link is not available here; showing the latest instead. "
                          "Press **Refresh** in the sidebar if it is new.")
    index = options.index(wanted) if wanted in options else 0
    chosen = container.selectbox(label, options, index=index, format_func=lambda run_id: labels.get(run_id, run_id),
                                 key=widget_key(page, key), help=help)
    publish(**{key: chosen})
    return chosen


def pick_option(
    label: str,
    options: Iterable[Any],
    *,
    page: str,
    key: str,
    default: Any = None,
    format_func: Callable[[Any], str] = str,
    widget: str = "selectbox",
    help: str | None = None,
    container: Any = st,
) -> Any:
    """One of ``options`` (compared as text with the URL), seeded from ``?key=``, mirrored back.

    widget: ``selectbox`` or ``radio`` (horizontal)."""
    options = list(options)
    if not options:
        return None
    by_text = {str(option): option for option in options}
    wanted = url_value(key)
    chosen_default = by_text.get(wanted, default if default in options else options[0])
    index = options.index(chosen_default)
    if widget == "radio":
        chosen = container.radio(label, options, index=index, format_func=format_func, key=widget_key(page, key),
                                 horizontal=True, help=help)
    else:
        chosen = container.selectbox(label, options, index=index, format_func=format_func,
                                     key=widget_key(page, key), help=help)
    publish(**{key: chosen})
    return chosen
