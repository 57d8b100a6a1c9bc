"""Hugging Face datasets on disk (AudioCaps, Clotho, any set with an audio and a caption
column) as captioned clips, read with pyarrow: no ``datasets`` import, no network.

Manual directory, either layout ``datasets`` writes:
- parquet (the hub's layout, ``Dataset.to_parquet``): ``*.parquet`` anywhere below it; a
  file's split is the first of its name's prefix (``train-00000-of-00002.parquet``) or
  folder names that names one;
- ``save_to_disk``: a ``{split}/`` folder per split with ``data-*.arrow`` files (arrow
  streams) beside ``dataset_info.json``.
Split names: train/development → train; validation/valid/val/dev → validation;
test/evaluation/eval → test.

Columns: the audio column is ``audio`` (or the first struct column with ``bytes``, the
``Audio`` feature's storage); a row with no bytes uses its ``path`` when that file exists
below the folder. Captions: ``caption``/``captions``/``text`` (a string or a list), or
``caption_1``..``caption_5`` (Clotho). Id: ``id``, ``audiocap_id``, ``file_name`` or
``youtube_id``, else the audio path, else ``FILE:ROW``; a row's id is ``SPLIT/ID``. Optional
``tags``, ``source``, ``licence``/``license``.
"""

import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from flam_jax import paths
from flam_jax.data.builders.common import Missing
from flam_jax.errors import DataError

SPLIT_NAMES = {
    "train": "train",
    "development": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "evaluation": "test",
    "eval": "test",
}
CAPTION_COLUMNS = ("caption", "captions", "text")
ID_COLUMNS = ("id", "audiocap_id", "file_name", "youtube_id")
BATCH_ROWS = 64  # rows decoded at a time: memory stays bounded on multi-GB files


def _split_of(relative: str) -> str | None:
    parts = relative.replace("\\", "/").split("/")
    prefix = parts[-1].split("-")[0].split(".")[0].lower()
    for name in [prefix, *reversed([p.lower() for p in parts[:-1]])]:
        if name in SPLIT_NAMES:
            return SPLIT_NAMES[name]
    return None


def files(folder: str) -> dict[str, list[str]]:
    """split → its parquet or arrow files (relative to ``folder``)."""
    found: dict[str, list[str]] = {}
    for relative in paths.walk_files(folder):
        if not relative.endswith((".parquet", ".arrow")):
            continue
        split = _split_of(relative)
        if split is None:
            raise DataError(
                f"huggingface: cannot tell the split of {relative} (name it train-*, test-*, ...)"
            )
        found.setdefault(split, []).append(relative)
    if not found:
        raise DataError(f"huggingface: no .parquet or .arrow files in {folder}")
    return found


def _batches(path: str) -> Iterator[pa.RecordBatch]:
    with paths.open_remote(path) as f:
        if path.endswith(".parquet"):
            yield from pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS)
        else:
            yield from pa.ipc.open_stream(f)


def _audio_column(schema: pa.Schema, where: str) -> str:
    if "audio" in schema.names:
        return "audio"
    for field in schema:
        if pa.types.is_struct(field.type) and field.type.get_field_index("bytes") >= 0:
            return field.name
    raise DataError(f"huggingface: {where} has no audio column (an 'audio' or a struct with bytes)")


def _captions(row: dict) -> list[str]:
    for column in CAPTION_COLUMNS:
        value = row.get(column)
        if value:
            items = [value] if isinstance(value, str) else list(value)
            return [str(v).strip() for v in items if v and str(v).strip()]
    numbered = sorted(k for k in row if k.startswith("caption_") and k[8:].isdigit())
    return [str(row[k]).strip() for k in numbered if row[k] and str(row[k]).strip()]


def _audio(folder: str, value) -> object:
    if isinstance(value, bytes):
        return value or Missing("empty audio bytes")
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        given = value.get("path")
        if given:
            path = given if paths.is_remote(given) or os.path.isabs(given) else paths.join(folder, given)
            if paths.isfile(path):
                return path
    return Missing("no audio in row (neither bytes nor a readable path)")


def items(folder: str, split: str, relative: str) -> Iterator[tuple[str, object, dict]]:
    """The rows of one file (``relative`` to ``folder``) of ``split``."""
    path, row_number = paths.join(folder, relative), 0
    try:
        for batch in _batches(path):
            column = _audio_column(batch.schema, relative)
            for row in batch.to_pylist():
                name = f"{split}/{_row_id(row, column, relative, row_number)}"
                row_number += 1
                audio, captions = _audio(folder, row.get(column)), _captions(row)
                if not captions and not isinstance(audio, Missing):
                    audio = Missing("no caption")
                yield (
                    name,
                    audio,
                    {
                        "captions": captions,
                        "tags": [str(t) for t in (row.get("tags") or [])],
                        "source": str(row.get("source") or ""),
                        "licence": str(row.get("licence") or row.get("license") or ""),
                        "recording": "",
                    },
                )
    except (pa.ArrowException, OSError) as err:
        yield f"{relative}:{row_number}", Missing(f"unreadable file from this row: {err}"), {}


def _row_id(row: dict, audio_column: str, relative: str, number: int) -> str:
    for column in ID_COLUMNS:
        if row.get(column) not in (None, ""):
            return str(row[column])
    value = row.get(audio_column)
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    return f"{relative}:{number}"
