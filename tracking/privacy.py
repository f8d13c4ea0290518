"""What latentscape keeps to itself: passwords in URLs, and usage data.

- :func:`masked` is the one function that makes a URL (or any text holding URLs) fit to
  log, print, store as a param, tag or artifact, or show in the app: every password in it
  becomes ``***``. Everything the project writes or shows passes a URL through it.
- :func:`telemetry_off` switches MLflow's usage telemetry off in this process (and in the
  children it starts) unless the user said otherwise. MLflow 3.17 sends usage events to
  its maintainers by default; it stops when ``MLFLOW_DISABLE_TELEMETRY`` or
  ``DO_NOT_TRACK`` is true (mlflow/telemetry/utils.py, read at each event). Hugging Face
  Hub's own switch is set the same way. A user opts in by setting
  ``MLFLOW_DISABLE_TELEMETRY=false`` (or ``HF_HUB_DISABLE_TELEMETRY=0``) explicitly.

Imports nothing beyond the standard library: ``import latentscape`` calls it.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from typing import Any

__all__ = ["MASK", "masked", "masked_values", "telemetry_off", "TELEMETRY_SWITCHES"]

MASK = "***"

# userinfo of any scheme://user:password@ (the user may be empty: "://:pw@"). The password
# runs to the LAST "@" of the whitespace-free stretch: SQLAlchemy reads a raw "/", "?",
# "#" or ":" as part of it, so stopping earlier would leave its tail in clear. The cost is
# over-masking a URL whose query holds another "@", which hides nothing secret.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*):(?P<password>\S*)@")
# password=, sslpassword=, PASSWORD=, db_password=... as a query parameter or a libpq
# key=value pair (after ?, &, ; or whitespace, or at the start). The value ends where
# the parameter does.
_PARAMETER = re.compile(r"(?P<head>(?:^|[?&;\s])[A-Za-z0-9_.\-]*password=)(?P<password>[^&;#\s]*)",
                        re.IGNORECASE)

# Telemetry switches and the value that turns each off.
TELEMETRY_SWITCHES = {"MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_DISABLE_TELEMETRY": "1"}


def masked(text: str) -> str:
    """``text`` with every password in a URL replaced by ``***``: userinfo
    (``user:pw@``, ``:pw@``) and ``password=`` / ``sslpassword=`` parameters in any case.

    Idempotent; text without a password comes back unchanged. Non-strings are returned
    as ``str(text)``: callers mask whatever they are about to write."""
    text = text if isinstance(text, str) else str(text)
    if "@" in text:
        text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@" if m["password"] != MASK else m[0], text)
    if "assword" in text.lower():
        text = _PARAMETER.sub(lambda m: f"{m['head']}{MASK}", text)
    return text


def masked_values(value: Any) -> Any:
    """``value`` with :func:`masked` applied to every string in it, through dicts (keys
    too), lists and tuples; other values unchanged. For payloads about to be logged or
    printed as JSON: masking the serialised text instead could cut across its quotes."""
    if isinstance(value, str):
        return masked(value)
    if isinstance(value, dict):
        return {masked_values(key): masked_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(masked_values(item) for item in value)
    return value


def telemetry_off(environ: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Switch usage telemetry off in ``environ`` (default: this process's environment,
    which the processes it starts inherit) where the user set no value of their own.
    Returns ``environ``."""
    environ = os.environ if environ is None else environ
    for name, value in TELEMETRY_SWITCHES.items():
        environ.setdefault(name, value)
    return environ
