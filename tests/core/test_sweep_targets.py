"""The sweep targets' registry (jobs/sweep/targets): every entry implements the protocol,
and ``latentscape sweep --target``'s choices are the registry's names, in its order."""

from __future__ import annotations

import inspect

from latentscape.jobs.sweep.targets import TARGETS, SweepTarget

# The protocol's methods (the docs/DEVELOPING.md walkthrough names them): a method added to
# or dropped from the protocol must be added or dropped here, and in every target.
_METHODS = {"precheck", "make_plan", "load", "fit", "params", "sweep_params", "trials_columns", "log_best"}
_STATIC = {"precheck", "make_plan"}  # called before the target exists (no store yet; no plan yet)


def _protocol_methods() -> set[str]:
    return {name for name, value in vars(SweepTarget).items()
            if not name.startswith("_") and (callable(value) or isinstance(value, staticmethod))}


def test_the_protocol_is_what_the_walkthrough_names():
    assert _protocol_methods() == _METHODS


def test_every_target_implements_the_protocol():
    assert TARGETS and all(isinstance(name, str) for name in TARGETS)
    for name, target in TARGETS.items():
        missing = {method for method in _METHODS if not callable(getattr(target, method, None))}
        assert not missing, f"target {name} lacks {sorted(missing)}"
        for method in _METHODS:
            wanted = inspect.signature(getattr(SweepTarget, method))
            got = inspect.signature(getattr(target, method))
            assert list(got.parameters) == list(wanted.parameters), f"{name}.{method}{got} is not {method}{wanted}"
            static = isinstance(inspect.getattr_static(target, method), staticmethod)
            assert static == (method in _STATIC), f"{name}.{method} {'must' if method in _STATIC else 'must not'} be static"
        assert list(inspect.signature(target).parameters) == ["config", "plan"], f"{name}(config, plan)"


def test_target_choices_are_the_registry():
    import pytest

    from latentscape.jobs._options import options_of
    from latentscape.jobs.cli import build_parser
    from latentscape.jobs.sweep import SweepConfig
    from latentscape.tracking.errors import UsageError

    (target,) = [spec for field, spec, _ in options_of(SweepConfig) if field.name == "target"]
    assert tuple(target.choices) == tuple(TARGETS)
    sweep = build_parser("sweep")._subparsers._group_actions[0].choices["sweep"]
    (option,) = [action for action in sweep._actions if "--target" in action.option_strings]
    assert option.default in TARGETS and option.metavar == "{" + ",".join(TARGETS) + "}"
    with pytest.raises(UsageError, match="unknown --target 'nope'"):
        SweepConfig(run="R", target="nope")
