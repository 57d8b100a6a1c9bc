"""Starting weights other than random: a pretrained text tower and/or an export directory.

- ``model.text_weights``: a Hugging Face checkpoint directory (safetensors + config.json)
  loaded into the text tower (e.g. all-MiniLM-L6-v2 for cpu_demo, roberta-base).
- ``train.init_from``: an export directory (``flam-export`` or ``flam-convert-openflam``
  output); every parameter and BatchNorm statistic it holds replaces the fresh one, or
  only those whose name ``train.init_include`` matches (a regex, e.g. ``^audio/``), except
  those ``train.init_exclude`` matches. Each regex must match a weight of the file.

``plan_initial_weights`` returns host arrays keyed by the train state's flat names
(``a/b/0/c``), which the trainer places onto the parameters' shardings, and an
``InitReport``: what was loaded, what stayed fresh, what in the file was unused (left out
by a regex, or a name the model lacks). A weight whose shape differs from the model's is a
one-line error naming it; a file of which nothing fits the model is one too. Only a fresh
run uses them: a resumed run continues from its checkpoint.
"""

import collections
import dataclasses
import json

import numpy as np
from flax import nnx

from flam_jax import paths
from flam_jax.config import compile_regex
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


def _export_weights(export_dir: str) -> dict[str, np.ndarray]:
    path = paths.join(export_dir, PARAMS_FILE)
    if not paths.isfile(path):
        raise CheckpointError(f"train.init_from: {export_dir} has no {PARAMS_FILE}")
    return {train_name(name): value for name, value in read_params(path, CheckpointError).items()}


def _select(weights: dict, pattern: str, key: str, export_dir: str, keep_matches: bool) -> tuple[dict, list]:
    """(kept, left out) by the regex of config ``key``; one matching nothing is an error."""
    regex = compile_regex(pattern, key)
    matched = {name for name in weights if regex.search(name)}
    if not matched:  # a typo would silently load everything (exclude) or nothing (include)
        raise ConfigError(f"{key} regex {pattern!r} matches no weight of {export_dir}")
    kept = {n: v for n, v in weights.items() if (n in matched) == keep_matches}
    return kept, sorted(set(weights) - set(kept))


@dataclasses.dataclass
class InitReport:
    """What a fresh run took from its starting weights."""

    source: str
    loaded: list[str]
    fresh: list[str]
    unused: dict[str, str]  # name in the file -> why it was not loaded

    def summary(self) -> str:
        """One line: counts, grouped by each name's first part."""

        def groups(names) -> str:
            counts = collections.Counter(n.split("/")[0] for n in names)
            return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))

        line = f"initial weights from {self.source}: loaded {len(self.loaded)} ({groups(self.loaded)})"
        line += f"; fresh {len(self.fresh)}" + (f" ({groups(self.fresh)})" if self.fresh else "")
        line += f"; unused in the file {len(self.unused)}" + (
            f" ({groups(self.unused)})" if self.unused else ""
        )
        return line

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)


def plan_initial_weights(
    config, abstract_model: nnx.Module, shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, np.ndarray], InitReport | None]:
    """The weights to put in place after random initialisation, checked against ``shapes``
    (every variable of the train state: {flat name: shape}), and their report (None when
    there are none to load)."""
    train = config.train
    sources, unused = [], {}
    weights: dict[str, np.ndarray] = {}
    if train.init_from:
        sources.append(train.init_from)
        found = _export_weights(train.init_from)
        if train.init_include:
            found, left = _select(found, train.init_include, "train.init_include", train.init_from, True)
            unused.update({n: "not matched by train.init_include" for n in left})
        if train.init_exclude:
            found, left = _select(found, train.init_exclude, "train.init_exclude", train.init_from, False)
            unused.update({n: "matched by train.init_exclude" for n in left})
        unused.update({n: "not in the model" for n in found if n not in shapes})
        weights.update({n: v for n, v in found.items() if n in shapes})
        if not weights:
            raise CheckpointError(
                f"train.init_from: no weight of {train.init_from} is a variable of this model "
                "(another model size or layout?)"
            )
    if config.model.text_weights:
        sources.append(config.model.text_weights)
        # A fresh abstract copy: loading fills its variables with concrete arrays.
        weights.update(_text_tower_weights(config.model, nnx.clone(abstract_model)))
    if not sources:
        return {}, None
    for name, value in weights.items():
        if tuple(value.shape) != tuple(shapes[name]):
            raise CheckpointError(
                f"initial weight {name} has shape {tuple(value.shape)}, the model needs {tuple(shapes[name])}"
            )
    report = InitReport(
        source=" + ".join(sources),
        loaded=sorted(weights),
        fresh=sorted(set(shapes) - set(weights)),
        unused=dict(sorted(unused.items())),
    )
    return weights, report
