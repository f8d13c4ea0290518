"""Cluster labels: c-TF-IDF keywords name a planted topic, purity is right on planted
labels, central samples are the typical ones, and a map logs clusters.parquet."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latentscape.jobs.core.cluster_labels import central_samples, class_tfidf, describe_clusters, purity

# Three topics; every sentence also carries words shared by all topics ("today",
# "people", "really"), which a plain term count would rank first.
COOKING = [
    "Simmer the onions in butter today, then stir in the stock for the soup.",
    "People really love a soup of roasted garlic and onions simmered slowly.",
    "Bake the bread in a hot oven today and let the dough rise first.",
    "Stir the sauce and simmer it until the garlic is soft, people say.",
    "Really good soup needs stock, onions, garlic and time to simmer.",
    "Knead the dough, then bake it in the oven until the crust is golden.",
    "Season the stew with garlic and stir it while it simmers today.",
    "People say the secret of this soup is the stock and slow simmering.",
]
WEATHER = [
    "Heavy rain is forecast today with strong wind along the coast.",
    "People really expect snow tonight as the cold front moves in.",
    "The forecast says rain, wind and thunderstorms over the weekend.",
    "Snow and ice today will make the roads dangerous, people warn.",
    "A warm front brings sunshine after the rain, the forecast says.",
    "Really strong wind knocked trees down during the storm today.",
]
FINANCE = [
    "The bank raised interest rates today and mortgage payments rose.",
    "People really worry about inflation eating their savings.",
    "Stocks fell as investors sold shares after the interest rate news.",
    "Put some savings into an index fund and ignore the market today.",
    "The bank offered a loan with a lower interest rate to people.",
    "Investors bought shares when the market dipped, really quickly.",
]
COOKING_WORDS = {"simmer", "simmered", "simmers", "simmering", "soup", "onions", "garlic", "stock", "stir", "bake",
                 "oven", "dough", "bread", "sauce", "stew", "knead", "crust", "butter", "roasted", "season"}


def _planted():
    texts = COOKING + WEATHER + FINANCE
    clusters = np.array([0] * len(COOKING) + [1] * len(WEATHER) + [2] * len(FINANCE))
    return texts, clusters


def test_keywords_of_a_cooking_cluster_are_cooking_words():
    texts, clusters = _planted()
    keywords = class_tfidf(texts, clusters, top=6)
    cooking = [term for term, _ in keywords[0]]
    assert len(cooking) == 6 and set(cooking) <= COOKING_WORDS, cooking
    assert {"simmer", "soup", "garlic"} & set(cooking[:3]), cooking
    assert not {"today", "people", "really", "the"} & {t for words in keywords.values() for t, _ in words}
    assert {"rain", "wind", "forecast", "snow"} & {t for t, _ in keywords[1][:3]}
    assert {"interest", "bank", "investors", "savings", "shares", "market"} & {t for t, _ in keywords[2][:3]}
    scores = [score for _, score in keywords[0]]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0


def test_keywords_of_the_demo_topics_name_them():
    """The bundled demo sentences grouped by their true topic: each topic's top words are its own."""
    import pandas as pd

    from latentscape.jobs.datasets import load_dataset

    demo = load_dataset("demo")
    codes, topics = pd.factorize(demo.labels)
    keywords = class_tfidf(list(demo.texts), codes, top=6)
    named = {topic: {t for t, _ in keywords[code]} for code, topic in enumerate(topics)}
    assert len(named["cooking"] & {"butter", "flour", "eggs", "pan", "garlic", "oven", "sauce", "onions"}) >= 3
    assert len(named["space"] & {"space", "solar", "galaxy", "moon", "orbit", "mars", "planet"}) >= 3
    assert len(named["music"] & {"song", "band", "chord", "guitar", "album", "piano"}) >= 3


def test_ctfidf_is_bertopics_formula():
    # Two classes, one document each: counts [[a: 2, b: 1], [b: 1, c: 1]].
    keywords = class_tfidf(["alpha alpha beta", "beta gamma"], np.array([5, 7]), top=3, stop_words=None)
    mean_words = (3 + 2) / 2
    expected_alpha = (2 / 3) * math.log(1 + mean_words / 2)
    expected_beta_5 = (1 / 3) * math.log(1 + mean_words / 2)
    assert dict(keywords[5]) == pytest.approx({"alpha": expected_alpha, "beta": expected_beta_5})
    assert keywords[7][0][0] == "gamma"  # beta is shared, gamma is not
    assert class_tfidf(["the and of", "a"], np.array([0, 1])) == {0: [], 1: []}  # stop words only


def test_purity_is_the_majority_labels_share():
    assert purity(np.array(["a"] * 8 + ["b"] * 2)) == ("a", 0.8)
    assert purity(np.array(["b", "a"])) == ("a", 0.5)  # a tie goes to the label that sorts first
    majority, share = purity(np.array([]))
    assert majority is None and math.isnan(share)


def test_describe_clusters_on_planted_labels_noise_and_centres():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    clusters = np.repeat([0, 1, 2], 20)
    z = centres[clusters] + rng.normal(scale=0.5, size=(60, 2))
    # Cluster 0: 16 "a" + 4 "b"; cluster 1: all "b"; cluster 2: 11 "c" + 9 "a".
    labels = np.array(["a"] * 16 + ["b"] * 4 + ["b"] * 20 + ["c"] * 11 + ["a"] * 9)
    clusters = clusters.copy()
    clusters[[5, 25]] = -1  # two noise points
    others = [i for i in np.flatnonzero(clusters == 0) if i != 3]
    z[3] = z[others].mean(axis=0)  # a point at the mean of the others is at the cluster's mean
    summaries = describe_clusters(clusters, z=z, labels=labels, coords=z * 2, n_central=3)
    by_id = {s.cluster: s for s in summaries}
    assert [s.cluster for s in summaries] == [-1, 0, 1, 2]
    assert by_id[-1].noise and by_id[-1].size == 2 and by_id[-1].central == ()
    assert (by_id[0].majority_label, by_id[0].purity) == ("a", pytest.approx(15 / 19))
    assert (by_id[1].majority_label, by_id[1].purity) == ("b", 1.0)
    assert (by_id[2].majority_label, by_id[2].purity) == ("c", pytest.approx(11 / 20))
    assert sum(s.size for s in summaries) == 60 and sum(s.share for s in summaries) == pytest.approx(1)
    assert by_id[0].central[0] == 3 and len(by_id[0].central) == 3
    assert all(clusters[i] == 0 for i in by_id[0].central)
    assert (by_id[1].x, by_id[1].y) == pytest.approx((20.0, 0.0), abs=1.0)  # median of 2 * z
    assert by_id[0].keywords == () and math.isnan(describe_clusters(clusters, z=z)[1].purity)
    assert [s.cluster for s in describe_clusters(clusters, z=z, include_noise=False)] == [0, 1, 2]
    with pytest.raises(ValueError):
        describe_clusters(clusters, z=z[:10])


def test_central_samples_are_closest_to_the_mean():
    z = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    assert central_samples(z, np.array([0, 1, 2, 3]), n=2).tolist() == [1, 2]  # mean 1.5: a tie, lower first
    assert central_samples(z, np.array([], dtype=int)).tolist() == []


def test_clusters_frame_agrees_with_its_map(text_extraction):
    from latentscape.jobs._clusters import clusters_frame
    from latentscape.jobs.core.mapping import data_shape, fit_map, resolve_config
    from latentscape.tracking.contract import Column

    x, labels = text_extraction.embedding(6), text_extraction.labels
    config = resolve_config(shape=data_shape(x, labels), reducer="pca", clusterer="kmeans",
                            reducer_params={"n_components": 10})
    result = fit_map(x, labels, config)
    table = clusters_frame(text_extraction, result.clusters, result.embedding, result.coords)
    assert len(table) == len(np.unique(result.clusters)) and table[Column.SIZE].sum() == len(x)
    assert table[Column.PURITY].between(0, 1).all() and table[Column.KEYWORDS].map(len).min() > 0
    ids = dict(zip(text_extraction.ids, text_extraction.texts))
    for row in table.itertuples():
        members = set(text_extraction.ids[result.clusters == row.cluster])
        central = list(getattr(row, Column.CENTRAL_SAMPLES))
        assert set(central) <= members and [ids[i] for i in central] == list(getattr(row, Column.CENTRAL_TEXTS))


def test_a_map_logs_its_clusters_table_and_a_tabular_one_has_no_keywords(store):
    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract
    from latentscape.jobs.map import MapRequest, map_layer
    from latentscape.tracking.contract import Artifact, Column
    from latentscape.tracking.runs import load_table

    extraction = load_extraction(store, extract(ExtractConfig(data="digits", limit=300), store=store).run_id)
    request = MapRequest(run=extraction.run_id, layer=0, reducer="pca", clusterer="kmeans")
    run_id = map_layer(request, store=store).run_id
    table = load_table(store, run_id, Artifact.CLUSTERS)
    points = load_table(store, run_id, Artifact.MAP)
    assert len(table) == 10 and table[Column.SIZE].sum() == len(points) == 300
    assert table[Column.KEYWORDS].map(len).max() == 0 and table[Column.CENTRAL_SAMPLES].map(len).min() == 5
    assert table[Column.PURITY].mean() > 0.5  # PCA + k-means of digits is far above chance (0.1)
    centre = table.iloc[0]
    inside = points[points[Column.CLUSTER] == centre[Column.CLUSTER]]
    assert centre[Column.X] == pytest.approx(inside[Column.X].median(), rel=1e-5)
