"""``flam_clips``: captioned clips from a JSONL or CSV manifest (the general training source).

Manual directory: ``manifest.jsonl`` (one object per line) or ``manifest.csv``. Fields:
``path`` (relative to the manual directory or absolute), ``captions`` (list, or one
string with "|" between captions), optional ``tags`` (same), ``source``, ``licence``,
``recording`` (the original recording, for grouping) and ``split`` (default "train").
"""

import json

import tensorflow_datasets as tfds

from flam_jax import paths
from flam_jax.data.builders import common
from flam_jax.errors import DataError


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split("|") if v.strip()]
    return [str(v).strip() for v in value if str(v).strip()]


def read_manifest(folder: str) -> list[dict]:
    jsonl, csv_path = paths.join(folder, "manifest.jsonl"), paths.join(folder, "manifest.csv")
    if paths.isfile(jsonl):
        entries = []
        for number, line in enumerate(paths.read_text(jsonl).splitlines(), 1):
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"{jsonl}:{number}: not JSON: {err}") from err
    elif paths.isfile(csv_path):
        entries = common.read_table(csv_path)
    else:
        raise DataError(f"flam_clips: no manifest.jsonl or manifest.csv in {folder}")
    out = []
    for number, entry in enumerate(entries, 1):
        if "path" not in entry or not _as_list(entry.get("captions")):
            raise DataError(f"flam_clips manifest entry {number} needs a path and at least one caption")
        out.append(
            {
                "path": entry["path"],
                "captions": _as_list(entry["captions"]),
                "tags": _as_list(entry.get("tags")),
                "source": str(entry.get("source", "")),
                "licence": str(entry.get("licence", "")),
                "recording": str(entry.get("recording", "")) or entry["path"],
                "split": str(entry.get("split", "")) or "train",
            }
        )
    return out


class FlamClips(common.Builder):
    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "A folder with manifest.jsonl or manifest.csv and the audio files."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Captioned audio clips (FLAC, 48 kHz mono).",
            features=common.captioned_clip_features(),
        )

    def _split_generators(self, dl_manager):
        folder = common.manual_dir(dl_manager, "flam_clips")
        entries = read_manifest(folder)
        splits = sorted({e["split"] for e in entries})
        return {s: self._generate_examples(folder, [e for e in entries if e["split"] == s]) for s in splits}

    def _generate_examples(self, folder, entries):
        def items():
            for entry in entries:
                path = paths.join(folder, entry["path"])
                features = {k: entry[k] for k in ("captions", "tags", "source", "licence", "recording")}
                yield entry["path"], (path if paths.isfile(path) else None), features

        return self.examples(items(), "flam_clips")
