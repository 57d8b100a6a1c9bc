"""Errors a user can cause, each with a one-line message naming the thing at fault.

Library code raises these; the command-line entry points turn them into a single line
on stderr and exit code 2 (see ``flam_jax.cli``). Anything else is a bug and keeps
its traceback.
"""


class FlamError(Exception):
    """Base class for errors caused by user input rather than by a bug."""

    def __str__(self) -> str:
        # Multi-line messages defeat the one-line contract of the CLIs.
        return " ".join(super().__str__().split())


class ConfigError(FlamError):
    """An experiment config or flag is unknown, mistyped or inconsistent."""


class AudioDecodeError(FlamError):
    """An audio file is missing, empty, corrupt or in an unsupported format."""


class InputError(FlamError):
    """An array, text or query has the wrong shape, dtype, value or is empty."""


class CheckpointError(FlamError):
    """A training checkpoint or converted weight file is corrupt or incompatible."""


class ModelLoadError(FlamError):
    """An export directory is missing files or holds inconsistent parameters."""


class DataError(FlamError):
    """A dataset, manifest or data pipeline is malformed or exceeded its error budget."""


class CompileOnlyError(FlamError):
    """Compile-only could not run (no libtpu, unknown topology, failed compilation)."""


class DoesNotFitError(FlamError):
    """The compiled step needs more memory per chip than the chip has."""


class NonFiniteLossError(FlamError):
    """The loss became NaN or infinite; the last checkpoint (if any) is still good."""


class FlamWarning(UserWarning):
    """Something a user should know but that does not stop the work (a truncated query)."""
