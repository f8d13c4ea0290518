"""How far to trust one map, for the jobs that log maps (``map``; the sweep's best map).

Beside every label score S of a map: ``S_perm_mean`` and ``S_p_value`` (the same
clustering against ``--permutations`` shuffles of the labels), ``S_ci_low`` /
``S_ci_high`` (a 95% bootstrap interval over ``--bootstrap`` resamples of the samples),
see :mod:`latentscape.jobs.core.trust`. With ``--seeds N`` the map is made again with seeds seed + 1
.. seed + N - 1: ``S_mean`` / ``S_std`` of every score over the N maps (the logged map
first) and ``seed_ari_mean``, the agreement between their clusterings.

Everything is seeded by the map's own seed, so replaying a map replays these too.

Held-out scoring (``sweep --holdout``): the samples are split once, stratified by label
and seeded (:func:`latentscape.jobs.core.trust.holdout_split`); every map still embeds and clusters
all samples (no label enters a map), but its label scores read the tuning part's labels
only (:func:`score_rows`); the best map's scores over the held-out part are logged as
``holdout.<score>`` (:func:`holdout_metrics`).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from latentscape.jobs._options import add_options, check_options, from_args, option
from latentscape.jobs.core.trust import DEFAULT_PERMUTATIONS, DEFAULT_RESAMPLES
from latentscape.tracking.errors import UsageError

__all__ = ["TrustSettings", "add_trust_arguments", "settings_from_args", "map_trust", "split_for", "score_rows",
           "holdout_metrics"]


@dataclass(frozen=True)
class TrustSettings:
    """permutations: label shuffles per score (0: no chance baseline); bootstrap:
    resamples per score (0: no interval); seeds: maps made in all (1: no stability)."""

    permutations: int = option(DEFAULT_PERMUTATIONS, low=0,
                               help="label shuffles for each label score's chance level and p-value "
                               f"(<score>_perm_mean, <score>_p_value); 0: none (default {DEFAULT_PERMUTATIONS})")
    bootstrap: int = option(DEFAULT_RESAMPLES, low=0,
                            help="resamples for each label score's 95%% interval (<score>_ci_low, <score>_ci_high); "
                            f"0: none (default {DEFAULT_RESAMPLES})")
    seeds: int = option(1, low=1, help="make the map with this many seeds (seed, seed+1, ...): <score>_mean, "
                        "<score>_std and seed_ari_mean, the agreement of their clusterings")

    def __post_init__(self):
        for name, value in asdict(self).items():  # argparse gives integers; Python callers may not
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise UsageError(f"--{name} {value!r} is not an integer", f"pass --{name} a whole number")
        check_options(self)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any] | None) -> TrustSettings:
        """Settings logged in a ``config.json`` (defaults where none were logged)."""
        known = {key: int(value) for key, value in (payload or {}).items() if key in cls.__dataclass_fields__}
        return cls(**known)


def add_trust_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser.add_argument_group("how far to trust the scores"), TrustSettings)


def settings_from_args(args) -> TrustSettings:
    return from_args(TrustSettings, args)


def map_trust(x: np.ndarray, labels: np.ndarray | None, result, settings: TrustSettings, *,
              rows: np.ndarray | None = None, cache=None) -> dict[str, float]:
    """The trust metrics of ``result`` (a :class:`~latentscape.jobs.core.mapping.MapResult` of ``x:
    (n, d)`` and ``labels: (n,)`` or None), named through the run contract. rows: score
    against ``labels[rows]`` only (a held-out split's tuning part; None: every sample);
    cache: a :class:`~latentscape.jobs.core.mapping.NeighbourCache` the extra seeds' maps share."""
    from latentscape.jobs.core.trust import baseline_metrics, label_baselines, stability, stability_metrics

    metrics: dict[str, float] = {}
    if labels is not None and settings.permutations + settings.bootstrap > 0:
        picked = slice(None) if rows is None else rows
        baselines = label_baselines(labels[picked], result.clusters[picked], n_permutations=settings.permutations,
                                    n_resamples=settings.bootstrap, seed=result.config.seed)
        metrics.update(baseline_metrics(baselines))
    if settings.seeds > 1:
        from latentscape.jobs.core.mapping import NeighbourCache, fit_map

        cache = cache if cache is not None else NeighbourCache(x)
        config = result.config
        others = []
        for offset in range(1, settings.seeds):
            seeded = replace(config, seed=config.seed + offset)
            if rows is None:
                others.append(fit_map(x, labels, seeded, cache=cache, with_view=False))
            else:
                others.append(score_rows(fit_map(x, None, seeded, cache=cache, with_view=False), labels, rows))
        runs = [result, *others]
        found = stability([r.scores for r in runs], [r.clusters for r in runs])
        metrics.update(stability_metrics(found, names=list(result.scores)))
    return metrics


def split_for(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tune, held_out)`` row indices (:func:`latentscape.jobs.core.trust.holdout_split`); a one-line
    UsageError when the labels cannot be split so."""
    from latentscape.jobs.core import trust

    try:
        return trust.holdout_split(labels, fraction, seed=seed)
    except ValueError as error:
        raise UsageError(f"--holdout {fraction:g}: {error}", "pass a smaller --holdout, or extract more samples "
                         "per class") from None


def score_rows(result, labels: np.ndarray, rows: np.ndarray):
    """``result``, a map fitted without labels, with the label scores of ``clusters[rows]``
    against ``labels[rows]`` (no other label is read) before its other scores."""
    from latentscape.jobs.core.scores import label_scores

    scores = {**label_scores(labels[rows], result.clusters[rows]), **result.scores}
    return replace(result, scores=scores)


def holdout_metrics(labels: np.ndarray, clusters: np.ndarray, rows: np.ndarray) -> dict[str, float]:
    """``holdout.<score>`` for every label score of ``clusters[rows]`` against ``labels[rows]``."""
    from latentscape.jobs.core.scores import label_scores
    from latentscape.tracking.contract import Metric

    return {Metric.holdout(name): value for name, value in label_scores(labels[rows], clusters[rows]).items()}
