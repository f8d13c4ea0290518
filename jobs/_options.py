"""Options declared once: a job's config dataclass carries each option's flag, help and bounds.

::

    @dataclass(frozen=True)
    class DirectionsConfig:
        run: str = option(help="id of a labelled extract run", metavar="EXTRACT_RUN")
        layer: int = option(help="layer to find directions in")
        seed: int = option(0, help="seed of the probes")

        def __post_init__(self):
            check_options(self)

From that one declaration derive the sub-command's options (:func:`add_options`: a field
without a default is a required option, the type comes from the annotation, the default
is shown in the help), the config of parsed arguments (:func:`from_args`), the checks of
bounds and choices with one wording for every job (:func:`check_options`), and so the
notebook functions ``ls.<job>``, whose signature is read from the parser. Checks that
involve two options stay in the config's ``__post_init__`` after ``check_options``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from latentscape.tracking.errors import UsageError

__all__ = ["Option", "option", "add_options", "from_args", "check_options", "options_of", "parse_number"]

_META = "latentscape.option"
# cli_default not given: argparse holds the field's own default.
_SAME: Any = type("_Same", (), {"__repr__": lambda self: "the field's default"})()


@dataclass(frozen=True)
class Option:
    """How one config field appears on the command line and what values it accepts.

    ``flag``: the option (default ``--`` and the field's name with dashes); ``dest``: its
    name in the parsed arguments and the notebook keyword (default the field's name); ``low``/``high``:
    inclusive bounds of a number, ``above``/``below`` exclusive ones (a fraction in
    (0, 1)); ``choices``: the accepted values (of each item, for a
    tuple field); ``cli``: turns the parsed value into the field's value (a tuple field
    given once on the command line, for example ``--method lerp`` meaning ``("lerp",)``);
    ``cli_default``: what argparse holds when the option is absent, when it differs from
    the field's default (``None`` for "all methods"); ``show_default``: append "(default
    X)" to the help. ``extra``: further ``add_argument`` keywords (``nargs``, ``action``)."""

    help: str
    flag: str | None = None
    dest: str | None = None
    metavar: str | None = None
    low: float | None = None
    high: float | None = None
    above: float | None = None
    below: float | None = None
    choices: Sequence[Any] | None = None
    cli: Callable[[Any], Any] | None = None
    cli_default: Any = _SAME
    show_default: bool = True
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def option(default: Any = dataclasses.MISSING, *, help: str, flag: str | None = None, dest: str | None = None,
           metavar: str | None = None,
           low: float | None = None, high: float | None = None, above: float | None = None,
           below: float | None = None, choices: Sequence[Any] | None = None,
           cli: Callable[[Any], Any] | None = None, cli_default: Any = _SAME,
           show_default: bool = True, **argparse_keywords: Any) -> Any:
    """A dataclass field that is also a command-line option (see :class:`Option`)."""
    spec = Option(help=help, flag=flag, dest=dest, metavar=metavar, low=low, high=high, above=above, below=below,
                  choices=tuple(choices) if choices is not None else None, cli=cli, cli_default=cli_default,
                  show_default=show_default, extra=argparse_keywords)
    return dataclasses.field(default=default, metadata={_META: spec})


def flag_of(field: dataclasses.Field) -> str:
    spec: Option = field.metadata[_META]
    return spec.flag or "--" + field.name.replace("_", "-")


def options_of(config_class: type) -> list[tuple[dataclasses.Field, Option, type]]:
    """``(field, option, value type)`` of every field of ``config_class`` declared with
    :func:`option`, in declaration order; the value type has ``None`` and ``tuple[...]``
    taken off (``int | None`` is ``int``, ``tuple[str, ...]`` is ``str``)."""
    hints = typing.get_type_hints(config_class)
    return [(field, field.metadata[_META], _value_type(hints[field.name]))
            for field in dataclasses.fields(config_class) if _META in field.metadata]


def _value_type(annotation: Any) -> type:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
        origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        annotation = typing.get_args(annotation)[0]
    return annotation


def _default_text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, config_class: type, *,
                skip: Sequence[str] = ()) -> None:
    """Add every option of ``config_class`` (but those named in ``skip``) to ``parser``."""
    for field, spec, kind in options_of(config_class):
        if field.name in skip:
            continue
        keywords: dict[str, Any] = {"dest": spec.dest or field.name, "help": spec.help}
        has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
        default = field.default if field.default is not dataclasses.MISSING else (
            field.default_factory() if has_default else None)
        if kind is bool and "action" not in spec.extra:
            keywords["action"] = "store_false" if default else "store_true"
        else:
            # Numbers and choices are read as text and checked by from_args and check_options:
            # a bad one is then a one-line UsageError naming the flag, not argparse's usage block.
            if spec.metavar:
                keywords["metavar"] = spec.metavar
            elif spec.choices is not None:
                keywords["metavar"] = "{" + ",".join(map(str, spec.choices)) + "}"
            if not has_default:
                keywords["required"] = True
            keywords["default"] = default if spec.cli_default is _SAME else spec.cli_default
            shown = keywords["default"]
            if spec.show_default and has_default and shown not in (None, "", ()) and "default" not in spec.help:
                keywords["help"] = f"{spec.help} (default {_default_text(shown)})"
        keywords.update(spec.extra)
        parser.add_argument(flag_of(field), **keywords)


def from_args(config_class: type, args: argparse.Namespace, **extra: Any):
    """The config of parsed arguments: every option's value (through its ``cli``
    conversion; an absent option with a ``cli_default`` keeps the field's default), plus
    ``extra`` for fields that are not options or need more than one argument."""
    values: dict[str, Any] = {}
    for field, spec, kind in options_of(config_class):
        name = spec.dest or field.name
        if field.name in extra or not hasattr(args, name):
            continue
        value = getattr(args, name)
        if spec.cli_default is not _SAME and value == spec.cli_default:
            continue  # absent: the field's own default
        if spec.cli is not None:  # it reads the text itself (``--search-epochs full``)
            value = spec.cli(value)
        elif kind in (int, float) and isinstance(value, str):
            value = parse_number(value, kind, flag_of(field))
        values[field.name] = value
    return config_class(**values, **extra)


def parse_number(text: str, kind: type, flag: str) -> int | float:
    """``text`` as ``kind`` (int or float), or a one-line :class:`UsageError` naming ``flag``."""
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise UsageError(f"{flag} {text!r} is not {what}",
                         f"pass {flag} {'a whole number' if kind is int else 'a number, e.g. 0.5'}") from None


def _fix(spec: Option) -> str:
    """What to pass, in the bounds' own terms: ``2..1000``, ``1 or more``, ``(0, 1)``."""
    low, high = (spec.low, "[") if spec.low is not None else (spec.above, "("), \
        (spec.high, "]") if spec.high is not None else (spec.below, ")")
    if spec.above is None and spec.below is None:
        if low[0] is not None and high[0] is not None:
            return f"pass {low[0]:g}..{high[0]:g}"
        return f"pass {low[0]:g} or more" if low[0] is not None else f"pass {high[0]:g} or less"
    if low[0] is not None and high[0] is not None:
        return f"pass a number in {low[1]}{low[0]:g}, {high[0]:g}{high[1]}"
    return f"pass a number above {low[0]:g}" if low[0] is not None else f"pass a number below {high[0]:g}"


def check_options(config: Any) -> None:
    """Check every option of ``config`` against its bounds and choices: a one-line
    :class:`UsageError` naming the flag, the value and what to pass instead."""
    for field, spec, _ in options_of(type(config)):
        value = getattr(config, field.name)
        if value is None:
            continue
        flag = flag_of(field)
        default = "" if field.default in (dataclasses.MISSING, None) else f" (default {_default_text(field.default)})"
        if spec.choices is not None:
            for item in value if isinstance(value, (tuple, list)) else (value,):
                if item not in spec.choices:
                    raise UsageError(f"unknown {flag} {item!r}", f"choose one of {', '.join(map(str, spec.choices))}")
        outside = ((spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high)
                   or (spec.above is not None and value <= spec.above)
                   or (spec.below is not None and value >= spec.below))
        if not outside:
            continue
        if spec.high is None and spec.below is None and spec.above is None and spec.low in (0, 1):
            problem = "must be positive" if spec.low == 1 else "must not be negative"
            raise UsageError(f"{flag} {_default_text(value)} {problem}", _fix(spec) + default)
        raise UsageError(f"{flag} {_default_text(value)} is out of range", _fix(spec) + default)
