"""The metadata index of one built split: what a pool needs to know without reading audio.

Per clip: id, captions, tags, source, num_samples, a background flag (under the default
tags), whether the audio decoded when the index was written, and its A-weighted level
in every 12.5 ms window (float16 dB). The levels let the simulator set gains and frame
labels before it decodes anything, and then decode only the clips it places.

On disk (``<dataset version dir>/index/<split>/``)::

    meta.json          format, version, dataset, split, count, the split's size in bytes and
                       shard lengths (staleness), level_window, tag and source vocabularies
    num_samples.npy    int64 [n]          readable.npy    bool [n]     background.npy  bool [n]
    ids.{bytes,offsets}.npy               UTF-8 blob + int64 [n + 1] offsets
    captions.{bytes,offsets,per_clip}.npy the captions' blob, their offsets, clip -> caption range
    tags.{ids,per_clip}.npy               int32 ids into meta's tag vocabulary, clip -> tag range
    sources.npy                           int32 ids into meta's source vocabulary
    levels.npy, levels.offsets.npy        float16 dB per window, clip -> window range
    starts.npy                            float32 [n] seconds into the original recording
                                          where a clip cut from a longer one begins (0 for
                                          a whole file; absent in indexes written before it)

Arrays are opened memory-mapped, so every Grain worker of a host shares one copy in the
page cache and a pool pickles as a path. At 1.1M clips the index is ~0.3 GB plus ~1.7 GB
of levels (benchmarks/README.md, "data_throughput").

Writing one reads and decodes every record once, in chunks that are kept on disk, so an
interrupted ``flam-index`` (``flam_jax.cli.index``) resumes where it stopped;
``builders.build`` writes it at the end of every build.
"""

import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable, Sequence

import numpy as np
from tqdm import tqdm

from flam_jax.audio import io as audio_io
from flam_jax.errors import AudioDecodeError, DataError

FORMAT, VERSION = "flam_jax.index", 1
LEVEL_WINDOW = 600  # samples: 12.5 ms at 48 kHz, the simulator's activity window
DEFAULT_BACKGROUND_TAGS = ("ambiance", "ambience")
CHUNK = 5000  # records per resumable piece
SPOT_CHECKS = 8  # records whose ids are compared with the index when it is opened


def as_text(value) -> str:
    """A record's text field (bytes from TFDS) as str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def record_captions(record) -> list[str]:
    """Captions of a builder record: ``captions`` (clips, pairs), ``caption`` (classification)
    or the distinct event captions (strong)."""
    if "captions" in record and len(record["captions"]):
        return [as_text(c) for c in record["captions"]]
    if "caption" in record:
        return [as_text(record["caption"])]
    if "events" in record:
        return list(dict.fromkeys(as_text(c) for c in record["events"]["caption"]))
    return []


def record_tags(record) -> list[str]:
    return [as_text(t) for t in record.get("tags", ())]


def parse_tags(spec: str | Sequence[str]) -> frozenset[str]:
    """``"ambiance, ambience"`` or a sequence -> the normalised tag set."""
    items = spec.split(",") if isinstance(spec, str) else spec
    return frozenset(t.strip().lower() for t in items if t.strip())


def window_levels(wave: np.ndarray, window: int = LEVEL_WINDOW) -> np.ndarray:
    """A-weighted level (dBFS, float16) of every ``window`` samples (the filter runs from
    the clip's start; the last, partial window is zero-padded)."""
    return audio_io.a_weighted_levels_db(wave, window=window).astype(np.float16)


# --------------------------------------------------------------------------- columns


class _Strings:
    """Many strings as one UTF-8 blob and offsets; decoded one at a time on demand."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self.blob, self.offsets = blob, offsets

    @classmethod
    def pack(cls, strings: Sequence[str]) -> "_Strings":
        encoded = [s.encode("utf-8") for s in strings]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8")


def _ranges(counts: Sequence[int]) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


@dataclasses.dataclass
class ClipIndex:
    """The columns of one split's index (numpy arrays, memory-mapped when read from disk)."""

    meta: dict
    num_samples: np.ndarray
    readable: np.ndarray
    background: np.ndarray
    ids: _Strings
    captions: _Strings
    caption_ranges: np.ndarray
    tag_ids: np.ndarray
    tag_ranges: np.ndarray
    sources: np.ndarray
    levels: np.ndarray
    level_ranges: np.ndarray
    starts: np.ndarray | None = None  # None: an index written before the column (all 0)
    path: str | None = None

    def __len__(self) -> int:
        return len(self.num_samples)

    @property
    def level_window(self) -> int:
        return int(self.meta["level_window"])

    def id(self, i: int) -> str:
        return self.ids[i]

    def clip_captions(self, i: int) -> list[str]:
        return [self.captions[k] for k in range(self.caption_ranges[i], self.caption_ranges[i + 1])]

    def clip_tags(self, i: int) -> list[str]:
        vocab = self.meta["tag_vocab"]
        return [vocab[t] for t in self.tag_ids[self.tag_ranges[i] : self.tag_ranges[i + 1]]]

    def source(self, i: int) -> str:
        return self.meta["source_vocab"][self.sources[i]]

    def start_s(self, i: int) -> float:
        """Where clip ``i`` begins in its original recording (build-time cuts), in seconds."""
        return float(self.starts[i]) if self.starts is not None else 0.0

    def clip_levels(self, i: int) -> np.ndarray:
        return self.levels[self.level_ranges[i] : self.level_ranges[i + 1]]

    def background_flags(self, tags: frozenset[str]) -> np.ndarray:
        """bool [n]: clips carrying any of ``tags`` (vectorised over the tag vocabulary)."""
        marks = np.array([t.strip().lower() in tags for t in self.meta["tag_vocab"]], dtype=bool)
        if not marks.any() or len(self.tag_ids) == 0:
            return np.zeros(len(self), dtype=bool)
        owner = np.repeat(np.arange(len(self)), np.diff(self.tag_ranges))
        return np.bincount(owner[marks[self.tag_ids]], minlength=len(self)) > 0

    def __getstate__(self):
        if self.path is None:
            return self.__dict__
        return {"path": self.path}  # workers re-open the files (memory-mapped, shared)

    def __setstate__(self, state):
        if set(state) == {"path"}:
            state = read_index(state["path"]).__dict__
        self.__dict__.update(state)


_ARRAYS = {
    "num_samples": "num_samples",
    "readable": "readable",
    "background": "background",
    "caption_ranges": "captions.per_clip",
    "tag_ids": "tags.ids",
    "tag_ranges": "tags.per_clip",
    "sources": "sources",
    "levels": "levels",
    "level_ranges": "levels.offsets",
}
_STRINGS = {"ids": "ids", "captions": "captions"}


def write_columns(index: ClipIndex, directory: str) -> None:
    """Write ``index`` into ``directory`` atomically (a temporary folder renamed at the end)."""
    tmp = directory.rstrip("/") + ".writing"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for attr, name in _ARRAYS.items():
        np.save(os.path.join(tmp, f"{name}.npy"), getattr(index, attr))
    starts = index.starts if index.starts is not None else np.zeros(len(index), np.float32)
    np.save(os.path.join(tmp, "starts.npy"), starts)
    for attr, name in _STRINGS.items():
        column = getattr(index, attr)
        np.save(os.path.join(tmp, f"{name}.bytes.npy"), column.blob)
        np.save(os.path.join(tmp, f"{name}.offsets.npy"), column.offsets)
    with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(index.meta, f)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)


def read_index(directory: str) -> ClipIndex:
    """Open an index written by ``write_columns`` (arrays memory-mapped)."""
    meta_path = os.path.join(directory, "meta.json")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise DataError(f"{directory} is not a flam_jax index of version {VERSION}")

        def load(name):
            return np.load(os.path.join(directory, f"{name}.npy"), mmap_mode="r")

        arrays = {attr: load(name) for attr, name in _ARRAYS.items()}
        if os.path.isfile(os.path.join(directory, "starts.npy")):
            arrays["starts"] = load("starts")
        strings = {
            attr: _Strings(load(f"{name}.bytes"), load(f"{name}.offsets")) for attr, name in _STRINGS.items()
        }
    except FileNotFoundError as err:
        missing = os.path.basename(err.filename or "")
        raise DataError(f"index {directory} is incomplete: {missing} is missing") from err
    except (ValueError, OSError, KeyError) as err:
        raise DataError(f"index {directory} is unreadable: {type(err).__name__}: {err}") from err
    index = ClipIndex(meta=meta, **arrays, **strings, path=os.path.abspath(directory))
    if len(index.ids) != len(index) or len(index.level_ranges) != len(index) + 1:
        raise DataError(f"index {directory} is damaged: its columns have different lengths")
    return index


# --------------------------------------------------------------------------- building


@dataclasses.dataclass
class _Rows:
    """Index rows of a run of records: text fields as lists, levels as one flat array."""

    ids: list = dataclasses.field(default_factory=list)
    captions: list = dataclasses.field(default_factory=list)
    tags: list = dataclasses.field(default_factory=list)
    sources: list = dataclasses.field(default_factory=list)
    num_samples: list = dataclasses.field(default_factory=list)
    readable: list = dataclasses.field(default_factory=list)
    levels: list = dataclasses.field(default_factory=list)  # flat float16 arrays
    level_counts: list = dataclasses.field(default_factory=list)
    starts: list = dataclasses.field(default_factory=list)

    TEXT = ("ids", "captions", "tags", "sources", "num_samples", "readable", "starts")

    def add(self, record, position: int, default_source: str, window: int) -> None:
        name = as_text(record.get("id", position))
        try:
            wave = audio_io.decode_audio(record["audio"], source=name)
        except AudioDecodeError:
            wave = None
        self.add_wave(
            name,
            record_captions(record),
            record_tags(record),
            as_text(record.get("source", "")) or default_source,
            wave,
            window,
            int(record.get("num_samples", 0)),
            float(record.get("start_s", 0.0)),
        )

    def add_wave(self, name, captions, tags, source, wave, window, stored_length=0, start_s=0.0) -> None:
        """One clip; ``wave`` None marks it unreadable (``stored_length`` is then kept)."""
        ok = wave is not None
        levels = window_levels(wave, window) if ok else np.zeros(0, np.float16)
        self.ids.append(name)
        self.captions.append(list(captions))
        self.tags.append(list(tags))
        self.sources.append(source)
        self.num_samples.append(len(wave) if ok else stored_length)
        self.readable.append(ok)
        self.levels.append(levels)
        self.level_counts.append(len(levels))
        self.starts.append(start_s)

    def extend(self, other: "_Rows") -> None:
        for field in dataclasses.fields(self):
            getattr(self, field.name).extend(getattr(other, field.name))

    def save(self, path: str) -> None:
        text = json.dumps({k: getattr(self, k) for k in self.TEXT}).encode("utf-8")
        tmp = path + ".tmp.npz"
        np.savez(
            tmp,
            rows=np.frombuffer(text, dtype=np.uint8),
            levels=_flat(self.levels),
            counts=np.array(self.level_counts, dtype=np.int64),
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "_Rows":
        with np.load(path) as data:
            text = json.loads(data["rows"].tobytes().decode("utf-8"))
            text.setdefault("starts", [0.0] * len(text["ids"]))  # a chunk written before the column
            return cls(**text, levels=[data["levels"]], level_counts=data["counts"].tolist())


def _flat(arrays: list) -> np.ndarray:
    return np.concatenate(arrays).astype(np.float16) if arrays else np.zeros(0, np.float16)


def _fill_chunk(source, start, stop, path, default_source, window) -> int:
    rows = _Rows()
    for i in range(start, stop):
        rows.add(source[i], i, default_source, window)
    rows.save(path)
    return stop - start


def _chunk_job(args) -> int:
    open_source, *rest = args
    return _fill_chunk(open_source(), *rest)


def build_index(
    open_source: Callable[[], Sequence],
    directory: str,
    meta: dict,
    *,
    chunk: int = CHUNK,
    workers: int = 0,
    progress: bool = True,
    window: int = LEVEL_WINDOW,
) -> ClipIndex:
    """Scan every record of ``open_source()`` and write the index into ``directory``.

    Finished chunks are kept in ``directory.partial/``: a second call after an interruption
    only does the missing ones. ``workers`` > 0 spreads the chunks over processes
    (``open_source`` must then pickle, e.g. a ``functools.partial`` of ``builders.load``).
    """
    source = open_source()
    count = len(source)
    partial = directory.rstrip("/") + ".partial"
    os.makedirs(partial, exist_ok=True)
    default_source = str(meta.get("dataset", ""))
    paths = [os.path.join(partial, f"{k:06d}.npz") for k in range(-(-count // chunk))]
    jobs = [
        (k * chunk, min((k + 1) * chunk, count), path, default_source, window)
        for k, path in enumerate(paths)
        if not os.path.isfile(path)
    ]
    bar = _progress(count, count - sum(stop - start for start, stop, *_ in jobs), progress, meta)
    if workers > 0 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for done in pool.imap_unordered(_chunk_job, [(open_source, *job) for job in jobs]):
                bar.update(done)
    else:
        for job in jobs:
            bar.update(_fill_chunk(source, *job))
    bar.close()
    rows = _Rows()
    for path in paths:
        rows.extend(_Rows.load(path))
    index = _columns(rows, {**meta, "count": count, "level_window": window})
    os.makedirs(os.path.dirname(os.path.abspath(directory)), exist_ok=True)
    write_columns(index, directory)
    shutil.rmtree(partial, ignore_errors=True)
    return read_index(directory)


def _progress(total: int, done: int, enabled: bool, meta: dict):
    label = f"index {meta.get('dataset', '')}/{meta.get('split', '')}"
    return tqdm(total=total, initial=done, desc=label, unit="clip", disable=not enabled, file=sys.stderr)


def _columns(rows: _Rows, meta: dict) -> ClipIndex:
    tag_vocab = sorted({t for tags in rows.tags for t in tags})
    source_vocab = sorted(set(rows.sources))
    tag_number = {t: k for k, t in enumerate(tag_vocab)}
    source_number = {s: k for k, s in enumerate(source_vocab)}
    meta = {**meta, "format": FORMAT, "version": VERSION}
    meta.update(tag_vocab=tag_vocab, source_vocab=source_vocab)
    index = ClipIndex(
        meta=meta,
        num_samples=np.array(rows.num_samples, dtype=np.int64),
        readable=np.array(rows.readable, dtype=bool),
        background=np.zeros(len(rows.ids), dtype=bool),
        ids=_Strings.pack(rows.ids),
        captions=_Strings.pack([c for captions in rows.captions for c in captions]),
        caption_ranges=_ranges([len(c) for c in rows.captions]),
        tag_ids=np.array([tag_number[t] for tags in rows.tags for t in tags], dtype=np.int32),
        tag_ranges=_ranges([len(t) for t in rows.tags]),
        sources=np.array([source_number[s] for s in rows.sources], dtype=np.int32),
        levels=_flat(rows.levels),
        level_ranges=_ranges(rows.level_counts),
        starts=np.array(rows.starts, dtype=np.float32),
    )
    index.background = index.background_flags(frozenset(DEFAULT_BACKGROUND_TAGS))
    return index


def index_records(records: Sequence, *, name: str = "records", window: int = LEVEL_WINDOW) -> ClipIndex:
    """An in-memory index of a small sequence of records (decodes every one: evaluation sets,
    tests). Training data is never scanned like this: its index is written once on disk."""
    rows = _Rows()
    for i in range(len(records)):
        rows.add(records[i], i, name, window)
    return _columns(rows, {"dataset": name, "split": "", "count": len(records), "level_window": window})


def index_waves(clips: Sequence, *, name: str = "memory", window: int = LEVEL_WINDOW) -> ClipIndex:
    """An in-memory index of clips already decoded (objects with audio, captions, tags, name)."""
    rows = _Rows()
    for i, clip in enumerate(clips):
        wave = np.asarray(clip.audio, dtype=np.float32)
        rows.add_wave(clip.name or f"clip{i}", clip.captions, clip.tags, name, wave, window)
    return _columns(rows, {"dataset": name, "split": "", "count": len(clips), "level_window": window})


# --------------------------------------------------------------------------- staleness


def check_index(index: ClipIndex, source: Sequence, fingerprint: dict, command: str) -> None:
    """One-line DataError when ``index`` does not describe ``source`` (count, size, ids)."""
    where = index.path or "the index"
    if len(index) != len(source):
        raise DataError(
            f"index {where} is stale: it lists {len(index)} clips, the records hold {len(source)}; "
            f"rewrite it with {command}"
        )
    for key, value in fingerprint.items():
        if index.meta.get(key) != value:
            raise DataError(
                f"index {where} is stale: its {key} is {index.meta.get(key)}, the records' {value}; "
                f"rewrite it with {command}"
            )
    count = len(source)
    spots = {round(k * (count - 1) / (SPOT_CHECKS - 1)) for k in range(SPOT_CHECKS)} if count else set()
    for i in sorted(spots):
        found = as_text(source[i].get("id", i))
        if found != index.id(i):
            raise DataError(
                f"index {where} does not match its records: record {i} is {found!r}, the index says "
                f"{index.id(i)!r}; rewrite it with {command}"
            )
