"""FSD50K as released (its ground-truth CSVs and audio folders), as captioned clips.

Manual directory: ``FSD50K.ground_truth/dev.csv`` (fname, labels, mids, split: train or
val) and ``eval.csv`` (fname, labels, mids), audio in ``FSD50K.dev_audio/`` and
``FSD50K.eval_audio/``; optionally ``FSD50K.metadata/{dev,eval}_clips_info_FSD50K.json``
for each clip's licence. A clip's captions are its labels made readable, in the CSV's
order ("Bark,Dog" → "bark", "dog": each one true of the clip, leaf first); its tags are the
labels as written. Splits: dev's train → train, dev's val → validation, eval → test.
"""

import json
from collections.abc import Iterator

from flam_jax import paths
from flam_jax.data.builders.common import find_audio, humanise_label, read_table
from flam_jax.errors import DataError

TRUTH, META = "FSD50K.ground_truth", "FSD50K.metadata"
SPLITS = {"train": ("dev", "train"), "validation": ("dev", "val"), "test": ("eval", None)}


def splits(folder: str) -> list[str]:
    if not paths.isfile(paths.join(folder, TRUTH, "dev.csv")) and not paths.isfile(
        paths.join(folder, TRUTH, "eval.csv")
    ):
        raise DataError(f"fsd50k: no {TRUTH}/dev.csv or eval.csv in {folder}")
    return [s for s, (part, _) in SPLITS.items() if paths.isfile(paths.join(folder, TRUTH, f"{part}.csv"))]


def _licences(folder: str, part: str) -> dict:
    path = paths.join(folder, META, f"{part}_clips_info_FSD50K.json")
    if not paths.isfile(path):
        return {}
    try:
        return json.loads(paths.read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"fsd50k: {path} is not JSON: {err}") from err


def items(folder: str, split: str) -> Iterator[tuple[str, object, dict]]:
    part, dev_split = SPLITS[split]
    table = paths.join(folder, TRUTH, f"{part}.csv")
    licences = _licences(folder, part)
    dirs = [paths.join(folder, f"FSD50K.{part}_audio")]
    for row in read_table(table):
        if dev_split is not None and row.get("split", "train") != dev_split:
            continue
        fname = row.get("fname", "")
        labels = [label for label in row.get("labels", "").split(",") if label]
        if not fname or not labels:
            raise DataError(f"fsd50k: {table}: a row needs fname and labels")
        yield (
            fname,
            find_audio(dirs, [f"{fname}.wav"]),
            {
                "captions": [humanise_label(label) for label in labels],
                "tags": labels,
                "source": "fsd50k",
                "licence": str(licences.get(fname, {}).get("license", "")),
                "recording": "",
            },
        )
