"""Reading the small JSON files that mark a directory's kind (export, workdir, index)."""

import json
import os

from flam_jax import paths
from flam_jax.errors import FlamError


def read_json(path: str, error: type[FlamError], missing: str) -> object:
    """Parse ``path`` (local or remote); a missing file raises ``error(missing)``, a bad one
    names the path."""
    try:
        return json.loads(paths.read_text(path))
    except FileNotFoundError as err:
        raise error(missing) from err
    except (OSError, ValueError) as err:
        raise error(f"cannot read {os.fspath(path)}: {err}") from err
