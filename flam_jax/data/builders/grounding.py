"""``flam_grounding``: text-to-audio grounding in the AudioGrounding v2 layout.

AudioGrounding (wsntxxn/TextToAudioGrounding, Zenodo 10.5281/zenodo.7269161) is the TAG
benchmark of FineLAP and MGA-CLAP: AudioCaps captions whose sound phrases carry timed segments.

Manual directory: ``train.json``, ``val.json`` and ``test.json`` (splits train, validation,
test), each a list of items::

    {"audiocap_id": 91139, "audio_id": "Y---1_cCGK4M.wav", "tokens": "a man speaks ...",
     "phrases": [{"phrase": "a man speaks", "start_index": 0, "end_index": 2,
                  "segments": [[0.0, 2.5], [4.1, 6.0]]}, ...]}

The caption is ``tokens`` or, in some releases, ``caption`` (a string or a token list);
segments are [onset, offset] in seconds. Audio lives in ``audio/{test,val,train}/``,
``audio/{split}/``, ``audio/``, ``{test,val,train}/`` (the baseline's layout) or the
folder itself, named ``audio_id`` with any audio extension, with or without its leading "Y".

One record per item (a caption of a clip): ``id`` is the audiocap_id (else the item's
position), ``recording`` the audio_id (clips with several captions share it),
``captions`` the caption and ``events`` one per segment, labelled with its phrase.

Bad input, as the other builders: an item whose audio is not on disk is skipped ("no audio
file"), as is a phrase without segments ("phrase without segments") and an item none of
whose phrases has any ("no phrase with segments"); all are counted and named (``common.Skips``). A
file that is not a list of such items, or a segment that is not two numbers with
offset ≥ onset ≥ 0, is a one-line DataError naming the file and the item.
"""

import json

import tensorflow_datasets as tfds

from flam_jax import paths
from flam_jax.data.builders import common
from flam_jax.errors import DataError

NAME = "flam_grounding"
SPLITS = {"train": "train", "validation": "val", "test": "test"}  # split → file stem


def _text(value) -> str:
    """A caption or phrase, given as a string or a token list, with single spaces."""
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        value = " ".join(value)
    return " ".join(value.split()) if isinstance(value, str) else ""


def read_items(path: str) -> list[dict]:
    """The items of one JSON file, checked against the layout (module doc)."""
    try:
        items = json.loads(paths.read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not JSON: {err}") from err
    if not isinstance(items, list):
        # Version 1 of the release stored columns (a dict of dicts); v2 is a list of items.
        raise DataError(f"{path}: not a list of AudioGrounding items (the v2 layout)")
    for number, item in enumerate(items):
        if not (isinstance(item, dict) and isinstance(item.get("audio_id"), str)):
            raise DataError(f"{path}: item {number} has no audio_id")
        if not isinstance(item.get("phrases"), list) or not all(isinstance(p, dict) for p in item["phrases"]):
            raise DataError(f"{path}: item {number} has no list of phrases")
        if not _text(item.get("tokens", item.get("caption"))):
            raise DataError(f"{path}: item {number} has no caption (tokens or caption)")
    return items


def _segments(phrase: dict, where: str) -> list[tuple[float, float]]:
    out = []
    for segment in phrase.get("segments") or []:
        try:
            onset, offset = (float(t) for t in segment)
        except (TypeError, ValueError) as err:
            raise DataError(f"{where}: segment {segment!r} is not [onset, offset]") from err
        if not 0 <= onset <= offset:
            raise DataError(f"{where}: segment {segment!r} needs offset >= onset >= 0")
        out.append((onset, offset))
    return out


class FlamGrounding(common.Builder):
    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "AudioGrounding v2: train/val/test.json and the audio (see module doc)."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Captions with timed sound phrases (FLAC, 48 kHz mono): text-to-audio grounding.",
            features=common.audio_features(
                captions=tfds.features.Sequence(tfds.features.Text()),
                recording=tfds.features.Text(),
                events=common.timed_events(),
            ),
        )

    def _split_generators(self, dl_manager):
        folder = common.manual_dir(dl_manager, NAME)
        tables = {s: paths.join(folder, f"{stem}.json") for s, stem in SPLITS.items()}
        present = {s: p for s, p in tables.items() if paths.isfile(p)}
        if not present:
            raise DataError(f"{NAME}: no train.json, val.json or test.json in {folder}")
        return {s: self._generate_examples(folder, s, p) for s, p in present.items()}

    def _generate_examples(self, folder, split, table):
        items = read_items(table)
        stem = SPLITS[split]
        dirs = [paths.join(folder, "audio", stem), paths.join(folder, "audio", split)]
        dirs += [paths.join(folder, "audio"), paths.join(folder, stem), folder]

        def records():
            seen = set()
            for number, item in enumerate(items):
                key = str(item.get("audiocap_id", f"item{number}"))
                key = key if key not in seen else f"{key}#{number}"  # TFDS keys must be unique
                seen.add(key)
                events, empty = [], []
                for phrase in item["phrases"]:
                    text = _text(phrase.get("phrase"))
                    if not text:
                        raise DataError(f"{table}: item {number} has a phrase without text")
                    segments = _segments(phrase, f"{table}: item {number}, phrase {text!r}")
                    events += [(onset, offset, text) for onset, offset in segments]
                    empty += [] if segments else [text]
                if events:  # an item with no phrase left is skipped once, as a whole, below
                    for text in empty:
                        self.skips.add(NAME, f"{key} {text!r}", "phrase without segments")
                audio_id = item["audio_id"]
                names = [audio_id, audio_id[1:]] if audio_id.startswith("Y") else [audio_id]
                audio = (
                    common.find_audio(dirs, names) if events else common.Missing("no phrase with segments")
                )
                features = {
                    "captions": [_text(item.get("tokens", item.get("caption")))],
                    "recording": audio_id,
                    "events": {
                        "onset": [e[0] for e in events],
                        "offset": [e[1] for e in events],
                        "label": [e[2] for e in events],
                    },
                }
                yield key, audio, features

        return self.examples(records(), NAME)
