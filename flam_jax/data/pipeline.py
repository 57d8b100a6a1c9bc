"""Grain input pipelines for the SED (simulated mixtures) and global (audio–caption) batches.

    MapDataset.range(records) -> shuffle(seed) -> slice(process_index::process_count)
      -> repeat -> random_map(simulate | annotated crop | pair crop) -> batch(batch_fn)
      -> to_iter_dataset
      -> mp_prefetch(workers)

Element i of the host's stream is a pure function of (seed, i), so the stream is
reproducible and a restored iterator continues exactly where the saved one stopped.
``DataIterator`` wraps the Grain iterator: it yields batch dicts, counts records that
failed to decode (reported by the workers inside each element, so the count works with
multiprocessing), logs each once with its source and raises ``DataError`` past the budget.

Trainer use::

    it = pipeline.sed_iterator(config, tokenizer, groups=jax.local_device_count())
    git = pipeline.global_iterator(config, tokenizer)
    # Orbax: ocp.args.Composite(..., sed_data=grain.checkpoint.CheckpointSave(it))
    #        ocp.args.Composite(..., sed_data=grain.checkpoint.CheckpointRestore(it))
    # or by hand: blob = it.get_state(); it.set_state(blob)   (bytes, JSON inside)
"""

import dataclasses
import json
import logging
from collections.abc import Sequence

import grain
import numpy as np

from flam_jax.audio import io as audio_io
from flam_jax.data import batches
from flam_jax.data import simulate as sim
from flam_jax.errors import AudioDecodeError, ConfigError, DataError

log = logging.getLogger(__name__)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def record_tags(record) -> list[str]:
    return [_text(t) for t in record.get("tags", ())]


def record_captions(record) -> list[str]:
    """Captions of a builder record: ``captions`` (clips, pairs) or ``caption`` (classification)."""
    if "captions" in record and len(record["captions"]):
        return [_text(c) for c in record["captions"]]
    if "caption" in record:
        return [_text(record["caption"])]
    return []


class RecordPool(sim.ClipPool):
    """A ``ClipPool`` over builder records (FLAC bytes), e.g. a TFDS ``as_data_source``.

    Captions and tags of every record are read once here (one pass over the source); audio
    is decoded on demand and cached. Records that fail to decode are remembered.
    """

    def __init__(self, source: Sequence, cache_size: int = 256):
        captions, tags, names = [], [], []
        for i in range(len(source)):
            record = source[i]
            captions.append(record_captions(record))
            tags.append(record_tags(record))
            names.append(_text(record.get("id", i)))
        super().__init__(captions, tags, names, cache_size)
        self._source = source
        self._failed: dict[int, str] = {}

    def _load(self, index: int) -> np.ndarray:
        if index in self._failed:
            raise AudioDecodeError(self._failed[index])
        try:
            return audio_io.decode_audio(self._source[index]["audio"], source=self.name(index))
        except AudioDecodeError as err:
            self._failed[index] = str(err)
            raise


@dataclasses.dataclass
class _Simulate(grain.transforms.RandomMap):
    pool: sim.ClipPool
    cfg: sim.SimulatorConfig

    def random_map(self, index, rng: np.random.Generator) -> sim.Mixture:
        return sim.simulate(self.pool, rng, self.cfg, primary=int(index))


@dataclasses.dataclass
class _Pair(grain.transforms.RandomMap):
    pool: sim.ClipPool
    num_samples: int
    retries: int = 3

    def random_map(self, index, rng: np.random.Generator) -> batches.Pair:
        errors = []
        index = int(index)
        for _ in range(self.retries + 1):
            try:
                wave, _ = self.pool.audio(index)
            except AudioDecodeError:
                errors.append(self.pool.name(index))
                index = int(rng.integers(len(self.pool)))
                continue
            captions = self.pool.captions(index)
            caption = captions[int(rng.integers(len(captions)))] if captions else ""
            audio = batches.crop_or_loop(wave, rng, self.num_samples)
            return batches.Pair(audio, caption, self.pool.name(index), errors)
        raise DataError(f"global batch: {self.retries + 1} records in a row failed to decode: {errors}")


@dataclasses.dataclass
class _Annotated(grain.transforms.RandomMap):
    """A strongly labelled record (``strong`` builder) as a SED element, no simulation."""

    source: Sequence
    cfg: sim.SimulatorConfig
    retries: int = 3

    def random_map(self, index, rng: np.random.Generator) -> sim.Mixture:
        errors = []
        index = int(index)
        for _ in range(self.retries + 1):
            record = self.source[index]
            name = _text(record.get("id", index))
            try:
                wave = audio_io.decode_audio(record["audio"], source=name)
            except AudioDecodeError:
                errors.append(name)
                index = int(rng.integers(len(self.source)))
                continue
            ev = record["events"]
            events = [
                (float(a), float(b), _text(c))
                for a, b, c in zip(ev["onset"], ev["offset"], ev["caption"], strict=True)
            ]
            mixture = sim.annotated_mixture(wave, events, rng, self.cfg, name)
            mixture.decode_errors = errors
            return mixture
        raise DataError(f"SED batch: {self.retries + 1} records in a row failed to decode: {errors}")


@dataclasses.dataclass
class _SedBatch:
    tokenizer: batches.TextTokenizer
    spec: batches.SedBatchSpec

    def __call__(self, mixtures):
        errors = [e for m in mixtures for e in m.decode_errors]
        return batches.sed_batch(mixtures, self.tokenizer, self.spec), errors


@dataclasses.dataclass
class _GlobalBatch:
    tokenizer: batches.TextTokenizer

    def __call__(self, pairs):
        errors = [e for p in pairs for e in p.decode_errors]
        return batches.global_batch(pairs, self.tokenizer), errors


def _indices(count, seed, process_index, process_count, num_epochs):
    if count == 0:
        raise DataError("data pipeline: the source holds no records")
    if not 0 <= process_index < process_count:
        raise DataError(f"data pipeline: process {process_index} of {process_count}")
    ds = grain.MapDataset.range(count).shuffle(seed=seed)
    ds = ds.slice(slice(process_index, None, process_count))
    if len(ds) == 0:
        raise DataError(f"data pipeline: {count} records cannot feed {process_count} processes")
    return ds.repeat(num_epochs)


def _finish(ds: grain.MapDataset, workers: int, buffer: int) -> grain.IterDataset:
    # Grain's default read-ahead is 500 elements on 16 threads; an element here is a whole
    # batch of 10 s clips (hundreds of MB), so bound it by data.prefetch.
    depth = max(1, buffer)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=depth, prefetch_buffer_size=depth))
    if workers > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app
            flags.FLAGS.mark_as_parsed()
        options = grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=buffer)
        it = it.mp_prefetch(options)
    return it


def _sed_stream(
    size, make_element, tokenizer, spec, *, seed, process_index, process_count, num_epochs, workers, buffer
) -> grain.IterDataset:
    ds = _indices(size, seed, process_index, process_count, num_epochs)
    ds = ds.random_map(make_element, seed=seed)
    ds = ds.batch(spec.clips, drop_remainder=True, batch_fn=_SedBatch(tokenizer, spec))
    return _finish(ds, workers, buffer)


def sed_dataset(
    pool: sim.ClipPool,
    tokenizer: batches.TextTokenizer,
    spec: batches.SedBatchSpec,
    cfg: sim.SimulatorConfig,
    *,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
    workers: int = 0,
    buffer: int = 2,
) -> grain.IterDataset:
    """Host-sharded stream of (SED batch, decode errors); ``num_epochs=None`` repeats forever."""
    return _sed_stream(
        len(pool),
        _Simulate(pool, cfg),
        tokenizer,
        spec,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        num_epochs=num_epochs,
        workers=workers,
        buffer=buffer,
    )


def global_dataset(
    pool: sim.ClipPool,
    tokenizer: batches.TextTokenizer,
    batch_size: int,
    *,
    seed: int,
    num_samples: int = 480_000,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
    workers: int = 0,
    buffer: int = 2,
) -> grain.IterDataset:
    """Host-sharded stream of (global batch, decode errors)."""
    ds = _indices(len(pool), seed, process_index, process_count, num_epochs)
    ds = ds.random_map(_Pair(pool, num_samples), seed=seed + 1)
    ds = ds.batch(batch_size, drop_remainder=True, batch_fn=_GlobalBatch(tokenizer))
    return _finish(ds, workers, buffer)


class DataIterator:
    """Batches from a pipeline, with the decode-error budget and checkpointable state.

    ``get_state``/``set_state`` exchange bytes (JSON), the protocol of
    ``grain.checkpoint.CheckpointSave``/``CheckpointRestore`` for Orbax.
    """

    def __init__(self, dataset: grain.IterDataset, max_decode_errors: int, name: str = "data"):
        self._iterator = iter(dataset)
        self._budget = max_decode_errors
        self._name = name
        self.failed_sources: list[str] = []

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch, errors = next(self._iterator)
        for source in errors:
            if source not in self.failed_sources:
                self.failed_sources.append(source)
                log.warning("%s pipeline: skipped undecodable record %s", self._name, source)
        if len(self.failed_sources) > self._budget:
            raise DataError(
                f"{self._name} pipeline: {len(self.failed_sources)} records failed to decode, "
                f"more than data.max_decode_errors={self._budget} (last: {self.failed_sources[-1]})"
            )
        return batch

    @property
    def decode_errors(self) -> int:
        return len(self.failed_sources)

    def get_state(self) -> bytes:
        state = {"grain": self._iterator.get_state(), "failed_sources": self.failed_sources}
        return json.dumps(state).encode("utf-8")

    def set_state(self, state: bytes) -> None:
        try:
            decoded = json.loads(bytes(state).decode("utf-8"))
            grain_state, failed = decoded["grain"], list(decoded["failed_sources"])
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{self._name} pipeline: cannot read iterator state: {err}") from err
        self._iterator.set_state(grain_state)
        self.failed_sources = failed

    def start_prefetch(self) -> None:
        """Called by grain's checkpoint handler after a restore; prefetch starts on demand."""


# --- construction from a config --------------------------------------------------------


def open_pool(data_dir: str, dataset: str, split: str, cache_size: int = 256) -> RecordPool:
    """``dataset`` is ``kind`` or ``kind/config`` (e.g. ``clips``, ``pairs/clotho``)."""
    from flam_jax.data import builders

    kind, _, config = dataset.partition("/")
    if not data_dir:
        raise ConfigError("data.dir is empty: set it to the TFDS data_dir holding the built datasets")
    return RecordPool(builders.load(kind, data_dir, split, config or None), cache_size)


def simulator_config(config) -> sim.SimulatorConfig:
    return sim.SimulatorConfig(
        max_events=config.data.max_events, min_overlap=config.data.frame_label_min_overlap
    )


def _processes(process_index, process_count):
    if process_index is None or process_count is None:
        import jax

        return jax.process_index(), jax.process_count()
    return process_index, process_count


def sed_spec(config, groups: int, process_count: int) -> batches.SedBatchSpec:
    """Per-host SED batch layout: data.sed_clips mixtures split over all device groups."""
    total = groups * process_count
    if groups < 1 or config.data.sed_clips % total:
        raise ConfigError(f"data.sed_clips={config.data.sed_clips} must split evenly over {total} devices")
    return batches.SedBatchSpec(
        groups=groups,
        clips_per_group=config.data.sed_clips // total,
        texts_per_clip=config.data.texts_per_clip,
    )


def sed_iterator(
    config, tokenizer, *, groups: int, process_index=None, process_count=None, pool=None, num_epochs=None
) -> DataIterator:
    """The SED iterator for a training config (``pool`` defaults to data.sed_dataset).

    ``data.sed_dataset`` = ``strong`` feeds annotated recordings instead of simulations.
    """
    index, count = _processes(process_index, process_count)
    spec = sed_spec(config, groups, count)
    if pool is None and config.data.sed_dataset.partition("/")[0] == "strong":
        from flam_jax.data import builders

        if not config.data.dir:
            raise ConfigError("data.dir is empty: set it to the TFDS data_dir holding the built datasets")
        source = builders.load("strong", config.data.dir, config.data.split)
        size, element = len(source), _Annotated(source, simulator_config(config))
    else:
        if pool is None:
            pool = open_pool(
                config.data.dir, config.data.sed_dataset, config.data.split, config.data.pool_cache
            )
        size, element = len(pool), _Simulate(pool, simulator_config(config))
    dataset = _sed_stream(
        size,
        element,
        tokenizer,
        spec,
        seed=config.seed,
        process_index=index,
        process_count=count,
        num_epochs=num_epochs,
        workers=config.data.workers,
        buffer=config.data.prefetch,
    )
    return DataIterator(dataset, config.data.max_decode_errors, "SED")


def global_iterator(
    config, tokenizer, *, process_index=None, process_count=None, pool=None, num_epochs=None
) -> DataIterator:
    """The global-batch iterator for a training config (``pool`` defaults to data.global_dataset)."""
    index, count = _processes(process_index, process_count)
    if config.data.global_batch % count:
        raise ConfigError(f"data.global_batch={config.data.global_batch} must split over {count} processes")
    if pool is None:
        pool = open_pool(
            config.data.dir, config.data.global_dataset, config.data.split, config.data.pool_cache
        )
    dataset = global_dataset(
        pool,
        tokenizer,
        config.data.global_batch // count,
        seed=config.seed,
        process_index=index,
        process_count=count,
        num_epochs=num_epochs,
        workers=config.data.workers,
        buffer=config.data.prefetch,
    )
    return DataIterator(dataset, config.data.max_decode_errors, "global")
