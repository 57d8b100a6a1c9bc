"""JAX's persistent compilation cache for a run, and a count of what the first step found.

``enable(config, workdir)`` points ``jax_compilation_cache_dir`` at ``train.compile_cache``
(default ``WORKDIR/compilation_cache``; local or ``gs://``, shared by every host), so a
run restarted after a preemption reads its compiled step instead of compiling it again.
Process-wide, so only the ``flam-train`` entry point calls it, before anything compiles.
jax hashes the cache's own path into every key (it is part of the compile options), so
entries are found by runs that use the same directory: a restart in the same workdir, not
a copy of the workdir elsewhere.
``CacheEvents`` counts the cache's hits and misses while a block runs (JAX's monitoring
events), which is how the trainer reports whether the step was read or compiled.
"""

import threading

import jax
from jax import monitoring

from flam_jax import paths

_HIT, _MISS = "/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses"


def cache_dir(config, workdir: str) -> str | None:
    setting = config.train.compile_cache
    if setting == "none":
        return None
    return paths.resolve(setting) if setting else paths.join(workdir, "compilation_cache")


def enable(config, workdir: str) -> str | None:
    """Turn the persistent cache on for this process; returns its directory (None: off)."""
    directory = cache_dir(config, workdir)
    if directory is None:
        return None
    paths.makedirs(directory)
    jax.config.update("jax_compilation_cache_dir", directory)
    # The defaults skip executables that compiled in under a second; keep those too, so
    # that every function of the step is read back after a restart.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


_ACTIVE: list["CacheEvents"] = []  # counters inside a ``with`` block
_LOCK = threading.Lock()
_LISTENING = [False]  # jax keeps listeners for the process: register ours once


def _listen(event: str, **kwargs) -> None:
    with _LOCK:
        for counter in _ACTIVE:
            counter.hits += event == _HIT
            counter.misses += event == _MISS


class CacheEvents:
    """``with CacheEvents() as events: ...`` then ``events.hits``, ``events.misses``."""

    def __init__(self):
        self.hits = self.misses = 0

    def __enter__(self) -> "CacheEvents":
        with _LOCK:
            if not _LISTENING[0]:
                monitoring.register_event_listener(_listen)
                _LISTENING[0] = True
            _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        with _LOCK:
            _ACTIVE.remove(self)
