"""TFDS builders (array_record, no TensorFlow) for clips, strongly labelled SED sets,
retrieval pairs and classification sets, each reading a local manual directory.

``build(kind, manual_dir, data_dir, config=None)`` prepares one; ``load(kind, data_dir,
split, config=None)`` returns a random-access source for Grain (``as_data_source``).
Kinds: ``clips`` (flam_clips), ``strong`` (flam_strong), ``pairs`` (flam_pairs/audiocaps,
flam_pairs/clotho), ``classification`` (flam_classification/esc50, .../urbansound8k).
"""

import os

import tensorflow_datasets as tfds

from flam_jax.data.builders.classification import FlamClassification
from flam_jax.data.builders.clips import FlamClips
from flam_jax.data.builders.pairs import FlamPairs
from flam_jax.data.builders.strong import FlamStrong
from flam_jax.errors import DataError

BUILDERS = {
    "clips": FlamClips,
    "strong": FlamStrong,
    "pairs": FlamPairs,
    "classification": FlamClassification,
}


def _builder(kind: str, data_dir: str, config: str | None):
    if kind not in BUILDERS:
        raise DataError(f"unknown dataset kind {kind!r} (use one of {', '.join(BUILDERS)})")
    cls = BUILDERS[kind]
    names = [c.name for c in cls.BUILDER_CONFIGS]
    if names and config not in names:
        raise DataError(f"dataset kind {kind!r} needs --config, one of {', '.join(names)}")
    if not names and config:
        raise DataError(f"dataset kind {kind!r} takes no config (got {config!r})")
    kwargs = {"config": config} if config else {}
    return cls(data_dir=os.fspath(data_dir), file_format="array_record", **kwargs)


def build(kind: str, manual_dir: str, data_dir: str, config: str | None = None):
    """Encode a manual directory into ArrayRecord files under ``data_dir``; returns the builder."""
    if not os.path.isdir(manual_dir):
        raise DataError(f"manual directory not found: {manual_dir}")
    builder = _builder(kind, data_dir, config)
    tfds.disable_progress_bar()
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    )
    return builder


def load(kind: str, data_dir: str, split: str = "train", config: str | None = None):
    """A random-access source of decoded-feature dicts (audio stays FLAC bytes)."""
    builder = _builder(kind, data_dir, config)
    if not builder.is_prepared():
        raise DataError(f"dataset {builder.name} is not built in {data_dir} (run data/build_dataset.py)")
    if split not in builder.info.splits:
        raise DataError(
            f"dataset {builder.name} has no split {split!r} (has {', '.join(builder.info.splits)})"
        )
    return builder.as_data_source(split=split)
