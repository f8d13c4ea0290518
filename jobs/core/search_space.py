"""What a sweep searches: a reducer, a clusterer, and ranges for some of their parameters.

A space names parameters as the run contract logs them (``reducer.n_neighbors``,
``clusterer.min_cluster_size``). Each entry is a range, a list of choices, or a single
value (fixed for every trial); parameters not named keep their defaults. YAML form::

    reducer: umap
    clusterer: hdbscan
    params:
      reducer.n_neighbors: {low: 5, high: 100, log: true}
      reducer.min_dist: {low: 0.0, high: 0.5}
      reducer.metric: {choices: [euclidean, cosine]}
      reducer.n_epochs: 200                      # fixed
      clusterer.min_cluster_size: {low: 5, high: 100, log: true}

With no file, :func:`default_space` searches the ranges each registry entry declares
(``ParamSpec.search``), clipped to the data. Types come from the registry, so an integer
parameter is searched with ``suggest_int`` and a string one as a categorical.

``suggest(trial)`` works with any object that has Optuna's ``suggest_int`` /
``suggest_float`` / ``suggest_categorical`` (this module never imports optuna).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from latentscape.jobs.core._params import ConfigError, DataShape, Method, lookup, resolve_params
from latentscape.jobs.core.cluster import CLUSTERERS
from latentscape.jobs.core.reduce import REDUCERS
from latentscape.tracking.contract import Param

__all__ = ["Dimension", "SearchSpace", "default_space", "parse_space", "check_space", "SaeSpace", "parse_sae_space"]

_REDUCER = Param.reducer_param("")
_CLUSTERER = Param.clusterer_param("")


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: ``kind`` is "int", "float" or "categorical"."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"choices": list(self.choices or ())}
        payload: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            payload["log"] = True
        if self.step is not None:
            payload["step"] = self.step
        return payload

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in (self.choices or ())
        return self.low <= value <= self.high

    def extremes(self) -> list[Any]:
        return list(self.choices or ()) if self.kind == "categorical" else [self.low, self.high]

    def suggest(self, trial) -> Any:
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        if self.kind == "float":
            return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log, step=self.step)
        return trial.suggest_categorical(self.name, list(self.choices or ()))


class _Space:
    """What every search space shares: ``dimensions`` searched and ``fixed`` values (flat
    names), and what can be read from them without knowing what they configure."""

    dimensions: tuple[Dimension, ...]
    fixed: Mapping[str, Any]

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {d.name: d.to_dict() for d in self.dimensions}
        params.update(self.fixed)
        return params

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def _flat_suggestion(self, trial) -> dict[str, Any]:
        """The fixed values plus a suggestion for every dimension."""
        return {**self.fixed, **{d.name: d.suggest(trial) for d in self.dimensions}}

    def point_of(self, flat: Mapping[str, Any]) -> dict[str, Any] | None:
        """The searched values of a resolved config (flat names), or None when one lies
        outside the space (it cannot be enqueued as a trial)."""
        point = {}
        for dimension in self.dimensions:
            value = flat.get(dimension.name)
            if value is None or not dimension.contains(value):
                return None
            point[dimension.name] = value
        return point

    def largest(self, name: str, default: Any) -> Any:
        """The largest value ``name`` can take (searched, fixed, or its default)."""
        for dimension in self.dimensions:
            if dimension.name == name:
                return max(dimension.extremes())
        return self.fixed.get(name, default)

    def values_of(self, name: str, default: Any) -> list[Any]:
        """Every categorical value ``name`` can take (e.g. the metrics a sweep needs graphs for)."""
        for dimension in self.dimensions:
            if dimension.name == name:
                return dimension.extremes()
        return [self.fixed.get(name, default)]


@dataclass(frozen=True)
class SearchSpace(_Space):
    """reducer, clusterer (registry names); dimensions searched; fixed: name -> value."""

    reducer: str
    clusterer: str
    dimensions: tuple[Dimension, ...]
    fixed: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"reducer": self.reducer, "clusterer": self.clusterer, "params": self._params()}

    def split(self, flat: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Flat ``reducer.x`` / ``clusterer.y`` values -> (reducer params, clusterer params)."""
        reducer = {k[len(_REDUCER):]: v for k, v in flat.items() if k.startswith(_REDUCER)}
        clusterer = {k[len(_CLUSTERER):]: v for k, v in flat.items() if k.startswith(_CLUSTERER)}
        return reducer, clusterer

    def suggest(self, trial) -> tuple[dict[str, Any], dict[str, Any]]:
        """One point, split into (reducer params, clusterer params)."""
        return self.split(self._flat_suggestion(trial))

    def scaled(self, point: Mapping[str, Any], factor: float) -> dict[str, Any]:
        """``point`` (flat names) with its searched sample counts (``ParamSpec.counts_samples``:
        HDBSCAN's min_cluster_size, min_samples) times ``factor``, rounded, never below the
        parameter's low bound: a point searched on a subsample of n / factor samples, for all n.
        Fixed values stay as given."""
        reducer_method, clusterer_method = _methods(self.reducer, self.clusterer)
        scaled = dict(point)
        for dimension in self.dimensions:
            prefix, method = (_REDUCER, reducer_method) if dimension.name.startswith(_REDUCER) \
                else (_CLUSTERER, clusterer_method)
            spec = method.spec(dimension.name[len(prefix):])
            if spec.counts_samples and dimension.name in point:
                value = max(spec.low or 1, round(point[dimension.name] * factor))
                scaled[dimension.name] = spec.kind(value)
        return scaled


def _dimension(name: str, spec, raw: Mapping[str, Any], owner: str) -> Dimension:
    unknown = set(raw) - {"low", "high", "log", "step", "choices"}
    if unknown:
        raise ConfigError(f"search space entry {name} has unknown keys {sorted(unknown)}",
                          "use low/high/log/step or choices")
    if "choices" in raw:
        choices = raw["choices"]
        if not isinstance(choices, (list, tuple)) or not choices:
            raise ConfigError(f"search space entry {name}: choices must be a non-empty list")
        return Dimension(name, "categorical", choices=tuple(spec.check(c, owner=owner) for c in choices))
    if spec.kind not in (int, float):
        raise ConfigError(f"search space entry {name} is a {spec.kind.__name__} parameter",
                          "give it choices: [...] instead of low/high")
    if "low" not in raw or "high" not in raw:
        raise ConfigError(f"search space entry {name} needs low and high (or choices)")
    low, high = spec.check(raw["low"], owner=owner), spec.check(raw["high"], owner=owner)
    log = bool(raw.get("log", False))
    step = raw.get("step")
    if low > high:
        raise ConfigError(f"search space entry {name}: low {low} is above high {high}", "swap them")
    if log and low <= 0:
        raise ConfigError(f"search space entry {name}: a log range needs low > 0, not {low}",
                          "raise low or drop log")
    if log and step is not None:
        raise ConfigError(f"search space entry {name}: log and step cannot be combined", "drop one")
    kind = "int" if spec.kind is int else "float"
    if low == high:
        return Dimension(name, "categorical", choices=(low,))
    return Dimension(name, kind, low=low, high=high, log=log, step=None if step is None else float(step))


def _methods(reducer: str, clusterer: str) -> tuple[Method, Method]:
    return lookup(REDUCERS, reducer, "reducer"), lookup(CLUSTERERS, clusterer, "clusterer")


def parse_space(payload: Mapping[str, Any] | None, shape: DataShape, *, reducer: str | None = None,
                clusterer: str | None = None) -> SearchSpace:
    """A space from its YAML/JSON form, checked against data of ``shape``."""
    payload = dict(payload or {})
    unknown = set(payload) - {"reducer", "clusterer", "params"}
    if unknown:
        raise ConfigError(f"search space has unknown top-level keys {sorted(unknown)}",
                          "use reducer, clusterer and params")
    reducer = str(payload.get("reducer") or reducer or "umap")
    clusterer = str(payload.get("clusterer") or clusterer or "hdbscan")
    reducer_method, clusterer_method = _methods(reducer, clusterer)
    params = payload.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError("search space params must be a mapping of name -> range, choices or value")
    dimensions, fixed = [], {}
    for name, raw in params.items():
        name = str(name)
        if name.startswith(_REDUCER):
            method, short = reducer_method, name[len(_REDUCER):]
        elif name.startswith(_CLUSTERER):
            method, short = clusterer_method, name[len(_CLUSTERER):]
        else:
            raise ConfigError(f"search space entry {name!r} names no reducer or clusterer parameter",
                              f"write {_REDUCER}<name> or {_CLUSTERER}<name>")
        spec = method.spec(short)
        if isinstance(raw, Mapping):
            dimensions.append(_dimension(name, spec, raw, method.name))
        else:
            fixed[name] = spec.check(raw, owner=method.name)
    space = SearchSpace(reducer, clusterer, tuple(dimensions), fixed)
    check_space(space, shape)
    return space


def default_space(reducer: str, clusterer: str, shape: DataShape,
                  fixed: Mapping[str, Any] | None = None) -> SearchSpace:
    """Every parameter with a declared search range, clipped to the data; ``fixed``
    (flat names) pins some instead."""
    reducer_method, clusterer_method = _methods(reducer, clusterer)
    fixed = dict(fixed or {})
    params: dict[str, Any] = {}
    for prefix, method in ((_REDUCER, reducer_method), (_CLUSTERER, clusterer_method)):
        for spec in method.params:
            name = prefix + spec.name
            search = spec.search_for(shape)
            if name in fixed:
                params[name] = fixed.pop(name)
            elif search is not None:
                params[name] = search
    if fixed:
        raise ConfigError(f"unknown parameters {sorted(fixed)} for {reducer} + {clusterer}")
    return parse_space({"reducer": reducer, "clusterer": clusterer, "params": params}, shape)


def check_space(space: SearchSpace, shape: DataShape) -> None:
    """Fail now, not in trial 17: each range's ends (others at their defaults or lowest)
    and the all-lowest and all-highest corners must resolve on data of ``shape``."""
    reducer_method, clusterer_method = _methods(space.reducer, space.clusterer)

    def resolve(flat: Mapping[str, Any]) -> None:
        reducer_params, clusterer_params = space.split(flat)
        reduced = resolve_params(reducer_method, reducer_params, shape)
        dims = reduced.get("n_components", shape.n_features)
        resolve_params(clusterer_method, clusterer_params, DataShape(shape.n_samples, dims, shape.n_classes))

    def label(flat: Mapping[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in flat.items() if k not in space.fixed) or "defaults"

    base = dict(space.fixed)
    points = [base]
    for dimension in space.dimensions:
        for value in dimension.extremes():
            points.append({**base, dimension.name: value})
    if space.dimensions:
        points.append({**base, **{d.name: d.extremes()[0] for d in space.dimensions}})
        points.append({**base, **{d.name: d.extremes()[-1] for d in space.dimensions}})
    for point in points:
        try:
            resolve(point)
        except ConfigError as error:
            raise ConfigError(f"search space fails at {label(point)}: {error}",
                              "narrow the range in the space file") from None


# -- the sparse autoencoder's space (sweep --target sae) ------------------------------------
# Parameter -> (type, default search range given the layer's width). Names are the sae
# run's params (Param.FEATURES, ...), so a trial's Optuna params are its logged settings.
_SAE_PARAMS: dict[str, type] = {
    Param.FEATURES: int, Param.K: int, Param.LEARNING_RATE: float, Param.EPOCHS: int, Param.BATCH_SIZE: int,
    Param.AUX_COEF: float,
}


def _sae_default_ranges(width: int) -> dict[str, Any]:
    return {Param.FEATURES: {"low": 2 * width, "high": 8 * width, "log": True},
            Param.K: {"low": 8, "high": 64, "log": True},
            Param.LEARNING_RATE: {"low": 3e-4, "high": 1e-2, "log": True}}


@dataclass(frozen=True)
class SaeSpace(_Space):
    """What an SAE sweep searches: dimensions over the sae job's settings (features, k,
    learning_rate, epochs, batch_size, aux_coef) and fixed values; ``width``: the layer's."""

    width: int
    dimensions: tuple[Dimension, ...]
    fixed: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"target": "sae", "params": self._params()}

    def suggest(self, trial) -> dict[str, Any]:
        """One point: the fixed values plus a suggestion for every dimension."""
        return self._flat_suggestion(trial)


class _Typed:
    """The ``spec`` :func:`_dimension` expects, for one SAE setting."""

    def __init__(self, name: str, kind: type):
        self.name, self.kind = name, kind

    def check(self, value: Any, *, owner: str) -> Any:
        try:
            coerced = self.kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{owner} setting {self.name}={value!r} is not a {self.kind.__name__}") from None
        if self.kind is int and float(value) != coerced:
            raise ConfigError(f"{owner} setting {self.name}={value!r} is not a whole number")
        if coerced <= 0 and self.name != Param.AUX_COEF:
            raise ConfigError(f"{owner} setting {self.name}={value!r} must be positive")
        return coerced


def parse_sae_space(payload: Mapping[str, Any] | None, width: int) -> SaeSpace:
    """An SAE space from its YAML form (``target: sae``, ``params: {k: {low: 8, high: 64},
    features: 3072, ...}``); with no params, the default ranges for a layer of ``width``.
    Every corner must keep k <= features."""
    payload = dict(payload or {})
    unknown = set(payload) - {"target", "params"}
    if unknown:
        raise ConfigError(f"search space has unknown top-level keys {sorted(unknown)}", "use target and params")
    params = payload.get("params") or _sae_default_ranges(width)
    if not isinstance(params, Mapping):
        raise ConfigError("search space params must be a mapping of name -> range, choices or value")
    dimensions, fixed = [], {}
    for name, raw in params.items():
        name = str(name)
        if name not in _SAE_PARAMS:
            raise ConfigError(f"search space entry {name!r} is not an sae setting",
                              f"use {', '.join(_SAE_PARAMS)}")
        spec = _Typed(name, _SAE_PARAMS[name])
        if isinstance(raw, Mapping):
            dimensions.append(_dimension(name, spec, raw, "sae"))
        else:
            fixed[name] = spec.check(raw, owner="sae")
    space = SaeSpace(width, tuple(dimensions), fixed)
    k_max = space.largest(Param.K, 32)
    features_min = min((min(d.extremes()) for d in dimensions if d.name == Param.FEATURES),
                       default=fixed.get(Param.FEATURES, 8 * width))
    if k_max > features_min:
        raise ConfigError(f"search space fails: k up to {k_max} with as few as {features_min} features",
                          "keep k at most the smallest features")
    return space
