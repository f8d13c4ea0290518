"""The team server's users: read from a YAML file and ``$LATENTSCAPE_USERS``
(:func:`load_users`), then applied to the running server as its admin (:func:`provision_users`).

Users file (keys: password, admin, experiments, read_only; any other is an error)::

    users:
      alice:
        password: ${ALICE_PASSWORD}
        experiments: {digits: MANAGE, private: DENY}   # name or "*" -> READ|USE|EDIT|MANAGE|DENY
      bob:
        password: ${BOB_PASSWORD}
        admin: false
      viewer:
        password: ${VIEWER_PASSWORD}
        read_only: true    # reads what it is granted, writes nothing (tracking/auth_app.py)

Passwords need 12 characters or more (MLflow's policy). A grant that exists already is
refused by MLflow, so changing one is revoke + grant.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentscape.tracking.backends import mlflow_client
from latentscape.tracking.errors import UsageError

__all__ = ["UserSpec", "PERMISSIONS", "DEFAULT_PERMISSIONS", "DEFAULT_ADMIN", "load_users", "provision_users"]

# MLflow's own variables for the admin (created by the server on its first start).
ENV_ADMIN_USERNAME = "MLFLOW_AUTH_ADMIN_USERNAME"
ENV_ADMIN_PASSWORD = "MLFLOW_AUTH_ADMIN_PASSWORD"
ENV_USERS_FILE = "LATENTSCAPE_USERS_FILE"
ENV_USERS = "LATENTSCAPE_USERS"

DEFAULT_ADMIN = "admin"
# Grantable on an experiment (MLflow 3.17's RESOURCE_GRANTABLE_PERMISSIONS). DENY hides an
# experiment from a user whatever the default permission says.
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "DENY")
DEFAULT_PERMISSIONS = (*PERMISSIONS[:-1], "NO_PERMISSIONS")
# MLflow no longer grants NO_PERMISSIONS on a resource; written in a users file it means
# what DENY does (no capability at all), so it is granted as DENY.
_PERMISSION_ALIASES = {"NO_PERMISSIONS": "DENY"}
# What a user's entry in the users file may say; anything else is an error (a misspelt
# key would otherwise be ignored silently, e.g. a read_only that protects nothing).
USER_KEYS = ("password", "admin", "experiments", "read_only")
MIN_PASSWORD_LENGTH = 12  # MLflow 3.17's policy (mlflow.utils.validation._validate_password)
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class UserSpec:
    """One user of the team server. ``experiments``: experiment name (or ``*`` for
    all) -> permission; others get the server's default permission."""

    username: str
    password: str = field(repr=False)
    admin: bool = False
    experiments: Mapping[str, str] = field(default_factory=dict)
    read_only: bool = False  # reads what it is granted, writes nothing (enforced by tracking/auth_app.py)

    def __post_init__(self):
        object.__setattr__(self, "experiments", {
            name: _PERMISSION_ALIASES.get(permission, permission) for name, permission in self.experiments.items()})
        if not self.username or any(ch.isspace() or ch == ":" for ch in self.username):
            raise UsageError(f"bad user name {self.username!r}", "use a name without spaces or colons")
        if self.read_only and self.admin:
            raise UsageError(f"user {self.username!r} is both admin and read_only", "drop one of the two")
        if len(self.password) < MIN_PASSWORD_LENGTH:
            raise UsageError(f"the password of user {self.username!r} is shorter than {MIN_PASSWORD_LENGTH} characters",
                             "choose a longer one (MLflow's policy)")
        for experiment, permission in self.experiments.items():
            if permission not in PERMISSIONS:
                raise UsageError(f"user {self.username!r}: unknown permission {permission!r} on {experiment!r}",
                                 f"choose one of {', '.join(PERMISSIONS)}")


def _expand(text: str, environ: Mapping[str, str], where: str) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in environ:
            raise UsageError(f"{where} refers to ${{{name}}}, which is not set", f"export {name}")
        return environ[name]

    return _VARIABLE.sub(value, text)


def _users_from_file(path: Path, environ: Mapping[str, str]) -> list[UserSpec]:
    import yaml

    if not path.is_file():
        raise UsageError(f"users file {path} does not exist", "pass an existing YAML file to --users")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UsageError(f"users file {path} is not valid YAML ({' '.join(str(error).split())[:200]})",
                         "fix its syntax") from error
    entries = document.get("users") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        raise UsageError(f"users file {path} has no 'users:' mapping", "see the example in docker/users.example.yaml")
    unknown = sorted(str(key) for key in document if key != "users")
    if unknown:
        raise UsageError(f"users file {path} has unknown key {unknown[0]!r}", "the file has one key, users:")
    users = []
    for name, entry in entries.items():
        entry = entry or {}
        unknown = sorted(str(key) for key in entry if key not in USER_KEYS) if isinstance(entry, dict) else []
        if unknown:
            raise UsageError(f"user {name!r} in {path} has unknown key {unknown[0]!r}",
                             f"use only {', '.join(USER_KEYS)}")
        if not isinstance(entry, dict) or not isinstance(entry.get("password"), str):
            raise UsageError(f"user {name!r} in {path} has no password", "add password: ${SOME_VARIABLE}")
        for key in ("admin", "read_only"):
            if not isinstance(entry.get(key, False), bool):
                raise UsageError(f"user {name!r} in {path}: {key} is {entry[key]!r}", f"write {key}: true or false")
        experiments = entry.get("experiments") or {}
        if not isinstance(experiments, dict):
            raise UsageError(f"user {name!r} in {path}: experiments must map names to permissions",
                             "e.g. experiments: {digits: EDIT}")
        users.append(UserSpec(
            username=str(name),
            password=_expand(entry["password"], environ, f"the password of {name!r} in {path}"),
            admin=entry.get("admin", False),
            experiments={str(k): str(v).upper() for k, v in experiments.items()},
            read_only=entry.get("read_only", False),
        ))
    return users


def _users_from_variable(text: str) -> list[UserSpec]:
    users = []
    for entry in re.split(r"[,\s]+", text.strip()):
        if not entry:
            continue
        name, sep, password = entry.partition(":")
        if not sep:
            raise UsageError(f"${ENV_USERS} entry {name!r} has no password",
                             "write name:password entries separated by commas")
        users.append(UserSpec(username=name, password=password))
    return users


def load_users(path: str | Path | None = None, *, environ: Mapping[str, str] | None = None) -> list[UserSpec]:
    """Users from the YAML file ``path`` (default ``$LATENTSCAPE_USERS_FILE``) and from
    ``$LATENTSCAPE_USERS``; a name given twice is an error."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(ENV_USERS_FILE)
    users = _users_from_file(Path(path), environ) if path else []
    users += _users_from_variable(environ.get(ENV_USERS, ""))
    names = [user.username for user in users]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UsageError(f"user(s) {', '.join(twice)} given twice", f"keep one entry in the users file or ${ENV_USERS}")
    return users


@contextlib.contextmanager
def _credentials(username: str, password: str) -> Iterator[None]:
    """MLflow's clients read credentials from the environment only: set them for the
    duration, then restore (the server process does nothing else meanwhile)."""
    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict(zip(names, (username, password))))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def provision_users(tracking_uri: str, users: Sequence[UserSpec], *, admin_username: str | None = None,
                    admin_password: str | None = None, remove_others: bool = False) -> dict[str, Any]:
    """Make the server's users match ``users``, as the admin: create missing users,
    set passwords and admin flags, grant experiment permissions (creating the named
    experiments if missing). With ``remove_others`` (a users file or ``$LATENTSCAPE_USERS``
    was given: it is the truth), every other user but the admin is deleted, and with them
    their grants and admin flag: they can no longer log in. Idempotent. Returns what it
    did, per user (``{"user": "removed"}`` for the removed)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    admin_username = admin_username or os.environ.get(ENV_ADMIN_USERNAME) or DEFAULT_ADMIN
    admin_password = admin_password or os.environ.get(ENV_ADMIN_PASSWORD)
    if not admin_password:
        raise UsageError(f"{ENV_ADMIN_PASSWORD} not set", "export the admin's password to manage users")
    done: dict[str, Any] = {}
    with _credentials(admin_username, admin_password):
        auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
        client = mlflow_client(tracking_uri)
        try:
            auth.get_user(admin_username)
        except MlflowException as error:
            raise UsageError(f"the server refused the admin {admin_username!r} ({error.error_code})",
                             f"set {ENV_ADMIN_PASSWORD} to the admin's current password") from error
        for user in users:
            try:
                auth.get_user(user.username)
                auth.update_user_password(user.username, user.password)
                action = "updated"
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                auth.create_user(user.username, user.password)
                action = "created"
            auth.update_user_admin(user.username, user.admin)
            grants = {}
            for name, permission in user.experiments.items():
                resource = "*" if name == "*" else _experiment_id(client, name)
                try:
                    auth.grant_user_permission(user.username, "experiment", resource, permission)
                except MlflowException as error:  # a grant exists: replace it, unless it is this one
                    if error.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    # Revoking first leaves the user without it for a moment: a worker of
                    # theirs logging then, as the server restarts, got a 403. So only a changed
                    # grant is replaced.
                    current = auth.get_user_permission(user.username, "experiment", resource).permission
                    if current != permission:
                        auth.revoke_user_permission(user.username, "experiment", resource)
                        auth.grant_user_permission(user.username, "experiment", resource, permission)
                grants[name] = permission
            done[user.username] = {"user": action, "admin": user.admin, "experiments": grants}
        if remove_others:
            keep = {admin_username, *(user.username for user in users)}
            for name in sorted(set(_server_usernames(tracking_uri)) - keep):
                auth.delete_user(name)  # MLflow deletes the user's grants with it
                done[name] = {"user": "removed", "admin": False, "experiments": {}}
    return done


def _server_usernames(tracking_uri: str) -> list[str]:
    """Every user the server knows (MLflow's admin-only ``users/list``; its Python client
    has no call for it). Run with the admin's credentials set."""
    from mlflow.server.auth.routes import LIST_USERS
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    response = verify_rest_response(http_request(get_default_host_creds(tracking_uri), LIST_USERS, "GET"), LIST_USERS)
    return [entry["username"] for entry in response.json().get("users", [])]


def _experiment_id(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name)
    return experiment.experiment_id
