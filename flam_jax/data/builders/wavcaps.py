"""WavCaps as released: its metadata JSON files and an audio folder, as captioned clips.

Manual directory: the JSON files (``as_final.json``, ``bbc_final.json``, ``fsd_final.json``,
``sb_final.json``, or any ``*.json`` holding ``{"data": [...]}`` or a list) and the audio of
each in ``audio/<json stem>/``, ``<json stem>/`` or ``audio/``. An entry's audio file is
found by the file name of its ``audio``/``wav_path`` field, its ``id`` or its ``file_name``
(any audio extension); its one caption is ``caption``. Every clip is in the train split
(WavCaps is a training set); its source is ``wavcaps/<json stem>``.
"""

import json
import os
from collections.abc import Iterator

from flam_jax import paths
from flam_jax.data.builders.common import Missing, find_audio
from flam_jax.errors import DataError


def tables(folder: str) -> list[str]:
    found = [paths.join(folder, n) for n in paths.listdir(folder) if n.endswith(".json")]
    if not found:
        raise DataError(f"wavcaps: no metadata .json in {folder}")
    return found


def _entries(table: str) -> list:
    try:
        data = json.loads(paths.read_text(table))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"wavcaps: {table} is not JSON: {err}") from err
    entries = data.get("data") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise DataError(f"wavcaps: {table} holds no list of entries (expected {{'data': [...]}})")
    return entries


def items(folder: str, table: str) -> Iterator[tuple[str, object, dict]]:
    """The entries of one metadata file (``tables``) with their audio paths."""
    stem = os.path.basename(table).removesuffix(".json")
    dirs = [paths.join(folder, "audio", stem), paths.join(folder, stem), paths.join(folder, "audio")]
    for number, entry in enumerate(_entries(table)):
        if not isinstance(entry, dict):
            yield f"{stem}/{number}", Missing("entry is not an object"), {}
            continue
        ident = str(entry.get("id", "") or entry.get("file_name", "") or number)
        name = f"{stem}/{ident}"
        caption = str(entry.get("caption", "")).strip()
        if not caption:
            yield name, Missing("no caption"), {}
            continue
        given = entry.get("audio") or entry.get("wav_path") or ""
        candidates = [os.path.basename(str(given))] if given else []
        candidates += [str(entry[k]) for k in ("id", "file_name") if entry.get(k)]
        yield (
            name,
            find_audio(dirs, candidates),
            {
                "captions": [caption],
                "tags": [],
                "source": f"wavcaps/{stem}",
                "licence": str(entry.get("license", entry.get("licence", ""))),
                "recording": "",
            },
        )
