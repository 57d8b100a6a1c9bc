"""StableHLO of an export directory (``jax.export``), and a loader that needs only jax.

    EXPORT_DIR/stablehlo/manifest.json     {"format": "flam_jax.stablehlo", "version": 1,
                                            "functions": {name: file}, "platforms": [...],
                                            "window_samples", "num_frames", "frame_rate_hz",
                                            "context_length"}
    EXPORT_DIR/stablehlo/embed_audio.bin   (weights, wave [b, 480000] f32) -> (frames [b,F,D], global [b,D])
    EXPORT_DIR/stablehlo/embed_text.bin    (weights, ids [n, L] i32, mask [n, L] i32) -> (emb, alpha, beta)
    EXPORT_DIR/stablehlo/frame_scores_{unbiased,approximate}.bin
                                           (frames [b,F,D], emb [n,D], alpha [n], beta [n]) -> [b, n, F]

``b`` and ``n`` are symbolic: any batch size runs. Lowered for CPU and CUDA by default
(plus the exporting backend, e.g. TPU); ``platforms=`` overrides. The weights are not baked in: each
model function takes the dict of ``params.safetensors`` (dotted names, stored dtype, cast
to float32 inside), so the artefact stays small and shares the export's one weight file.

``StableHLOModel(EXPORT_DIR)`` deserialises and calls these with jax, numpy and
safetensors only; this module imports nothing of flam_jax at load time (the exporter
imports the model lazily), so the file can be copied next to an export and used alone
(a local export directory, then: copy a remote one first).
"""

from __future__ import annotations

import json
import os

import numpy as np

FORMAT = "flam_jax.stablehlo"
VERSION = 1
SUBDIR = "stablehlo"
MANIFEST = "manifest.json"
PARAMS_FILE = "params.safetensors"
METHODS = ("unbiased", "approximate")


DEFAULT_PLATFORMS = ("cpu", "cuda")  # lowering for CUDA needs no GPU; both run from one file


def _lower_platforms(requested):
    import jax

    if requested:
        return tuple(requested)
    here = jax.default_backend()
    return DEFAULT_PLATFORMS if here in ("cpu", "gpu") else (*DEFAULT_PLATFORMS, here)


def export_stablehlo(export_dir: str, *, platforms=None) -> list[str]:
    """Serialise embed_audio, embed_text and frame_scores of ``export_dir`` into ``stablehlo/``."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from flam_jax import paths
    from flam_jax.export.export_dir import read_params
    from flam_jax.export.weights import WEIGHT_TYPES
    from flam_jax.infer.api import FLAM
    from flam_jax.models.flam import frame_scores

    flam = FLAM.load(export_dir)
    model = flam.model
    stored = read_params(paths.join(export_dir, PARAMS_FILE))
    graphdef, weight_state, rest = nnx.split(model, WEIGHT_TYPES, ...)
    flat = list(nnx.to_flat_state(weight_state))

    def merged(weights):
        variables = [
            (path, var.replace(jnp.asarray(weights[".".join(map(str, path))]).astype(var.get_value().dtype)))
            for path, var in flat
        ]
        return nnx.merge(graphdef, nnx.from_flat_state(variables), rest)

    def embed_audio(weights, wave):
        return merged(weights).embed_audio(wave)

    def embed_text(weights, ids, mask):
        return merged(weights).embed_text(ids, mask)

    b, n = jax.export.symbolic_shape("b, n")
    cfg = model.audio.cfg
    dim = model.audio_projection.fc2.kernel.get_value().shape[-1]
    context = (
        flam.tokenizer.context_length if flam.tokenizer is not None else flam.model_config.context_length
    )
    weight_spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in stored.items()}
    f32 = jnp.float32
    window = 480_000
    specs = {
        "embed_audio": (embed_audio, (weight_spec, jax.ShapeDtypeStruct((b, window), f32))),
        "embed_text": (
            embed_text,
            (
                weight_spec,
                jax.ShapeDtypeStruct((n, context), jnp.int32),
                jax.ShapeDtypeStruct((n, context), jnp.int32),
            ),
        ),
    }
    score_args = (
        jax.ShapeDtypeStruct((b, cfg.num_frames, dim), f32),
        jax.ShapeDtypeStruct((n, dim), f32),
        jax.ShapeDtypeStruct((n,), f32),
        jax.ShapeDtypeStruct((n,), f32),
    )
    for method in METHODS:
        specs[f"frame_scores_{method}"] = (
            lambda fr, e, a, be, method=method: frame_scores(fr, e, a, be, method),
            score_args,
        )
    lowered_for = _lower_platforms(platforms)
    out_dir = paths.join(export_dir, SUBDIR)
    paths.makedirs(out_dir)
    files = {}
    for name, (fn, args) in specs.items():
        exported = jax.export.export(jax.jit(fn), platforms=lowered_for)(*args)
        files[name] = f"{name}.bin"
        paths.write_bytes(paths.join(out_dir, files[name]), bytes(exported.serialize()))
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "functions": files,
        "platforms": list(lowered_for),
        "window_samples": window,
        "num_frames": cfg.num_frames,
        "frame_rate_hz": cfg.num_frames * 48000 / window,
        "context_length": context,
    }
    paths.write_text(paths.join(out_dir, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return [paths.join(out_dir, name) for name in [MANIFEST, *files.values()]]


class StableHLOModel:
    """The exported functions of ``EXPORT_DIR/stablehlo`` with the export's weights, on jax alone."""

    def __init__(self, export_dir: str):
        import jax
        from safetensors.numpy import load_file

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
