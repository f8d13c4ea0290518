"""The map scores' registry (tracking/scores.py): every record has its functions, and the
lists the jobs and the UI used to spell out by hand are derived from it unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from latentscape.jobs.core import scores as core
from latentscape.jobs.core import trust
from latentscape.tracking import scores as registry
from latentscape.tracking.contract import Metric


def test_every_registered_score_has_its_functions():
    names = [score.name for score in registry.SCORES]
    assert len(set(names)) == len(names)
    assert set(names) <= {value for value in vars(Metric).values() if isinstance(value, str)}
    assert set(core.plain_functions()) == set(names)
    assert all(callable(function) for function in core.plain_functions().values())
    assert set(core.batched_functions()) == set(registry.BATCHED)
    assert set(registry.BATCHED) <= set(registry.LABEL_SCORES)


def test_batched_twins_compute_what_the_plain_functions_do():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=200)
    clusters = rng.integers(0, 5, size=200)
    plain = core.plain_functions()
    for name, batch in core.batched_functions().items():
        got = batch(labels[None, :], clusters[None, :], 4, 5)
        assert set(got) == set(registry.BATCHED)  # one call gives every batched score
        assert float(got[name][0]) == pytest.approx(plain[name](labels, clusters), abs=1e-10)


def test_registry_fields_are_well_formed():
    assert {score.direction for score in registry.SCORES} <= {registry.MAXIMIZE, registry.MINIMIZE, None}
    places = [p for s in registry.SCORES for p in (s.summary, s.clustered_summary) if p is not None]
    assert sorted(places) == list(range(1, len(places) + 1))
    assert all(score.labelled for score in registry.SCORES if score.clustered_summary is not None)
    assert all(score.summary is not None for score in registry.SCORES if score.on_map)


def test_derived_lists_equal_the_hand_written_ones():
    from latentscape.jobs.map import KEY_SCORES

    label = (Metric.MUTUAL_INFO, Metric.NMI, Metric.AMI, Metric.ARI, Metric.HOMOGENEITY, Metric.COMPLETENESS,
             Metric.V_MEASURE)
    assert core.LABEL_SCORES == label
    assert trust.LABEL_SCORES == label
    assert core.SCORE_NAMES == (
        *label, *(name + Metric.CLUSTERED_SUFFIX for name in label),
        Metric.N_CLUSTERS, Metric.NOISE_FRACTION, Metric.SILHOUETTE, Metric.TRUSTWORTHINESS, Metric.KNN_PRESERVATION)
    assert core.DIRECTIONS == {**{name: "maximize" for name in core.SCORE_NAMES},
                               Metric.NOISE_FRACTION: "minimize", Metric.N_CLUSTERS: None}
    assert KEY_SCORES == (Metric.AMI, Metric.NMI, Metric.MUTUAL_INFO, Metric.ARI, Metric.V_MEASURE, Metric.N_CLUSTERS,
                          Metric.NOISE_FRACTION, Metric.AMI + Metric.CLUSTERED_SUFFIX, Metric.SILHOUETTE,
                          Metric.TRUSTWORTHINESS, Metric.KNN_PRESERVATION)
    assert registry.ON_MAP == (Metric.AMI, Metric.NMI, Metric.N_CLUSTERS, Metric.NOISE_FRACTION,
                               Metric.TRUSTWORTHINESS)
    from latentscape.ui.views import sweeps

    assert sweeps.HELD_OUT_SCORES == (Metric.AMI, Metric.NMI, Metric.MUTUAL_INFO, Metric.ARI, Metric.V_MEASURE)


def test_ui_and_jobs_lists_are_the_registry_s():
    from latentscape.jobs.map import KEY_SCORES
    from latentscape.ui.views import maps

    assert KEY_SCORES is registry.SUMMARY
    assert maps.ON_MAP is registry.ON_MAP
    assert core.SCORE_NAMES is registry.SCORE_NAMES and core.DIRECTIONS is registry.DIRECTIONS
    assert trust.LABEL_SCORES is registry.BATCHED
