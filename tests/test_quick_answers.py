"""Bad input is reported before the heavy libraries load, and a job imports only what its
settings need (issue 21). Each case runs in a new process and reads its ``sys.modules``;
the timings themselves are in bench/answers.py."""

import json
import subprocess
import sys

import pytest

HEAVY = ("mlflow", "torch", "transformers", "umap", "hdbscan", "sklearn", "numba", "pynndescent")

# Runs the CLI in this process, then prints its exit code and the heavy modules loaded.
_RUN_CLI = """
import json, sys
from latentscape.jobs.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY_NAMES))
print(json.dumps({"code": code, "heavy": heavy}))
""".replace("HEAVY_NAMES", repr(HEAVY))


def _cli(args: list[str], cwd) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", _RUN_CLI, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.fixture
def data_files(tmp_path):
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "notes.txt").write_text("text,label\na,b\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("text,label\n")
    (tmp_path / "nolabel.csv").write_text("body\nfirst text\nsecond text\n")
    return tmp_path


@pytest.mark.parametrize("args, words", [
    (["extract", "--data", "nope.csv"], "neither a file nor a built-in"),
    (["extract", "--data", "folder.csv"], "is a folder"),
    (["extract", "--data", "notes.txt"], "unknown file type"),
    (["extract", "--data", "empty.csv"], "is empty"),
    (["extract", "--data", "header.csv"], "has no rows"),  # parsed (pandas), still no MLflow
    (["extract", "--data", "nolabel.csv"], "no text column 'text'"),
    (["extract", "--data", "digits", "--pooling", "bogus"], "unknown pooling"),
    (["finetune", "--data", "nope.csv"], "neither a file nor a built-in"),
    (["map", "--run", "R", "--layer", "abc"], "--layer 'abc' is not an integer"),
    (["map", "--run", "R", "--reducer", "bogus"], "unknown reducer"),
    (["sweep", "--run", "R", "--trials", "-1"], "--trials -1 must be positive"),
    (["sweep", "--run", "R", "--search-sample", "abc"], "--search-sample 'abc' is not an integer"),
    (["sweep", "--run", "R", "--search-sample", "0"], "--search-sample 0 is out of range; pass 100 or more"),
    (["layers", "--run", "R", "--map-reducer", "bogus"], "unknown --map-reducer"),
    (["layers", "--run", "R", "--knn-k", "0"], "--knn-k 0 must be positive"),
])
def test_bad_input_fails_before_heavy_imports(data_files, args, words):
    store = data_files / "mlflow.db"
    result, stderr = _cli([*args, "--tracking-uri", f"sqlite:///{store}"], cwd=data_files)
    assert result["code"] == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"latentscape {args[0]}: error: ") and words in lines[0], stderr
    assert result["heavy"] == [], f"{args} imported {result['heavy']} before its error"
    assert not store.exists(), "a store was created for input that was rejected"


@pytest.mark.parametrize("args, words", [
    (["search", "--run", "R", "--text", "hi", "--k", "0"], "--k 0 must be positive"),
    (["analogies", "--run", "R", "--questions", "nope.txt"], "nope.txt does not exist"),
])
def test_jobs_checking_after_opening_their_store_still_import_no_mlflow(tmp_path, args, words):
    # These open their store first (cheap: MLflow is imported at its first query).
    result, stderr = _cli([*args, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], cwd=tmp_path)
    assert result["code"] == 2 and words in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert result["heavy"] == []


def test_digits_extraction_does_not_import_torch(tmp_path):
    result, stderr = _cli(["extract", "--data", "digits", "--limit", "100",
                           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], cwd=tmp_path)
    assert result["code"] == 0, stderr
    assert "mlflow" in result["heavy"]  # it did log the run
    assert not {"torch", "transformers", "umap", "hdbscan"} & set(result["heavy"])


_PCA_KMEANS = """
import json, sys
import numpy as np
from latentscape.jobs._trust import TrustSettings, map_trust
from latentscape.jobs.core.mapping import data_shape, fit_map, resolve_config
rng = np.random.default_rng(0)
labels = np.array([str(i % 4) for i in range(300)])
x = (rng.normal(size=(4, 16))[np.arange(300) % 4] + rng.normal(scale=0.3, size=(300, 16))).astype(np.float32)
config = resolve_config(shape=data_shape(x, labels), reducer="pca", clusterer="kmeans", seed=0)
result = fit_map(x, labels, config)
map_trust(x, labels, result, TrustSettings(permutations=20, bootstrap=20, seeds=2))
print(json.dumps({"ami": result.scores["ami"],
                  "heavy": sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY_NAMES))}))
""".replace("HEAVY_NAMES", repr(HEAVY))


def test_pca_kmeans_map_does_not_import_umap_or_hdbscan():
    done = subprocess.run([sys.executable, "-c", _PCA_KMEANS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ami"] > 0.5  # a real map was made
    assert not {"umap", "hdbscan", "numba", "pynndescent", "mlflow", "torch"} & set(result["heavy"])
