"""The one error type a user sees: a problem and its fix, on one line."""

from __future__ import annotations

import os
import re

from latentscape.tracking.privacy import masked

__all__ = ["UsageError", "EXIT_USAGE", "server_error"]

EXIT_USAGE = 2


class UsageError(ValueError):
    """Bad input from the user. The message names the problem and the fix on one line.

    The CLI prints it as ``latentscape <job>: error: <message>`` and exits with 2;
    a run that was open is ended FAILED with the message in its ``error`` tag.
    """

    def __init__(self, problem: str, fix: str | None = None):
        message = problem if fix is None else f"{problem}; {fix}"
        super().__init__(" ".join(message.split()))


# MLflow REST endpoints (after /api/2.0/mlflow/) -> (what the user tried, the permission it needs).
_NEEDS = (
    ("experiments/delete", "delete the experiment", "MANAGE"),
    ("permissions", "change permissions", "MANAGE"),
    ("experiments/get", "read the experiment", "READ"),
    ("experiments/search", "list experiments", "READ"),
    ("runs/get", "read runs", "READ"),
    ("runs/search", "read runs", "READ"),
    ("metrics/get", "read runs", "READ"),
    ("artifacts/list", "read artifacts", "READ"),
    ("experiments/", "change the experiment", "EDIT"),
    ("runs/", "log runs", "EDIT"),
    ("artifacts", "log artifacts", "EDIT"),
)
_STATUS = re.compile(r"error code (\d{3}) != 200")
_ENDPOINT = re.compile(r"(?:endpoint|request to) (?:https?://[^/\s]+)?(/\S*?)(?: failed|\s|$)")
_UNREACHABLE = ("Connection refused", "Max retries exceeded", "Failed to establish a new connection",
                "Name or service not known", "nodename nor servname", "timed out")


def _action(endpoint: str) -> tuple[str, str]:
    path = endpoint.split("/mlflow/", 1)[-1] if "/mlflow/" in endpoint else endpoint
    if "mlflow-artifacts" in endpoint:
        path = "artifacts"
    for prefix, action, permission in _NEEDS:
        if path.startswith(prefix):
            return action, permission
    return "do this", "EDIT"


def server_error(error: BaseException, *, uri: str, user: str | None = None,
                 experiment: str | None = None) -> UsageError | None:
    """An MLflow tracking-server failure said in people's words, or None when ``error`` is
    not one: 401 (who the server did not recognise), 403 (the user, the experiment, what
    was tried and the permission it needs, and how to get it), an unreachable server, and
    an address that answers but is not an MLflow server."""
    text = " ".join(str(error).split())
    uri = masked(uri)  # the message is printed and may be logged in a run's error tag
    user = user or os.environ.get("MLFLOW_TRACKING_USERNAME")
    who = f"user {user!r}" if user else "no user (MLFLOW_TRACKING_USERNAME is unset)"
    # The latentscape app's refusals (tracking/auth_app.py) come as MLflow JSON errors, or,
    # for 429, as the client's retries giving up.
    if "is read-only" in text and "PERMISSION_DENIED" in text:
        return UsageError(f"{who} is read-only on {uri}: it may read, never write (HTTP 403)",
                          "log with an account that may write (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)")
    if "outside this server's artifact store" in text:
        return UsageError(f"{uri} refused an artifact location outside its artifact store (HTTP 403)",
                          "leave the artifact location to the server (only its admin may choose another)")
    if "too many failed logins" in text or "too many 429 error responses" in text:
        return UsageError(f"the tracking server {uri} refuses {who} for now after too many failed logins (HTTP 429)",
                          "wait for the time its Retry-After says, then check MLFLOW_TRACKING_PASSWORD")
    found = _STATUS.search(text)
    endpoint_match = _ENDPOINT.search(text)
    endpoint = endpoint_match.group(1) if endpoint_match else ""
    if found is None:
        from latentscape.tracking.backends import Backend  # it imports this module

        if any(sign in text for sign in _UNREACHABLE) and Backend.of(uri).is_server:
            return UsageError(f"cannot reach the tracking server {uri}",
                              "start it (`latentscape server`), or check --tracking-uri / $MLFLOW_TRACKING_URI")
        return None
    status = int(found.group(1))
    if status == 401:
        return UsageError(f"the tracking server {uri} did not accept the credentials of {who} (HTTP 401)",
                          "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account on that server; "
                          "its admin adds accounts with `latentscape server --provision-only --users FILE`")
    if status == 403:
        action, permission = _action(endpoint)
        where = f"experiment {experiment!r}" if experiment else "this experiment"
        return UsageError(f"{who} may not {action} in {where} on {uri}: that needs {permission} permission (HTTP 403)",
                          f"ask the experiment's owner or the server's admin to grant {permission} (users file: "
                          f"`experiments: {{{experiment or 'NAME'}: {permission}}}`, then `latentscape server "
                          "--provision-only --users FILE`), or log to an experiment of your own with --experiment NAME")
    if status in (404, 405, 501) and "/api/2.0/mlflow" in (endpoint or text):
        return UsageError(f"{uri} answered HTTP {status} to MLflow's API: it is not an MLflow tracking server",
                          "point --tracking-uri / $MLFLOW_TRACKING_URI at the MLflow server's address")
    return None
