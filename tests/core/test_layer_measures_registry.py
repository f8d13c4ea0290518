"""The per-layer measures' registry (tracking/layer_measures.py): every record names a
metric of the contract, the layers job computes every one it registers, and the lists the
job, the verdict and the Layers page used to spell out by hand derive from it."""

from __future__ import annotations

import numpy as np

from latentscape.tracking import layer_measures as registry
from latentscape.tracking.contract import Kind, Metric


def test_every_record_is_a_contract_metric_and_well_formed():
    names = [measure.name for measure in registry.MEASURES]
    assert len(set(names)) == len(names)
    assert set(names) <= {value for value in vars(Metric).values() if isinstance(value, str)}
    kinds = {kind.value for kind in Kind}
    for measure in registry.MEASURES:
        assert measure.kind in kinds
        assert measure.direction in (registry.MAXIMIZE, registry.MINIMIZE)
        assert measure.title is None or measure.axis, f"{measure.name}: a panel needs its y axis"
        assert not measure.default or measure.title, f"{measure.name}: a default panel needs a title"
        assert not measure.context or measure.verdict, f"{measure.name}: context of a verdict it is not in"
        assert measure.same_as is None or measure.same_as in registry.BY_NAME
        if measure.scorer is not None:  # ami.<scorer>, the name its cluster counts are qualified with
            assert Metric.qualified(Metric.AMI, measure.scorer) == measure.name
        assert measure.chance_metric is None or measure.chance_metric in set(vars(Metric).values())
    # The verdict's names read as one list: no commas in any of them.
    assert all("," not in title for title in registry.VERDICT_TITLES.values())


def test_derived_lists_equal_the_hand_written_ones():
    assert set(registry.LAYERS_COLUMNS) == {
        Metric.CKA_PREVIOUS, Metric.COSINE_PREVIOUS, Metric.ANISOTROPY, Metric.INTRINSIC_DIM,
        Metric.PROBE_ACCURACY, Metric.PROBE_ACCURACY_STD, Metric.KNN_AGREEMENT, Metric.AMI}
    assert registry.INTERVALS == (Metric.PROBE_ACCURACY, Metric.KNN_AGREEMENT)
    assert registry.LABELLED == (Metric.PROBE_ACCURACY, Metric.PROBE_ACCURACY_STD, Metric.KNN_AGREEMENT, Metric.AMI)
    assert registry.SCORERS == ("kmeans", "map", "hdbscan", "tuned")
    assert registry.VERDICT_LABELLED == (Metric.PROBE_ACCURACY, Metric.KNN_AGREEMENT, Metric.AMI_KMEANS,
                                         Metric.AMI_MAP, Metric.AMI_HDBSCAN, Metric.AMI_TUNED)
    assert registry.VERDICT_CONTEXT == registry.LOWER_IS_BETTER == (Metric.CKA_PREVIOUS,)
    assert set(registry.CHANCE) == {Metric.AMI, Metric.AMI_KMEANS, Metric.AMI_MAP, Metric.AMI_HDBSCAN,
                                    Metric.AMI_TUNED}
    assert registry.CHANCE_METRICS == {Metric.PROBE_ACCURACY: Metric.PROBE_CHANCE}
    assert registry.INTERVAL_OF == {Metric.AMI: Metric.AMI_KMEANS}


def test_the_job_and_the_ui_read_the_registry_s_lists():
    from latentscape.jobs import layers
    from latentscape.ui.charts import layers as charts

    assert layers.CURVES is registry.LAYERS_COLUMNS and layers.LABELLED_CURVES is registry.LABELLED
    assert charts.CURVE_TITLES is registry.CURVE_TITLES and charts.VERDICT_TITLES is registry.VERDICT_TITLES
    assert charts.DEFAULT_CURVES is registry.DEFAULT_CURVES


def test_the_layers_job_measures_every_measure_it_registers():
    """One labelled layer through the job's own per-layer measurement (PCA + k-means as the
    per-layer map, no UMAP): every registered layers measure but the tuned one (a sweep
    per layer) comes back, finite."""
    from latentscape.jobs import _layer_scores as scores
    from latentscape.jobs._layer_measuring import Mapper, Rows, measure
    from latentscape.jobs.layers import LayersConfig, _curves

    rng = np.random.default_rng(0)
    labels = np.repeat(np.array(["a", "b", "c"]), 40)
    centres = rng.normal(size=(3, 16)) * 4
    x = centres[np.repeat(np.arange(3), 40)] + rng.normal(size=(120, 16))
    before = x + rng.normal(scale=0.1, size=x.shape)
    config = LayersConfig(run="r", map_reducer="pca", map_clusterer="kmeans")
    rows = Rows(n=len(x), geometry=None, labelled=None, labels=labels)
    values = measure(x, before, rows, config, Mapper(config, labels, x))
    values[Metric.CKA_PREVIOUS] = 1.0  # measured over pairs of layers, outside measure
    columns = _curves(True, True, config)
    expected = {m.name for m in registry.MEASURES if m.kind == Kind.LAYERS.value and m.scorer != scores.TUNED}
    assert expected <= set(columns)
    assert all(np.isfinite(values[name]) for name in expected), {n: values.get(n) for n in expected}
    for name in registry.INTERVALS:
        assert values[Metric.trust(name, Metric.CI_LOW_SUFFIX)] <= values[name] + 1e-9
