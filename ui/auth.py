"""Who is looking: the app's login on a shared store, and the experiments each session may read.

On a tracking server (``http(s)://``) every browser session logs in with its team
account; :func:`latentscape.tracking.access.log_in` checks it against the server as that
user and returns the experiments the user may read there. The session keeps that set
(never the password) until it expires after ``$LATENTSCAPE_SESSION_TTL`` seconds or the
user logs out; permissions changed on the server apply from the next login. Every read
of :mod:`latentscape.ui.data` is bound to :func:`scope`. A session that has not logged in
reads nothing at all, whatever page or link it opens.

On a local store (SQLite, a file store) there is no login: whoever can open its files
sees them all, and :func:`scope` is None (no restriction).

A Streamlit session is one browser tab: a reload, or a link opened in a new tab, asks
for the login again.
"""

from __future__ import annotations

import logging
import os
import time

import streamlit as st

from latentscape.tracking import access
from latentscape.tracking.access import DEFAULT_SESSION_TTL_S, ENV_SESSION_TTL
from latentscape.tracking.errors import UsageError

__all__ = ["shared_store", "logged_in", "scope", "require_login", "logout_button", "session_ttl", "host_refused"]

_LOGIN = "_latentscape_login"  # session_state: (access.Login, expires at, unix time)
_LOG = logging.getLogger("latentscape.ui.auth")


def session_ttl() -> float:
    """Seconds a login lasts (``$LATENTSCAPE_SESSION_TTL``, default one hour)."""
    text = os.environ.get(ENV_SESSION_TTL, "").strip()
    try:
        seconds = float(text) if text else DEFAULT_SESSION_TTL_S
    except ValueError:
        seconds = -1
    if not seconds > 0:
        raise UsageError(f"${ENV_SESSION_TTL}={text!r} is not a positive number of seconds",
                         f"set it to e.g. {DEFAULT_SESSION_TTL_S}, or unset it")
    return seconds


def shared_store() -> bool:
    """The app reads a tracking server, so its visitors log in."""
    from latentscape.ui import data

    return access.is_shared(data.tracking_uri())


def _current() -> access.Login | None:
    """The session's login while it lasts (read only: cached reads call this too)."""
    held = st.session_state.get(_LOGIN)
    if held is None or time.time() >= held[1]:
        return None
    return held[0]


def logged_in() -> bool:
    """This session may read the store: it is a local one, or the session has logged in."""
    return not shared_store() or _current() is not None


def scope() -> frozenset[str] | None:
    """The experiment ids this session may read: None on a local store (all of them), the
    login's set on a shared one, and nothing before a login."""
    if not shared_store():
        return None
    login = _current()
    return frozenset() if login is None else login.experiment_ids


def host_refused() -> bool:
    """The page's Host header is outside the allow-list (``latentscape ui --allowed-hosts``).
    The launcher refuses such requests before they reach a script; this catches a plain
    ``streamlit run ui/app.py``. No Host header (a test harness) is not a browser's request."""
    host = st.context.headers.get("Host") if st.context.headers else None
    return host is not None and not access.host_allowed(host, access.allowed_hosts())


def require_login() -> access.Login | None:
    """On a shared store: the session's login, or draw the login form and stop the script
    (nothing of the store is drawn). None on a local store."""
    if not shared_store():
        return None
    login = _current()
    if login is not None:
        return login
    expired = st.session_state.pop(_LOGIN, None)
    if expired is not None:
        _LOG.info("the session of %s expired", expired[0].username)
    _login_form(expired=expired is not None)
    st.stop()


def _login_form(*, expired: bool) -> None:
    from latentscape.ui import data

    _, middle, _ = st.columns([1, 2, 1])
    with middle:
        st.title("latentscape")
        if expired:
            st.info("Your session expired: log in again.", icon=":material/timer_off:")
        with st.form("login", border=True):
            st.caption(f"Log in with your team account on `{access.without_credentials(data.tracking_uri())}`.")
            username = st.text_input("User name", key="login.username", autocomplete="username")
            password = st.text_input("Password", type="password", key="login.password",
                                     autocomplete="current-password")
            submitted = st.form_submit_button("Log in", icon=":material/login:", type="primary")
        if not submitted:
            return
        try:
            login = access.log_in(data.tracking_uri(), username, password)
        except access.LoginRefused as refused:
            _LOG.warning("login refused for user %r: %s", username[:64], refused)
            st.error(f"Login failed: {refused}.", icon=":material/lock:")
            return
        except UsageError as error:
            _LOG.warning("login of user %r could not be checked: %s", username[:64], error)
            st.error(str(error), icon=":material/error:")
            return
        finally:
            st.session_state.pop("login.password", None)  # not kept past this run
        st.session_state[_LOGIN] = (login, time.time() + session_ttl())
        _LOG.info("%s logged in (%d experiments readable)", login.username, len(login.experiment_ids))
        st.rerun()  # the page the link asked for, its query parameters untouched


def logout_button() -> None:
    """The sidebar's account line and its Log out button (shared stores only)."""
    login = _current()
    if login is None:
        return
    st.caption(f":material/person: {login.username}")
    # A callback: it runs before the next script run, so that run draws nothing of the store.
    st.button("Log out", icon=":material/logout:", key="logout", width="stretch", on_click=_log_out)


def _log_out() -> None:
    held = st.session_state.pop(_LOGIN, None)
    if held is not None:
        _LOG.info("%s logged out", held[0].username)
