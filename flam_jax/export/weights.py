"""Flat weight dicts for NNX modules, and a checked key-by-key conversion helper.

A module's weights are its ``nnx.Param`` and ``nnx.BatchStat`` variables, keyed by the
dotted nnx path (``text.layers.0.query.kernel``). Export directories store exactly this
dict; converters build it from foreign state dicts with ``Conversion``, which names the
offending key and shapes on any mismatch and lists missing and unexpected keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import numpy as np
from flax import nnx

from flam_jax.errors import CheckpointError
from flam_jax.models.names import EXPORT_SEP, param_name

WEIGHT_TYPES = (nnx.Param, nnx.BatchStat)


def _flat_variables(module: nnx.Module):
    return nnx.to_flat_state(nnx.state(module, WEIGHT_TYPES))


def weight_shapes(module: nnx.Module) -> dict[str, tuple[int, ...]]:
    """{dotted path: shape}; works on abstract modules from ``nnx.eval_shape`` too."""
    return {
        param_name(path, EXPORT_SEP): tuple(var.get_value().shape) for path, var in _flat_variables(module)
    }


def get_weights(module: nnx.Module) -> dict[str, np.ndarray]:
    """{dotted path: host array} of every parameter and batch statistic."""
    return {name: np.asarray(value) for name, value in weight_values(module).items()}


def weight_values(module: nnx.Module) -> dict:
    """{dotted path: value} as held (tracers inside a jit): ``get_weights`` without the copy."""
    return {param_name(path, EXPORT_SEP): var.get_value() for path, var in _flat_variables(module)}


def set_weights(module: nnx.Module, weights: Mapping[str, np.ndarray], *, what: str = "weights") -> None:
    """Overwrite every weight of ``module``; missing, extra or misshapen entries raise."""
    state = nnx.state(module, WEIGHT_TYPES)
    flat = nnx.to_flat_state(state)
    expected = {param_name(path, EXPORT_SEP) for path, _ in flat}
    missing = sorted(expected - set(weights))
    unexpected = sorted(set(weights) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{what}: {_key_report(missing, unexpected)}")
    for path, var in flat:
        key = param_name(path, EXPORT_SEP)
        value = weights[key]
        old = var.get_value()
        if tuple(value.shape) != tuple(old.shape):
            raise CheckpointError(
                f"{what}: {key} has shape {tuple(value.shape)}, the model needs {old.shape}"
            )
        var.set_value(jax.numpy.asarray(value, dtype=old.dtype))
    nnx.update(module, nnx.from_flat_state(flat))


def _key_report(missing: list[str], unexpected: list[str], limit: int = 20) -> str:
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            shown = ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")
            parts.append(f"{len(keys)} {label} keys: {shown}")
    return "; ".join(parts)


class Conversion:
    """Move tensors from a foreign state dict to nnx paths, checking every step.

    ``take`` reads (and marks as used) a source key; ``put`` stores a converted array
    under a target path and checks its shape; ``finish`` fails on unused source keys,
    missing source keys and unfilled targets, then returns the target dict.
    """

    def __init__(self, source: Mapping[str, np.ndarray], targets: Mapping[str, tuple[int, ...]], what: str):
        self.source = source
        self.targets = dict(targets)
        self.what = what
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.out: dict[str, np.ndarray] = {}

    def has(self, key: str) -> bool:
        return key in self.source

    def take(self, key: str) -> np.ndarray | None:
        if key not in self.source:
            self.missing.append(key)
            return None
        self.used.add(key)
        return np.asarray(self.source[key])

    def ignore(self, key: str) -> None:
        """Mark a source key as consumed without storing it (recomputed buffers)."""
        self.used.add(key)

    def put(
        self, target: str, value: np.ndarray | None, source_key: str, source_shape: tuple | None = None
    ) -> None:
        """``source_shape``: the tensor's shape as stored, when ``value`` was reshaped from it."""
        if value is None:  # the source key was missing; already recorded
            return
        if target not in self.targets:
            raise CheckpointError(f"{self.what}: {source_key} maps to {target}, which the model lacks")
        need = tuple(self.targets[target])
        if tuple(value.shape) != need:
            stored = tuple(value.shape) if source_shape is None else tuple(source_shape)
            converted = "" if source_shape is None else f" (converted {tuple(value.shape)})"
            raise CheckpointError(
                f"{self.what}: {source_key} has shape {stored}{converted} but {target} needs {need}"
            )
        # np.array, not ascontiguousarray: the latter turns 0-d scalars into shape (1,).
        self.out[target] = np.array(value, dtype=np.float32 if value.dtype.kind == "f" else None, order="C")

    def move(self, source_key: str, target: str, transform: Callable[[np.ndarray], np.ndarray] | None = None):
        """take + optional transform + put."""
        value = self.take(source_key)
        shape = None if value is None else value.shape
        if value is not None and transform is not None:
            value = transform(value)
        self.put(target, value, source_key, shape if transform is not None else None)

    def finish(self, *, extra_targets_ok: bool = False) -> dict[str, np.ndarray]:
        unexpected = sorted(set(self.source) - self.used)
        if self.missing or unexpected:
            raise CheckpointError(f"{self.what}: {_key_report(sorted(self.missing), unexpected)}")
        unfilled = sorted(set(self.targets) - set(self.out))
        if unfilled and not extra_targets_ok:
            raise CheckpointError(f"{self.what}: no source for model weights {', '.join(unfilled[:20])}")
        return self.out
