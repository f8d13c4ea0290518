"""``extract --engine ray`` on a local Ray (CPU): the same embeddings and run contract as the
local engine."""

from __future__ import annotations

import numpy as np
import pytest

from latentscape.tracking.contract import Artifact, Param

pytest.importorskip("ray.data", reason="the ray extra: pip install 'latentscape[ray]'")


def test_ray_engine_equals_the_local_engine_and_logs_the_same_contract(store):
    import ray

    from latentscape.jobs._source import load_extraction
    from latentscape.jobs.extract import ExtractConfig, extract

    settings = dict(data="demo", limit=40, batch_size=8, shard_rows=16, layers=(0, 3, 6))
    local = extract(ExtractConfig(**settings), store=store)
    # one CPU worker: the job starts a local Ray of one CPU and stops it after
    remote = extract(ExtractConfig(**settings, engine="ray", threads=1, force=True), store=store)
    assert not ray.is_initialized()
    assert remote.run_id != local.run_id and not remote.reused

    a, b = load_extraction(store, local.run_id), load_extraction(store, remote.run_id)
    assert a.layers == b.layers == [0, 3, 6]
    for layer in a.layers:
        np.testing.assert_allclose(b.embedding(layer), a.embedding(layer), atol=1e-5, rtol=0)

    run_a, run_b = store.get_run(local.run_id), store.get_run(remote.run_id)
    assert run_b.status == "FINISHED"
    assert set(run_a.params) == set(run_b.params)
    assert set(run_a.tags) - {"mlflow.runName"} <= set(run_b.tags)
    assert set(run_a.metrics) == set(run_b.metrics)
    differ = {key for key in run_a.params if run_a.params[key] != run_b.params[key]}
    assert differ == {Param.ENGINE}, differ
    assert (set(store.artifact_paths(local.run_id, Artifact.EMBEDDINGS_DIR))
            == set(store.artifact_paths(remote.run_id, Artifact.EMBEDDINGS_DIR)))
