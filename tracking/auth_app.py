"""``mlflow server --app-name latentscape``: MLflow's basic-auth app with the team's rules.

``latentscape server`` starts MLflow with this app (registered under the ``mlflow.app``
entry-point group in pyproject.toml). It is MLflow 3.17's basic-auth app, unchanged,
wrapped in one ASGI middleware that sees every request before MLflow does (the Flask
routes and the FastAPI ones alike) and adds:

- **Throttled, equal-time logins** (:mod:`login_throttle`): a request with credentials
  is checked there first; 429 with ``Retry-After`` after repeated failures of one name
  or one address; failures logged with the name.
- **Read-only accounts**: the users named in ``$LATENTSCAPE_READ_ONLY_USERS`` (from
  ``read_only: true`` in the users file) may GET anything their grants let them read,
  POST only to MLflow's search endpoints (derived from MLflow's own handler list, by
  handler) and GraphQL queries; every other request answers 403. An allow-list, so an
  endpoint MLflow adds later is refused until someone decides it only reads.
- **Artifacts under the server's root**: creating an experiment whose artifact location
  is not a ``mlflow-artifacts:/`` path (the proxied ``--artifacts-destination``) is
  refused for everyone but admins: ``file:///anywhere`` let the server write anywhere.
- **Runs belong to their login**: ``runs/create`` gets the authenticated name as its
  ``user_id`` and ``mlflow.user`` tag, whatever the client claimed; setting another
  name's ``mlflow.user`` tag later is refused (admins excepted).

Without uvicorn (``--gunicorn-opts``, ``--waitress-opts``) MLflow builds a bare Flask app
that this middleware cannot wrap: the factory refuses to start rather than run unguarded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from latentscape.tracking.contract import MLFLOW_USER
from latentscape.tracking.login_throttle import (
    ENV_LIMIT_ADDRESS,
    ENV_LIMIT_USER,
    ENV_STORAGE,
    LoginGuard,
    Verdict,
    parse_limit,
)

__all__ = [
    "APP_NAME",
    "ENV_READ_ONLY_USERS",
    "READ_ONLY_POST_HANDLERS",
    "Routes",
    "mlflow_routes",
    "is_write",
    "graphql_only_reads",
    "artifact_location_refusal",
    "claimed_user_refusal",
    "rewrite_run_user",
    "app_environment",
    "TeamGuard",
    "create_app",
]

APP_NAME = "latentscape"  # the entry point's name: `mlflow server --app-name latentscape`
ENV_READ_ONLY_USERS = "LATENTSCAPE_READ_ONLY_USERS"

# MLflow handlers answering POST that only read (searches take a body). Named by handler,
# so both of each one's paths (/api/... and /ajax-api/...) follow.
READ_ONLY_POST_HANDLERS = (
    "_search_experiments", "_search_runs", "_search_logged_models", "_search_traces_v3",
    "_batch_get_trace_infos", "_calculate_trace_filter_correlation", "_query_trace_metrics",
    "_search_issues", "_search_prompt_optimization_jobs", "_search_evaluation_datasets_handler",
    "_get_latest_versions",
)
# MLflow 3.17's GraphQL "mutations" are searches its UI sends as mutations.
GRAPHQL_READ_MUTATIONS = frozenset({"mlflowSearchRuns", "mlflowSearchDatasets"})
READING_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROXIED_SCHEME = "mlflow-artifacts"

_logger = logging.getLogger("latentscape.auth")
# mlflow.server.auth.make_basic_auth_response's body (it needs a Flask app context to call)
_NOT_AUTHENTICATED = (b"You are not authenticated. Please see "
                      b"https://www.mlflow.org/docs/latest/auth/index.html#authenticating-to-mlflow "
                      b"on how to authenticate.")


# -- which requests write ------------------------------------------------------------
@dataclass(frozen=True)
class Routes:
    """Paths of the MLflow handlers the policies look at."""

    read_posts: frozenset[str]
    graphql: frozenset[str]
    create_experiment: frozenset[str]
    create_run: frozenset[str]
    set_tag: frozenset[str]
    log_batch: frozenset[str]

    @property
    def with_body(self) -> frozenset[str]:
        """Paths whose body a policy reads."""
        return self.graphql | self.create_experiment | self.create_run | self.set_tag | self.log_batch


@lru_cache(maxsize=1)
def mlflow_routes() -> Routes:
    """The paths of the handlers named here, from MLflow's own endpoint list."""
    from mlflow.server import handlers

    by_handler: dict[str, set[str]] = {}
    for path, handler, _methods in handlers.get_endpoints():
        by_handler.setdefault(getattr(handler, "__name__", ""), set()).add(path)

    def paths(*names: str) -> frozenset[str]:
        missing = [name for name in names if name not in by_handler]
        if missing:  # MLflow renamed a handler: fail at start, not open a hole
            raise RuntimeError(f"MLflow has no handler(s) {', '.join(missing)}; update {__name__}")
        return frozenset(path for name in names for path in by_handler[name])

    return Routes(read_posts=paths(*READ_ONLY_POST_HANDLERS), graphql=paths("_graphql"),
                  create_experiment=paths("_create_experiment"), create_run=paths("_create_run"),
                  set_tag=paths("_set_tag"), log_batch=paths("_log_batch"))


def graphql_only_reads(document: str) -> bool:
    """True when the GraphQL ``document`` holds queries and MLflow's read-only
    "mutations" only (False when it does not parse)."""
    from graphql import OperationType, parse
    from graphql.error import GraphQLError
    from graphql.language import FieldNode, OperationDefinitionNode

    try:
        parsed = parse(document)
    except GraphQLError:
        return False
    for definition in parsed.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        if definition.operation == OperationType.SUBSCRIPTION:
            return False
        if definition.operation == OperationType.MUTATION:
            fields = definition.selection_set.selections
            if not all(isinstance(f, FieldNode) and f.name.value in GRAPHQL_READ_MUTATIONS for f in fields):
                return False
    return True


def _graphql_document(query_string: str, body: bytes | None) -> str:
    if body:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            payload = json.loads(body)
            if isinstance(payload, dict) and isinstance(payload.get("query"), str):
                return payload["query"]
        return ""  # a body that is not {"query": "..."}: nothing known to be a read
    return urllib.parse.parse_qs(query_string).get("query", [""])[0]


def is_write(method: str, path: str, routes: Routes, *, query_string: str = "", body: bytes | None = None) -> bool:
    """Whether a request may change anything: everything but reading methods, the
    search POSTs and GraphQL reads."""
    if path in routes.graphql:  # MLflow reads the JSON body whatever the method, else the query string
        return not graphql_only_reads(_graphql_document(query_string, body))
    if method in READING_METHODS:
        return False
    return not (method == "POST" and path in routes.read_posts)


# -- what a request may ask for --------------------------------------------------------
def _json_object(body: bytes | None) -> dict:
    """The request's JSON object as MLflow reads it (older clients double-encode it);
    ValueError when it is not one."""
    payload = json.loads(body or b"{}")
    if isinstance(payload, str):
        payload = json.loads(payload)
    if not isinstance(payload, dict):
        raise ValueError("the body is not a JSON object")
    return payload


def _field(payload: Mapping[str, Any], name: str) -> Any:
    """A field under its proto name or its JSON (camelCase) name, as protobuf accepts both."""
    camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    return payload.get(name, payload.get(camel))


def artifact_location_refusal(body: bytes | None) -> str | None:
    """Why an experiments/create body may not be honoured, or None. Allowed: no location
    (the server's proxied root) or a ``mlflow-artifacts:/`` path below it."""
    try:
        location = _field(_json_object(body), "artifact_location")
    except ValueError:
        return "the request body is not a JSON object"
    if not location:
        return None
    if not isinstance(location, str):
        return "artifact_location must be a string"
    parsed = urllib.parse.urlparse(location)
    segments = urllib.parse.unquote(parsed.path).replace("\\", "/").split("/")
    if parsed.scheme == PROXIED_SCHEME and not parsed.netloc and ".." not in segments:
        return None
    return (f"artifact_location {location!r} is outside this server's artifact store; "
            f"leave it empty (or use {PROXIED_SCHEME}:/PATH): only an admin may choose another")


def _tags(payload: Mapping[str, Any]) -> list:
    tags = payload.get("tags") or []
    return tags if isinstance(tags, list) else []


def claimed_user_refusal(path: str, body: bytes | None, username: str, routes: Routes) -> str | None:
    """Why a set-tag or log-batch request may not be honoured: it sets ``mlflow.user`` to
    a name other than the login's."""
    try:
        payload = _json_object(body)
    except ValueError:
        return "the request body is not a JSON object"
    tags = [payload] if path in routes.set_tag else [t for t in _tags(payload) if isinstance(t, dict)]
    for tag in tags:
        if tag.get("key") == MLFLOW_USER and tag.get("value") != username:
            return f"{MLFLOW_USER} is the login that created the run; {username!r} may not set it to another name"
    return None


def rewrite_run_user(body: bytes | None, username: str) -> bytes:
    """A runs/create body with ``user_id`` and the ``mlflow.user`` tag set to ``username``
    (ValueError when the body is not a JSON object)."""
    payload = _json_object(body)
    payload.pop("userId", None)
    payload["user_id"] = username
    tags = [tag for tag in _tags(payload) if not (isinstance(tag, dict) and tag.get("key") == MLFLOW_USER)]
    payload["tags"] = [*tags, {"key": MLFLOW_USER, "value": username}]
    return json.dumps(payload).encode()


# -- the middleware ------------------------------------------------------------------
def _error(status: int, code: str, message: str, headers: Iterable[tuple[str, str]] = ()) -> tuple:
    body = json.dumps({"error_code": code, "message": message}).encode()
    return status, body, [("content-type", "application/json"), *headers]


async def _send(send, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers] + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive) -> tuple[bytes, bool]:
    """The whole body, and whether the client went away meanwhile."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks), False


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class TeamGuard:
    """Pure ASGI middleware around MLflow's app (see the module docstring)."""

    def __init__(self, app, *, guard: LoginGuard, read_only: frozenset[str], routes: Routes,
                 is_unprotected=None, gateway_header: str = "X-MLflow-Authorization"):
        self.app = app
        self.guard = guard
        self.read_only = read_only
        self.routes = routes
        self.is_unprotected = is_unprotected or (lambda path: False)
        self.gateway_header = gateway_header.lower().encode()

    def _credentials(self, scope, path: str) -> tuple[str, str] | None:
        from werkzeug.datastructures import Authorization

        value = _header(scope, self.gateway_header) if path.startswith("/gateway/") else None
        authorization = Authorization.from_header(value or _header(scope, b"authorization"))
        if authorization is None or authorization.type != "basic":
            return None
        return authorization.username or "", authorization.password or ""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw_path = scope.get("path", "")
        # Routes are matched on the path with repeated slashes merged (werkzeug redirects
        # //api/... to /api/...); what MLflow leaves unprotected is judged on the path as
        # MLflow sees it (a merged //health must not skip the throttle where MLflow checks).
        path = re.sub("/+", "/", raw_path)
        credentials = self._credentials(scope, path)
        if self.is_unprotected(raw_path) or credentials is None:  # MLflow answers 401 where a login is needed
            return await self.app(scope, receive, send)
        from starlette.concurrency import run_in_threadpool

        address = (scope.get("client") or ("unknown", 0))[0]
        verdict: Verdict = await run_in_threadpool(self.guard.login, *credentials, address)
        if verdict.retry_after is not None:
            return await _send(send, *_error(429, "RESOURCE_EXHAUSTED", "too many failed logins; try again later",
                                             [("retry-after", str(verdict.retry_after))]))
        if verdict.user is None:  # MLflow's own 401, word for word: clients handle it as before
            return await _send(send, 401, _NOT_AUTHENTICATED, [("content-type", "text/html; charset=utf-8"),
                                                                ("www-authenticate", 'Basic realm="mlflow"')])
        method = scope.get("method", "GET")
        body = None
        if path in self.routes.with_body:
            body, gone = await _read_body(receive)
            if gone:
                return None
        refusal = self.refusal(verdict.user, method, path, scope.get("query_string", b"").decode("latin-1"), body)
        if refusal is not None:
            _logger.warning("refused %s %s for user %r: %s", method, path, verdict.user.username, refusal[2])
            return await _send(send, *_error(*refusal[:2], refusal[2]))
        if body is not None:
            if path in self.routes.create_run and method == "POST":
                try:
                    body = rewrite_run_user(body, verdict.user.username)
                except ValueError:
                    return await _send(send, *_error(400, "INVALID_PARAMETER_VALUE",
                                                     "the request body is not a JSON object"))
                headers = [(k, v) for k, v in scope.get("headers", [])
                           if k.lower() not in (b"content-length", b"transfer-encoding")]
                scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
            receive = _replay(body, receive)
        return await self.app(scope, receive, send)

    def refusal(self, user, method: str, path: str, query_string: str, body: bytes | None) -> tuple | None:
        """(status, error code, message) when the request is refused, else None."""
        if user.username in self.read_only and is_write(method, path, self.routes, query_string=query_string,
                                                         body=body):
            return 403, "PERMISSION_DENIED", f"user {user.username!r} is read-only: {method} {path} would write"
        if method != "POST" or user.is_admin:
            return None
        if path in self.routes.create_experiment:
            why = artifact_location_refusal(body)
            return None if why is None else (403, "PERMISSION_DENIED", why)
        if path in self.routes.set_tag or path in self.routes.log_batch:
            why = claimed_user_refusal(path, body, user.username, self.routes)
            return None if why is None else (403, "PERMISSION_DENIED", why)
        return None


# -- configuration and the factory -------------------------------------------------------
def app_environment(users: Iterable[Any] = (), *, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What ``latentscape server`` adds to the MLflow child's environment for this app:
    the read-only names, from ``users`` (``read_only: true`` in the users file) and from
    ``$LATENTSCAPE_READ_ONLY_USERS`` (for accounts given in ``$LATENTSCAPE_USERS``, as
    compose's viewer is). Checks the settings now, so that a typo stops the start rather
    than a worker. Raises ValueError naming the bad setting."""
    environ = os.environ if environ is None else environ
    for name in (ENV_LIMIT_USER, ENV_LIMIT_ADDRESS):
        if environ.get(name):
            try:
                parse_limit(environ[name])
            except ValueError as error:
                raise ValueError(f"${name}={environ[name]!r} is not a limit such as '20 per 10 minutes'") from error
    names = read_only_users(environ) | {user.username for user in users if user.read_only}
    admins = sorted(names & {user.username for user in users if user.admin})
    if admins:
        raise ValueError(f"user(s) {', '.join(admins)} are admins and named in ${ENV_READ_ONLY_USERS}")
    return {ENV_READ_ONLY_USERS: ",".join(sorted(names))}


def read_only_users(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    environ = os.environ if environ is None else environ
    return frozenset(name.strip() for name in environ.get(ENV_READ_ONLY_USERS, "").split(",") if name.strip())


@contextlib.contextmanager
def _one_worker_at_a_time(database_uri: str):
    """uvicorn starts the workers together and each migrates the auth database; MLflow's
    own ``--app-name basic-auth`` does that once before forking, which another app name
    does not get: take turns instead (a lock file per database)."""
    digest = hashlib.sha256(database_uri.encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"latentscape-auth-{digest}.lock")
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _log_to_stderr() -> None:
    if not _logger.handlers:  # the workers' stderr is the server's log
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        _logger.addHandler(handler)
        _logger.setLevel(logging.INFO)
        _logger.propagate = False


def create_app():
    """The ``mlflow.app`` factory: MLflow's basic-auth app inside :class:`TeamGuard`."""
    from mlflow.server import auth as mlflow_auth
    from starlette.applications import Starlette

    _log_to_stderr()
    database_uri = mlflow_auth.auth_config.database_uri
    with _one_worker_at_a_time(database_uri):
        app = mlflow_auth.create_app()
    if not isinstance(app, Starlette):
        raise RuntimeError(f"--app-name {APP_NAME} needs uvicorn (mlflow server's default); "
                           "drop --gunicorn-opts / --waitress-opts")
    guard = LoginGuard.from_environment(
        database_uri,
        # MLflow's own check with its verified-credential cache (a hit skips the hash),
        # the one its Flask and FastAPI paths use; they find the credential cached after us.
        verify=mlflow_auth._authenticate_cached,
        user_exists=lambda name: mlflow_auth.store.has_user(name),
    )
    app.add_middleware(TeamGuard, guard=guard, read_only=read_only_users(), routes=mlflow_routes(),
                       is_unprotected=mlflow_auth.is_unprotected_route)
    storage = os.environ.get(ENV_STORAGE) or "the auth database"
    _logger.info("latentscape app: %d read-only user(s); failed logins counted in %s",
                 len(read_only_users()), storage.split("@")[-1])
    return app
