"""Hugging Face BERT/RoBERTa weights (local safetensors directory) -> ``TextEncoder``.

The HF names map one to one onto the tower's roles; Linear weights are transposed
(PyTorch stores (out, in)). The same mapping serves openflam's ``text_branch.*`` keys.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flam_jax import paths
from flam_jax.errors import CheckpointError
from flam_jax.export.export_dir import read_params
from flam_jax.export.weights import Conversion, set_weights, weight_shapes
from flam_jax.jsonfile import read_json
from flam_jax.models.configs import TextConfig

# HF buffers that the tower recomputes.
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
_PREFIXES = ("bert.", "roberta.")
_HEAD_PREFIXES = ("cls.", "lm_head.")
_ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")


def _linear(conv: Conversion, source: str, target: str) -> None:
    conv.move(f"{source}.weight", f"{target}.kernel", np.transpose)
    conv.move(f"{source}.bias", f"{target}.bias")


def _layer_norm(conv: Conversion, source: str, target: str) -> None:
    conv.move(f"{source}.weight", f"{target}.scale")
    conv.move(f"{source}.bias", f"{target}.bias")


def map_text_weights(conv: Conversion, num_layers: int, source: str = "", target: str = "") -> None:
    """Queue every HF tensor of a ``num_layers`` BERT/RoBERTa model (keys under ``source``)."""
    for buffer in _BUFFERS:
        if conv.has(source + buffer):
            conv.ignore(source + buffer)
    for name in ("word", "position", "token_type"):
        conv.move(f"{source}embeddings.{name}_embeddings.weight", f"{target}{name}_embeddings.embedding")
    _layer_norm(conv, f"{source}embeddings.LayerNorm", f"{target}embeddings_norm")
    for i in range(num_layers):
        src, dst = f"{source}encoder.layer.{i}.", f"{target}layers.{i}."
        for name in ("query", "key", "value"):
            _linear(conv, f"{src}attention.self.{name}", dst + name)
        _linear(conv, f"{src}attention.output.dense", dst + "attention_out")
        _layer_norm(conv, f"{src}attention.output.LayerNorm", dst + "attention_norm")
        _linear(conv, f"{src}intermediate.dense", dst + "ffn_in")
        _linear(conv, f"{src}output.dense", dst + "ffn_out")
        _layer_norm(conv, f"{src}output.LayerNorm", dst + "ffn_norm")
    _linear(conv, f"{source}pooler.dense", f"{target}pooler")


def text_config_from_hf(directory: str, context_length: int = 77, dropout: float | None = None) -> TextConfig:
    """A ``TextConfig`` from an HF ``config.json`` (BERT or RoBERTa family)."""
    path = paths.join(directory, "config.json")
    hf = read_json(path, CheckpointError, f"cannot read {path}: not found")
    if not isinstance(hf, dict):
        raise CheckpointError(f"{path} is not a Hugging Face model config")
    kind = hf.get("model_type", "")
    if kind not in (*_ROBERTA_TYPES, "bert"):
        raise CheckpointError(f"{path}: model_type {kind!r} is not a BERT or RoBERTa model")
    if hf.get("hidden_act", "gelu") != "gelu" or hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{path}: only exact-GELU models with absolute positions are supported")
    try:
        return TextConfig(
            vocab_size=hf["vocab_size"],
            hidden=hf["hidden_size"],
            layers=hf["num_hidden_layers"],
            heads=hf["num_attention_heads"],
            ffn=hf["intermediate_size"],
            max_positions=hf["max_position_embeddings"],
            type_vocab=hf.get("type_vocab_size", 1),
            pad_id=hf.get("pad_token_id", 0) if hf.get("pad_token_id") is not None else 0,
            style="roberta" if kind in _ROBERTA_TYPES else "bert",
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            dropout=hf.get("hidden_dropout_prob", 0.1) if dropout is None else dropout,
            context_length=context_length,
        )
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: unusable text config: {err}") from err


def read_safetensors(directory: str) -> dict[str, np.ndarray]:
    path = paths.join(directory, "model.safetensors")
    if not paths.isfile(path):
        raise CheckpointError(f"no model.safetensors in {directory}")
    return read_params(path, CheckpointError)


def _strip_prefix(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    # Pre-training heads (MLM, NSP) of *ForPreTraining checkpoints are not part of the tower.
    tensors = {k: v for k, v in tensors.items() if not k.startswith(_HEAD_PREFIXES)}
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            return {k[len(prefix) :]: v for k, v in tensors.items()}
    return dict(tensors)


def load_text_weights(encoder, directory: str) -> None:
    """Overwrite ``encoder`` (a ``TextEncoder``) with the HF checkpoint in ``directory``."""
    hf_cfg = text_config_from_hf(directory, encoder.cfg.context_length, encoder.cfg.dropout)
    if hf_cfg != encoder.cfg:
        raise CheckpointError(f"{directory} holds {hf_cfg}, but the text tower is {encoder.cfg}")
    tensors = _strip_prefix(read_safetensors(directory))
    conv = Conversion(tensors, weight_shapes(encoder), what=directory)
    map_text_weights(conv, encoder.cfg.layers)
    set_weights(encoder, conv.finish(), what=directory)
