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
import glob
import math
import os
import sys
import warnings
from collections.abc import Callable, Collection, Sequence

from flam_jax import paths
from flam_jax.errors import FlamError, FlamWarning, InputError

EXIT_USAGE = 2


def _cpu_only_machine() -> bool:
    """No TPU (/dev/accel*, /dev/vfio), NVIDIA (/dev/nvidia*) or AMD (/dev/kfd) device files."""
    return not any(glob.glob(p) for p in ("/dev/accel*", "/dev/vfio/*", "/dev/nvidia*", "/dev/kfd"))


# On a CPU machine with libtpu installed (the test stack has it for compile-only checks),
# jax would probe for a TPU and libtpu would print five lines of initialisation errors on
# every command, then fall back to the CPU anyway. Choosing the CPU up front keeps errors
# one line; this runs before any command imports jax. An explicit JAX_PLATFORMS wins.
if "JAX_PLATFORMS" not in os.environ and _cpu_only_machine():
    os.environ["JAX_PLATFORMS"] = "cpu"


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, FlamWarning):
        print(f"warning: {message}", file=file or sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


# A FlamWarning (a truncated query, a recording shorter than a frame) reads as one line.
_default_showwarning = warnings.showwarning
warnings.showwarning = _one_line_warning


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


def check_output_file(path: str | None, flag: str) -> None:
    """Refuse, before any work, an output file that cannot be written: a directory, a file
    in a folder that does not exist or takes no new entry (``paths.require_writable``'s
    probe). Remote URLs are left to the write (a bucket has no folders to check)."""
    if path is None or paths.is_remote(path):
        return
    target = os.path.abspath(path)
    parent = os.path.dirname(target)
    if os.path.isdir(target):
        raise InputError(f"{flag} {path} is a directory; give a file name")
    if not os.path.isdir(parent):
        raise InputError(f"{flag} {path}: folder {parent} does not exist")
    paths.require_writable(parent, flag)


def check_fraction(value: float, flag: str) -> None:
    """A probability-like flag (a score threshold): a number in [0, 1]."""
    if not (isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InputError(f"{flag} must be a number from 0 to 1, got {value}")


def check_power_of_two(value: int, flag: str) -> None:
    if value < 1 or value & (value - 1):
        raise InputError(f"{flag} must be a power of two (1, 2, 4, 8, …), got {value}")
