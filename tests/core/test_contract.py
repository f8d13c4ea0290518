"""The README's run contract is the one tracking/contract.py makes, and every key is defined once."""

from __future__ import annotations

import re
from pathlib import Path

from latentscape.tracking.contract_readme import all_keys, readme_section

README = Path(__file__).resolve().parents[2] / "README.md"


def _contract_section() -> str:
    text = README.read_text()
    start = text.index("## Run contract")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_the_readme_run_contract_is_the_one_the_contract_module_makes():
    assert _contract_section() == readme_section(), (
        "README.md's run contract differs from tracking/contract.py: replace the section with the output of "
        "`python -m latentscape.tracking.contract`")


def test_every_contract_key_is_in_the_readme():  # the section's own self-check: no key left out
    documented = set(re.findall(r"`([^`]+)`", readme_section()))
    missing = {group: [key for key in keys if key not in documented] for group, keys in all_keys().items()}
    assert not any(missing.values()), f"undocumented contract keys: {missing}"


def test_no_key_is_defined_twice_within_a_group():
    for group, keys in all_keys().items():
        duplicates = {key for key in keys if keys.count(key) > 1}
        assert not duplicates, f"{group}: {duplicates}"
