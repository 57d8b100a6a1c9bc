"""An openflam 1.0.2 state dict (.pth) -> a flam_jax export directory (flam-convert-openflam).

The checkpoint is read with ``torch.load(weights_only=True)`` (no arbitrary unpickling);
torch is imported only here. Every key is mapped (FLAM_SPEC §11): the audio branch by
``export.openflam_audio``, the RoBERTa branch by ``export.from_hf``'s HF mapping, plus the
projections, the per-text heads and the temperature. Unused or missing keys, or a shape
that does not fit, are a CheckpointError naming them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from flax import nnx

from flam_jax.config import base_config
from flam_jax.data.tokenizers import load_tokenizer
from flam_jax.errors import CheckpointError, InputError
from flam_jax.export import openflam_audio
from flam_jax.export.export_dir import save_export
from flam_jax.export.from_hf import map_text_weights
from flam_jax.export.weights import Conversion, weight_shapes
from flam_jax.models.configs import HTSAT_CONFIGS, TEXT_CONFIGS
from flam_jax.models.flam import build_model

TEXT_PREFIX = "text_branch."
# openflam's nn.Sequential heads keep weights at indices 0 and 2.
HEADS = {
    "audio_projection": "audio_projection",
    "text_projection": "text_projection",
    "fc_per_text_logit_scale": "scale_head",
    "fc_per_text_logit_bias": "bias_head",
}
# Hugging Face caches where openflam (cache_dir=/tmp/openflam) or transformers put roberta-base.
_TOKENIZER_CACHES = ("/tmp/openflam", None)


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
    """The .pth state dict as float32/int numpy arrays (safe loader only)."""
    import torch  # lazy: torch is a conversion-only dependency, not in requirements.txt

    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, zip errors, refused globals
        raise CheckpointError(f"cannot read {path} as a weights-only torch checkpoint: {err}") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a flat state dict of tensors")
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()}


def detect_text_tower(state: Mapping[str, np.ndarray]) -> str:
    """The TEXT_CONFIGS name whose shapes the ``text_branch.*`` tensors have."""
    key = TEXT_PREFIX + "embeddings.word_embeddings.weight"
    if key not in state:
        raise CheckpointError(f"{key} not found: no RoBERTa text branch")
    vocab, hidden = state[key].shape
    layers = 0
    while f"{TEXT_PREFIX}encoder.layer.{layers}.attention.self.query.weight" in state:
        layers += 1
    positions = state[TEXT_PREFIX + "embeddings.position_embeddings.weight"].shape[0]
    for name, cfg in TEXT_CONFIGS.items():
        if cfg.style == "roberta" and (cfg.vocab_size, cfg.hidden, cfg.layers, cfg.max_positions) == (
            vocab,
            hidden,
            layers,
            positions,
        ):
            return name
    raise CheckpointError(
        f"text branch with vocab {vocab}, hidden {hidden}, {layers} layers, {positions} positions "
        "matches no RoBERTa text config"
    )


def _flatten(tree: dict, prefix: str) -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def convert_state(state: Mapping[str, np.ndarray], model_config) -> dict[str, np.ndarray]:
    """openflam state dict -> flat weights of ``build_model(model_config)`` (checked)."""
    targets = weight_shapes(nnx.eval_shape(lambda: build_model(model_config, rngs=nnx.Rngs(0))))
    audio_tree, _ = openflam_audio.convert_htsat(state, HTSAT_CONFIGS[model_config.audio_size])
    audio = _flatten(audio_tree, "audio.")

    rest = {k: v for k, v in state.items() if not k.startswith(openflam_audio.PREFIX)}
    conv = Conversion(rest, targets, what="openflam checkpoint")
    for target, value in audio.items():
        conv.put(target, value, f"{openflam_audio.PREFIX}… -> {target}")
    map_text_weights(conv, TEXT_CONFIGS[model_config.text_tower].layers, source=TEXT_PREFIX, target="text.")
    for source, target in HEADS.items():
        for index, layer in (("0", "fc1"), ("2", "fc2")):
            conv.move(f"{source}.{index}.weight", f"{target}.{layer}.kernel", np.transpose)
            conv.move(f"{source}.{index}.bias", f"{target}.{layer}.bias")
    conv.move("logit_scale_a", "logit_scale")
    # The frame-wise global scale is fixed at exp(0) = 1 in openflam; we hard-code it.
    aed = conv.take("aed_logit_scale")
    if aed is not None and float(aed) != 0.0:
        raise CheckpointError(f"aed_logit_scale is {float(aed)}, but FLAM fixes it at 0 (scale 1)")
    return conv.finish()


def default_model_config(state: Mapping[str, np.ndarray]):
    cfg = base_config().model
    cfg.audio_size = openflam_audio.detect_htsat_size(state)
    cfg.text_tower = detect_text_tower(state)
    cfg.text_weights = ""
    cfg.embed_dim = (
        int(state["audio_projection.2.weight"].shape[0]) if "audio_projection.2.weight" in state else 512
    )
    cfg.compute_dtype = "float32"
    cfg.remat = "none"
    return cfg


def find_roberta_tokenizer() -> str | None:
    """A local roberta-base tokenizer (vocab.json + merges.txt) from a Hugging Face cache."""
    try:  # optional: a Hugging Face cache is only one place a tokenizer may come from
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for cache in _TOKENIZER_CACHES:
        for repo in ("roberta-base", "FacebookAI/roberta-base"):
            vocab = try_to_load_from_cache(repo, "vocab.json", cache_dir=cache)
            merges = try_to_load_from_cache(repo, "merges.txt", cache_dir=cache)
            if isinstance(vocab, str) and isinstance(merges, str):
                if os.path.dirname(vocab) == os.path.dirname(merges):
                    return os.path.dirname(vocab)
    return None


def convert(checkpoint: str, out_dir: str, tokenizer_dir: str | None = None) -> str:
    """Convert ``checkpoint`` into the export directory ``out_dir``; returns ``out_dir``."""
    state = read_checkpoint(checkpoint)
    model_cfg = default_model_config(state)
    weights = convert_state(state, model_cfg)
    tokenizer_dir = tokenizer_dir or find_roberta_tokenizer()
    if tokenizer_dir is None:
        raise InputError(
            "no roberta-base tokenizer found in the Hugging Face cache; pass --tokenizer-dir DIR"
        )
    tokenizer = load_tokenizer(tokenizer_dir, model_cfg.context_length)
    vocab = int(weights["text.word_embeddings.embedding"].shape[0])
    if tokenizer.vocab_size > vocab:
        raise InputError(
            f"tokenizer in {tokenizer_dir} has {tokenizer.vocab_size} tokens, the model only {vocab}"
        )
    save_export(
        out_dir, weights, model_cfg, tokenizer, source=f"openflam checkpoint {os.path.abspath(checkpoint)}"
    )
    return out_dir
