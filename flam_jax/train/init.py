"""Starting weights other than random: a pretrained text tower and/or an export directory.

- ``model.text_weights``: a Hugging Face checkpoint directory (safetensors + config.json)
  loaded into the text tower (e.g. all-MiniLM-L6-v2 for cpu_demo, roberta-base).
- ``train.init_from``: an export directory (``flam-export`` or ``flam-convert-openflam``
  output); every parameter and BatchNorm statistic it holds replaces the fresh one, except
  those whose name ``train.init_exclude`` matches (a regex; it must match one of them).

Both return host arrays keyed by the train state's flat names (``a/b/0/c``); the
trainer places them onto the parameters' shardings. Only a fresh run uses them: a
resumed run continues from its checkpoint.
"""

import re

import numpy as np
from flax import nnx

from flam_jax import paths
from flam_jax.errors import CheckpointError, ConfigError
from flam_jax.export.export_dir import PARAMS_FILE, read_params
from flam_jax.export.from_hf import load_text_weights
from flam_jax.models.names import param_name, train_name


def _text_tower_weights(model_config, abstract_model) -> dict[str, np.ndarray]:
    text = abstract_model.text
    load_text_weights(text, model_config.text_weights)
    flat = {}
    for path, var in nnx.to_flat_state(nnx.state(text, nnx.Param)):
        value = var.get_value()
        if not hasattr(value, "__array__"):
            raise CheckpointError(f"{model_config.text_weights} left text/{path} unset")
        flat[param_name(("text", *path))] = np.asarray(value)
    return flat


def _export_weights(export_dir: str, exclude: str = "") -> dict[str, np.ndarray]:
    path = paths.join(export_dir, PARAMS_FILE)
    if not paths.isfile(path):
        raise CheckpointError(f"train.init_from: {export_dir} has no {PARAMS_FILE}")
    weights = {train_name(name): value for name, value in read_params(path, CheckpointError).items()}
    if not exclude:
        return weights
    try:
        pattern = re.compile(exclude)
    except re.error as err:
        raise ConfigError(f"train.init_exclude: bad regex {exclude!r}: {err}") from None
    kept = {name: value for name, value in weights.items() if not pattern.search(name)}
    if len(kept) == len(weights):  # a typo would silently load everything
        raise ConfigError(f"train.init_exclude regex {exclude!r} matches no weight of {export_dir}")
    return kept


def initial_weights(config, abstract_model: nnx.Module) -> dict[str, np.ndarray]:
    """{flat name: host array} to overwrite after random initialisation (may be empty)."""
    weights: dict[str, np.ndarray] = {}
    if config.train.init_from:
        weights.update(_export_weights(config.train.init_from, config.train.init_exclude))
    if config.model.text_weights:
        # A fresh abstract copy: loading fills its variables with concrete arrays.
        weights.update(_text_tower_weights(config.model, nnx.clone(abstract_model)))
    return weights
