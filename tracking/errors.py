"""The one error type a user sees: a problem and its fix, on one line."""

from __future__ import annotations

__all__ = ["UsageError", "EXIT_USAGE"]

EXIT_USAGE = 2


class UsageError(ValueError):
    """Bad input from the user. The message names the problem and the fix on one line.

    The CLI prints it as ``latentscape <job>: error: <message>`` and exits with 2;
    a run that was open is ended FAILED with the message in its ``error`` tag.
    """

    def __init__(self, problem: str, fix: str | None = None):
        message = problem if fix is None else f"{problem}; {fix}"
        super().__init__(" ".join(message.split()))
