"""Clip pools: random access to the clips of one split, for the simulator, the global
pipeline and the validation hook.

A pool takes every clip's metadata (captions, length, tags, A-weighted window levels)
from the split's index (``data.index``), so opening one reads no audio; audio is decoded
on demand, only the span asked for (``audio.io.decode_span``). Whole clips that were
decoded anyway are kept in an LRU cache bounded in megabytes (``data.pool_cache_mb``,
per process: every Grain worker holds its own).

- ``RecordPool(source, index)``: builder records (FLAC bytes), e.g. a TFDS data source.
- ``InMemoryPool(clips)``: decoded clips held in memory (tests, tools).
- ``open_pool(data_dir, dataset, split)``: the RecordPool of a built split, opened once
  per process and shared by everything that asks for the same split.
"""

import collections
import dataclasses
import logging
import os
import resource
import threading
from collections.abc import Sequence

import numpy as np

from flam_jax.audio import io as audio_io
from flam_jax.data import builders
from flam_jax.data.index import (
    DEFAULT_BACKGROUND_TAGS,
    LEVEL_WINDOW,
    ClipIndex,
    index_records,
    index_waves,
    parse_tags,
)
from flam_jax.errors import AudioDecodeError, ConfigError, DataError

DEFAULT_CACHE_MB = 256.0
SPARE_FILES = 256  # besides the shards: the index's memory maps, sockets, logs, Python

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Clip:
    """One source clip held in memory (48 kHz mono float32)."""

    audio: np.ndarray
    captions: Sequence[str]
    tags: Sequence[str] = ()
    name: str = ""


def is_background(tags: Sequence[str], background_tags: Sequence[str] = DEFAULT_BACKGROUND_TAGS) -> bool:
    marks = parse_tags(background_tags)
    return any(t.strip().lower() in marks for t in tags)


class ClipPool:
    """Metadata from a ``ClipIndex``; audio from ``_decode(index, start, length)``."""

    def __init__(
        self,
        index: ClipIndex,
        *,
        background_tags: str | Sequence[str] = DEFAULT_BACKGROUND_TAGS,
        cache_mb: float = DEFAULT_CACHE_MB,
    ):
        self.index = index
        self.background_tags = parse_tags(background_tags)
        flags = index.background_flags(self.background_tags)
        readable = np.asarray(index.readable, dtype=bool)
        self._background = flags
        self.background_indices = np.flatnonzero(flags & readable)
        self.event_indices = np.flatnonzero(~flags & readable)
        self.readable_indices = np.flatnonzero(readable)
        self._cache_limit = int(cache_mb * 2**20)
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._cache_bytes = 0
        self._lock: threading.Lock | None = None

    def __len__(self) -> int:
        return len(self.index)

    def name(self, i: int) -> str:
        return self.index.id(i)

    def captions(self, i: int) -> list[str]:
        return self.index.clip_captions(i)

    def num_samples(self, i: int) -> int:
        return int(self.index.num_samples[i])

    def is_background(self, i: int) -> bool:
        return bool(self._background[i])

    def readable(self, i: int) -> bool:
        return bool(self.index.readable[i])

    @property
    def level_window(self) -> int:
        return self.index.level_window

    def powers(self, i: int, window: int | None = None) -> np.ndarray:
        """Mean A-weighted power (float64, full scale = 1) of every ``window`` samples of clip
        ``i``, from the index's levels (``window`` a multiple of ``level_window``)."""
        if window is not None and window % self.level_window:
            raise DataError(
                f"window {window} is not a multiple of the index's level window {self.level_window}"
            )
        levels = self.index.clip_levels(i).astype(np.float64)
        power = np.where(levels <= audio_io.SILENCE_DB, 0.0, 10.0 ** (levels / 10.0))  # the floor is silence
        factor = 1 if window is None else window // self.level_window
        if factor == 1:
            return power
        padded = np.zeros(-(-len(power) // factor) * factor)
        padded[: len(power)] = power
        return padded.reshape(-1, factor).mean(axis=1)

    # --- audio
    def read(self, i: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """Samples ``[start, start + length)`` of clip ``i`` (float32, 48 kHz, an array the
        caller owns and may change); AudioDecodeError when the clip is corrupt. With a cache,
        a span of at least half the clip decodes (and keeps) all of it; otherwise only the
        span is decoded."""
        total = self.num_samples(i)
        if not self.readable(i):
            raise AudioDecodeError(f"audio record {self.name(i)} did not decode when its index was written")
        if total == 0:
            raise AudioDecodeError(f"audio record {self.name(i)} holds no samples")
        stop = total if length is None else min(start + length, total)
        whole = self._cached(i)
        if whole is not None:
            wave = whole[start:stop].copy()  # the cached clip stays untouched
        elif 2 * (stop - start) >= total and 4 * total <= self._cache_limit:
            whole = self._decode(i, 0, None)
            wave = whole[start:stop].copy() if self._store(i, whole) else whole[start:stop]
        else:
            wave = self._decode(i, start, stop - start)
        if len(wave) == 0:
            raise AudioDecodeError(f"audio record {self.name(i)} holds no samples in [{start}, {stop})")
        return wave

    def _decode(self, i: int, start: int, length: int | None) -> np.ndarray:
        raise NotImplementedError

    def _cached(self, i: int) -> np.ndarray | None:
        with self._guard():
            wave = self._cache.get(i)
            if wave is not None:
                self._cache.move_to_end(i)
            return wave

    def _store(self, i: int, wave: np.ndarray) -> bool:
        """Keep ``wave`` in the cache if it fits; True when it was kept."""
        if wave.nbytes > self._cache_limit:
            return False
        with self._guard():
            if i in self._cache:
                return False
            while self._cache and self._cache_bytes + wave.nbytes > self._cache_limit:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= old.nbytes
            self._cache[i] = wave
            self._cache_bytes += wave.nbytes
        return True

    @property
    def cache_bytes(self) -> int:
        return self._cache_bytes

    def _guard(self) -> threading.Lock:
        # Grain maps elements on several threads; the lock is rebuilt after pickling.
        if self._lock is None:
            self._lock = threading.Lock()
        return self._lock

    def __getstate__(self):
        # Workers start with an empty cache; the index pickles as its path when it has one.
        return {**self.__dict__, "_lock": None, "_cache": collections.OrderedDict(), "_cache_bytes": 0}


class RecordPool(ClipPool):
    """A pool over builder records (``audio`` holds encoded bytes) described by ``index``."""

    def __init__(self, source: Sequence, index: ClipIndex, **kwargs):
        if len(index) != len(source):
            raise DataError(f"index lists {len(index)} clips, the records hold {len(source)}")
        super().__init__(index, **kwargs)
        self._source = source

    @classmethod
    def from_records(cls, records: Sequence, *, window: int = LEVEL_WINDOW, **kwargs) -> "RecordPool":
        """Index ``records`` in memory first (decodes each once: for small sets only)."""
        return cls(records, index_records(records, window=window), **kwargs)

    def record(self, i: int):
        return self._source[i]

    def _decode(self, i: int, start: int, length: int | None) -> np.ndarray:
        return audio_io.decode_span(self._source[i]["audio"], start, length, source=self.name(i))


class InMemoryPool(ClipPool):
    def __init__(self, clips: Sequence[Clip], *, window: int = LEVEL_WINDOW, **kwargs):
        kwargs.setdefault("cache_mb", 0)  # the clips are in memory already
        super().__init__(index_waves(clips, window=window), **kwargs)
        self._clips = list(clips)

    def _decode(self, i: int, start: int, length: int | None) -> np.ndarray:
        wave = np.asarray(self._clips[i].audio, dtype=np.float32)
        return wave[start : None if length is None else start + length].copy()


_OPEN: dict[tuple, RecordPool] = {}


def open_pool(
    data_dir: str,
    dataset: str,
    split: str,
    *,
    cache_mb: float = DEFAULT_CACHE_MB,
    background_tags: str | Sequence[str] = DEFAULT_BACKGROUND_TAGS,
) -> RecordPool:
    """The pool of a built split (``dataset`` = ``kind`` or ``kind/config``), opened from
    its index (a one-line DataError names the command when it is missing or stale). The
    same arguments return the same pool within a process."""
    if not data_dir:
        raise ConfigError("data.dir is empty: set it to the TFDS data_dir holding the built datasets")
    key = (os.path.abspath(os.fspath(data_dir)), dataset, split, float(cache_mb), parse_tags(background_tags))
    if key not in _OPEN:
        kind, _, config = dataset.partition("/")
        source = builders.load(kind, data_dir, split, config or None)
        index = builders.open_index(dataset, data_dir, split, source)
        _OPEN[key] = RecordPool(source, index, cache_mb=cache_mb, background_tags=background_tags)
        allow_open_files(builders.num_shards(dataset, data_dir, split) + SPARE_FILES)
    return _OPEN[key]


def allow_open_files(needed: int) -> None:
    """Raise this process's soft open-file limit to ``needed`` (children inherit it): every
    Grain worker that samples the whole split keeps one reader open per ArrayRecord shard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    limit = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    if limit < needed:
        log.warning(
            "open-file limit %d is below the %d this split's shards may need per worker; raise it "
            "(ulimit -n %d) before starting",
            limit,
            needed,
            needed,
        )
