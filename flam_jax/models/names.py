"""Parameter names: one way to spell a variable's path, for each of the two places names go.

- In training (the train state, sharding rules, optimiser groups, Orbax checkpoints):
  ``text/layers/0/query/kernel``: slashes, so that rules read as path patterns.
- In export directories (``params.safetensors``) and converters: ``text.layers.0.query.kernel``,
  the dotted style of torch and Hugging Face state dicts.

The parts are the module path as nnx gives it; the two spellings convert one to one
because no part holds a slash or a dot.
"""

from collections.abc import Iterable

TRAIN_SEP = "/"
EXPORT_SEP = "."


def param_name(path: Iterable, sep: str = TRAIN_SEP) -> str:
    """A variable's path (module attributes and indices) as one name."""
    return sep.join(str(part) for part in path)


def export_name(train_name: str) -> str:
    return train_name.replace(TRAIN_SEP, EXPORT_SEP)


def train_name(export_name: str) -> str:
    return export_name.replace(EXPORT_SEP, TRAIN_SEP)
