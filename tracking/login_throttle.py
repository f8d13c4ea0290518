"""Throttling of password guessing on the team server (used by :mod:`auth_app`).

Every request that carries credentials is checked here before MLflow sees it:

- A user name or a client address that failed too often within a window is answered
  429 with ``Retry-After`` for the rest of the window, whatever the password (a correct
  password answered differently while blocked would be an oracle for the guesser).
- A failed login costs the same whether the user exists or not: an unknown user pays a
  password hash too (measured before: 0.128 s for a known user, 0.048 s for an unknown
  one, enough to list the team's names).
- Every failed login is logged with the user name and the address.

The counters live where every worker of the server sees them. uvicorn's workers are
separate processes, so an in-memory counter would give a guesser one budget per worker
(and one more per replica). The default store is a table in the auth database, the one
database every team deployment already has and the one the workers already share; a
failure costs one upsert there, a request one indexed read. A team with Redis may pass
any storage URI of the ``limits`` package instead (``LATENTSCAPE_THROTTLE_STORAGE``,
e.g. ``redis://127.0.0.1:6379``, which needs the ``redis`` package).

The windows and counting are the ``limits`` package's (flask-limiter's engine, same
maintainer). flask-limiter itself is not used: it counts requests of Flask views, while
MLflow serves part of its API from FastAPI routes that never reach Flask, and what is
counted here is failed logins, not requests.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from latentscape.tracking.backends import Backend
from latentscape.tracking.connections import THROTTLE_CONNECTIONS_PER_WORKER

from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

__all__ = [
    "ENV_LIMIT_USER",
    "ENV_LIMIT_ADDRESS",
    "ENV_STORAGE",
    "DEFAULT_LIMIT_USER",
    "DEFAULT_LIMIT_ADDRESS",
    "SqlCounterStorage",
    "LoginGuard",
    "Verdict",
    "parse_limit",
]

ENV_LIMIT_USER = "LATENTSCAPE_LOGIN_LIMIT_USER"
ENV_LIMIT_ADDRESS = "LATENTSCAPE_LOGIN_LIMIT_ADDRESS"
ENV_STORAGE = "LATENTSCAPE_THROTTLE_STORAGE"
# 20 wrong passwords for one name, 100 from one address, per 10 minutes: a person who
# mistypes is never stopped; a guesser gets ~2,900 tries a day per name instead of ~700,000
# (50 took 6.3 s before). A blocked name is blocked for everyone for the rest of the window:
# the price of not giving the guesser an oracle.
DEFAULT_LIMIT_USER = "20 per 10 minutes"
DEFAULT_LIMIT_ADDRESS = "100 per 10 minutes"
TABLE = "latentscape_login_failures"
_MAX_KEY = 200

_logger = logging.getLogger("latentscape.auth")


def parse_limit(text: str) -> RateLimitItem:
    """``"20 per 10 minutes"`` (the ``limits`` notation) -> a rate-limit item; ValueError if bad."""
    return parse(text)


class SqlCounterStorage(Storage):
    """Fixed-window counters for ``limits`` in one table of a SQLAlchemy database
    (PostgreSQL in team mode, SQLite for a trial). Not registered under a URI scheme:
    built from the auth database's URL."""

    STORAGE_SCHEME = None

    def __init__(self, database_uri: str, *, table: str = TABLE):
        super().__init__()
        from sqlalchemy import create_engine, text

        self._text = text
        self.table = table
        # One connection per worker (tracking/connections.py counts it): a read per request
        # and an upsert per failure take about a millisecond, so requests queue for it
        # briefly rather than take PostgreSQL's connections from the stores and the sweeps.
        options: dict[str, Any] = {"pool_pre_ping": True}
        if Backend.of(database_uri).dialect != "sqlite":
            options.update(pool_size=THROTTLE_CONNECTIONS_PER_WORKER, max_overflow=0, pool_recycle=1800)
        self.engine = create_engine(database_uri, **options)
        self._create_table()

    def _create_table(self) -> None:
        from sqlalchemy.exc import IntegrityError, ProgrammingError

        statement = (f"CREATE TABLE IF NOT EXISTS {self.table} (throttle_key VARCHAR(300) PRIMARY KEY, "
                     "hits INTEGER NOT NULL, expires_at DOUBLE PRECISION NOT NULL)")
        try:
            with self.engine.begin() as connection:
                connection.execute(self._text(statement))
        except (IntegrityError, ProgrammingError):  # another worker created it at the same moment
            with self.engine.begin() as connection:
                connection.execute(self._text(f"SELECT 1 FROM {self.table} WHERE 1 = 0"))

    @property
    def base_exceptions(self) -> type[Exception]:
        from sqlalchemy.exc import SQLAlchemyError

        return SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        table = self.table
        with self.engine.begin() as connection:
            connection.execute(self._text(f"DELETE FROM {table} WHERE expires_at <= :now"), {"now": now})
            return int(connection.execute(self._text(
                f"INSERT INTO {table} (throttle_key, hits, expires_at) VALUES (:key, :amount, :expires) "
                f"ON CONFLICT (throttle_key) DO UPDATE SET hits = {table}.hits + :amount RETURNING hits"
            ), {"key": key, "amount": amount, "expires": now + expiry}).scalar_one())

    def _row(self, key: str):
        with self.engine.connect() as connection:
            return connection.execute(self._text(
                f"SELECT hits, expires_at FROM {self.table} WHERE throttle_key = :key AND expires_at > :now"
            ), {"key": key, "now": time.time()}).first()

    def get(self, key: str) -> int:
        row = self._row(key)
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        row = self._row(key)
        return float(row[1]) if row else time.time()

    def check(self) -> bool:
        with self.engine.connect() as connection:
            connection.execute(self._text("SELECT 1"))
        return True

    def reset(self) -> int | None:
        with self.engine.begin() as connection:
            return connection.execute(self._text(f"DELETE FROM {self.table}")).rowcount

    def clear(self, key: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(self._text(f"DELETE FROM {self.table} WHERE throttle_key = :key"), {"key": key})


@dataclass(frozen=True)
class Verdict:
    """What a login attempt earned: ``user`` (MLflow's User) when the password was right,
    ``retry_after`` seconds when the name or address is blocked, neither when it was wrong."""

    user: Any = None
    retry_after: int | None = None


def _key_part(text: str) -> str:
    """A name as a counter key: long names hashed, so a guesser cannot grow the table's rows."""
    return text if len(text) <= _MAX_KEY else hashlib.sha256(text.encode()).hexdigest()


class LoginGuard:
    """Check credentials with throttling, equal timing and logging.

    ``verify(username, password)`` returns the user or None (MLflow's cached check);
    ``user_exists(username)`` tells whether the name is known, so that an unknown name
    pays a hash like a known one."""

    def __init__(self, storage: Storage, *, verify: Callable[[str, str], Any],
                 user_exists: Callable[[str], bool], per_user: RateLimitItem | str = DEFAULT_LIMIT_USER,
                 per_address: RateLimitItem | str = DEFAULT_LIMIT_ADDRESS):
        self.limiter = FixedWindowRateLimiter(storage)
        self.verify = verify
        self.user_exists = user_exists
        self.per_user = parse_limit(per_user) if isinstance(per_user, str) else per_user
        self.per_address = parse_limit(per_address) if isinstance(per_address, str) else per_address
        self._dummy_hash: str | None = None

    @classmethod
    def from_environment(cls, database_uri: str, *, verify, user_exists, environ=None) -> LoginGuard:
        environ = os.environ if environ is None else environ
        uri = environ.get(ENV_STORAGE)
        storage = storage_from_string(uri) if uri else SqlCounterStorage(database_uri)
        return cls(storage, verify=verify, user_exists=user_exists,
                   per_user=environ.get(ENV_LIMIT_USER) or DEFAULT_LIMIT_USER,
                   per_address=environ.get(ENV_LIMIT_ADDRESS) or DEFAULT_LIMIT_ADDRESS)

    def _counters(self, username: str, address: str) -> list[tuple[RateLimitItem, str]]:
        return [(self.per_user, f"user:{_key_part(username)}"), (self.per_address, f"address:{_key_part(address)}")]

    def blocked_for(self, username: str, address: str) -> int | None:
        """Seconds until the name or address may try again; None when neither is blocked."""
        waits = []
        for item, key in self._counters(username, address):
            if not self.limiter.test(item, key):
                reset = self.limiter.get_window_stats(item, key).reset_time
                waits.append(max(1, math.ceil(reset - time.time())))
        return max(waits) if waits else None

    def login(self, username: str, password: str, address: str) -> Verdict:
        wait = self.blocked_for(username, address)
        if wait is not None:
            _logger.warning("login refused for user %r from %s: too many failed logins (retry in %d s)",
                            username[:_MAX_KEY], address, wait)
            return Verdict(retry_after=wait)
        user = self.verify(username, password)
        if user is not None:
            return Verdict(user=user)
        if not self.user_exists(username):
            self._pay_a_hash(password)
        for item, key in self._counters(username, address):
            self.limiter.hit(item, key)
        _logger.warning("login failed for user %r from %s", username[:_MAX_KEY], address)
        return Verdict()

    def _pay_a_hash(self, password: str) -> None:
        """Check ``password`` against a hash of a random one, made the way MLflow makes
        users' hashes (werkzeug's default, scrypt), so an unknown name costs what a known
        one does."""
        from werkzeug.security import check_password_hash, generate_password_hash

        if self._dummy_hash is None:
            self._dummy_hash = generate_password_hash(secrets.token_urlsafe(16))
        check_password_hash(self._dummy_hash, password)
