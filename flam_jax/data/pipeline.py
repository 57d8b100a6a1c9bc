"""Grain input pipelines for the SED (simulated mixtures) and global (audio–caption) batches.

    MapDataset.range(host elements) -> map(element i: its clip, its random stream, simulate |
      annotated crop | pair crop) -> batch(batch_fn) -> [position:] -> to_iter_dataset
      -> mp_prefetch(workers)

Element i of a host's stream is a pure function of (seed, process layout, i): which clip it
starts from and the random numbers it draws come from ``data.sampling.HostSampler``, so
no two hosts draw the same mixture, each epoch's primaries are every clip once, and a
restored iterator continues exactly where the saved one stopped. Because the stream is a
``MapDataset`` end to end, its checkpoint is just the number of batches consumed: the same
position restores with any number of Grain workers (each worker computes every W-th batch
and Grain reads them back in order, so W workers give the batches of one).

``DataIterator`` wraps the Grain iterator: it yields batch dicts, counts records that
failed to decode (reported by the workers inside each batch, so the count works with
multiprocessing), logs each once with its source and raises ``DataError`` past the
budget, and keeps the fraction of mixtures that got a synthetic background.

Trainer use::

    it = pipeline.sed_iterator(config, tokenizer, groups=sed_groups(config, mesh) // jax.process_count())
    git = pipeline.global_iterator(config, tokenizer)
    # train.data.TrainBatches zips both and is the checkpoint's one "data" item
    # (grain.checkpoint.CheckpointSave / CheckpointRestore); by hand:
    # blob = it.get_state(); it.set_state(blob)   (bytes, JSON inside)
"""

import dataclasses
import json
import logging
import signal
import sys
from collections.abc import Callable

import grain
import jax
import numpy as np
from absl import flags

from flam_jax.data import augment, batches, mixing, pools
from flam_jax.data import simulate as sim
from flam_jax.data.index import as_text
from flam_jax.data.sampling import GLOBAL_STREAM, SED_STREAM, EventCandidates, HostSampler
from flam_jax.errors import AudioDecodeError, ConfigError, DataError
from flam_jax.timeline import WINDOW_SAMPLES

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Simulate:
    pool: pools.ClipPool
    cfg: sim.SimulatorConfig
    sampler: HostSampler
    candidates: EventCandidates
    band_limit: float = 0.0  # data.band_limit (training only)

    def __call__(self, i) -> sim.Mixture:
        element = self.sampler.element(i)
        events = self.candidates(element.epoch)
        rng = self.sampler.rng(element)
        mixture = sim.simulate(self.pool, rng, self.cfg, element.primary, events=events)
        mixture.audio = augment.band_limit(mixture.audio, self.band_limit, rng)
        return mixture


@dataclasses.dataclass
class _Pair:
    pool: pools.ClipPool
    num_samples: int
    sampler: HostSampler
    candidates: EventCandidates
    retries: int = 3
    band_limit: float = 0.0  # data.band_limit (training only)

    def __call__(self, i) -> batches.Pair:
        element = self.sampler.element(i)
        rng = self.sampler.rng(element)
        errors, index = [], element.primary
        for _ in range(self.retries + 1):
            try:
                audio = self._crop(index, rng)
            except AudioDecodeError:
                errors.append(self.pool.name(index))
                others = self.candidates(element.epoch)
                if len(others) == 0:
                    break
                index = int(others[rng.integers(len(others))])
                continue
            captions = self.pool.captions(index)
            caption = captions[int(rng.integers(len(captions)))] if captions else ""
            audio = augment.band_limit(audio, self.band_limit, rng)
            return batches.Pair(audio, caption, self.pool.name(index), errors)
        raise DataError(f"global batch: {len(errors)} records in a row failed to decode: {errors}")

    def _crop(self, index, rng) -> np.ndarray:
        """A random ``num_samples`` crop, decoding only it (shorter clips loop)."""
        total, n = self.pool.num_samples(index), self.num_samples
        if total >= n:
            start = int(rng.integers(0, total - n + 1))
            return np.ascontiguousarray(self.pool.read(index, start, n), dtype=np.float32)
        return batches.crop_or_loop(self.pool.read(index), rng, n)


@dataclasses.dataclass
class _Annotated:
    """A strongly labelled record (``strong`` builder) as a SED element, no simulation."""

    pool: pools.RecordPool
    cfg: sim.SimulatorConfig
    sampler: HostSampler
    retries: int = 3

    def __call__(self, i) -> sim.Mixture:
        element = self.sampler.element(i)
        rng = self.sampler.rng(element)
        errors, index = [], element.primary
        n = self.cfg.num_samples
        for _ in range(self.retries + 1):
            total = self.pool.num_samples(index)
            start = int(rng.integers(0, total - n + 1)) if total > n else 0
            try:
                audio = self.pool.read(index, start, n)
            except AudioDecodeError:
                errors.append(self.pool.name(index))
                index = int(rng.integers(len(self.pool)))
                continue
            ev = self.pool.record(index)["events"]
            events = [
                (float(a), float(b), as_text(c))
                for a, b, c in zip(ev["onset"], ev["offset"], ev["caption"], strict=True)
            ]
            mixture = sim.annotated_mixture(audio, start, events, self.cfg, self.pool.name(index))
            mixture.decode_errors = errors
            return mixture
        raise DataError(f"SED batch: {len(errors)} records in a row failed to decode: {errors}")


@dataclasses.dataclass
class _SedBatch:
    tokenizer: batches.TextTokenizer
    spec: batches.SedBatchSpec

    def __call__(self, mixtures):
        info = {
            "errors": [e for m in mixtures for e in m.decode_errors],
            "mixtures": len(mixtures),
            "synthetic_backgrounds": sum(m.background == "noise" for m in mixtures),
        }
        return batches.sed_batch(mixtures, self.tokenizer, self.spec), info


@dataclasses.dataclass
class _GlobalBatch:
    tokenizer: batches.TextTokenizer

    def __call__(self, pairs):
        info = {"errors": [e for p in pairs for e in p.decode_errors]}
        return batches.global_batch(pairs, self.tokenizer), info


@dataclasses.dataclass
class Stream:
    """One host's batches, as a ``MapDataset`` that can begin at any element of its stream."""

    sampler: HostSampler
    element: Callable  # element index -> Mixture | Pair
    batch_size: int  # elements per batch on this host
    batch_fn: Callable
    num_epochs: int | None = None  # None: forever

    def elements(self, origin: int = 0) -> grain.MapDataset:
        total = sys.maxsize if self.num_epochs is None else self.sampler.epoch_size * self.num_epochs
        return grain.MapDataset.range(origin, max(origin, total)).map(self.element)

    def batches(self, origin: int = 0) -> grain.MapDataset:
        return self.elements(origin).batch(self.batch_size, drop_remainder=True, batch_fn=self.batch_fn)

    def origin_after(self, global_elements: int) -> int:
        """Where this host's stream resumes once the whole job (any earlier layout) has
        consumed ``global_elements`` elements: past every position the epoch has used."""
        return self.sampler.start_after(global_elements)


def _finish(ds: grain.MapDataset, workers: int, buffer: int) -> grain.IterDataset:
    # Grain's default read-ahead is 500 elements on 16 threads; an element here is a whole
    # batch of 10 s clips (hundreds of MB), so bound it by data.prefetch.
    depth = max(1, buffer)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=depth, prefetch_buffer_size=depth))
    if workers > 0:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app
            flags.FLAGS.mark_as_parsed()
        options = grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=buffer)
        it = it.mp_prefetch(options, worker_init_fn=_ignore_interrupts)
    return it


def _ignore_interrupts(worker_index: int, worker_count: int) -> None:
    """A terminal's Ctrl-C reaches the whole process group: only the trainer acts on it
    (save, then stop its workers); a worker that died of it first would lose the batch the
    trainer waits for, and print a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def sed_dataset(
    pool: pools.ClipPool,
    tokenizer: batches.TextTokenizer,
    spec: batches.SedBatchSpec,
    cfg: sim.SimulatorConfig,
    *,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
    sampling: str = "host",
    band_limit: float = 0.0,
) -> Stream:
    """This host's batches of simulated mixtures, as (SED batch, info) (element i:
    ``HostSampler.element(i)``; ``num_epochs=None`` repeats forever; ``band_limit``: the
    probability of ``augment.band_limit`` for a mixture)."""
    sampler = HostSampler(len(pool), seed, SED_STREAM, process_index, process_count, sampling)
    element = _Simulate(pool, cfg, sampler, EventCandidates(sampler, pool.event_indices), band_limit)
    return Stream(sampler, element, spec.clips, _SedBatch(tokenizer, spec), num_epochs)


def sed_elements(pool: pools.ClipPool, cfg: sim.SimulatorConfig, **kwargs) -> grain.MapDataset:
    """This host's simulated ``Mixture``s, unbatched (keywords as ``sed_dataset``)."""
    return sed_dataset(pool, None, batches.SedBatchSpec(1, 1), cfg, **kwargs).elements()


def annotated_dataset(
    pool: pools.RecordPool,
    tokenizer: batches.TextTokenizer,
    spec: batches.SedBatchSpec,
    cfg: sim.SimulatorConfig,
    *,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
) -> Stream:
    """This host's batches of strongly labelled recordings (``strong`` builder)."""
    sampler = HostSampler(len(pool), seed, SED_STREAM, process_index, process_count)
    return Stream(sampler, _Annotated(pool, cfg, sampler), spec.clips, _SedBatch(tokenizer, spec), num_epochs)


def global_dataset(
    pool: pools.ClipPool,
    tokenizer: batches.TextTokenizer,
    batch_size: int,
    *,
    seed: int,
    num_samples: int = WINDOW_SAMPLES,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
    sampling: str = "host",
    band_limit: float = 0.0,
) -> Stream:
    """This host's batches of audio–caption pairs, as (global batch, info)."""
    sampler = HostSampler(len(pool), seed, GLOBAL_STREAM, process_index, process_count, sampling)
    candidates = EventCandidates(sampler, pool.readable_indices)  # replacements
    element = _Pair(pool, num_samples, sampler, candidates, band_limit=band_limit)
    return Stream(sampler, element, batch_size, _GlobalBatch(tokenizer), num_epochs)


class DataIterator:
    """Batches of a ``Stream``, with the decode-error budget and checkpointable state.

    ``get_state``/``set_state`` exchange bytes (JSON: the element the stream began at, the
    batches consumed since, the sources that failed so far, and the process layout), the
    protocol of ``grain.checkpoint.CheckpointSave``/``CheckpointRestore`` for Orbax.
    ``restore_at_step`` places the iterator after a checkpoint written by another number
    of processes. Worker processes start on the first ``next`` and stop on ``close`` (or
    when the iterator is collected).
    """

    def __init__(
        self,
        stream: Stream,
        max_decode_errors: int,
        name: str = "data",
        *,
        workers: int = 0,
        buffer: int = 2,
        layout: tuple[int, int] = (0, 1),
    ):
        self._stream = stream
        self._budget = max_decode_errors
        self._name = name
        self._workers = workers
        self._buffer = buffer
        self._layout = layout
        self._iterator = None
        self.origin = 0  # the element of this host's stream that batch 0 begins with
        self.position = 0  # batches consumed since
        self.failed_sources: list[str] = []
        self._mixtures = self._synthetic = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._iterator is None:
            rest = self._stream.batches(self.origin)
            rest = rest[self.position :] if self.position else rest
            self._iterator = iter(_finish(rest, self._workers, self._buffer))
        batch, info = next(self._iterator)
        self.position += 1
        self._mixtures += info.get("mixtures", 0)
        self._synthetic += info.get("synthetic_backgrounds", 0)
        for source in info["errors"]:
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

    def pop_stats(self) -> dict[str, float]:
        """Data metrics since the last call: decode errors so far and, for simulated
        mixtures, the fraction that got a synthetic (noise) background."""
        stats = {"decode_errors": float(self.decode_errors)}
        if self._mixtures:
            stats["synthetic_background_fraction"] = self._synthetic / self._mixtures
        self._mixtures = self._synthetic = 0
        return stats

    def get_state(self) -> bytes:
        state = {
            "origin": self.origin,
            "position": self.position,
            "failed_sources": self.failed_sources,
            "process_index": self._layout[0],
            "process_count": self._layout[1],
        }
        return json.dumps(state).encode("utf-8")

    def set_state(self, state: bytes) -> None:
        try:
            decoded = json.loads(bytes(state).decode("utf-8"))
            if "grain" in decoded and "position" not in decoded:
                raise DataError(
                    f"{self._name} pipeline: the checkpoint's iterator state was written by a flam_jax "
                    "before per-host sampling (a Grain-internal state); its data order cannot be "
                    "continued: start the run in a new workdir"
                )
            position, failed = int(decoded["position"]), list(decoded["failed_sources"])
            origin = int(decoded.get("origin", 0))
            layout = (int(decoded["process_index"]), int(decoded["process_count"]))
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{self._name} pipeline: cannot read iterator state: {err!r}") from err
        if layout != self._layout:
            raise DataError(
                f"{self._name} pipeline: the iterator state is process {layout[0]} of {layout[1]}, "
                f"this is process {self._layout[0]} of {self._layout[1]}"
            )
        self.close()
        self.origin, self.position, self.failed_sources = origin, position, failed

    def restore_at_step(self, step: int, saved: list[bytes]) -> None:
        """Resume after ``step`` steps of a run whose checkpoint another number of
        processes wrote (``saved``: every process's ``get_state``). Each step consumed one
        batch on every host, i.e. ``step`` times the job's batch of elements, so this host
        continues its stream after every position the job has used; the failed sources of
        all old processes are kept. What changes: which host makes which mixture, so the
        sample order differs from a run that kept its layout."""
        failed: list[str] = []
        for blob in saved:
            try:
                failed += json.loads(bytes(blob).decode("utf-8"))["failed_sources"]
            except (ValueError, KeyError, TypeError) as err:
                raise DataError(
                    f"{self._name} pipeline: cannot read a saved iterator state: {err!r}"
                ) from err
        self.close()
        consumed = step * self._stream.batch_size * self._layout[1]
        self.origin, self.position = self._stream.origin_after(consumed), 0
        self.failed_sources = list(dict.fromkeys(failed))

    def start_prefetch(self) -> None:
        """Called by grain's checkpoint handler after a restore; prefetch starts on demand."""

    def close(self) -> None:
        """Stop the worker processes (a later ``next`` starts them again)."""
        if self._iterator is not None:
            closer = getattr(self._iterator, "close", None)
            if closer is not None:
                closer()
            self._iterator = None


# --- construction from a config --------------------------------------------------------


def simulator_config(config) -> sim.SimulatorConfig:
    return sim.SimulatorConfig(
        max_events=config.data.max_events, min_overlap=config.data.frame_label_min_overlap
    )


def _processes(process_index, process_count):
    if process_index is None or process_count is None:
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


def open_pool(config, dataset: str, split: str, background_tags: str = "", cache_share: int = 1):
    """The pool of ``split`` of ``dataset`` with the config's cache (``cache_share``: split
    between that many pools) and background tags (``background_tags`` overrides them)."""
    return pools.open_pool(
        config.data.dir,
        dataset,
        split,
        cache_mb=config.data.pool_cache_mb / cache_share,
        background_tags=background_tags or config.data.background_tags,
    )


def training_pool(config, stream: str):
    """The pool the ``"sed"`` or ``"global"`` pipeline draws from: ``data.sed_sources`` /
    ``data.global_sources`` weighted (``data.mixing``) when set, else ``data.sed_dataset`` /
    ``data.global_dataset``."""
    key = f"data.{stream}_sources"
    sources = mixing.parse_sources(config.data[f"{stream}_sources"], key)
    if not sources:
        return open_pool(config, config.data[f"{stream}_dataset"], config.data.split)
    strong = [s.dataset for s in sources if s.dataset.partition("/")[0] == "strong"]
    if strong and stream == "sed":  # annotated recordings are not simulated from
        raise ConfigError(f"{key}: {strong[0]} is annotated (strong): use it alone as data.sed_dataset")
    members = [
        (open_pool(config, s.dataset, config.data.split, s.background_tags, len(sources)), s.weight)
        for s in sources
    ]
    return mixing.WeightedPool(members, [s.dataset for s in sources], stream)


def sed_source_name(config) -> str:
    """What the SED pipeline's pool is called in messages."""
    return config.data.sed_sources.strip() or config.data.sed_dataset


def hook_pool(config):
    """The pool of ``train.eval_split`` the validation hook simulates from: of the first of
    ``data.sed_sources`` (with its background tags) when set, else of ``data.sed_dataset``."""
    sources = mixing.parse_sources(config.data.sed_sources, "data.sed_sources")
    if not sources:
        return open_pool(config, config.data.sed_dataset, config.train.eval_split)
    return open_pool(config, sources[0].dataset, config.train.eval_split, sources[0].background_tags)


def _warn_backgrounds(pool: pools.ClipPool, config, dataset: str) -> None:
    tags = ", ".join(sorted(pool.background_tags)) or "none"
    count = len(pool.background_indices)
    if count == 0:
        log.warning(
            "SED pipeline: none of the %d clips of %s/%s carries a background tag (data.background_tags: "
            "%s); every mixture gets a synthetic coloured-noise background",
            len(pool),
            dataset,
            config.data.split,
            tags,
        )
    else:
        log.info("SED pipeline: %d of %d clips are backgrounds (tags: %s)", count, len(pool), tags)


def global_workers(config) -> int:
    return config.data.workers if config.data.global_workers < 0 else config.data.global_workers


def sed_iterator(
    config, tokenizer, *, groups: int, process_index=None, process_count=None, pool=None, num_epochs=None
) -> DataIterator:
    """The SED iterator for a training config (``pool`` defaults to data.sed_dataset).

    ``data.sed_dataset`` = ``strong`` feeds annotated recordings instead of simulations.
    """
    index, count = _processes(process_index, process_count)
    spec = sed_spec(config, groups, count)
    dataset_name = sed_source_name(config)
    if pool is None:
        pool = training_pool(config, "sed")
    kwargs = {"seed": config.seed, "process_index": index, "process_count": count, "num_epochs": num_epochs}
    if not config.data.sed_sources.strip() and dataset_name.partition("/")[0] == "strong":
        dataset = annotated_dataset(pool, tokenizer, spec, simulator_config(config), **kwargs)
    else:
        _warn_backgrounds(pool, config, dataset_name)
        dataset = sed_dataset(
            pool,
            tokenizer,
            spec,
            simulator_config(config),
            sampling=config.data.sampling,
            band_limit=config.data.band_limit,
            **kwargs,
        )
    return DataIterator(
        dataset,
        config.data.max_decode_errors,
        "SED",
        workers=config.data.workers,
        buffer=config.data.prefetch,
        layout=(index, count),
    )


def global_iterator(
    config, tokenizer, *, process_index=None, process_count=None, pool=None, num_epochs=None
) -> DataIterator:
    """The global-batch iterator for a training config (``pool`` defaults to data.global_dataset)."""
    index, count = _processes(process_index, process_count)
    if config.data.global_batch % count:
        raise ConfigError(f"data.global_batch={config.data.global_batch} must split over {count} processes")
    if pool is None:
        pool = training_pool(config, "global")
    dataset = global_dataset(
        pool,
        tokenizer,
        config.data.global_batch // count,
        seed=config.seed,
        process_index=index,
        process_count=count,
        num_epochs=num_epochs,
        sampling=config.data.sampling,
        band_limit=config.data.band_limit,
    )
    return DataIterator(
        dataset,
        config.data.max_decode_errors,
        "global",
        workers=global_workers(config),
        buffer=config.data.prefetch,
        layout=(index, count),
    )
