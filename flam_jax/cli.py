"""Shared plumbing for the console scripts: one-line errors and exit codes."""

import functools
import sys
from collections.abc import Callable

from flam_jax.errors import FlamError

EXIT_USAGE = 2


def report_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI main so a FlamError becomes ``error: <message>`` on stderr and exit 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            code = main(*args, **kwargs)
        except FlamError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_USAGE
        return 0 if code is None else int(code)

    return wrapped
