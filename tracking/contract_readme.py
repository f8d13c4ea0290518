"""The README's ``## Run contract`` section, made from the keys of
:mod:`latentscape.tracking.contract` (``python -m latentscape.tracking.contract`` prints it;
tests/core/test_contract.py checks that README.md holds it and that no key is left out)."""

from __future__ import annotations

from latentscape.tracking.contract import Artifact, Column, Kind, Metric, Param, Reply, Tag

__all__ = ["GROUP_NOTES", "readme_section", "all_keys"]


# What each group of keys is, for people: the README's run contract is made from these
# and :func:`all_keys` (``python -m latentscape.tracking.contract`` prints it).
GROUP_NOTES = {
    "kind": "The `kind` tag: which job wrote a run.",
    "tag": "Tags (searchable, e.g. `tags.kind = 'map'`). Child runs also carry MLflow's own `mlflow.parentRunId`.",
    "param": "Params. Reducer and clusterer settings are logged as `reducer.<name>` and `clusterer.<name>`; "
             "a sweep's best settings as `best.<name>`; the samples a subsampled measure read as `n.<measure>`.",
    "metric": "Metrics. Per-layer curves are logged with `step=layer`; `<score>_clustered` is a score over "
              "clustered (non-noise) points only; per-section or per-pooling variants append `.<part>`.",
    "artifact": "Artifacts: tables are Parquet, arrays float32 `.npy` read with `allow_pickle=False` "
                "(an extraction's embeddings are float16 where its `dtype` param says so; readers cast them to "
                "float32); nothing is pickled.",
    "column": "Columns of the Parquet tables (`meta.<column>` keeps a data set's extra columns).",
    "reply": "The JSON line of `--json`, and the search protocol the UI speaks to its warm "
             "`latentscape search --serve` workers (the app never loads a model itself).",
}


def readme_section() -> str:
    """The README's ``## Run contract`` section, made from the keys defined here."""
    lines = ["## Run contract", "",
             "Every name that jobs write and the catalog and UI read is defined once, in",
             "`tracking/contract.py`; this section is made from it (`python -m latentscape.tracking.contract`),",
             "and `tests/core/test_contract.py` checks that the two are equal.", ""]
    for group, keys in all_keys().items():
        lines.append(f"- **{group}** — {GROUP_NOTES[group]}")
        lines.append("  " + ", ".join(f"`{key}`" for key in keys))
    return "\n".join(lines) + "\n"


def all_keys() -> dict[str, list[str]]:
    """Every key of the contract by group, for documentation checks."""
    groups: dict[str, list[str]] = {"kind": [k.value for k in Kind]}
    for cls in (Tag, Param, Metric, Artifact, Column, Reply):
        groups[cls.__name__.lower()] = [
            value
            for name, value in vars(cls).items()
            if name.isupper() and isinstance(value, str)
        ]
    return groups
