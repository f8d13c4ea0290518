"""``python -m latentscape.ui run ui/app.py [streamlit options]``: ``streamlit run`` with the
libraries every page needs imported before the server listens, and a Host allow-list.

Streamlit imports a page's libraries on the first script run, after a browser opened the
URL: about 2 s of pandas, altair, duckdb and pyarrow (measured in the app's first open,
bench/app_open.py). Imported here they are paid while the server starts, once per process.

Streamlit 1.67 answers any Host header, so a page on a foreign name (DNS rebinding) could
drive the app. :class:`HostCheck` refuses, before Streamlit sees them, every HTTP request
and WebSocket handshake whose Host is off the list of ``$LATENTSCAPE_ALLOWED_HOSTS``
(``latentscape ui --allowed-hosts``; the same names and default as ``latentscape server``).
It is added to the Starlette app Streamlit builds, as the outermost middleware.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

# What the app and its pages import on their first run. Not the modules with st.cache_*
# (latentscape.ui.data): decorated before Streamlit's runtime exists, their caches would
# fall back to a storage of their own.
WARM = ("pandas", "pyarrow", "duckdb", "altair", "latentscape.tracking.catalog", "latentscape.tracking.queries",
        "latentscape.ui.charts.maps", "latentscape.ui.charts.layers", "latentscape.ui.charts.overview")

_LOG = logging.getLogger("latentscape.ui.hosts")


class HostCheck:
    """ASGI middleware: a request whose ``Host`` header is off ``allowed`` gets 403 (HTTP),
    or its WebSocket handshake is refused (a close before accept: 403, never 101)."""

    def __init__(self, app, allowed: Sequence[str]):
        self.app = app
        self.allowed = tuple(allowed)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            from latentscape.tracking.access import host_allowed

            hosts = [value.decode("latin-1") for name, value in scope.get("headers", ()) if name == b"host"]
            if len(hosts) != 1 or not host_allowed(hosts[0], self.allowed):
                _LOG.warning("refused a %s request for Host %r (not in --allowed-hosts)", scope["type"],
                             hosts[0][:100] if hosts else None)
                await self._refuse(scope, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope, send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = b"Invalid Host header: not in latentscape ui --allowed-hosts\n"
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def install_host_check(allowed: Sequence[str]) -> None:
    """Make Streamlit's server wrap its Starlette app in :class:`HostCheck`. Fails (rather
    than serving unchecked) when a Streamlit release moved the function it wraps."""
    from streamlit.web.server.starlette import starlette_server

    build = getattr(starlette_server, "create_starlette_app", None)
    if build is None:
        raise RuntimeError("streamlit.web.server.starlette.starlette_server.create_starlette_app is gone: "
                           "latentscape.ui cannot install its Host check on this Streamlit release")

    def create_checked_app(runtime):
        app = build(runtime)
        app.add_middleware(HostCheck, allowed=allowed)  # added last: runs first
        return app

    starlette_server.create_starlette_app = create_checked_app


def _log_to_stderr() -> None:
    """The app's own log lines (logins, logouts, refused hosts) on stderr, beside Streamlit's."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("latentscape.ui")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main() -> None:
    from latentscape.tracking.access import allowed_hosts

    _log_to_stderr()
    for name in WARM:
        importlib.import_module(name)
    allowed = allowed_hosts()
    if "*" not in allowed:
        install_host_check(allowed)
    from streamlit.web.cli import main as streamlit_main

    sys.argv[0] = "streamlit"
    streamlit_main()


if __name__ == "__main__":
    main()
