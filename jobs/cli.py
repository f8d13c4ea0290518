"""The ``latentscape`` command: one sub-command per job.

Each job module exposes ``add_parser(subparsers, parents)``, which registers its
sub-command with ``handler=<function(args) -> JobResult | None>``. Job modules import
their heavy dependencies inside functions so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from latentscape.tracking.errors import EXIT_USAGE, UsageError
from latentscape.tracking.job_specs import JOBS
from latentscape.tracking.privacy import masked, telemetry_off

__all__ = ["main", "JOB_MODULES", "common_parser", "build_parser", "quiet_libraries"]

# Sub-command -> module, from the job specs (tracking/job_specs.py), in the order of `latentscape --help`.
JOB_MODULES = {spec.command: spec.module for spec in JOBS}

_DESCRIPTION = """\
Track what a neural network has learned, layer by layer, in MLflow.

Typical session:
  latentscape extract --data demo            # embeddings of every layer -> EXTRACT_RUN
  latentscape map --run EXTRACT_RUN --layer 6
  latentscape sweep --run EXTRACT_RUN --layer 6 --trials 30
  latentscape layers --run EXTRACT_RUN
  latentscape ui                             # compare everything in the browser

Runs go to $MLFLOW_TRACKING_URI, else to ./mlflow.db (SQLite) with artifacts beside it.
"""


def common_parser() -> argparse.ArgumentParser:
    """Options every job accepts."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("tracking")
    group.add_argument("--tracking-uri", metavar="URI",
                       help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    group.add_argument("--experiment", metavar="NAME",
                       help="MLflow experiment to log to (default: the source run's, else 'latentscape')")
    group.add_argument("--json", action="store_true",
                       help="print one JSON object (run id, experiment, key scores) as the only stdout line")
    group.add_argument("--debug", action="store_true", help="show the full traceback of unexpected errors")
    return common


def build_parser(command: str | None = None, *,
                 parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every sub-command's parser; only ``command``'s when one is named (a job then imports
    its own module, not all eleven: measured ~1 s of a busy machine saved per process).
    ``parser_class``: the Python API's raises UsageError where argparse would exit."""
    parser = parser_class(
        prog="latentscape", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_parser()
    registered: set[str] = set()
    wanted = [JOB_MODULES[command]] if command in JOB_MODULES else JOB_MODULES.values()
    for module_name in dict.fromkeys(wanted):
        module = importlib.import_module(module_name)
        if module_name not in registered:
            module.add_parser(subparsers, [common])
            registered.add(module_name)
    return parser


def quiet_libraries() -> None:
    """Keep stderr for our progress bars and errors, not the libraries' chatter."""
    import logging
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    telemetry_off()  # MLflow's usage telemetry, unless the user opted in (tracking/privacy.py)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # MLflow prints "View run ... at: URL" on stdout for every run ended on a tracking
    # server, which would break --json's one-line stdout.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("mlflow", "alembic", "optuna", "transformers", "numba", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    command = f"latentscape {args.command}"
    try:
        result = args.handler(args)
    except UsageError as error:
        print(masked(f"{command}: error: {error}"), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{command}: interrupted; the run was marked KILLED", file=sys.stderr)
        return 130
    except Exception as error:  # an unexpected failure: one line, traceback on --debug
        from latentscape.tracking.connections import connection_refusal
        from latentscape.tracking.errors import server_error

        uri = getattr(args, "tracking_uri", None) or os.environ.get("MLFLOW_TRACKING_URI", "")
        # PostgreSQL out of connections (directly, or through the tracking server), then the server's refusals
        explained = connection_refusal(error, where=command) or server_error(error, uri=uri)
        if explained is not None:  # a tracking server's refusal, or no server at that address
            print(masked(f"{command}: error: {explained}"), file=sys.stderr)
            return EXIT_USAGE
        if getattr(args, "debug", False):
            traceback.print_exc()
        first = " ".join(str(error).split())[:500]
        print(masked(f"{command}: failed: {type(error).__name__}: {first} (run again with --debug for the traceback)"),
              file=sys.stderr)
        return 1
    if result is not None:
        print(result.to_json() if getattr(args, "json", False) else result.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
