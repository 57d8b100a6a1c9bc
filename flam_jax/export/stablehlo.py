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

``export.stablehlo_runtime.StableHLOModel(EXPORT_DIR)`` deserialises and calls these with
jax, numpy and safetensors only (that file can be copied next to an export and used
without flam_jax); ``load(EXPORT_DIR)`` is the same after checking the folder.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
from flax import nnx

from flam_jax import paths, timeline
from flam_jax.errors import ModelLoadError
from flam_jax.export.export_dir import load_export, read_config, read_params, untrained_modules
from flam_jax.export.stablehlo_runtime import (
    FORMAT,
    MANIFEST,
    METHODS,
    PARAMS_FILE,
    SUBDIR,
    VERSION,
    StableHLOModel,
)
from flam_jax.export.weights import WEIGHT_TYPES
from flam_jax.jsonfile import read_json
from flam_jax.models.flam import frame_scores
from flam_jax.models.names import EXPORT_SEP, param_name

DEFAULT_PLATFORMS = ("cpu", "cuda")  # lowering for CUDA needs no GPU; both run from one file


def _lower_platforms(requested):
    if requested:
        return tuple(requested)
    here = jax.default_backend()
    return DEFAULT_PLATFORMS if here in ("cpu", "gpu") else (*DEFAULT_PLATFORMS, here)


def export_stablehlo(export_dir: str, *, platforms=None) -> list[str]:
    """Serialise embed_audio, embed_text and frame_scores of ``export_dir`` into ``stablehlo/``."""
    untrained = untrained_modules(read_config(export_dir), export_dir)
    if untrained:  # a starting point, not a model: its untrained parts would be serialised as data
        parts = ", ".join(untrained)
        raise ModelLoadError(f"{export_dir} is a starting point ({parts} untrained); train it first")
    model, model_config, tokenizer, _ = load_export(export_dir)
    stored = read_params(paths.join(export_dir, PARAMS_FILE))
    graphdef, weight_state, rest = nnx.split(model, WEIGHT_TYPES, ...)
    flat = list(nnx.to_flat_state(weight_state))

    def merged(weights):
        variables = [
            (
                path,
                var.replace(jnp.asarray(weights[param_name(path, EXPORT_SEP)]).astype(var.get_value().dtype)),
            )
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
    context = tokenizer.context_length if tokenizer is not None else model_config.context_length
    weight_spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in stored.items()}
    f32 = jnp.float32
    window = timeline.WINDOW_SAMPLES
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
        "frame_rate_hz": cfg.num_frames * timeline.SAMPLE_RATE / window,
        "context_length": context,
    }
    paths.write_text(paths.join(out_dir, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return [paths.join(out_dir, name) for name in [MANIFEST, *files.values()]]


def load(export_dir: str) -> StableHLOModel:
    """The StableHLO functions of a local export directory; ModelLoadError if it has none."""
    if paths.is_remote(export_dir):
        raise ModelLoadError(
            f"{export_dir} is remote: copy the export directory locally to run its StableHLO"
        )
    folder = paths.join(export_dir, SUBDIR)
    manifest = read_json(
        paths.join(folder, MANIFEST),
        ModelLoadError,
        f"{export_dir} has no StableHLO artefacts (no {SUBDIR}/)",
    )
    if not isinstance(manifest, dict) or (manifest.get("format"), manifest.get("version")) != (
        FORMAT,
        VERSION,
    ):
        raise ModelLoadError(f"{folder} is not a {FORMAT} v{VERSION} directory")
    return StableHLOModel(export_dir)
