"""The trainer's input: SED and global batches from the Grain pipelines, as one iterator.

``TrainBatches`` yields ``{"sed": {...}, "global": {...}}`` host-local numpy dicts and
checkpoints both pipelines' positions in one JSON blob (the protocol of
``grain.checkpoint.CheckpointSave``: ``get_state() -> bytes``).
"""

import json

import jax

from flam_jax.data import pipeline
from flam_jax.data.tokenizers import load_tokenizer
from flam_jax.errors import CheckpointError, ConfigError
from flam_jax.train.sharding import sed_groups


class TrainBatches:
    """Zips the SED and the global iterator (either may be None when its loss is off)."""

    def __init__(self, sed=None, global_=None):
        if sed is None and global_ is None:
            raise ConfigError("training needs at least one of the SED and the global batch")
        self.parts = {name: it for name, it in (("sed", sed), ("global", global_)) if it is not None}

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return {name: next(it) for name, it in self.parts.items()}

    def get_state(self) -> bytes:
        return json.dumps({name: it.get_state().decode("utf-8") for name, it in self.parts.items()}).encode()

    def set_state(self, state: bytes) -> None:
        try:
            saved = json.loads(bytes(state).decode("utf-8"))
        except ValueError as err:
            raise CheckpointError(f"data iterator state is not JSON: {err}") from err
        if sorted(saved) != sorted(self.parts):
            raise CheckpointError(
                f"data iterator state holds {sorted(saved)}, this run reads {sorted(self.parts)}"
            )
        for name, it in self.parts.items():
            it.set_state(saved[name].encode("utf-8"))

    def restore_at_step(self, step: int, saved: list[bytes]) -> None:
        """Place every pipeline after ``step`` steps of a checkpoint written by another
        number of processes (``saved``: each old process's ``get_state``)."""
        try:
            states = [json.loads(bytes(blob).decode("utf-8")) for blob in saved]
        except ValueError as err:
            raise CheckpointError(f"data iterator state is not JSON: {err}") from err
        for name, it in self.parts.items():
            if not hasattr(it, "restore_at_step") or any(name not in s for s in states):
                raise CheckpointError(f"the {name} iterator cannot resume on another number of processes")
            it.restore_at_step(step, [s[name].encode("utf-8") for s in states])

    def start_prefetch(self) -> None:
        for it in self.parts.values():
            if hasattr(it, "start_prefetch"):
                it.start_prefetch()

    def pop_stats(self) -> dict[str, float]:
        """``data/<pipeline>_<stat>`` of every pipeline that keeps statistics."""
        return {
            f"data/{name}_{key}": value
            for name, it in self.parts.items()
            if hasattr(it, "pop_stats")
            for key, value in it.pop_stats().items()
        }

    def close(self) -> None:
        for it in self.parts.values():
            if hasattr(it, "close"):
                it.close()


def uses_global(config) -> bool:
    return config.loss.w_clip > 0 and config.data.global_batch > 0


def uses_sed(config) -> bool:
    return config.loss.w_sed > 0 or config.loss.w_prior > 0


def tokenizer_path(config) -> str:
    path = config.model.tokenizer or config.model.text_weights
    if not path:
        raise ConfigError("set model.tokenizer (or model.text_weights) to the tokenizer files' directory")
    return path


def pipeline_batches(config, mesh) -> TrainBatches:
    """The real pipelines for ``config.data`` (each host reads its own shard)."""
    tokenizer = load_tokenizer(tokenizer_path(config), config.model.context_length)
    sed = glob = None
    if uses_sed(config):
        groups = sed_groups(config, mesh)
        if groups % jax.process_count():
            raise ConfigError(f"{groups} SED groups do not split over {jax.process_count()} processes")
        sed = pipeline.sed_iterator(config, tokenizer, groups=groups // jax.process_count())
    if uses_global(config):
        glob = pipeline.global_iterator(config, tokenizer)
    return TrainBatches(sed, glob)
