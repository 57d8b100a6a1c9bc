"""Run the StableHLO artefacts of an export directory with jax, numpy and safetensors alone.

``StableHLOModel(EXPORT_DIR)`` deserialises and calls what ``export.stablehlo`` wrote.
This file imports nothing of flam_jax, on purpose: it can be copied next to an export and
used where flam_jax is not installed (a local export directory, then: copy a remote one
first). For the same reason its errors are plain ``ValueError``s; inside flam_jax,
``export.stablehlo.load`` checks the folder first and raises ``ModelLoadError``.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from safetensors.numpy import load_file

FORMAT = "flam_jax.stablehlo"
VERSION = 1
SUBDIR = "stablehlo"
MANIFEST = "manifest.json"
PARAMS_FILE = "params.safetensors"
METHODS = ("unbiased", "approximate")


class StableHLOModel:
    """The exported functions of ``EXPORT_DIR/stablehlo`` with the export's weights, on jax alone."""

    def __init__(self, export_dir: str):
        folder = os.path.join(export_dir, SUBDIR)
        with open(os.path.join(folder, MANIFEST)) as f:
            self.manifest = json.load(f)
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise ValueError(f"{folder} is not a {FORMAT} v{VERSION} directory")
        self.weights = load_file(os.path.join(export_dir, PARAMS_FILE))
        self._fns = {}
        for name, file in self.manifest["functions"].items():
            with open(os.path.join(folder, file), "rb") as f:
                self._fns[name] = jax.jit(jax.export.deserialize(bytearray(f.read())).call)

    def embed_audio(self, wave: np.ndarray):
        """wave [B, 480000] float32 at 48 kHz → (frames [B, F, D], global [B, D])."""
        frames, global_ = self._fns["embed_audio"](self.weights, np.asarray(wave, np.float32))
        return np.asarray(frames), np.asarray(global_)

    def embed_text(self, ids: np.ndarray, mask: np.ndarray):
        """Token ids and attention mask [N, context_length] int32 → (emb [N, D], alpha [N], beta [N])."""
        out = self._fns["embed_text"](self.weights, np.asarray(ids, np.int32), np.asarray(mask, np.int32))
        return tuple(np.asarray(x) for x in out)

    def frame_scores(self, frames, emb, alpha, beta, method: str = "unbiased") -> np.ndarray:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        args = [np.asarray(x, np.float32) for x in (frames, emb, alpha, beta)]
        return np.asarray(self._fns[f"frame_scores_{method}"](*args))
