"""``latentscape ui``: start the Streamlit app on a tracking store.

The app (``ui/app.py``) runs in its own ``streamlit run`` process; the store and the
catalog are handed over through the environment (``MLFLOW_TRACKING_URI``,
``LATENTSCAPE_CATALOG``), so the app reads exactly what the jobs wrote. Each service of
this module is one ``_add_<name>`` function called from :func:`add_parser`; the team
server's sub-command comes from :mod:`latentscape.tracking.server`.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from latentscape.tracking.access import DEFAULT_SESSION_TTL_S, ENV_ALLOWED_HOSTS, ENV_SESSION_TTL
from latentscape.tracking.errors import UsageError
from latentscape.tracking.privacy import masked

__all__ = ["add_parser", "start_ui", "ui_command", "ui_environment", "APP_PATH", "STREAMLIT_OPTIONS"]

APP_PATH = Path(__file__).resolve().parents[1] / "ui" / "app.py"
# What every UI process runs with, whatever config files lie around (ui/.streamlit/
# config.toml says the same for a plain `streamlit run ui/app.py`).
STREAMLIT_OPTIONS = {
    "server.headless": "true",
    "server.runOnSave": "false",
    "server.fileWatcherType": "none",
    "browser.gatherUsageStats": "false",
    "client.showErrorDetails": "none",
    "client.toolbarMode": "viewer",
}
CATALOG_ENV = "LATENTSCAPE_CATALOG"
TRACKING_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_ADDRESS = "127.0.0.1"


def add_parser(subparsers, parents) -> None:
    """Register this module's services: ``ui`` and ``server``."""
    _add_ui(subparsers, parents)
    from latentscape.tracking.server import add_server_parser  # the team server: tracking/server.py

    add_server_parser(subparsers, parents)


def _add_ui(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "ui", help="open the app: compare layers, maps, sweeps and walks in the browser",
        description="Start the Streamlit app on a tracking store. It reads the runs through a DuckDB catalog "
        "synced from MLflow (press Refresh in the sidebar to see new runs) and imports no torch, numba or umap.",
        epilog="examples:\n  latentscape ui\n  latentscape ui --port 8600 --tracking-uri sqlite:///runs/mlflow.db\n"
        "  latentscape ui --tracking-uri http://mlflow.example.org:5000 --catalog ~/catalogs/team.duckdb",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    parser.add_argument("--address", default=DEFAULT_ADDRESS,
                        help=f"address to listen on (default {DEFAULT_ADDRESS}, this machine only; 0.0.0.0 for all "
                        "interfaces, e.g. in a container)")
    parser.add_argument("--allowed-hosts", default=os.environ.get(ENV_ALLOWED_HOSTS),
                        help="Host headers to answer, e.g. 'latentscape.example.org,localhost:*' (default "
                        f"${ENV_ALLOWED_HOSTS}, else MLflow's: localhost and private IPs, as latentscape server)")
    parser.add_argument("--session-ttl", type=float, default=None, metavar="SECONDS",
                        help=f"on a tracking server: how long a login lasts (default ${ENV_SESSION_TTL}, else "
                        f"{DEFAULT_SESSION_TTL_S})")
    parser.add_argument("--catalog", metavar="PATH",
                        help=f"DuckDB catalog file (default ${CATALOG_ENV}, else beside the tracking database)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of unexpected errors")
    parser.set_defaults(handler=_run_ui)


def _run_ui(args) -> None:
    from latentscape.tracking.backends import resolve_tracking_uri

    code = start_ui(tracking_uri=resolve_tracking_uri(args.tracking_uri), port=args.port, catalog=args.catalog,
                    address=args.address, allowed_hosts=args.allowed_hosts, session_ttl=args.session_ttl)
    if code not in (0, None):
        raise SystemExit(code)


def ui_command(*, port: int = 8501, address: str | None = DEFAULT_ADDRESS, app: Path = APP_PATH) -> list[str]:
    """The ``streamlit run`` command line of the app, through ``python -m latentscape.ui``:
    the pages' libraries are imported before the server listens, not at the first open."""
    command = [sys.executable, "-m", "latentscape.ui", "run", str(app), "--server.port", str(port)]
    if address:
        command += ["--server.address", address]
    for key, value in STREAMLIT_OPTIONS.items():
        command += [f"--{key}", value]
    return command


def ui_environment(*, tracking_uri: str, catalog: str | os.PathLike | None = None,
                   base: dict[str, str] | None = None, allowed_hosts: str | None = None,
                   session_ttl: float | None = None) -> dict[str, str]:
    """The environment of the app process: the store, the catalog, the Host allow-list,
    the login's lifetime, no telemetry."""
    env = dict(os.environ if base is None else base)
    env[TRACKING_ENV] = tracking_uri
    if catalog:
        env[CATALOG_ENV] = str(Path(catalog).expanduser().resolve())
    if allowed_hosts is not None:
        env[ENV_ALLOWED_HOSTS] = allowed_hosts
    if session_ttl is not None:
        env[ENV_SESSION_TTL] = str(session_ttl)
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    return env


def _check_port(port: int, address: str | None) -> None:
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port number", "pass 1-65535 (default 8501)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address or DEFAULT_ADDRESS, port))
        except OSError:
            raise UsageError(f"port {port} is already in use", f"pass another --port (e.g. {port + 1}), or stop "
                             "the process that holds it") from None


def _check_store(tracking_uri: str) -> None:
    from latentscape.tracking.backends import Backend

    path = Backend.of(tracking_uri).sqlite_path
    if path is not None and not path.parent.is_dir():
        raise UsageError(f"the folder of the tracking database {path} does not exist",
                         "pass --tracking-uri of an existing store, or run a job first (e.g. latentscape demo)")
    if path is not None and not path.exists():
        print(f"latentscape ui: note: {path} does not exist yet; the app will show how to log the first runs",
              file=sys.stderr)


def start_ui(*, tracking_uri: str, port: int = 8501, catalog: str | os.PathLike | None = None,
             address: str | None = DEFAULT_ADDRESS, allowed_hosts: str | None = None,
             session_ttl: float | None = None) -> int:
    """Serve the app until interrupted; returns the Streamlit process's exit code."""
    from latentscape.tracking.access import allowed_hosts as parse_allowed_hosts
    from latentscape.tracking.access import is_shared

    address = address or DEFAULT_ADDRESS
    _check_port(port, address)
    _check_store(tracking_uri)
    if catalog and not Path(catalog).expanduser().resolve().parent.is_dir():
        raise UsageError(f"the folder of --catalog {catalog} does not exist", "create it or pass another path")
    if allowed_hosts is not None:
        parse_allowed_hosts(allowed_hosts)  # a list naming no host is an error here, not in the app
    if session_ttl is not None and not session_ttl > 0:
        raise UsageError(f"--session-ttl {session_ttl} is not positive", f"pass seconds, e.g. {DEFAULT_SESSION_TTL_S}")
    shown = address if address not in ("0.0.0.0", "::") else "localhost"
    login = "; visitors log in with their team account" if is_shared(tracking_uri) else ""
    print(f"latentscape ui: http://{shown}:{port}  (store {masked(tracking_uri)}{login}; Ctrl-C to stop)",
          file=sys.stderr, flush=True)
    process = subprocess.Popen(ui_command(port=port, address=address),
                               env=ui_environment(tracking_uri=tracking_uri, catalog=catalog,
                                                  allowed_hosts=allowed_hosts, session_ttl=session_ttl))
    # `docker stop` and friends send SIGTERM: stop the app with us rather than orphan it.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.terminate()) if in_main_thread else None
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
