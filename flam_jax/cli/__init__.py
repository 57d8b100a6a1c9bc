"""The console scripts (DESIGN.md's command line), the top layer of the package.

One module per command: ``train`` (flam-train), ``export`` (flam-export),
``convert_openflam`` (flam-convert-openflam), ``detect`` (flam-detect), ``search``
(flam-search), ``evaluate`` (flam-evaluate), ``index`` (flam-index). Each parses its flags,
calls the library and prints; the work itself lives in the layers below, where tests call
it directly. Every script runs as ``flam-X`` and as ``python -m flam_jax.cli.X``.

Shared here:
- one flag spelling: multi-word flags are written with hyphens (``--data-dir``,
  ``--num-processes``); the underscore form (``--data_dir``) is read as the same flag, so
  habits from absl or other tools do not fail;
- one error contract: a ``FlamError`` becomes ``error: <message>`` on stderr and exit 2.
"""

import argparse
import functools
import sys
from collections.abc import Callable, Collection, Sequence

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


def hyphenate(argv: Sequence[str], known: Collection[str]) -> list[str]:
    """``--a_b[=v]`` → ``--a-b[=v]`` where ``a-b`` is a known flag name; the rest unchanged.

    Stops at ``--`` (what follows are positional arguments). Config overrides
    (``--config.train.steps``) hold dots and are never known names, so they pass as typed.
    """
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + list(argv[i:])
        if arg.startswith("--") and "_" in arg:
            name, eq, value = arg[2:].partition("=")
            spelled = name.replace("_", "-")
            negated = spelled.startswith("no") and spelled[2:] in known  # absl's --noflag
            if spelled in known or negated:
                arg = f"--{spelled}{eq}{value}"
        out.append(arg)
    return out


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the house's flag spelling (see ``hyphenate``)."""

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        known = {
            option[2:]
            for action in self._actions
            for option in action.option_strings
            if option.startswith("--")
        }
        return super().parse_known_args(hyphenate(args, known), namespace)
