"""Benchmark: from query to a served map payload, for maps of 100,000 and 1,000,000 points.

A map run whose ``map.parquet`` holds N points (sample_id, x, y, cluster, label, text of
~70 characters, like a sentence data set) is logged to a local SQLite store and synced
into the DuckDB catalog (not timed: the UI's catalog is synced ahead of a page view).

- latentscape: what the Maps page does on the first view of a large map:
  ``queries.map_points(cat, run_id, columns=[...])`` (DuckDB reads only the columns the
  deck needs from the cached Parquet), ``latentscape.ui.charts.bigmap.deck_info`` (positions on an
  integer grid, one layer per colour, text for up to 100,000 hover points) and the JSON
  of the deck with every layer's data inline (``deck_json``; the app serves each layer's
  data as a JSON file beside a small deck JSON: the same bytes). Aim: under 2 s at 1M points.
- plain: loading the whole Parquet (every column) into pandas and building the Altair
  spec of a scatter coloured by label with the text as tooltip (``alt.Chart(df)...
  .to_json()`` with Altair's row limit lifted): what a page without a large-map path
  would send.

Quality (held when): the payload draws every one of the N points, at most 1/20,000 of
the map's extent from its true position (the grid's rounding), and carries the text of
min(N, 100,000) points for hover. Timed twice, the faster kept (the first pays the
one-off pydeck import); the process's CPU seconds are reported too, as wall time on a
shared machine depends on its load. Prints a table; ``main(quick)`` returns the rows
(``--quick``: 100,000 points only).

    .venv/bin/python bench/bigmap.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, print_rows  # noqa: E402

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

WORKLOAD = "map payload {n:,} points (query -> deck JSON)"
AIM_S = 2.0
_WORDS = ("soup onion garlic simmer oven bread rain storm wind forecast snow bank loan market shares savings "
          "guitar chord album drummer orbit planet galaxy rocket soil seedlings compost pruning vaccine clinic "
          "symptoms python compiler cache server trip flight airport luggage match league goal coach").split()


def synthetic_map(n: int, *, seed: int = 0, n_clusters: int = 20, n_labels: int = 10) -> pd.DataFrame:
    """A ``map.parquet`` frame of ``n`` points: Gaussian blobs, 5% noise, labels that mostly
    follow the blobs, and ~70-character texts."""
    rng = np.random.default_rng(seed)
    blob = rng.integers(0, n_clusters, size=n)
    centres = rng.uniform(-12, 12, size=(n_clusters, 2))
    xy = centres[blob] + rng.normal(scale=rng.uniform(0.4, 1.2, size=n_clusters)[blob, None], size=(n, 2))
    cluster = np.where(rng.random(n) < 0.05, -1, blob)
    label = np.where(rng.random(n) < 0.85, blob % n_labels, rng.integers(0, n_labels, size=n))
    words = np.asarray(_WORDS, dtype=object)[rng.integers(0, len(_WORDS), size=(n, 10))]
    texts = words[:, 0]
    for column in range(1, words.shape[1]):
        texts = texts + " " + words[:, column]
    return pd.DataFrame({
        "sample_id": pd.Series(np.char.add("s-", np.arange(n).astype(str)).astype(object)),
        "x": xy[:, 0].astype(np.float32), "y": xy[:, 1].astype(np.float32), "cluster": cluster.astype(np.int64),
        "label": np.char.add("class-", label.astype(str)).astype(object), "text": texts,
    })


def log_map_run(store, frame: pd.DataFrame, *, name: str) -> str:
    """A finished ``map`` run holding ``frame`` as its map.parquet."""
    from latentscape.tracking.contract import Artifact, Kind, Param, Tag
    from latentscape.tracking.run_log import tracked_run

    with tracked_run(store, store.experiment_id("bigmap"), Kind.MAP, run_name=name, tags={Tag.LAYER: 0}) as log:
        log.params({Param.LAYER: 0, Param.REDUCER: "umap", Param.CLUSTERER: "hdbscan"})
        log.table(Artifact.MAP, frame)
        return log.run_id


def _plain(path: Path) -> tuple[float, int]:
    import altair as alt

    started = time.perf_counter()
    frame = pd.read_parquet(path)
    with alt.data_transformers.disable_max_rows():
        spec = (alt.Chart(frame).mark_circle(size=4)
                .encode(x="x:Q", y="y:Q", color="label:N", tooltip=["text:N", "label:N", "cluster:N", "sample_id:N"])
                .to_json())
    return time.perf_counter() - started, len(spec)


def _ours(catalog, run_id: str) -> tuple[float, float, int, object, str]:
    """(wall s, CPU s of this process, payload bytes, DeckInfo, payload)."""
    from latentscape.tracking import queries
    from latentscape.tracking.contract import Column
    from latentscape.ui.charts import bigmap

    started, cpu = time.perf_counter(), time.process_time()
    # As ui/data.py's big_map: the size (one float column), the file's schema, the deck's columns.
    n = len(queries.map_points(catalog, run_id, columns=[Column.X]))
    columns = bigmap.columns_for(n, queries.parquet_columns(catalog, run_id))
    points = queries.map_points(catalog, run_id, columns=columns)
    info = bigmap.deck_info(points, color_by=Column.LABEL)
    payload = bigmap.deck_json(info)
    return time.perf_counter() - started, time.process_time() - cpu, len(payload.encode()), info, payload


def _check(info, payload: str, frame: pd.DataFrame) -> tuple[int, float, int]:
    """(points in the payload, worst position error as a fraction of the extent, hover texts)."""
    deck = json.loads(payload)
    n_drawn = n_hover = 0
    grid = []
    for layer in deck["layers"]:
        rows = layer["data"]
        n_drawn += len(rows)
        if layer.get("pickable"):
            n_hover += sum(1 for row in rows if row["t"])
            grid += [row["p"] for row in rows]
        else:
            grid += rows
    grid = np.asarray(grid, dtype=np.float64)
    back = grid / info.scale + np.asarray(info.origin)
    xy = frame[["x", "y"]].to_numpy(np.float64)
    extent = float((xy.max(axis=0) - xy.min(axis=0)).max())
    # Every drawn position rounds back to within half a grid step of a true position:
    # compare the sorted coordinate multisets (the payload groups points by colour).
    error = max(float(np.max(np.abs(np.sort(back[:, k]) - np.sort(xy[:, k])))) for k in (0, 1)) / extent
    return n_drawn, error, n_hover


def run_one(n: int, folder: Path) -> dict:
    from latentscape.tracking.catalog import Catalog
    from latentscape.tracking.runs import open_store
    from latentscape.ui.charts import bigmap

    frame = synthetic_map(n)
    store = open_store(f"sqlite:///{folder / f'mlflow-{n}.db'}")
    run_id = log_map_run(store, frame, name=f"bigmap {n}")
    catalog = Catalog.open(tracking_uri=store.uri, path=folder / f"catalog-{n}.duckdb", cache_dir=folder / "cache")
    catalog.refresh()
    path = catalog.artifact(run_id, "map.parquet")

    ours_first, _, size, info, payload = _ours(catalog, run_id)  # pays the one-off pydeck import
    ours_again, cpu_s, _, _, _ = _ours(catalog, run_id)
    plain_s, plain_size = _plain(path)
    n_drawn, error, n_hover = _check(info, payload, frame)
    held = n_drawn == n and error <= 1.001 / 20_000 and n_hover == min(n, bigmap.HOVER_POINTS)
    latentscape_s = min(ours_first, ours_again)
    quality = (f"{n_drawn:,}/{n:,} points drawn, error {error:.1e} of extent, hover text {n_hover:,}; "
               f"payload {size / 1e6:.1f} MB vs {plain_size / 1e6:.0f} MB")
    print(f"{WORKLOAD.format(n=n)}: plain {plain_s:.2f} s, latentscape {latentscape_s:.2f} s "
          f"(first {ours_first:.2f} s; CPU {cpu_s:.2f} s), payload {size / 1e6:.1f} MB "
          f"(plain {plain_size / 1e6:.0f} MB); load average {os.getloadavg()[0]:.1f}; "
          f"{'under' if latentscape_s < AIM_S else 'OVER'} the {AIM_S:.0f} s aim", flush=True)
    catalog.close()
    return {"workload": WORKLOAD.format(n=n), "plain_s": plain_s, "latentscape_s": latentscape_s,
            "quality": quality, "quality_held": held, "payload_mb": size / 1e6, "plain_payload_mb": plain_size / 1e6,
            "first_s": ours_first, "cpu_s": cpu_s, "under_aim": latentscape_s < AIM_S,
            "load_average": os.getloadavg()[0]}


def main(quick: bool = False) -> list[dict]:
    sizes = (100_000,) if quick else (100_000, 1_000_000)
    with tempfile.TemporaryDirectory(prefix="latentscape-bigmap-") as tmp:
        return [run_one(n, Path(tmp)) for n in sizes]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 points only")
    rows = main(quick=parser.parse_args().quick)
    print()
    print_rows([Row(workload=r["workload"], plain_s=r["plain_s"], latentscape_s=r["latentscape_s"],
                    quality=r["quality"], quality_held=r["quality_held"]) for r in rows])
