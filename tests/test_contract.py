"""Every key of the run contract is documented in README.md, and defined once."""

from __future__ import annotations

import re
from pathlib import Path

from latentscape.tracking.contract import all_keys

README = Path(__file__).resolve().parents[1] / "README.md"


def _contract_section() -> str:
    text = README.read_text()
    start = text.index("## Run contract")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_every_contract_key_is_documented_in_the_readme():
    section = _contract_section()
    documented = set(re.findall(r"`([^`]+)`", section))
    missing = {group: [key for key in keys if key not in documented] for group, keys in all_keys().items()}
    assert not any(missing.values()), f"undocumented contract keys: {missing}"


def test_no_key_is_defined_twice_within_a_group():
    for group, keys in all_keys().items():
        duplicates = {key for key in keys if keys.count(key) > 1}
        assert not duplicates, f"{group}: {duplicates}"
