"""Who may see what, for the app: team logins checked against the tracking server, the
experiments a login may read, a catalog cursor bound to them, and the Host headers the
app answers.

- A store is *shared* when its tracking URI is an ``http(s)`` server: the app then asks
  every visitor for their team account. Local stores (SQLite, a file store) belong to
  whoever can read their files, so the app asks nothing there.
- A login is checked by asking the server, as that user (basic auth), for the experiments
  they may read (``experiments/search``): MLflow's auth app answers 401 to a wrong
  password and filters the list by the user's permissions, DENY included. The app's own
  service account (``MLFLOW_TRACKING_USERNAME``) never stands in for a visitor.
- :func:`restrict` makes a catalog cursor see only those experiments: temporary views
  named like the catalog's tables shadow them on that cursor alone, so every query of
  :mod:`latentscape.tracking.queries` is bound to the user's experiments without a
  change of its own.
- Host headers are matched as the tracking server matches them (``latentscape server
  --allowed-hosts``): comma-separated names, ``*`` patterns (``localhost:*``), and the
  same default, MLflow's (loopback and private addresses).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from latentscape.tracking.backends import Backend
from latentscape.tracking.errors import UsageError

__all__ = ["ENV_ALLOWED_HOSTS", "ENV_SESSION_TTL", "DEFAULT_SESSION_TTL_S", "DEFAULT_ALLOWED_HOSTS", "LoginRefused",
           "Login", "is_shared", "without_credentials", "log_in", "allowed_hosts", "host_allowed", "restrict"]

ENV_ALLOWED_HOSTS = "LATENTSCAPE_ALLOWED_HOSTS"  # the server's variable (latentscape server --allowed-hosts)
ENV_SESSION_TTL = "LATENTSCAPE_SESSION_TTL"  # seconds a login to the app lasts (latentscape ui --session-ttl)
DEFAULT_SESSION_TTL_S = 3600

# MLflow 3.17's default allow-list (mlflow.server.security_utils.get_default_allowed_hosts),
# spelt out so that the app's launcher need not import MLflow (2 s) before it listens;
# tests/test_security_app.py checks that it is still MLflow's.
_LOOPBACK = ("localhost", "127.0.0.1", "[::1]", "0.0.0.0")
DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = (
    *_LOOPBACK, "localhost:*", "127.0.0.1:*", "[[]::1]:*", "0.0.0.0:*",
    "192.168.*", "10.*", *(f"172.{second}.*" for second in range(16, 32)), "fc00:*", "fd00:*",
)

_LOGIN_TIMEOUT_S = 30.0
_PAGE = 1000  # experiments per search page
_USERNAME = re.compile(r"^[^\s:]{1,256}$")  # basic auth cannot carry a ':' in the user name


class LoginRefused(Exception):
    """The server refused the user name and password (or throttled the attempt); the
    message is fit to show the visitor and names no secret."""


@dataclass(frozen=True)
class Login:
    """A visitor the server accepted: their name and the ids of the experiments they may read."""

    username: str
    experiment_ids: frozenset[str]


def is_shared(tracking_uri: str) -> bool:
    """True for a tracking server (``http(s)://``), whose visitors must log in."""
    return Backend.of(tracking_uri).is_server


def without_credentials(tracking_uri: str) -> str:
    """``tracking_uri`` with any ``user:password@`` taken out (a visitor's request must
    carry the visitor's account, not the service account's)."""
    parts = urlsplit(tracking_uri)
    if not (parts.username or parts.password):
        return tracking_uri
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def log_in(tracking_uri: str, username: str, password: str, *, timeout: float = _LOGIN_TIMEOUT_S) -> Login:
    """Check ``username``/``password`` against the tracking server and return what they
    may read. Raises :class:`LoginRefused` for a wrong account (or a throttled one),
    :class:`UsageError` when the server cannot be reached or answers something else."""
    username = username.strip()
    if not _USERNAME.match(username) or not password:
        raise LoginRefused("enter your team user name and password")
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request  # tracking/ is the door to MLflow

    creds = MlflowHostCreds(
        without_credentials(tracking_uri), username=username, password=password,
        ignore_tls_verification=os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true",
        server_cert_path=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
    readable: set[str] = set()
    token = None
    while True:
        body = {"max_results": _PAGE, "view_type": "ALL", **({"page_token": token} if token else {})}
        try:
            answer = http_request(creds, "/api/2.0/mlflow/experiments/search", "POST", json=body, max_retries=0,
                                  timeout=timeout, raise_on_status=False)
        except Exception as error:  # requests' connection errors, wrapped by MLflow
            raise UsageError(f"cannot reach the tracking server to check the login "
                             f"({type(error).__name__})", "ask the team's admin whether the server is up") from None
        if answer.status_code in (401, 403):
            raise LoginRefused("wrong user name or password")
        if answer.status_code == 429:
            wait = answer.headers.get("Retry-After")
            raise LoginRefused("too many failed logins: try again " + (f"in {wait} s" if wait else "later"))
        if answer.status_code != 200:
            raise UsageError(f"the tracking server answered {answer.status_code} to a login",
                             "ask the team's admin to look at the server's log")
        page = answer.json()
        readable.update(str(experiment["experiment_id"]) for experiment in page.get("experiments", []))
        token = page.get("next_page_token")
        if not token:
            return Login(username=username, experiment_ids=frozenset(readable))


# -- Host headers ----------------------------------------------------------------------
def allowed_hosts(option: str | None = None) -> tuple[str, ...]:
    """The allow-list from ``--allowed-hosts`` (else ``$LATENTSCAPE_ALLOWED_HOSTS``, else
    MLflow's default), split at commas."""
    text = option if option is not None else os.environ.get(ENV_ALLOWED_HOSTS)
    if text is None or not text.strip():
        return DEFAULT_ALLOWED_HOSTS
    hosts = tuple(host.strip() for host in text.split(",") if host.strip())
    if not hosts:
        raise UsageError(f"--allowed-hosts {text!r} names no host", "pass e.g. 'ui.example.org,localhost:*'")
    return hosts


def host_allowed(host: str | None, patterns: Sequence[str]) -> bool:
    """Whether a ``Host`` header (``name`` or ``name:port``) is on the list: a pattern
    with ``*`` is matched as a shell pattern, any other pattern exactly; ``*`` allows all."""
    if not host:
        return False
    return any(pattern == "*" or (fnmatch.fnmatchcase(host, pattern) if "*" in pattern else host == pattern)
               for pattern in patterns)


# -- a catalog cursor bound to a login ---------------------------------------------------
# Each catalog table and how its rows belong to an experiment (``r``: the restricted runs).
_BY_EXPERIMENT = ("experiments", "runs", "sync_state", "deleted_runs")
_BY_RUN = ("params", "tags", "latest_metrics", "metrics")


def restrict(cursor, experiment_ids: Collection[str]):
    """Make ``cursor`` (a DuckDB cursor on the catalog, after ``USE catalog``) see only
    the rows of ``experiment_ids``: temporary views of the same names shadow the tables
    for this cursor alone (unqualified and ``main.`` names alike). Returns ``cursor``."""
    database = cursor.execute("SELECT current_database()").fetchone()[0]
    cursor.execute("CREATE OR REPLACE TEMP TABLE visible_experiments (experiment_id VARCHAR)")
    if experiment_ids:
        cursor.execute("INSERT INTO visible_experiments SELECT unnest(?::VARCHAR[])", [sorted(experiment_ids)])
    source = f'"{database}".main'
    for table in _BY_EXPERIMENT:
        cursor.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS SELECT * FROM {source}.{table} "
                       "WHERE experiment_id IN (SELECT experiment_id FROM temp.main.visible_experiments)")
    for table in _BY_RUN:
        cursor.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS SELECT * FROM {source}.{table} "
                       "WHERE run_id IN (SELECT run_id FROM temp.main.runs)")
    return cursor
