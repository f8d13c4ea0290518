"""A job's process imports its own job module only (cold start)."""

import subprocess
import sys


def test_named_command_builds_only_its_own_parser():
    from latentscape.jobs.cli import build_parser

    parser = build_parser("map")
    assert set(parser._subparsers._group_actions[0].choices) == {"map"}
    assert parser.parse_args(["map", "--run", "R"]).run == "R"
    assert "sweep" in build_parser()._subparsers._group_actions[0].choices


def test_map_help_does_not_import_other_jobs():
    code = ("import sys, latentscape.jobs.cli\n"
            "try:\n    latentscape.jobs.cli.main(['map', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m in ('latentscape.jobs.extract', 'latentscape.jobs.sweep', 'latentscape.jobs.layers', 'latentscape.jobs.serve')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
