"""Options declared once: the parser, the checks and the config derive from one dataclass."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from latentscape.jobs._options import add_options, check_options, from_args, option
from latentscape.tracking.errors import UsageError


@dataclass(frozen=True)
class WalkConfig:
    run: str = option(help="id of an extract run", metavar="EXTRACT_RUN")
    methods: tuple[str, ...] = option(("lerp", "slerp"), flag="--method", dest="method", choices=("lerp", "slerp"),
                                      cli=lambda method: (method,), cli_default=None, help="one method (default: both)")
    steps: int = option(11, low=2, high=1000, help="points on the path")
    k: int = option(5, low=1, help="nearest samples per step")
    ratio: float | None = option(None, low=0.0, high=1.0, help="a fraction")
    holdout: float = option(0.2, above=0.0, below=1.0, help="held out")
    rate: float = option(1e-3, above=0.0, help="step size")
    normalize: bool = option(False, help="unit length first")
    seed: int = option(0, help="seed")

    def __post_init__(self):
        check_options(self)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_options(parser, WalkConfig)
    return parser.parse_args(list(argv))


def test_the_parser_has_every_field_with_its_default_and_required_flags():
    parser = argparse.ArgumentParser()
    add_options(parser, WalkConfig)
    by_dest = {action.dest: action for action in parser._actions}
    assert by_dest["run"].required and by_dest["run"].option_strings == ["--run"]
    assert by_dest["method"].option_strings == ["--method"] and by_dest["method"].default is None
    assert by_dest["steps"].default == 11
    assert by_dest["steps"].help == "points on the path (default 11)"
    assert by_dest["ratio"].help == "a fraction"
    assert isinstance(by_dest["normalize"], argparse._StoreTrueAction)


def test_a_config_from_arguments_keeps_field_defaults_for_absent_options():
    config = from_args(WalkConfig, _parse("--run", "R"))
    assert config == WalkConfig(run="R")
    config = from_args(WalkConfig, _parse("--run", "R", "--method", "slerp", "--steps", "3", "--normalize"))
    assert config.methods == ("slerp",) and config.steps == 3 and config.normalize


@pytest.mark.parametrize(("settings", "message", "fix"), [
    (dict(steps=1), "--steps 1 is out of range", "pass 2..1000 (default 11)"),
    (dict(steps=1001), "--steps 1001 is out of range", "pass 2..1000 (default 11)"),
    (dict(k=0), "--k 0 must be positive", "pass 1 or more (default 5)"),
    (dict(ratio=1.5), "--ratio 1.5 is out of range", "pass 0..1"),
    (dict(holdout=1.0), "--holdout 1 is out of range", "pass a number in (0, 1) (default 0.2)"),
    (dict(holdout=0.0), "--holdout 0 is out of range", "pass a number in (0, 1) (default 0.2)"),
    (dict(rate=0.0), "--rate 0 is out of range", "pass a number above 0 (default 0.001)"),
    (dict(methods=("lerp", "walk")), "unknown --method 'walk'", "choose one of lerp, slerp"),
])
def test_a_value_out_of_bounds_is_one_line_naming_the_flag_and_the_fix(settings, message, fix):
    with pytest.raises(UsageError) as raised:
        WalkConfig(run="R", **settings)
    text = str(raised.value)
    assert message in text and fix in text and "\n" not in text


def test_extra_fields_are_passed_through():
    config = from_args(WalkConfig, _parse("--run", "R", "--steps", "4"), seed=7)
    assert (config.steps, config.seed) == (4, 7)


@pytest.mark.parametrize(("argv", "message"), [
    (("--steps", "many"), "--steps 'many' is not an integer; pass --steps a whole number"),
    (("--steps", "2.5"), "--steps '2.5' is not an integer"),
    (("--ratio", "half"), "--ratio 'half' is not a number"),
])
def test_a_number_that_is_not_one_is_a_one_line_error_naming_the_flag(argv, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        from_args(WalkConfig, _parse("--run", "R", *argv))
    assert from_args(WalkConfig, _parse("--run", "R", "--steps", "12", "--ratio", "0.5")).steps == 12
