"""Webdataset tar shards (the WavCaps and LAION-Audio-630K layout) as captioned clips.

Manual directory: ``*.tar`` shards (the train split), or ``train/``, ``validation/`` and
``test/`` folders of them, local or ``gs://``; each shard is streamed once, never unpacked.
Members follow webdataset's naming: ``DIR/KEY.EXT`` belong to sample ``DIR/KEY`` (the name
up to the first dot of the file name). A sample has one audio member (flac, wav, mp3, ogg)
and a ``json`` member whose ``text`` (a list or a string; also ``caption``/``captions``)
holds its captions, or failing that a ``txt`` member with one caption per line; optional
``tags``/``tag``, ``source``, ``licence``/``license``. A sample's id is ``SHARD/KEY``.
"""

import json
import os
import tarfile
from collections.abc import Iterator

from flam_jax import paths
from flam_jax.data.builders.common import AUDIO_EXTENSIONS, Missing
from flam_jax.errors import DataError

SPLITS = ("train", "validation", "test")
_AUDIO = tuple(ext.lstrip(".") for ext in AUDIO_EXTENSIONS)


def shards(folder: str) -> dict[str, list[str]]:
    """split → its shard paths (sorted)."""
    found = {}
    for split in SPLITS:
        sub = paths.join(folder, split)
        if paths.isdir(sub):
            found[split] = [paths.join(sub, n) for n in paths.listdir(sub) if n.endswith(".tar")]
    top = [paths.join(folder, n) for n in paths.listdir(folder) if n.endswith(".tar")]
    if top:
        found["train"] = sorted(found.get("train", []) + top)
    found = {s: v for s, v in found.items() if v}
    if not found:
        raise DataError(f"webdataset: no .tar shards in {folder} (nor in its train/validation/test)")
    return found


def _split_name(member: str) -> tuple[str, str]:
    folder, base = os.path.split(member)
    stem, _, ext = base.partition(".")
    return os.path.join(folder, stem) if folder else stem, ext.lower()


def _samples(shard: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of consecutive members sharing a key (webdataset's rule)."""
    key, parts = None, {}
    try:
        with paths.open_stream(shard) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name, ext = _split_name(member.name)
                if name != key and key is not None:
                    yield key, parts
                    parts = {}
                key = name
                parts[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"webdataset shard {shard} is unreadable: {err}") from err
    if key is not None:
        yield key, parts


def _texts(value) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def items(shard: str) -> Iterator[tuple[str, object, dict]]:
    """(id, audio bytes or Missing, features) of every sample of one shard."""
    stem = os.path.basename(shard).removesuffix(".tar")
    for key, parts in _samples(shard):
        name = f"{stem}/{key}"
        # "KEY.flac", or "KEY.48k.flac" (webdataset's extension is all after the first dot)
        audio = next((data for ext, data in parts.items() if ext.rsplit(".", 1)[-1] in _AUDIO), None)
        meta, captions = {}, []
        if "json" in parts:
            try:
                meta = json.loads(parts["json"].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                yield name, Missing("unreadable json member"), {}
                continue
            if not isinstance(meta, dict):
                yield name, Missing("json member is not an object"), {}
                continue
            captions = _texts(meta.get("text", meta.get("captions", meta.get("caption"))))
        if not captions and "txt" in parts:
            captions = _texts(parts["txt"].decode("utf-8", "replace").splitlines())
        if audio is None:
            yield name, Missing("no audio member"), {}
        elif not captions:
            yield name, Missing("no caption"), {}
        else:
            yield (
                name,
                audio,
                {
                    "captions": captions,
                    "tags": _texts(meta.get("tags", meta.get("tag"))),
                    "source": str(meta.get("source", "")),
                    "licence": str(meta.get("licence", meta.get("license", ""))),
                    "recording": "",
                },
            )
