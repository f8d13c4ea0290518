"""The plan of a sweep: everything resolved before the study is touched (the layer,
the objective and its direction, the search space and the default trial, the trials'
and the best map's UMAP epochs, the held-out split, the subsample the trials map, the
study's name and storage). :func:`_plan` is the map target's (``targets/map.py``);
``targets/sae.py``'s plan extends :class:`_Plan` with an SAE's settings.

A search on a subsample (``--search-sample N``): the trials map N rows drawn by
:func:`latentscape.jobs.core.labels.sample_rows` (stratified by label, seeded by
``--seed``: every process draws the same; with ``--holdout`` drawn from the tuning part),
and the space, its ranges and the default trial are those of the subsample's shape. The
best trial is re-fitted on all samples with its searched settings as they are, except the
sample counts (``ParamSpec.counts_samples``: HDBSCAN's min_cluster_size and min_samples),
scaled by n_all / n_sample (a cluster of 20 among 5,000 samples is one of 400 among
100,000); settings the space does not search take their defaults for all samples, and the
default trial is re-fitted as the map's own defaults on all samples."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from latentscape.tracking.contract import Metric, Param
from latentscape.tracking.errors import UsageError

if TYPE_CHECKING:
    from latentscape.jobs.sweep import SweepConfig

# Trials lay out UMAP with this many epochs unless told otherwise, and the best map is
# re-fitted at the full count: measured at 5,000 x 384, 100 epochs is 1.7-2.6x faster than
# 200 per trial and ranks settings alike (see bench/sweep.py for the best-score check).
DEFAULT_SEARCH_EPOCHS = 100
_EPOCHS = Param.reducer_param("n_epochs")


# -- names ----------------------------------------------------------------------------
def study_name_for(spec: dict[str, Any]) -> str:
    """A stable name from the sweep's settings: the same command joins the same study."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"sweep-{spec['run'][:8]}-layer{spec['layer']}-{spec['objective']}-{digest}"


# -- the plan -------------------------------------------------------------------------
@dataclass
class _Plan:
    """Everything resolved before the study is touched."""

    extraction: Any
    layer: int
    shape: Any
    space: Any
    base: Any  # MapConfig of the default trial
    objective: str
    direction: str
    spec: dict[str, Any]
    study_name: str
    storage_url: str
    experiment_id: str
    experiment_name: str
    labels: Any = None  # (n,) every label, read once (None: unlabelled)
    tune: Any = None  # --holdout: row indices whose labels score the trials (None: all rows)
    held: Any = None  # --holdout: row indices held out, read only to score the best map
    search_epochs: int | None = None  # the trials' UMAP epochs, when fewer than the refit's
    refit_epochs: int | None = None  # the best map's UMAP epochs (None: no refit, a replay)
    sample: Any = None  # --search-sample: sorted rows of all samples that every trial maps (None: all)
    full_shape: Any = None  # --search-sample: the shape of all samples (``shape`` is the subsample's)

    @property
    def refits(self) -> bool:
        """Whether the best map is re-fitted (fewer epochs searched, or a subsample) rather than replayed."""
        return self.refit_epochs is not None or self.sample is not None

    def searched_config(self, trial_params: dict):
        """The MapConfig a trial ran with, from its Optuna params."""
        return self.trial_config(*self.space.split({**self.space.fixed, **trial_params}))

    def best_config(self, trial_params: dict, *, default: bool = False):
        """The best map's config: the trial's, re-fitted at the full epochs (if fewer were
        searched). Searched on a subsample: on all samples, the trial's sample counts scaled
        by n_all / n_sample; ``default``: the default trial's, the map's defaults on all samples."""
        epochs = {} if self.refit_epochs is None else {_EPOCHS: self.refit_epochs}
        if self.sample is None:
            return self.searched_config({**trial_params, **epochs})
        from latentscape.jobs.core.mapping import resolve_config

        point = {} if default else self.space.scaled(trial_params, self.full_shape.n_samples / len(self.sample))
        reducer_params, clusterer_params = self.space.split({**self.space.fixed, **point, **epochs})
        return resolve_config(
            shape=self.full_shape, reducer=self.space.reducer, clusterer=self.space.clusterer,
            reducer_params=reducer_params, clusterer_params=clusterer_params, seed=self.base.seed,
            score_k=self.base.score_k, score_sample=self.base.score_sample)

    def scaled_counts(self, trial_params: dict) -> dict:
        """The trial's searched sample counts as ``best_config`` re-fits them on all samples,
        where they differ (empty: no subsample)."""
        if self.sample is None:
            return {}
        scaled = self.space.scaled(trial_params, self.full_shape.n_samples / len(self.sample))
        return {k: v for k, v in scaled.items() if trial_params.get(k) != v}

    def config_of(self, point):
        """The config of one suggested point (``space.suggest``'s value)."""
        return self.trial_config(*point)

    def default_point(self) -> dict | None:
        """The default map as Optuna params of the space (None: the space excludes it)."""
        return self.space.point_of(self.base.flat_params())

    def trial_config(self, reducer_params: dict, clusterer_params: dict):
        """The MapConfig of one point of the space: seed, graph and score settings of the sweep."""
        from latentscape.jobs.core.mapping import resolve_config

        return resolve_config(
            shape=self.shape, reducer=self.space.reducer, clusterer=self.space.clusterer,
            reducer_params=reducer_params, clusterer_params=clusterer_params, seed=self.base.seed,
            knn=self.base.knn if self.base.knn != "none" else "auto", knn_k=self.base.knn_k,
            score_k=self.base.score_k, score_sample=self.base.score_sample)


def _plan(config: SweepConfig, store, experiment: str | None) -> _Plan:
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.core.mapping import ConfigError, resolve_config
    from latentscape.jobs.core.scores import DIRECTIONS, LABEL_SCORES, SCORE_NAMES
    from latentscape.jobs.core.search_space import default_space, parse_space
    from latentscape.jobs.map import extraction_shape

    extraction = load_extraction(store, config.run)
    layer = max(extraction.layers) if config.layer is None else extraction.check_layer(config.layer)
    shape = extraction_shape(extraction, layer)
    labels, tune, held = extraction.labels, None, None
    if config.holdout is not None:
        import numpy as np

        from latentscape.jobs._trust import split_for
        from latentscape.jobs.core.mapping import DataShape

        if labels is None:
            raise UsageError(f"--holdout holds labels out and run {config.run} has none",
                             "extract with --label-col, or drop --holdout")
        tune, held = split_for(labels, config.holdout, config.seed)
        # Defaults (k-means' k) from the tuning labels: nothing of the held-out part.
        shape = DataShape(shape.n_samples, shape.n_features, int(len(np.unique(labels[tune]))))
    full_shape, sample = shape, _search_rows(config.search_sample, shape.n_samples, labels, tune, config.seed)
    if sample is not None:  # the trials' space and defaults are the subsample's
        shape = _shape_of(sample, shape, labels)

    # The objective and its direction.
    if config.objective not in SCORE_NAMES:
        raise UsageError(f"unknown objective {config.objective!r}", f"choose one of {', '.join(SCORE_NAMES)}")
    base_name = config.objective.removesuffix(Metric.CLUSTERED_SUFFIX)
    if base_name in LABEL_SCORES and extraction.labels is None:
        raise UsageError(f"objective {config.objective} needs true labels and run {config.run} has none",
                         "extract with --label-col, or optimise silhouette / trustworthiness")
    direction = config.direction or DIRECTIONS[config.objective]
    if direction is None:
        raise UsageError(f"objective {config.objective} has no natural direction", "pass --direction")

    # The search space, checked against this layer, and the default trial.
    try:
        if config.space is not None:
            if config.fixed:
                raise ConfigError("-r/-c pin settings of the default space only", "put them in the --space file")
            space = parse_space(config.space, shape, reducer=config.reducer, clusterer=config.clusterer)
        else:
            space = default_space(config.reducer, config.clusterer, shape, fixed=config.fixed)
        reducer_params, clusterer_params = space.split(space.fixed)
        base = resolve_config(shape=shape, reducer=space.reducer, clusterer=space.clusterer,
                              reducer_params=reducer_params, clusterer_params=clusterer_params, seed=config.seed,
                              score_k=config.score_k, score_sample=config.score_sample)
        if base.knn == "approx":
            # One shared approximate graph, as wide as the widest trial needs: its width is
            # then part of every trial's config (approximate graphs do not truncate exactly).
            knn_k = int(space.largest(Param.reducer_param("n_neighbors"), base.knn_width))
            base = resolve_config(shape=shape, reducer=space.reducer, clusterer=space.clusterer,
                                  reducer_params=reducer_params, clusterer_params=clusterer_params, seed=config.seed,
                                  knn="approx", knn_k=knn_k, score_k=config.score_k, score_sample=config.score_sample)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    space, search_epochs, refit_epochs = _epochs(space, base, config.search_epochs)

    spec = {"run": extraction.run_id, "layer": layer, "objective": config.objective, "direction": direction,
            "space": space.to_dict(), "seed": config.seed, "score_k": base.score_k,
            "score_sample": base.score_sample, "knn": base.knn, "knn_k": base.knn_k}
    if config.holdout is not None:
        spec["holdout"] = config.holdout  # another split, another study
    if refit_epochs is not None:
        spec["refit_epochs"] = refit_epochs  # (the search epochs are in the space)
    if sample is not None:
        spec["search_sample"] = config.search_sample  # another subsample, another study

    storage_url = config.storage or store.backend.optuna_url
    experiment_id = store.experiment_id(experiment) if experiment else extraction.experiment_id
    return _Plan(extraction, layer, shape, space, base, config.objective, direction, spec,
                 config.study or study_name_for(spec), storage_url, experiment_id,
                 experiment or extraction.experiment_name, labels=labels, tune=tune, held=held,
                 search_epochs=search_epochs, refit_epochs=refit_epochs, sample=sample,
                 full_shape=full_shape if sample is not None else None)


def _search_rows(size: int | None, n: int, labels, tune, seed: int):
    """The rows every trial maps with ``--search-sample size`` (None: all ``n``): drawn from
    the tuning rows with ``--holdout`` (``tune``), stratified by ``labels`` when there are
    any, seeded; a function of its arguments only, so every worker process draws the same."""
    if size is None or size >= n:
        return None
    import numpy as np

    from latentscape.jobs.core.labels import sample_rows

    pool = np.arange(n) if tune is None else np.sort(tune)
    return pool[sample_rows(len(pool), size, None if labels is None else labels[pool], seed=seed)]


def _shape_of(rows, shape, labels):
    import numpy as np

    from latentscape.jobs.core.mapping import DataShape

    n_classes = None if labels is None else int(len(np.unique(labels[rows])))
    return DataShape(len(rows), shape.n_features, n_classes)


def _epochs(space, base, asked: int | None):
    """The trials' UMAP epochs and the best map's: (space with the trials' epochs fixed,
    search epochs, refit epochs), the last two None when trials use the full epochs.

    By default trials lay out with DEFAULT_SEARCH_EPOCHS and the best is re-fitted at the
    full count (the reducer's default, or what -r / the space fixed); n_epochs named by
    the user (fixed or searched) is taken as it is unless --search-epochs says otherwise."""
    from dataclasses import replace

    has_epochs = "n_epochs" in base.reducer_params
    searched = any(d.name == _EPOCHS for d in space.dimensions)
    if asked == 0 or (asked is None and (not has_epochs or searched or _EPOCHS in space.fixed)):
        return space, None, None
    if not has_epochs:
        raise UsageError(f"--search-epochs: reducer {space.reducer} has no layout epochs",
                         "drop --search-epochs (it applies to umap)")
    if searched:
        raise UsageError("--search-epochs: n_epochs is itself searched by the space",
                         "drop --search-epochs, or fix reducer.n_epochs in the space")
    full = int(base.reducer_params["n_epochs"])
    epochs = DEFAULT_SEARCH_EPOCHS if asked is None else asked
    if epochs >= full:
        if asked is not None and asked > full:
            raise UsageError(f"--search-epochs {asked} is more than the map's {full} epochs",
                             f"pass at most {full}, or raise them with -r n_epochs=N")
        return space, None, None
    return replace(space, fixed={**space.fixed, _EPOCHS: epochs}), epochs, full
