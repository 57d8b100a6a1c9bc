"""What the builders share: the stored audio feature, file lookup and table reading.

Audio is stored as 16-bit FLAC bytes at 48 kHz mono (``audio`` feature), decoded at read
time with ``flam_jax.audio.io.decode_audio``. No TensorFlow is imported: TFDS writes and
reads ArrayRecord files through its numpy paths.
"""

import csv
import io
import logging
import os
from collections.abc import Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from flam_jax import paths
from flam_jax.audio import io as audio_io
from flam_jax.errors import AudioDecodeError, DataError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3")


def audio_features(**extra) -> tfds.features.FeaturesDict:
    """The features every builder stores, plus ``extra``."""
    return tfds.features.FeaturesDict(
        {
            "id": tfds.features.Text(),
            "audio": tfds.features.Scalar(dtype=np.object_, doc="FLAC bytes, 48 kHz mono, 16 bit"),
            "num_samples": tfds.features.Scalar(dtype=np.int64),
            **extra,
        }
    )


def manual_dir(dl_manager, builder_name: str) -> str:
    path = dl_manager.manual_dir
    if path is None or not paths.isdir(os.fspath(path)):
        raise DataError(f"{builder_name}: manual directory not found: {path}")
    return os.fspath(path)


def encoded(path: str) -> dict:
    """Decode any supported file and re-encode it as 48 kHz mono FLAC."""
    wave = audio_io.load_audio(path)
    return {"audio": audio_io.encode_flac(wave), "num_samples": len(wave)}


def find_audio(folders: Iterable[str], names: Iterable[str]) -> str | None:
    """The first existing file among folders x names, also trying the audio extensions."""
    names = list(names)
    for folder in folders:
        for name in names:
            path = paths.join(folder, name)
            if paths.isfile(path):
                return path
            stem = os.path.splitext(path)[0]
            for ext in AUDIO_EXTENSIONS:
                if paths.isfile(stem + ext):
                    return stem + ext
    return None


def read_table(path: str, delimiter: str = ",") -> list[dict[str, str]]:
    if not paths.isfile(path):
        raise DataError(f"table not found: {path}")
    rows = list(csv.DictReader(io.StringIO(paths.read_text(path), newline=""), delimiter=delimiter))
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in rows]


def column(row: dict[str, str], names: tuple[str, ...], path: str) -> str:
    for name in names:
        if name in row:
            return row[name]
    raise DataError(f"{path}: no column named any of {', '.join(names)}")


def examples(items: Iterable[tuple[str, str | None, dict]], builder_name: str) -> Iterator[tuple[str, dict]]:
    """Encode (key, audio path, other features); missing or corrupt files are skipped and logged."""
    kept = skipped = 0
    for key, path, features in items:
        if path is None:
            log.warning("%s: no audio file for %s, skipped", builder_name, key)
            skipped += 1
            continue
        try:
            audio = encoded(path)
        except AudioDecodeError as err:
            log.warning("%s: %s, skipped", builder_name, err)
            skipped += 1
            continue
        kept += 1
        yield key, {"id": key, **audio, **features}
    if skipped:
        log.warning("%s: skipped %d of %d items", builder_name, skipped, kept + skipped)
    if kept == 0:
        raise DataError(f"{builder_name}: no readable audio in this split ({skipped} items skipped)")


def humanise_label(label: str) -> str:
    """'Alarm_bell_ringing' -> 'alarm bell ringing' (class names used as texts)."""
    return " ".join(label.replace("_", " ").replace("-", " ").split()).lower()
