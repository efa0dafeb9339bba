"""One error base class for everything a user can cause (bad file, bad flag, bad value).

Library code raises a subclass with a one-line message that names the file/flag/value; the CLIs
catch ``UserError`` at the top and print ``error: <message>`` instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


class UserError(Exception):
    """A problem with the user's input. ``str(err)`` is a complete, one-line explanation."""


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a CLI ``main`` and turn ``UserError`` into ``error: ...`` on stderr with exit status 2."""
    try:
        return int(main(argv) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
