"""``latentscape demo``: the whole pipeline on the built-in data, then the UI.

Each step is the real sub-command, called as a user would call it, so the demo shows
exactly what the CLI does. Steps whose job is not installed are skipped with a note.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass

from latentscape.jobs._result import JobResult
from latentscape.tracking.errors import UsageError
from latentscape.tracking.privacy import masked

__all__ = ["add_parser", "demo_steps"]


@dataclass(frozen=True)
class Step:
    title: str
    argv: tuple[str, ...]  # "{text}" / "{digits}" stand for the extract runs' ids


def demo_steps(*, quick: bool = False) -> list[Step]:
    """The demo pipeline: text data through MiniLM, digits as tabular data."""
    trials = "8" if quick else "30"
    # Trials in two processes (one core each) where there are cores for them; a short
    # sweep would spend more starting the second process than it saves.
    workers = ("--workers", str(min(2, os.cpu_count() or 1))) if not quick else ()
    text_limit = ("--limit", "200") if quick else ()
    return [
        Step("extract every MiniLM layer of the demo sentences", ("extract", "--data", "demo", *text_limit)),
        Step("extract digits (features as layer 0)", ("extract", "--data", "digits")),
        Step("map the last layer (UMAP + HDBSCAN)", ("map", "--run", "{text}", "--layer", "6")),
        Step("map the embedding layer, to compare", ("map", "--run", "{text}", "--layer", "0")),
        Step("map digits", ("map", "--run", "{digits}", "--layer", "0")),
        Step(f"sweep {trials} trials for the clearest structure", ("sweep", "--run", "{text}", "--layer", "6",
                                                                  "--trials", trials, *workers)),
        Step("compare every layer", ("layers", "--run", "{text}")),
        Step("interpolate between two sentences", ("interpolate", "--run", "{text}", "--layer", "6",
                                                   "--from", "The soup needs more salt and a little lemon.",
                                                   "--to", "The striker scored twice in the second half.")),
        Step("analogies on every layer", ("analogies", "--run", "{text}")),
        Step("concept directions of the last layer", ("directions", "--run", "{text}", "--layer", "6")),
        Step("interpolate digits through an autoencoder", ("interpolate", "--run", "{digits}", "--layer", "0",
                                                           "--from", "digit-0000", "--to", "digit-0001",
                                                           "--decoder", "autoencoder")),
    ]


def add_parser(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "demo", parents=parents, help="run the whole pipeline on the built-in data, then open the UI",
        description="Extract, map, sweep, compare layers and walk the latent space of the built-in demo "
        "sentences (bundled all-MiniLM-L6-v2) and of scikit-learn's digits, logging every step to MLflow; "
        "then start the UI.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples and sweep trials (about a minute)")
    parser.add_argument("--no-ui", action="store_true", help="log the runs but do not start the UI")
    parser.add_argument("--port", type=int, default=8501, help="UI port (default 8501)")
    parser.set_defaults(handler=_run)


def _run(args) -> JobResult | None:
    from latentscape.jobs import cli

    common = []
    if args.tracking_uri:
        common += ["--tracking-uri", args.tracking_uri]
    if args.experiment:
        common += ["--experiment", args.experiment]
    available = set(cli.build_parser()._subparsers._group_actions[0].choices)
    ids: dict[str, str] = {}
    logged: list[tuple[str, dict]] = []
    started = time.perf_counter()
    steps = demo_steps(quick=args.quick)
    for number, step in enumerate(steps, 1):
        command = step.argv[0]
        if command not in available:
            print(f"[{number}/{len(steps)}] skipped: {step.title} (`latentscape {command}` is not available)",
                  file=sys.stderr)
            continue
        argv = [part.format(**ids) if "{" in part else part for part in step.argv]
        print(f"[{number}/{len(steps)}] {step.title}: latentscape {' '.join(argv)}", file=sys.stderr, flush=True)
        result = _call(cli, [*argv, *common, "--json"])
        if step.argv[:3] == ("extract", "--data", "demo"):
            ids["text"] = result["run_id"]
        elif step.argv[:3] == ("extract", "--data", "digits"):
            ids["digits"] = result["run_id"]
        logged.append((step.title, result))

    from latentscape.tracking.backends import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    print(masked(f"\nlogged {len(logged)} runs to {uri} in {time.perf_counter() - started:.0f} s:"))
    for title, result in logged:
        scores = ", ".join(f"{k}={v:.3f}" for k, v in list(result.get("scores", {}).items())[:3]
                           if isinstance(v, (int, float)))
        print(f"  {result['kind']:<12} {result['run_id']}  {title}" + (f"  ({scores})" if scores else ""))
    sys.stdout.flush()
    if not args.no_ui and "ui" in available:
        from latentscape.jobs.serve import start_ui

        start_ui(tracking_uri=uri, port=args.port)
    return None


def _call(cli, argv: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    if code != 0:
        raise UsageError(f"demo step `latentscape {' '.join(argv)}` failed (exit {code})",
                         "see the error above; run that command alone to investigate")
    return json.loads(out.getvalue().strip().splitlines()[-1])

