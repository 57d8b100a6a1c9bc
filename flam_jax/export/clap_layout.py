"""The state-dict layout LAION-CLAP and openflam share, and what their converters share.

openflam's FLAM descends from LAION-CLAP: both keep the HTS-AT audio tower under
``audio_branch.``, a Hugging Face RoBERTa under ``text_branch.``, and the two projections
as ``nn.Sequential(Linear, ReLU, Linear)`` (weights at indices 0 and 2). Checkpoints are
read with ``torch.load(weights_only=True)`` unless the user vouches for the file; torch is
imported only here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from flax import nnx

from flam_jax import paths
from flam_jax.audio import frontend
from flam_jax.config import base_config
from flam_jax.data.tokenizers import load_tokenizer
from flam_jax.errors import CheckpointError, InputError
from flam_jax.export import openflam_audio
from flam_jax.export.from_hf import map_text_weights
from flam_jax.export.weights import Conversion, weight_shapes
from flam_jax.models.configs import HTSAT_CONFIGS, TEXT_CONFIGS
from flam_jax.models.flam import build_model

TEXT_PREFIX = "text_branch."
# The projections: the same names in both layouts and in ours.
PROJECTIONS = ("audio_projection", "text_projection")
# Hugging Face caches where openflam (cache_dir=/tmp/openflam) or transformers put roberta-base.
_TOKENIZER_CACHES = ("/tmp/openflam", None)
# DistributedDataParallel's wrapper prefix, which LAION-CLAP's training saves.
_DDP_PREFIX = "module."


def _numpy_data() -> list:
    """What a weights-only load may rebuild of numpy: arrays and scalars of plain dtypes.
    Training checkpoints hold them outside the weights (LAION-CLAP's scheduler writes
    numpy floats into the optimizer's learning rates); object arrays stay refused."""
    plain = [
        getattr(np.dtypes, name)
        for name in dir(np.dtypes)
        if name.endswith("DType") and name not in ("ObjectDType", "VoidDType", "StringDType")
    ]
    return [np._core.multiarray.scalar, np._core.multiarray._reconstruct, np.ndarray, np.dtype, *plain]


def read_torch_state(path: str, *, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """A checkpoint's flat state dict (``state_dict`` inside a training checkpoint, DDP
    prefix removed) as float32/int numpy arrays.

    ``allow_pickle`` lifts the weights-only restriction, for a file the user trusts that
    also pickled other objects (which may run code when unpickled). A ``gs://`` file is
    read from a local copy (torch.load seeks).
    """
    import torch  # lazy: torch is a conversion-only dependency, not in requirements.txt

    if not paths.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_data()):
            state = torch.load(paths.local_copy(path), map_location="cpu", weights_only=not allow_pickle)
    except Exception as err:  # pickle errors, zip errors, refused globals
        how = "a torch checkpoint" if allow_pickle else "a weights-only torch checkpoint"
        hint = "" if allow_pickle else " (a file you trust may be read with --allow-pickle)"
        raise CheckpointError(f"cannot read {path} as {how}: {err}{hint}".replace("\n", " ")) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    tensors = isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    if not tensors or not state:
        raise CheckpointError(f"{path} is not a state dict of tensors")
    if all(k.startswith(_DDP_PREFIX) for k in state):
        state = {k[len(_DDP_PREFIX) :]: v for k, v in state.items()}
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


def starting_config(audio_size: str, text_tower: str, embed_dim: int = 512):
    """config.model of a converted export: its sizes, fp32, nothing to load besides it."""
    cfg = base_config().model
    cfg.audio_size = audio_size
    cfg.text_tower = text_tower
    cfg.text_weights = ""
    cfg.embed_dim = embed_dim
    cfg.compute_dtype = "float32"
    cfg.remat = "none"
    return cfg


def model_config_for(state: Mapping[str, np.ndarray]):
    """config.model of the sizes the checkpoint's audio and text branches have."""
    projection = state.get("audio_projection.2.weight")
    return starting_config(
        openflam_audio.detect_htsat_size(state),
        detect_text_tower(state),
        512 if projection is None else int(projection.shape[0]),
    )


def _flatten(tree: dict, prefix: str) -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def sequential_mlp(conv: Conversion, source: str, target: str) -> None:
    """An ``nn.Sequential(Linear, act, Linear)`` -> our TwoLayerMLP (fc1, fc2)."""
    for index, layer in (("0", "fc1"), ("2", "fc2")):
        conv.move(f"{source}.{index}.weight", f"{target}.{layer}.kernel", np.transpose)
        conv.move(f"{source}.{index}.bias", f"{target}.{layer}.bias")


def convert_towers(
    state: Mapping[str, np.ndarray],
    model_config,
    what: str,
    *,
    untrained: tuple[str, ...] = (),
    mel_sample_rates: tuple[int, ...] = (frontend.SAMPLE_RATE,),
) -> Conversion:
    """A Conversion holding the audio tower, the text tower (if ``text`` is not untrained),
    the projections (likewise) and the temperature, with the rest of ``state`` still to be
    consumed by the caller; the model's ``untrained`` modules are not targets."""
    model = nnx.eval_shape(lambda: build_model(model_config, rngs=nnx.Rngs(0)))
    targets = {k: v for k, v in weight_shapes(model).items() if k.split(".", 1)[0] not in untrained}
    audio_cfg = HTSAT_CONFIGS[model_config.audio_size]
    audio_tree, _ = openflam_audio.convert_htsat(state, audio_cfg, mel_sample_rates=mel_sample_rates)
    rest = {k: v for k, v in state.items() if not k.startswith(openflam_audio.PREFIX)}
    conv = Conversion(rest, targets, what=what)
    for target, value in _flatten(audio_tree, "audio.").items():
        conv.put(target, value, f"{openflam_audio.PREFIX}… -> {target}")
    if "text" not in untrained:
        layers = TEXT_CONFIGS[model_config.text_tower].layers
        map_text_weights(conv, layers, source=TEXT_PREFIX, target="text.")
    for name in PROJECTIONS:
        if name not in untrained:
            sequential_mlp(conv, name, name)
    if "logit_scale" not in untrained:
        conv.move("logit_scale_a", "logit_scale")
    return conv


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


def roberta_tokenizer(tokenizer_dir: str | None, model_config, vocab: int, *, required: bool = True):
    """The tokenizer for a converted RoBERTa text tower: ``tokenizer_dir`` or a cached
    roberta-base; None when there is none and it is not ``required``."""
    tokenizer_dir = tokenizer_dir or find_roberta_tokenizer()
    if tokenizer_dir is None:
        if not required:
            return None
        raise InputError("no roberta-base tokenizer in the Hugging Face cache; pass --tokenizer-dir DIR")
    tokenizer = load_tokenizer(tokenizer_dir, model_config.context_length)
    if tokenizer.vocab_size > vocab:
        raise InputError(
            f"tokenizer in {tokenizer_dir} has {tokenizer.vocab_size} tokens, the model only {vocab}"
        )
    return tokenizer
