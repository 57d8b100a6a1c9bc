"""The train state: a plain pytree of flat dicts, and the static half of the model.

``nnx.split`` cuts the model into a static ``graphdef`` and variables. The variables
travel through ``jax.jit`` and Orbax as flat ``{"a/b/0/c": array}`` dicts: string keys
are what partition rules, optimiser groups and checkpoints all want. RNG streams are
not part of the state: every step re-seeds them from (seed, step), so a resumed or
resharded run draws the same dropout masks.
"""

import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from flam_jax.models.names import param_name


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: batches consumed so far
    params: dict[str, jax.Array]  # trained variables (nnx.Param), float32 master copy
    extra: dict[str, jax.Array]  # other variables, e.g. BatchNorm running statistics
    opt_state: Any


class ModelDef:
    """The static structure of a model: merges flat dicts back into a live module."""

    def __init__(self, abstract_model: nnx.Module):
        graphdef, params, rngs, extra = nnx.split(abstract_model, nnx.Param, nnx.RngState, ...)
        self.graphdef = graphdef
        self._params = params
        self._rngs = rngs
        self._extra = extra
        self.stream_tags = sorted(
            {node.tag for _, node in nnx.iter_graph(abstract_model) if isinstance(node, nnx.RngStream)}
        )

    @staticmethod
    def flatten(state: nnx.State) -> dict[str, Any]:
        return {param_name(path): var.get_value() for path, var in state.flat_state()}

    @staticmethod
    def _unflatten(template: nnx.State, flat: dict[str, Any]) -> nnx.State:
        return nnx.from_flat_state(
            [(path, var.replace(flat[param_name(path)])) for path, var in template.flat_state()]
        )

    def abstract_params(self) -> dict[str, jax.ShapeDtypeStruct]:
        return self.flatten(self._params)

    def abstract_extra(self) -> dict[str, jax.ShapeDtypeStruct]:
        return self.flatten(self._extra)

    def _placeholder_rngs(self) -> nnx.State:
        # Any key will do: ``reseed`` overwrites every stream before it is used.
        def value(var):
            shape = var.get_value().shape
            if isinstance(var, nnx.RngKey):
                keys = jax.random.split(jax.random.key(0), max(1, math.prod(shape)))
                return keys.reshape(shape)
            return jnp.zeros(shape, jnp.uint32)

        return nnx.from_flat_state([(path, var.replace(value(var))) for path, var in self._rngs.flat_state()])

    def merge(self, params: dict, extra: dict, step_key: jax.Array | None = None) -> nnx.Module:
        """A live module from flat dicts; its RNG streams seeded from ``step_key``."""
        model = nnx.merge(
            self.graphdef,
            self._unflatten(self._params, params),
            self._placeholder_rngs(),
            self._unflatten(self._extra, extra),
        )
        if step_key is not None and self.stream_tags:
            keys = {tag: jax.random.fold_in(step_key, i) for i, tag in enumerate(self.stream_tags)}
            nnx.reseed(model, **keys)
        return model

    def split(self, model: nnx.Module) -> tuple[dict, dict]:
        """(params, extra) flat dicts of a live module."""
        _, params, _, extra = nnx.split(model, nnx.Param, nnx.RngState, ...)
        return self.flatten(params), self.flatten(extra)
