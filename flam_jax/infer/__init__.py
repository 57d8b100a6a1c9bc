"""Inference: the ``FLAM`` Python API, long-audio windowing, ``flam-detect`` and ``flam-search``.

Everything here works from an export directory (config.json, parameters, tokenizer),
never from a training workdir.
"""
