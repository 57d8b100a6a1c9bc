"""The standard benchmarks, read through the data builders from a local copy.

``--data-dir`` is either a TFDS data_dir where ``data/build_dataset.py`` already built the
benchmark's dataset, or the raw folder in the dataset's own layout (see the builder
modules); a raw folder is built once into ``cache_dir`` and then read the same way.

Every benchmark becomes a list of ``Item``s whose audio is decoded on demand.
"""

import dataclasses
import hashlib
import os
from collections.abc import Callable

import numpy as np

from flam_jax import paths
from flam_jax.audio import io as audio_io
from flam_jax.data import builders
from flam_jax.errors import DataError, InputError


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    task: str  # "sed" (closed-set classes), "sed-open" (captions), "grounding", "retrieval", "zeroshot"
    kind: str  # data builder kind
    config: str | None  # builder config
    splits: tuple[str, ...]  # first one present is used unless --split is given
    auroc: str = "macro"  # headline frame AUROC aggregation (FLAM_SPEC §10 conventions)
    description: str = ""


BENCHMARKS = {
    b.name: b
    for b in (
        Benchmark("desed", "sed", "strong", None, ("test", "validation"), description="DESED (DCASE task 4)"),
        Benchmark("urbansed", "sed", "strong", None, ("test", "validation"), description="URBAN-SED"),
        Benchmark(
            "audioset-strong", "sed", "strong", None, ("test", "validation"), description="AudioSet-strong"
        ),
        Benchmark(
            "maestro", "sed", "strong", None, ("test", "validation"), description="MAESTRO real (MPAUC)"
        ),
        Benchmark(
            "audiogrounding",
            "grounding",
            "grounding",
            None,
            ("test", "validation"),
            auroc="micro",  # pooled over every (clip, phrase) pair's frames (evals/grounding.py)
            description="AudioGrounding v2 (text-to-audio grounding)",
        ),
        Benchmark("audiocaps", "retrieval", "pairs", "audiocaps", ("test",), description="AudioCaps test"),
        Benchmark("clotho", "retrieval", "pairs", "clotho", ("test",), description="Clotho evaluation"),
        Benchmark("esc50", "zeroshot", "classification", "esc50", ("test",), description="ESC-50"),
        Benchmark(
            "us8k", "zeroshot", "classification", "urbansound8k", ("test",), description="UrbanSound8K"
        ),
        Benchmark(
            "simulated",
            "sed-open",
            "clips",
            None,
            ("test", "validation", "train"),
            auroc="micro",
            description="FLAM mixtures of a clips set (seeded)",
        ),
    )
}


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise InputError(f"unknown benchmark {name!r} (use one of {', '.join(BENCHMARKS)})")
    return BENCHMARKS[name]


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclasses.dataclass
class Item:
    """One evaluation clip: lazy audio plus whatever the task needs."""

    id: str
    audio: Callable[[], np.ndarray]  # 48 kHz mono float32
    num_samples: int = 0
    events: list[tuple[float, float, str]] = dataclasses.field(default_factory=list)  # (on, off, label)
    captions: list[str] = dataclasses.field(default_factory=list)
    label: str = ""
    label_id: int = -1
    recording: str = ""  # the audio file, where several items (captions) share one


def open_source(bench: Benchmark, data_dir: str, split: str | None = None, cache_dir: str | None = None):
    """The builder's random-access source for ``bench`` (building a raw folder first)."""
    if not paths.isdir(data_dir):
        raise DataError(f"data directory not found: {data_dir}")
    if paths.is_remote(data_dir):  # a raw folder in a bucket: built into a local cache
        built_dir = paths.require_local(cache_dir or _local_cache(data_dir), "--cache-dir")
        if not _is_built(bench, built_dir):
            builders.build(bench.kind, data_dir, built_dir, bench.config)
    elif _is_built(bench, data_dir) is not False:
        built_dir = data_dir
    else:
        built_dir = cache_dir or os.path.join(data_dir, ".flam_tfds")
        builders.build(bench.kind, data_dir, built_dir, bench.config)
    for candidate in [split] if split else bench.splits:
        try:
            return builders.load(bench.kind, built_dir, candidate, bench.config), candidate
        except DataError as err:
            last = err
    raise last


def _is_built(bench: Benchmark, data_dir: str) -> bool | None:
    """True: built with the preferred split; None: built without it; False: not built."""
    try:
        builders.load(bench.kind, data_dir, bench.splits[0], bench.config)
        return True
    except DataError as err:
        return False if "is not built" in str(err) else None


def _local_cache(url: str) -> str:
    digest = hashlib.sha1(url.encode()).hexdigest()[:12]
    return os.path.join(os.path.expanduser("~/.cache/flam_jax/eval_tfds"), digest)


def read_items(source) -> list[Item]:
    """Builder records → Items (records are read once; audio stays encoded until needed)."""
    items = []
    for i in range(len(source)):
        record = source[i]
        name = _text(record.get("id", i))

        def audio(i=i, name=name):
            return audio_io.decode_audio(source[i]["audio"], source=name)

        item = Item(id=name, audio=audio, num_samples=int(record.get("num_samples", 0)))
        if "events" in record:
            ev = record["events"]
            item.events = [
                (round(float(a), 6), round(float(b), 6), _text(lab))
                for a, b, lab in zip(ev["onset"], ev["offset"], ev["label"], strict=True)
            ]
        if "captions" in record:
            item.captions = [_text(c) for c in record["captions"]]
        if "recording" in record:
            item.recording = _text(record["recording"])
        if "label" in record:
            item.label = _text(record["label"])
            item.label_id = int(record["label_id"])
        items.append(item)
    return items
