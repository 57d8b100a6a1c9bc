"""Inference: the ``FLAM`` Python API, ``flam-detect``'s and ``flam-search``'s library code.

Recordings of any length are windowed by ``flam_jax.timeline``; the command-line halves
are ``flam_jax.cli.detect`` and ``flam_jax.cli.search``.

Everything here works from an export directory (config.json, parameters, tokenizer),
never from a training workdir.
"""
