"""The export directory: what ``FLAM.load`` opens and every exporter writes.

    EXPORT_DIR/
      config.json          {"format": "flam_jax.export", "version": 1,
                            "model": {config.model keys}, "tokenizer": "tokenizer" | null,
                            "source": free text}
      params.safetensors   float32 weights keyed by dotted nnx path
                           (``audio.layers.0.blocks.1.attn.qkv.kernel``, ``text.pooler.bias``,
                           ``audio.frontend.bn0.mean`` ...): every nnx.Param and BatchStat
      tokenizer/           the tokenizer files (``data.tokenizers.load_tokenizer`` reads them)

The model is rebuilt from ``model`` with ``models.flam.build_model`` and must match the
stored weights exactly (names and shapes).
"""

from __future__ import annotations

import json
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load, load_file, save, save_file

from flam_jax import paths
from flam_jax.config import base_config
from flam_jax.data.tokenizers import load_tokenizer
from flam_jax.errors import CheckpointError, FlamError, ModelLoadError
from flam_jax.export.weights import set_weights
from flam_jax.jsonfile import read_json
from flam_jax.models.flam import build_model

FORMAT = "flam_jax.export"
VERSION = 1
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"
TOKENIZER_DIR = "tokenizer"


def model_config_dict(model_config) -> dict:
    """The config.model section as a plain dict (ConfigDict or dict in)."""
    return dict(model_config.to_dict() if hasattr(model_config, "to_dict") else model_config)


def save_export(out_dir: str, weights: dict[str, np.ndarray], model_config, tokenizer=None, source: str = ""):
    """Write an export directory (local or remote) from a flat weight dict
    (``export.weights.get_weights``)."""
    paths.makedirs(out_dir)
    tokenizer_entry = None
    if tokenizer is not None:
        with tempfile.TemporaryDirectory() as folder:  # tokenizers write local files
            tokenizer.save(folder)
            paths.upload_tree(folder, paths.join(out_dir, TOKENIZER_DIR))
        tokenizer_entry = TOKENIZER_DIR
    arrays = {k: np.array(v, order="C") for k, v in weights.items()}  # keeps 0-d scalars 0-d
    write_params(paths.join(out_dir, PARAMS_FILE), arrays, {"format": FORMAT, "version": str(VERSION)})
    config = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_config_dict(model_config),
        "tokenizer": tokenizer_entry,
        "source": source,
    }
    paths.write_text(paths.join(out_dir, CONFIG_FILE), json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_params(path: str, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """A safetensors file, written whole (a local file through a renamed temporary)."""
    if paths.is_remote(path):
        paths.write_bytes(path, save(arrays, metadata=metadata))
        return
    tmp = path + ".tmp"
    save_file(arrays, tmp, metadata=metadata)
    os.replace(tmp, path)


def read_params(path: str, error: type[FlamError] = ModelLoadError) -> dict[str, np.ndarray]:
    """A safetensors file (local or remote) as numpy arrays; missing or damaged → ``error``."""
    if not paths.isfile(path):
        raise error(f"{path} not found")
    try:
        return load(paths.read_bytes(path)) if paths.is_remote(path) else load_file(path)
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise error(f"cannot read {path}: {err}") from err


def read_config(export_dir: str) -> dict:
    path = paths.join(export_dir, CONFIG_FILE)
    if not paths.isdir(export_dir):
        raise ModelLoadError(f"export directory not found: {export_dir}")
    config = read_json(path, ModelLoadError, f"{export_dir} is not an export directory (no {CONFIG_FILE})")
    if not isinstance(config, dict) or config.get("format") != FORMAT or "model" not in config:
        raise ModelLoadError(f"{path} is not a flam_jax export config")
    if config.get("version") != VERSION:
        raise ModelLoadError(f"{path}: export version {config.get('version')} is not supported ({VERSION})")
    return config


def full_model_config(model_section: dict, where: str):
    """The stored model section over today's defaults; unknown keys and bad values refused."""
    cfg = base_config().model
    for key, value in model_section.items():
        if key not in cfg:
            raise ModelLoadError(f"{where}: unknown model key {key!r}")
        try:
            cfg[key] = value
        except (TypeError, ValueError) as err:
            raise ModelLoadError(f"{where}: bad model.{key}={value!r}: {err}") from err
    return cfg


def _materialise_rng_state(model: nnx.Module, seed: int = 0) -> None:
    """Give an ``nnx.eval_shape`` model concrete RNG keys and counters."""
    state = nnx.state(model, nnx.RngState)
    flat = nnx.to_flat_state(state)
    for i, (_, var) in enumerate(flat):
        if isinstance(var, nnx.RngKey):
            var.set_value(jax.random.key(seed + i))
        else:
            value = var.get_value()
            var.set_value(jnp.zeros(value.shape, value.dtype))
    nnx.update(model, nnx.from_flat_state(flat))


def load_export(export_dir: str):
    """(model, model_config, tokenizer or None) from an export directory (local or remote)."""
    config = read_config(export_dir)
    model_cfg = full_model_config(config["model"], paths.join(export_dir, CONFIG_FILE))
    params_path = paths.join(export_dir, PARAMS_FILE)
    if not paths.isfile(params_path):
        raise ModelLoadError(f"{export_dir} has no {PARAMS_FILE}")
    weights = read_params(params_path)
    try:
        model = nnx.eval_shape(lambda: build_model(model_cfg, rngs=nnx.Rngs(0)))
        set_weights(model, weights, what=params_path)
    except CheckpointError as err:
        raise ModelLoadError(str(err)) from err
    except FlamError as err:  # a bad config value (ConfigError) in the stored model section
        raise ModelLoadError(f"{export_dir}: {err}") from err
    _materialise_rng_state(model)
    tokenizer = None
    if config.get("tokenizer"):
        tokenizer = load_tokenizer(paths.join(export_dir, config["tokenizer"]), model_cfg.context_length)
    return model, model_cfg, tokenizer
