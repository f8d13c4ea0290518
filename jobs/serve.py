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
    parser.add_argument("--address", default=None,
                        help="address to listen on (default: Streamlit's, all interfaces); 127.0.0.1 for local only")
    parser.add_argument("--catalog", metavar="PATH",
                        help=f"DuckDB catalog file (default ${CATALOG_ENV}, else beside the tracking database)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of unexpected errors")
    parser.set_defaults(handler=_run_ui)


def _run_ui(args) -> None:
    from latentscape.tracking.runs import resolve_tracking_uri

    code = start_ui(tracking_uri=resolve_tracking_uri(args.tracking_uri), port=args.port, catalog=args.catalog,
                    address=args.address)
    if code not in (0, None):
        raise SystemExit(code)


def ui_command(*, port: int = 8501, address: str | None = None, app: Path = APP_PATH) -> list[str]:
    """The ``streamlit run`` command line of the app, through ``python -m latentscape.ui``:
    the pages' libraries are imported before the server listens, not at the first open."""
    command = [sys.executable, "-m", "latentscape.ui", "run", str(app), "--server.port", str(port)]
    if address:
        command += ["--server.address", address]
    for key, value in STREAMLIT_OPTIONS.items():
        command += [f"--{key}", value]
    return command


def ui_environment(*, tracking_uri: str, catalog: str | os.PathLike | None = None,
                   base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the app process: the store, the catalog, no telemetry."""
    env = dict(os.environ if base is None else base)
    env[TRACKING_ENV] = tracking_uri
    if catalog:
        env[CATALOG_ENV] = str(Path(catalog).expanduser().resolve())
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    return env


def _check_port(port: int, address: str | None) -> None:
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port number", "pass 1-65535 (default 8501)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address or "0.0.0.0", port))
        except OSError:
            raise UsageError(f"port {port} is already in use", f"pass another --port (e.g. {port + 1}), or stop "
                             "the process that holds it") from None


def _check_store(tracking_uri: str) -> None:
    from latentscape.tracking.runs import sqlite_path

    path = sqlite_path(tracking_uri)
    if path is not None and not path.parent.is_dir():
        raise UsageError(f"the folder of the tracking database {path} does not exist",
                         "pass --tracking-uri of an existing store, or run a job first (e.g. latentscape demo)")
    if path is not None and not path.exists():
        print(f"latentscape ui: note: {path} does not exist yet; the app will show how to log the first runs",
              file=sys.stderr)


def start_ui(*, tracking_uri: str, port: int = 8501, catalog: str | os.PathLike | None = None,
             address: str | None = None) -> int:
    """Serve the app until interrupted; returns the Streamlit process's exit code."""
    _check_port(port, address)
    _check_store(tracking_uri)
    if catalog and not Path(catalog).expanduser().resolve().parent.is_dir():
        raise UsageError(f"the folder of --catalog {catalog} does not exist", "create it or pass another path")
    shown = address if address not in (None, "0.0.0.0") else "localhost"
    print(masked(f"latentscape ui: http://{shown}:{port}  (store {tracking_uri}; Ctrl-C to stop)"), file=sys.stderr,
          flush=True)
    process = subprocess.Popen(ui_command(port=port, address=address),
                               env=ui_environment(tracking_uri=tracking_uri, catalog=catalog))
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
