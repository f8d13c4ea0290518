"""The CLI's jobs as Python functions: ``ls.map(extraction, layer=6)`` is
``latentscape map --run EXTRACT_RUN --layer 6``, parsed by the same parser, checked by
the same validation, run by the same handler, logged as the same run.

Each function's keyword arguments are its sub-command's options (``--n-neighbors`` is
``n_neighbors``); its signature and help are read from the parser on first use, so the
command line stays the one place that defines them.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import os
from collections.abc import Mapping
from typing import Any

from latentscape.tracking.errors import UsageError

__all__ = ["JobFunction"]

# Options of the command line that mean nothing in Python (the result object is the answer).
_CLI_ONLY = {"json", "debug", "help", "command", "handler"}


class _RaisingParser(argparse.ArgumentParser):
    """argparse exits the process on a bad value; a notebook wants the UsageError."""

    def error(self, message: str):
        raise UsageError(f"{self.prog.replace('latentscape ', 'ls.')}(): {message}")


def _options(command: str) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, dict[str, argparse.Action]]:
    """The whole parser (what parses), the sub-command's (its help) and its options by name."""
    from latentscape.jobs.cli import build_parser

    parser = build_parser(command, parser_class=_RaisingParser)
    sub = parser._subparsers._group_actions[0].choices[command]
    actions = {action.dest: action for action in sub._actions
               if action.dest not in _CLI_ONLY and action.option_strings}
    return parser, sub, actions


def _as_text(value: Any) -> str:
    from latentscape._result import Result

    if isinstance(value, Result):  # a run handed on: ls.map(extraction, ...)
        return value.run_id
    if isinstance(value, (list, tuple)):
        return ",".join(_as_text(v) for v in value)
    return str(value)


def _argv(command: str, actions: Mapping[str, argparse.Action], settings: Mapping[str, Any]) -> list[str]:
    argv = [command]
    for name, value in settings.items():
        action = actions.get(name)
        if action is None:
            close = difflib.get_close_matches(name, actions, n=3) or sorted(actions)
            raise UsageError(f"ls.{command.replace('-', '_')}() has no setting {name!r}",
                             f"did you mean {' or '.join(close)}?" if len(close) <= 3 else
                             f"choose from {', '.join(close)}")
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreFalseAction):  # --no-map is map=False
            if value is False:
                argv.append(flag)
            continue
        if value is None or value is False:
            continue
        if action.nargs == 0:  # a switch: store_true, store_const, ...
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            items = [f"{k}={v}" for k, v in value.items()] if isinstance(value, Mapping) else \
                [value] if isinstance(value, str) else list(value)
            argv += [f"{flag}={_as_text(item)}" for item in items]
        elif action.nargs in ("+", "*") or isinstance(action.nargs, int):
            argv += [flag, *(_as_text(v) for v in (value if isinstance(value, (list, tuple)) else [value]))]
        else:  # FLAG=VALUE: a value that starts with a dash stays a value
            argv.append(f"{flag}={_as_text(value)}")
    return argv


class JobFunction:
    """One job of the CLI, callable from Python; returns a :class:`~latentscape.Result`."""

    def __init__(self, command: str):
        self.command = command
        self.__name__ = self.__qualname__ = command.replace("-", "_")
        self.__module__ = "latentscape"
        self._parsed: tuple[argparse.ArgumentParser, argparse.ArgumentParser, dict[str, argparse.Action]] | None = None

    def _parser(self):
        if self._parsed is None:
            self._parsed = _options(self.command)
        return self._parsed

    @property
    def __signature__(self) -> inspect.Signature:
        _, _, actions = self._parser()
        first = [inspect.Parameter("run", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)] \
            if "run" in actions else []
        rest = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                  default=None if action.default in (None, argparse.SUPPRESS) else action.default)
                for name, action in actions.items() if name != "run"]
        return inspect.Signature(first + rest)

    @property
    def __doc__(self) -> str:  # what `ls.map?` shows: the sub-command's own help
        _, sub, _ = self._parser()
        text = sub.format_help()
        return (f"ls.{self.__name__}(**settings): `latentscape {self.command}` from Python; every --option is a "
                f"keyword (dashes become underscores). Returns a Result.\n\n{text}")

    def __repr__(self) -> str:
        return f"<latentscape job {self.__name__}{self.__signature__}>"

    def __call__(self, run: Any = None, /, **settings: Any):
        from latentscape._result import Result
        from latentscape.jobs.cli import quiet_libraries

        parser, _, actions = self._parser()
        if run is not None:
            if "run" not in actions:
                raise UsageError(f"ls.{self.__name__}() takes no run", "pass every setting by name")
            settings = {"run": run, **settings}
        quiet_libraries()
        args = parser.parse_args(_argv(self.command, actions, settings))
        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        try:
            outcome = args.handler(args)
        except UsageError:
            raise
        except Exception as error:  # a tracking server's refusal in people's words, as the CLI says it
            from latentscape.tracking.errors import server_error

            explained = server_error(error, uri=uri or "")
            if explained is None:
                raise
            raise explained from error
        return None if outcome is None else Result.of(outcome, tracking_uri=uri)
