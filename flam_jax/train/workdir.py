"""The run directory: one that can be written, and that every process of a job shares.

``check_workdir`` runs before anything is built or compiled: a workdir that is a file,
lies under a file or cannot take new entries (``paths.require_writable``) is a one-line
ConfigError on every process, then ``check_shared`` proves the sharing.

On a pod, a workdir on one host's local disk would leave each host writing its own
checkpoint shards where no other host (and no later restart elsewhere) can read them.
``check_shared`` proves the sharing before anything is written: process 0 writes a
random token into the workdir, every process reads it back, and unless all of them see
the same token the run stops on every process with one line saying why.
"""

import secrets

import jax
import numpy as np
from jax.experimental import multihost_utils

from flam_jax import paths
from flam_jax.errors import ConfigError

TOKEN = ".shared_token"


def check_workdir(workdir: str) -> None:
    """Refuse, on every process, a workdir that some process cannot write or that they do
    not all share. Each process probes the directory itself (a mount can be read-only on one
    host); with several, they agree first, so that none is left waiting for a failed one."""
    try:
        paths.require_writable(workdir, "--workdir")
        problem = None
    except ConfigError as err:
        problem = err
    if jax.process_count() > 1:
        failed = np.asarray(multihost_utils.process_allgather(np.int32(problem is not None))).reshape(-1)
        if problem is None and failed.any():
            who = ", ".join(str(int(i)) for i in np.flatnonzero(failed))
            raise ConfigError(f"--workdir {workdir} cannot be written from process {who} (see its error)")
    if problem is not None:
        raise problem
    check_shared(workdir)


def check_shared(workdir: str) -> None:
    if jax.process_count() == 1:
        return
    nonce = secrets.randbelow(2**31 - 1) if jax.process_index() == 0 else 0
    nonce = int(multihost_utils.broadcast_one_to_all(np.int32(nonce)))
    token = paths.join(workdir, TOKEN)
    if jax.process_index() == 0:
        paths.makedirs(workdir)
        paths.write_text(token, str(nonce))
    multihost_utils.sync_global_devices("flam workdir token written")
    try:
        seen = paths.read_text(token).strip() == str(nonce)
    except OSError:
        seen = False
    everyone = np.asarray(multihost_utils.process_allgather(np.int32(seen))).reshape(-1)
    blind = [int(i) for i in np.flatnonzero(everyone == 0)]
    if blind:
        who = ", ".join(map(str, blind))
        raise ConfigError(
            f"workdir {workdir} is not shared by the run's {jax.process_count()} processes: process "
            f"{who} cannot see the token process 0 wrote there; give a directory every host reads "
            "and writes (gs://BUCKET/RUN or a shared file system)"
        )
