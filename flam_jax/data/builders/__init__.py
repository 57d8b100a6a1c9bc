"""TFDS builders (array_record, no TensorFlow) for clips, strongly labelled SED sets,
retrieval pairs and classification sets, each reading a local manual directory.

``build(kind, manual_dir, data_dir, config=None)`` prepares one and writes the metadata
index of every split (``flam_jax.data.index``); ``load(kind, data_dir, split, config=None)``
returns a random-access source for Grain (``as_data_source``); ``open_index`` returns a
split's index after checking that it still describes the records (``write_index`` or the
``flam-index`` command writes one for a dataset built without it).
Kinds: ``clips`` (flam_clips), ``strong`` (flam_strong), ``pairs`` (flam_pairs/audiocaps,
flam_pairs/clotho), ``classification`` (flam_classification/esc50, .../urbansound8k),
``captioned`` (flam_captioned/webdataset, .../huggingface, .../wavcaps, .../fsd50k: corpora
in their own layouts, long recordings cut into 10 s pieces), ``grounding`` (flam_grounding:
AudioGrounding's captions with timed phrases).
"""

import functools
import os

import tensorflow_datasets as tfds

from flam_jax import paths
from flam_jax.data.builders import beam_build, common
from flam_jax.data.builders.captioned import FlamCaptioned
from flam_jax.data.builders.classification import FlamClassification
from flam_jax.data.builders.clips import FlamClips
from flam_jax.data.builders.grounding import FlamGrounding
from flam_jax.data.builders.pairs import FlamPairs
from flam_jax.data.builders.strong import FlamStrong
from flam_jax.data.index import ClipIndex, build_index, check_index, read_index
from flam_jax.errors import DataError

BUILDERS = {
    "clips": FlamClips,
    "strong": FlamStrong,
    "pairs": FlamPairs,
    "classification": FlamClassification,
    "captioned": FlamCaptioned,
    "grounding": FlamGrounding,
}


def _builder(
    kind: str,
    data_dir: str,
    config: str | None,
    max_errors: int = common.MAX_ERRORS,
    workers: int = 0,
    beam: bool = False,
):
    if kind not in BUILDERS:
        raise DataError(f"unknown dataset kind {kind!r} (use one of {', '.join(BUILDERS)})")
    cls = BUILDERS[kind]
    names = [c.name for c in cls.BUILDER_CONFIGS]
    if names and config not in names:
        raise DataError(f"dataset kind {kind!r} needs --config, one of {', '.join(names)}")
    if not names and config:
        raise DataError(f"dataset kind {kind!r} takes no config (got {config!r})")
    kwargs = {"config": config} if config else {}
    local = paths.require_local(data_dir, "dataset directory")
    return cls(
        data_dir=local,
        file_format="array_record",
        max_errors=max_errors,
        workers=workers,
        beam=beam,
        **kwargs,
    )


def build(
    kind: str,
    manual_dir: str,
    data_dir: str,
    config: str | None = None,
    *,
    progress: bool = False,
    overwrite: bool = False,
    max_errors: int = common.MAX_ERRORS,
    workers: int = 0,
    beam: list[str] | None = None,
):
    """Encode a manual directory into ArrayRecord files under ``data_dir`` and index every
    split (``progress``: the index's progress bar); returns the builder. A dataset already
    built there is kept as it is (TFDS's rule) unless ``overwrite``: then it is generated
    again from the manual directory, which is what a changed manual directory needs.
    ``builder.skips`` lists the items skipped; more than ``max_errors`` stops the build
    (a one-line DataError) with nothing marked built. ``workers`` > 0 decodes and encodes
    in that many processes and writes the index with as many: the same records, faster.
    ``beam`` (Beam pipeline arguments, e.g. ``["--runner=DirectRunner"]``) computes the
    records of the ``captioned`` kind on a Beam runner instead (``beam_build.py``)."""
    if not paths.isdir(manual_dir):  # local or remote: the builders read it through paths
        raise DataError(f"manual directory not found: {manual_dir}")
    if beam is not None and kind != "captioned":
        raise DataError(f"a Beam build reads the captioned kind's corpora, not {kind!r}")
    builder = _builder(kind, data_dir, config, max_errors, workers, beam is not None)
    if not paths.listdir(manual_dir):  # TFDS would fail an assertion (a traceback) on it
        raise DataError(f"manual directory is empty: {manual_dir}")
    tfds.disable_progress_bar()
    mode = tfds.download.GenerateMode
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=os.fspath(manual_dir),
            download_mode=mode.REUSE_CACHE_IF_EXISTS if overwrite else mode.REUSE_DATASET_IF_EXISTS,
            beam_options=beam_build.pipeline_options(beam) if beam is not None else None,
        )
    )
    dataset = f"{kind}/{config}" if config else kind
    for split in builder.info.splits:
        write_index(dataset, data_dir, split, progress=progress, workers=workers)
    return builder


def load(kind: str, data_dir: str, split: str = "train", config: str | None = None):
    """A random-access source of decoded-feature dicts (audio stays FLAC bytes)."""
    builder = _prepared(kind, data_dir, config)
    if split not in builder.info.splits:
        raise DataError(
            f"dataset {builder.name} has no split {split!r} (has {', '.join(builder.info.splits)})"
        )
    return builder.as_data_source(split=split)


# --------------------------------------------------------------------------- the index


def _parts(dataset: str) -> tuple[str, str | None]:
    kind, _, config = dataset.partition("/")
    return kind, config or None


def index_dir(builder, split: str) -> str:
    return os.path.join(builder.data_dir, "index", split)


def index_command(dataset: str, data_dir: str, split: str) -> str:
    return f"flam-index --data-dir={data_dir} --dataset={dataset} --split={split}"


def _fingerprint(builder, split: str) -> dict:
    info = builder.info.splits[split]
    return {"num_bytes": int(info.num_bytes), "shard_lengths": [int(n) for n in info.shard_lengths]}


def num_shards(dataset: str, data_dir: str, split: str) -> int:
    kind, config = _parts(dataset)
    return int(_prepared(kind, data_dir, config).info.splits[split].num_shards)


def split_names(dataset: str, data_dir: str, split: str | None = None) -> list[str]:
    kind, config = _parts(dataset)
    builder = _prepared(kind, data_dir, config)
    names = list(builder.info.splits)
    if split is not None and split not in names:
        raise DataError(f"dataset {builder.name} has no split {split!r} (has {', '.join(names)})")
    return [split] if split is not None else names


def write_index(
    dataset: str, data_dir: str, split: str, *, workers: int = 0, chunk: int | None = None, progress=True
) -> ClipIndex:
    """Scan ``split`` of a built dataset (``kind[/config]``) and write its index (resumable)."""
    kind, config = _parts(dataset)
    builder = _prepared(kind, data_dir, config)
    meta = {"dataset": dataset, "split": split, "builder": builder.name, **_fingerprint(builder, split)}
    opener = functools.partial(load, kind, os.fspath(data_dir), split, config)
    kwargs = {"chunk": chunk} if chunk else {}
    return build_index(opener, index_dir(builder, split), meta, workers=workers, progress=progress, **kwargs)


def open_index(dataset: str, data_dir: str, split: str, source=None) -> ClipIndex:
    """The index of ``split``; a missing, stale or mismatched one is a one-line DataError
    naming the command that rewrites it. Reads the index and a few record ids, no audio."""
    kind, config = _parts(dataset)
    builder = _prepared(kind, data_dir, config)
    command = index_command(dataset, os.fspath(data_dir), split)
    directory = index_dir(builder, split)
    if not os.path.isfile(os.path.join(directory, "meta.json")):
        raise DataError(
            f"dataset {dataset}/{split} in {data_dir} has no metadata index; write it with {command}"
        )
    index = read_index(directory)
    source = source if source is not None else load(kind, data_dir, split, config)
    check_index(index, source, _fingerprint(builder, split), command)
    return index


def _prepared(kind: str, data_dir: str, config: str | None):
    builder = _builder(kind, data_dir, config)
    if not builder.is_prepared():
        raise DataError(f"dataset {builder.name} is not built in {data_dir} (run data/build_dataset.py)")
    return builder
