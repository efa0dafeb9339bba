"""One error base class for everything a user can cause (bad file, bad flag, bad value).

Library code raises a subclass with a one-line message that names the file/flag/value; the CLIs
catch ``UserError`` at the top and print ``error: <message>`` instead of a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence


class UserError(Exception):
    """A problem with the user's input. ``str(err)`` is a complete, one-line explanation."""


def os_reason(err: OSError) -> str:
    """Why ``err`` happened in the system's words ("No space left on device", "Permission denied"),
    without the file name: the message it goes into names the file once, with its flag."""
    if err.strerror:
        return err.strerror
    if err.errno:
        return os.strerror(err.errno)
    return str(err) or type(err).__name__


def read_error_line(what: str, err: OSError, expected: str | None = None) -> str:
    """The one line for ``err`` from reading ``what`` (the file, with its flag: ``--input a.txt``):
    ``no such file``, ``is a directory`` (``, expected ...``), else ``cannot read: <reason>``."""
    if isinstance(err, FileNotFoundError):
        return f"{what}: no such file"
    if isinstance(err, IsADirectoryError):
        return f"{what}: is a directory" + (f", expected {expected}" if expected else "")
    return f"{what}: cannot read: {os_reason(err)}"


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a CLI ``main`` and turn ``UserError`` into ``error: ...`` on stderr with exit status 2.

    Output piped into a reader that stops early (``... | head``) ends the program quietly with status
    141, what a shell reports for a tool killed by SIGPIPE, instead of a ``BrokenPipeError`` traceback.
    """
    try:
        return int(main(argv) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141


def _silence_stdout() -> None:
    """Point stdout at /dev/null: the interpreter flushes it once more at exit, which would raise again
    on the closed pipe (the recipe in Python's documentation of SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced by something without a descriptor
        pass
