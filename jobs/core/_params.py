"""Typed, validated parameters for the swappable parts of a map (reducers, clusterers).

Each method in a registry declares its parameters as :class:`ParamSpec` rows: type,
default (a value, or a function of the data's shape for defaults that depend on it),
allowed range or choices, and the range a sweep searches by default. Resolving turns a
user's partial settings into a complete dict with every default filled in, so that a
logged configuration alone reproduces a map.

Errors are :class:`ConfigError` (a ``ValueError``) with a one-line message naming the
problem and the fix; the job shells turn them into usage errors (exit 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ConfigError", "DataShape", "ParamSpec", "Method", "resolve_params", "coerce", "lookup"]


class ConfigError(ValueError):
    """A setting that cannot work for this data: the message names problem and fix."""

    def __init__(self, problem: str, fix: str | None = None):
        message = problem if fix is None else f"{problem}; {fix}"
        super().__init__(" ".join(message.split()))


@dataclass(frozen=True)
class DataShape:
    """What defaults and checks may depend on: ``n_samples`` rows of ``n_features``,
    ``n_classes`` distinct true labels (None when unlabelled)."""

    n_samples: int
    n_features: int
    n_classes: int | None = None


Default = Any  # a value, or Callable[[DataShape], value]


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: ``kind`` is int, float, str or bool; ``low``/``high`` inclusive
    bounds (numbers); ``choices`` for strings; ``search`` the default sweep dimension
    (``{"low":, "high":, "log":}`` or ``{"choices": [...]}``, or a function of the shape);
    ``counts_samples``: the value is a number of samples (a cluster's least size), so a
    sweep that searched it on a subsample scales it to all samples for its refit."""

    name: str
    kind: type
    default: Default
    help: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    search: Any = None
    counts_samples: bool = False

    def default_for(self, shape: DataShape) -> Any:
        return self.default(shape) if callable(self.default) else self.default

    def search_for(self, shape: DataShape) -> dict | None:
        return self.search(shape) if callable(self.search) else self.search

    def check(self, value: Any, *, owner: str) -> Any:
        """``value`` coerced to this parameter's type and checked against its bounds."""
        value = coerce(value, self.kind, name=f"{owner} parameter {self.name}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"unknown {self.name} {value!r} for {owner}",
                              f"choose one of {', '.join(map(str, self.choices))}")
        if self.low is not None and value < self.low:
            raise ConfigError(f"{owner} {self.name}={value} is below {self.low:g}",
                              f"pass {self.name} >= {self.low:g}")
        if self.high is not None and value > self.high:
            raise ConfigError(f"{owner} {self.name}={value} is above {self.high:g}",
                              f"pass {self.name} <= {self.high:g}")
        return value


@dataclass(frozen=True)
class Method:
    """A reducer or clusterer: its parameters, a data-dependent check, and ``run``.

    ``check(params, shape)`` raises :class:`ConfigError` for settings that cannot work on
    data of this shape (for example ``n_neighbors >= n_samples``); it runs before any work.
    ``run`` is the computation; its signature is fixed by the registry it lives in.
    """

    name: str
    params: tuple[ParamSpec, ...]
    run: Callable[..., Any]
    check: Callable[[dict[str, Any], DataShape], None] | None = None
    help: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def spec(self, name: str) -> ParamSpec:
        for spec in self.params:
            if spec.name == name:
                return spec
        known = ", ".join(p.name for p in self.params) or "none"
        raise ConfigError(f"{self.name} has no parameter {name!r}", f"its parameters are: {known}")


def coerce(value: Any, kind: type, *, name: str) -> Any:
    """``value`` (possibly a string from the command line or YAML) as ``kind``."""
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("true", "1", "yes"):
                    return True
                if lowered in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(value)
                return int(value)
            if isinstance(value, str):
                number = float(value)
                if not number.is_integer():
                    raise ValueError(value)
                return int(number)
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(value)
            return number
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {'an integer' if kind is int else 'a number' if kind is float else kind.__name__}, "
                          f"not {value!r}") from None


def lookup(registry: Mapping[str, Method], name: str, what: str) -> Method:
    try:
        return registry[name]
    except KeyError:
        raise ConfigError(f"unknown {what} {name!r}", f"choose one of {', '.join(registry)}") from None


def resolve_params(method: Method, given: Mapping[str, Any] | None, shape: DataShape) -> dict[str, Any]:
    """Every parameter of ``method``: given values checked and coerced, the rest defaulted,
    then the method's data-dependent check. Raises :class:`ConfigError`."""
    given = dict(given or {})
    for name in given:
        method.spec(name)  # unknown names fail here, naming the known ones
    resolved: dict[str, Any] = {}
    for spec in method.params:
        if spec.name in given and given[spec.name] is not None:
            resolved[spec.name] = spec.check(given[spec.name], owner=method.name)
        else:
            default = spec.default_for(shape)
            resolved[spec.name] = None if default is None else spec.check(default, owner=method.name)
    if method.check is not None:
        method.check(resolved, shape)
    return resolved
